/**
 * `--cluster NAME` without an outputs file reads the outputs of stack corral-NAME from
 * CloudFormation (DescribeStacks), against the query peer (aws-query-peer.ts) in front of fauxqs
 * on 127.0.0.1: a real job through `run --cluster` and `worker --cluster`, then `status` and
 * `logs`, each finding the queue and bucket in the stack; the file and flag paths still win; and
 * every way the lookup can fail is exit 2 naming the cluster and the fix, with nothing created.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type QueryPeer, startQueryPeer } from './aws-query-peer.js';
import { PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { runCli, startCli, tempDir, writeFiles } from './helpers.js';

let peer: Peer;
let query: QueryPeer;
let alpha: { queueUrl: string; dlqUrl: string };
before(async () => {
  peer = await startPeer();
  query = await startQueryPeer({ upstream: peer.endpoint });
  alpha = await peer.createQueues('alpha');
  await peer.createBucket('alpha-bucket');
  query.putStack('corral-alpha', {
    outputs: {
      QueueUrl: alpha.queueUrl,
      DeadLetterQueueUrl: alpha.dlqUrl,
      BucketName: 'alpha-bucket',
      Region: 'us-east-1',
      LogGroupName: 'corral-alpha-logs',
      ClusterName: 'alpha',
    },
  });
});
after(async () => {
  await query.stop();
  await peer.stop();
});

const env = { ...PEER_ENV, CORRAL_CLUSTER_TICK_MS: '200' };

test('run, worker, status and logs --cluster NAME take the queue and bucket from the stack outputs', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'job.yaml': `name: upper
tasks:
  map: { glob: "in/*.txt" }
  command: 'tr a-z A-Z < {input}'
outputs: out/{input.stem}.txt
`,
    'in/a.txt': 'alpha\n',
    'in/b.txt': 'bravo\n',
    'in/c.txt': 'charlie\n',
  });
  const where = ['--cluster', 'alpha', '--endpoint-url', query.endpoint];
  const worker = startCli(
    ['worker', ...where, '--cache-dir', path.join(dir, 'w'), '--idle-exit', '30', '--no-spot'],
    { cwd: dir, env },
  );
  t.after(() => {
    if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGKILL');
  });
  const run = await runCli(['run', 'job.yaml', ...where], { cwd: dir, env, timeoutMs: 60_000 });
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /job upper succeeded on cluster alpha: 3\/3 tasks done, 0 failed/);
  for (const [f, v] of [
    ['a', 'ALPHA'],
    ['b', 'BRAVO'],
    ['c', 'CHARLIE'],
  ])
    assert.equal(readFileSync(path.join(dir, 'out', `${f}.txt`), 'utf8'), `${v}\n`);
  worker.kill('SIGTERM');
  const w = await worker.result;
  assert.equal(w.code, 0, w.stderr);
  assert.match(
    w.stderr,
    new RegExp(`polling ${alpha.queueUrl.replace(/[.?*+^$()[\]{}|\\/]/g, '\\$&')} \\(bucket alpha-bucket\\)`),
  );

  const st = await runCli(['status', ...where, '--json'], { cwd: dir, env });
  assert.equal(st.code, 0, st.stderr);
  const s = JSON.parse(st.stdout) as {
    cluster: string;
    jobs: Array<{ job: string; done: number; total: number }>;
  };
  assert.equal(s.cluster, 'alpha');
  assert.deepEqual(
    s.jobs.map((j) => [j.job, j.done, j.total]),
    [['upper', 3, 3]],
  );
  const logs = await runCli(['logs', 'upper', ...where], { cwd: dir, env });
  assert.equal(logs.code, 0, logs.stderr);

  // each of the 5 commands (worker, run, status, logs; run once) asked CloudFormation for corral-alpha
  const asked = query.callsOf('DescribeStacks').map((c) => c.params.StackName);
  assert.ok(asked.length >= 4 && asked.every((n) => n === 'corral-alpha'), String(asked));
  assert.ok(!readdirSync(dir).includes('clusters'), 'no outputs file was written');
});

test('an outputs file or --queue-url/--bucket still win over CloudFormation', async (t) => {
  const dir = tempDir(t);
  const stateDir = path.join(dir, 'state');
  mkdirSync(path.join(stateDir, 'clusters'), { recursive: true });
  // cluster beta has no stack: only its outputs file (as corral up --json prints it) locates it
  writeFileSync(
    path.join(stateDir, 'clusters', 'beta.json'),
    JSON.stringify({
      stackName: 'corral-beta',
      outputs: { QueueUrl: alpha.queueUrl, BucketName: 'alpha-bucket', Region: 'us-east-1' },
    }),
  );
  query.calls.length = 0;
  const fromFile = await runCli(
    ['status', '--cluster', 'beta', '--state-dir', stateDir, '--endpoint-url', query.endpoint, '--json'],
    { cwd: dir, env },
  );
  assert.equal(fromFile.code, 0, fromFile.stderr);
  assert.equal((JSON.parse(fromFile.stdout) as { cluster: string }).cluster, 'beta');
  const explicit = await runCli(
    [
      'status',
      '--cluster',
      'gamma',
      '--outputs',
      path.join(stateDir, 'clusters', 'beta.json'),
      '--endpoint-url',
      query.endpoint,
    ],
    { cwd: dir, env },
  );
  assert.equal(explicit.code, 0, explicit.stderr);
  assert.match(explicit.stdout, /^cluster gamma: queue \d+ pending/);
  const flags = await runCli(
    [
      'status',
      '--cluster',
      'delta',
      '--queue-url',
      alpha.queueUrl,
      '--bucket',
      'alpha-bucket',
      '--endpoint-url',
      query.endpoint,
    ],
    { cwd: dir, env },
  );
  assert.equal(flags.code, 0, flags.stderr);
  assert.equal(
    query.callsOf('DescribeStacks').length,
    0,
    'CloudFormation is not asked when a file or flags say',
  );

  const missingFile = await runCli(
    [
      'status',
      '--cluster',
      'alpha',
      '--outputs',
      path.join(dir, 'nope.json'),
      '--endpoint-url',
      query.endpoint,
    ],
    { cwd: dir, env },
  );
  assert.equal(missingFile.code, 2, missingFile.stderr);
  assert.match(
    missingFile.stderr,
    /^corral: error: --outputs: .*nope\.json does not exist \(fix: .*corral-alpha/m,
  );
});

test('no stack, a deleted stack, a stack without the outputs, no region: exit 2 naming the cluster and the fix, nothing created', async (t) => {
  const dir = tempDir(t);
  query.putStack('corral-creating', { status: 'CREATE_IN_PROGRESS' });
  query.putStack('corral-broken', { status: 'ROLLBACK_COMPLETE', outputs: { BucketName: 'alpha-bucket' } });
  query.putStack('corral-deleted', { outputs: { QueueUrl: alpha.queueUrl, BucketName: 'alpha-bucket' } });
  query.deleteStack('corral-deleted');
  writeFiles(dir, {
    'job.yaml': 'name: j\ntasks:\n  map: { glob: "*.txt" }\n  command: cat {input}\n',
    'x.txt': 'x\n',
  });
  const before = readdirSync(dir).sort();
  const attempt = (args: string[], extraEnv: Record<string, string> = {}) =>
    runCli([...args, '--endpoint-url', query.endpoint], { cwd: dir, env: { ...env, ...extraEnv } });

  const nope = await attempt(['status', '--cluster', 'nope']);
  assert.equal(nope.code, 2, nope.stderr);
  assert.match(
    nope.stderr,
    /^corral: error: --cluster: cluster nope has no stack corral-nope in us-east-1 \(CloudFormation\) and no outputs file .*clusters\/nope\.json \(fix: create it with corral up CLUSTER\.yaml, .*--outputs FILE or --queue-url and --bucket\)$/m,
  );
  const deleted = await attempt(['logs', 'upper', '--cluster', 'deleted']);
  assert.equal(deleted.code, 2, deleted.stderr);
  assert.match(deleted.stderr, /--cluster: cluster deleted has no stack corral-deleted in us-east-1/);

  const creating2 = await attempt(['run', 'job.yaml', '--cluster', 'creating']);
  assert.equal(creating2.code, 2, creating2.stderr);
  assert.match(
    creating2.stderr,
    /--cluster: stack corral-creating of cluster creating in us-east-1 has no QueueUrl and BucketName output \(status CREATE_IN_PROGRESS\) \(fix: wait until corral up has finished/,
  );
  const broken = await attempt(['worker', '--cluster', 'broken', '--no-spot']);
  assert.equal(broken.code, 2, broken.stderr);
  assert.match(
    broken.stderr,
    /--cluster: stack corral-broken of cluster broken in us-east-1 has no QueueUrl output \(status ROLLBACK_COMPLETE\) \(fix: run corral up CLUSTER\.yaml/,
  );
  const noRegion = await attempt(['status', '--cluster', 'alpha'], {
    AWS_REGION: '',
    AWS_DEFAULT_REGION: '',
  });
  assert.equal(noRegion.code, 2, noRegion.stderr);
  assert.match(noRegion.stderr, /--region: no AWS region to look up the stack of cluster alpha in \(fix: /);
  assert.deepEqual(readdirSync(dir).sort(), before, 'nothing created (no state dir, no outputs file)');
  for (const r of [nope, deleted, creating2, broken, noRegion])
    assert.doesNotMatch(r.stderr, /corral-test-secret|internal error/);
});
