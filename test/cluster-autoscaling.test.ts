/**
 * Autoscaling that never kills a busy worker (issue 20), against local peers: fauxqs (SQS + S3),
 * a fake IMDSv2 and, for the Auto Scaling API, the query peer (aws-query-peer.ts). Workers are
 * real: `runClusterWorker` running real task processes, or `corral worker` processes.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { runClusterJob } from '../src/engine/cluster-run.js';
import { loadJobFile } from '../src/spec/job.js';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import { startQueryPeer } from './aws-query-peer.js';
import { type FakeImds, PEER_ENV, type Peer, startFakeImds, startPeer } from './cluster-peer.js';
import { startCli, tempDir, waitFor, writeFiles } from './helpers.js';

let peer: Peer;
let imds: FakeImds;
before(async () => {
  peer = await startPeer();
  imds = await startFakeImds();
});
after(async () => {
  await imds.stop();
  await peer.stop();
});

test('a spot rebalance recommendation stops claiming but finishes the held tasks; nothing is handed back nor run twice (issue 20, item 4)', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  mkdirSync(marks);
  const files: Record<string, string> = {
    'job.yaml': `name: rebal
tasks:
  map: { glob: "in/*.txt" }
  command: 'touch "${marks}/{input.stem}.$W.$$"; sleep 1; tr a-z A-Z < {input}'
outputs: out/{input.stem}.txt
lease: 20s
`,
  };
  for (let i = 0; i < 6; i++) files[`in/t${i}.txt`] = `task ${i}\n`;
  writeFiles(dir, files);
  const { queueUrl, dlqUrl } = await peer.createQueues('rebal');
  await peer.createBucket('rebal-bucket');
  const target = {
    name: 'rebal',
    queueUrl,
    deadLetterQueueUrl: dlqUrl,
    bucket: 'rebal-bucket',
    region: 'us-east-1',
  };
  const run = runClusterJob(loadJobFile(path.join(dir, 'job.yaml')), target, {
    stateDir: path.join(dir, '.corral'),
    endpointUrl: peer.endpoint,
    tickMs: 200,
  });
  await waitFor(() => (peer.requests.get('sqs:SendMessageBatch') ?? 0) > 0, 60_000);
  const lines: string[] = [];
  const common = { ...target, endpointUrl: peer.endpoint, idleExitMs: 5000, spotIntervalMs: 100 };
  process.env.W = 'w1';
  const first = runClusterWorker({
    ...common,
    id: 'w1',
    prefetch: 2,
    cacheDir: path.join(dir, 'w1'),
    imdsEndpoint: imds.endpoint,
    log: (l) => lines.push(l),
  });
  // the recommendation while w1 runs its first task
  await waitFor(() => readdirSync(marks).length > 0, 60_000);
  imds.rebalance();
  const r1 = await first;
  assert.equal(r1.reason, 'rebalance', lines.join('\n'));
  assert.match(lines.join('\n'), /spot rebalance recommendation; claiming no new task/);
  const ranOnW1 = readdirSync(marks).filter((f) => f.split('.')[1] === 'w1');
  assert.ok(ranOnW1.length >= 1 && ranOnW1.length < 6, `w1 ran ${ranOnW1.length} task(s)`);
  assert.equal(r1.ran, ranOnW1.length, 'every task w1 started, it finished');
  // the rest runs on another worker; no task ran twice (nothing held was handed back)
  process.env.W = 'w2';
  const r2 = await runClusterWorker({
    ...common,
    id: 'w2',
    spot: false,
    cacheDir: path.join(dir, 'w2'),
    log: () => {},
  });
  delete process.env.W;
  const summary = await run;
  assert.equal(summary.status, 'succeeded');
  assert.equal(r1.ran + r2.ran, 6);
  const stems = readdirSync(marks).map((f) => f.split('.')[0]);
  assert.equal(new Set(stems).size, 6);
  assert.equal(stems.length, 6, `each task ran once: ${stems.sort().join(' ')}`);
  for (let i = 0; i < 6; i++)
    assert.equal(readFileSync(path.join(dir, 'out', `t${i}.txt`), 'utf8'), `TASK ${i}\n`);
  assert.equal(imds.tokenless, 0, 'IMDSv2 only');
});

test('corral worker protects its host while it holds work; idle, it terminates it through the group with a decrement, and at the minimum it stays up (issue 20, item 2)', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  mkdirSync(marks);
  const files: Record<string, string> = {
    'job.yaml': `name: prot
tasks:
  map: { glob: "in/*.txt" }
  command: 'touch "${marks}/{input.stem}.$CORRAL_TEST_WORKER"; sleep 1; tr a-z A-Z < {input}'
outputs: out/{input.stem}.txt
lease: 20s
`,
  };
  for (let i = 0; i < 4; i++) files[`in/t${i}.txt`] = `task ${i}\n`;
  writeFiles(dir, files);
  const { queueUrl, dlqUrl } = await peer.createQueues('prot');
  await peer.createBucket('prot-bucket');
  // the Auto Scaling API on its own peer, which forwards SQS and S3 to fauxqs: one endpoint
  const asg = await startQueryPeer({ upstream: peer.endpoint });
  const ids = [asg.addInstance({}), asg.addInstance({})];
  const group = asg.addGroup('corral-prot-cpu', { min: 1, max: 4, instances: ids });
  const hosts = await Promise.all(ids.map((instanceId) => startFakeImds({ instanceId })));
  t.after(async () => {
    for (const h of hosts) await h.stop();
    await asg.stop();
  });
  const target = {
    name: 'prot',
    queueUrl,
    deadLetterQueueUrl: dlqUrl,
    bucket: 'prot-bucket',
    region: 'us-east-1',
  };
  const run = runClusterJob(loadJobFile(path.join(dir, 'job.yaml')), target, {
    stateDir: path.join(dir, '.corral'),
    endpointUrl: peer.endpoint,
    tickMs: 200,
  });
  await waitFor(() => (peer.requests.get('sqs:SendMessageBatch') ?? 0) > 0, 60_000);
  const workers = ['w1', 'w2'].map((w, i) => {
    const c = startCli(
      [
        'worker',
        '--queue-url',
        queueUrl,
        '--dlq-url',
        dlqUrl,
        '--bucket',
        'prot-bucket',
        '--endpoint-url',
        asg.endpoint,
        '--cache-dir',
        path.join(dir, w),
        '--idle-exit',
        '2',
        '--prefetch',
        '1',
        '--auto-scaling',
      ],
      { cwd: dir, env: { ...PEER_ENV, CORRAL_TEST_WORKER: w, CORRAL_IMDS_ENDPOINT: hosts[i]!.endpoint } },
    );
    let err = '';
    c.stderr!.on('data', (d) => {
      err += d;
    });
    return Object.assign(c, { w, instanceId: ids[i]!, err: () => err });
  });
  t.after(() => {
    for (const c of workers) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  // busy: a worker's host is protected while its task runs (a marker is written as a task starts)
  let finished = false;
  const ended = run.finally(() => {
    finished = true;
  });
  const seen = new Set<string>();
  for (let i = 0; i < 1200 && !finished; i++) {
    for (const f of readdirSync(marks)) {
      const w = workers.find((c) => c.w === f.split('.')[1])!;
      if (seen.has(w.w)) continue;
      seen.add(w.w);
      assert.equal(group.instances.get(w.instanceId)?.protected, true, `${w.w} busy and protected`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(seen.size >= 1, 'a worker ran a task');
  const summary = await ended;
  assert.equal(summary.status, 'succeeded');

  // idle: one leaves through the group (2 > min 1), the other stays up at the minimum
  const gone = await waitFor(() => workers.find((c) => c.exitCode !== null), 60_000);
  const stays = workers.find((c) => c !== gone)!;
  const r = await gone.result;
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stderr,
    new RegExp(
      `idle: terminating instance ${gone.instanceId} through group corral-prot-cpu \\(desired 2 -> 1\\)`,
    ),
  );
  await waitFor(() => /staying up/.test(stays.err()), 30_000);
  await new Promise((res) => setTimeout(res, 3000));
  assert.equal(stays.exitCode, null, `the worker at the minimum is still running: ${stays.err()}`);
  assert.equal(group.desired, 1);
  assert.deepEqual([...group.instances.keys()], [stays.instanceId]);
  assert.equal(group.instances.get(stays.instanceId)!.protected, false, 'idle: not protected');
  const terminations = asg
    .callsOf('TerminateInstanceInAutoScalingGroup')
    .filter((c) => !/Refused/.test(c.action));
  assert.ok(terminations.length >= 1 && terminations.length <= 2, JSON.stringify(terminations));
  for (const c of terminations) assert.equal(c.params.ShouldDecrementDesiredCapacity, 'true');
  // protection was lifted before the host left, and every change was a real change
  for (const w of workers) {
    const changes = asg
      .callsOf('SetInstanceProtection')
      .filter((c) => c.params['InstanceIds.member.1'] === w.instanceId)
      .map((c) => c.params.ProtectedFromScaleIn);
    for (let i = 0; i < changes.length; i++) assert.equal(changes[i], i % 2 === 0 ? 'true' : 'false');
    assert.equal(changes.length % 2, 0, `${w.w}: protection lifted when idle: ${changes}`);
  }
  stays.kill('SIGTERM');
  assert.equal((await stays.result).code, 0);
  for (const h of hosts) assert.equal(h.tokenless, 0, 'IMDSv2 only');
});
