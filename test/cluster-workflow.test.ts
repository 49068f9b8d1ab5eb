/**
 * Workflows on the cluster queue (SQS + S3 on fauxqs): steps with `outputsOf`, `reduce` and
 * `needs`, failure propagation, a HyperFlow workflow whose signals are files, and a coordinator
 * SIGKILLed mid-DAG and started again with an empty state folder.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { LoadedJob } from '../src/spec/job.js';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
import { runJob } from '../src/transport/local.js';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import { loadJob } from '../src/workflow/load-job.js';
import { clusterFlags, createCluster, PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { ROOT, runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';
import { inputs, mosaic, N } from './hyperflow-mosaic.js';

let peer: Peer;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

async function keys(bucket: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  do {
    const r = await peer.s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const c of r.Contents ?? []) out.push(c.Key!.slice(prefix.length));
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/** A cluster (queues + bucket) on the peer, and a way to run in-process workers against it. */
async function cluster(name: string) {
  const target = await createCluster(peer, name);
  const workers = (dir: string, n: number) => {
    const ac = new AbortController();
    const runs = Array.from({ length: n }, (_, i) =>
      runClusterWorker(
        {
          ...target,
          endpointUrl: peer.endpoint,
          id: `w${i}`,
          cacheDir: path.join(dir, `w${i}`),
          idleExitMs: 60_000,
          spot: false,
          log: () => {},
        },
        ac.signal,
      ),
    );
    return {
      stop: async () => {
        ac.abort();
        return Promise.all(runs);
      },
    };
  };
  /** Runs a job with the coordinator in this process and `n` workers beside it. */
  const run = async (job: LoadedJob, dir: string, n = 2) => {
    const pool = workers(dir, n);
    try {
      return await runClusterJob(job, target, {
        stateDir: path.join(dir, 'state'),
        endpointUrl: peer.endpoint,
        tickMs: 150,
      });
    } finally {
      await pool.stop();
    }
  };
  return { target, workers, run };
}

test('steps on the cluster: map → map over outputs → reduce → a step that needs it; a failure skips only its own path', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/a.txt': 'alpha\n',
    'in/b.txt': 'beta\n',
    'in/c.txt': 'gamma delta\n',
    'job.yaml': `name: cwf
steps:
  - name: up
    map: { glob: "in/*.txt" }
    command: 'tr a-z A-Z < {input}'
    outputs: out/up/{input.stem}.txt
  - name: len
    map: { outputsOf: up }
    command: 'wc -c < {input} | tr -d " "'
    outputs: out/len/{index}.txt
  - name: total
    reduce: len
    command: 'cat {inputs} | awk "{s+=\\$1} END {print s}"'
    outputs: out/total.txt
  - name: report
    needs: [total]
    # reads a file of the step it needs by its path, and one of an earlier step
    command: 'echo "total $(cat out/total.txt)"; cat out/up/a.txt'
    outputs: out/report.txt
  - name: picky
    map: { outputsOf: up }
    command: 'if grep -q BETA {input}; then echo no beta >&2; exit 3; fi; cat {input}'
    outputs: out/picky/{index}.txt
    retries: { maxAttempts: 1 }
  - name: after-picky
    map: { outputsOf: picky }
    command: 'cat {input}'
    outputs: out/after/{index}.txt
`,
  });
  const { target, run } = await cluster('cwf');
  const summary = await run(loadJob(path.join(dir, 'job.yaml')), dir);
  // up 3 + len 3 + total 1 + report 1 + picky 3 (one dead) + after-picky 3 (one skipped)
  assert.equal(summary.status, 'failed');
  assert.deepEqual(
    { done: summary.counts.done, dead: summary.counts.dead, skipped: summary.counts.skipped },
    { done: 12, dead: 1, skipped: 1 },
  );
  assert.deepEqual(
    summary.deadLetters.map((d) => d.key),
    ['picky/1'],
  );
  assert.equal(summary.failedPaths.length, 1);
  assert.match(summary.failedPaths[0]!, /^picky\/1 \(out\/up\/\w+\.txt\) failed → after-picky\/1 skipped$/);
  const read = (f: string) => readFileSync(path.join(dir, f), 'utf8');
  // the results are in the job folder, as after a local run
  assert.equal(read('out/up/c.txt'), 'GAMMA DELTA\n');
  assert.equal(read('out/total.txt').trim(), String(6 + 5 + 12));
  assert.equal(read('out/report.txt'), 'total 23\nALPHA\n');
  assert.deepEqual(readdirSync(path.join(dir, 'out/after')).sort(), ['0.txt', '2.txt']);
  // every output committed once
  const committed = await keys(target.bucket, 'jobs/cwf/committed/');
  for (const k of committed.filter((c) => c.startsWith('out/')))
    assert.equal(peer.conditionalPuts.get(`/${target.bucket}/jobs/cwf/committed/${k}`)?.accepted, 1, k);
  // small outputs live in their markers: no attempt object
  assert.deepEqual(await keys(target.bucket, 'jobs/cwf/attempts/'), []);
  assert.equal(committed.filter((c) => c.startsWith('out/')).length, 12);
});

test('a HyperFlow workflow on the cluster: signals are files, staged in from and out to the bucket; same results as a local run', async (t) => {
  const dir = tempDir(t);
  const localDir = path.join(dir, 'local');
  const remoteDir = path.join(dir, 'remote');
  for (const d of [localDir, remoteDir]) {
    mkdirSync(d);
    // only what the repository has: the rest is written by the runs
    for (const f of ['workflow.json', 'tiles'])
      cpSync(path.join(ROOT, 'examples/hyperflow', f), path.join(d, f), { recursive: true });
  }
  const local = await runJob(loadJob(path.join(localDir, 'workflow.json')), {
    stateDir: path.join(localDir, '.corral'),
  });
  assert.equal(local.status, 'succeeded');

  const { run } = await cluster('chf');
  const job = loadJob(path.join(remoteDir, 'workflow.json'));
  const summary = await run(job, dir);
  assert.equal(summary.status, 'succeeded', JSON.stringify(summary));
  assert.equal(summary.counts.done, local.counts.done);
  assert.deepEqual(summary.missingOutputs, []);
  const outs = (job.hyperflow ?? []).flatMap((p) => p.payload.outs ?? []);
  assert.ok(outs.includes('mosaic.txt'));
  for (const f of outs)
    assert.equal(
      readFileSync(path.join(remoteDir, f), 'utf8'),
      readFileSync(path.join(localDir, f), 'utf8'),
      `${f} differs from the local run`,
    );
});

test('a workflow survives its coordinator: SIGKILLed mid-DAG, restarted with an empty state folder, nothing committed runs again', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  mkdirSync(marks);
  const n = 8;
  const files: Record<string, string> = {
    'job.yaml': `name: ckill
steps:
  - name: first
    map: { glob: "in/*.txt" }
    command: 'touch "$MARK/first-{input.stem}.$$"; sleep 0.4; tr a-z A-Z < {input}'
    outputs: out/first/{input.stem}.txt
  - name: second
    map: { outputsOf: first }
    command: 'touch "$MARK/second-{index}.$$"; sleep 0.4; rev < {input}'
    outputs: out/second/{index}.txt
  - name: all
    reduce: second
    command: 'touch "$MARK/all-0.$$"; cat {inputs}'
    outputs: out/all.txt
`,
  };
  for (let i = 0; i < n; i++) files[`in/t${i}.txt`] = `task ${i}\n`;
  writeFiles(dir, files);
  const { target } = await cluster('ckill');
  const where = clusterFlags(peer, target);
  const env = { ...PEER_ENV, MARK: marks, CORRAL_CLUSTER_TICK_MS: '200' };
  const coordinator = startCli(
    ['run', 'job.yaml', '--cluster', 'ckill', '--state-dir', path.join(dir, 'state1'), ...where],
    { cwd: dir, env },
  );
  const ws = ['w1', 'w2'].map((id) =>
    startCli(['worker', ...where, '--cache-dir', path.join(dir, id), '--idle-exit', '60', '--no-spot'], {
      cwd: dir,
      env,
    }),
  );
  t.after(() => {
    for (const c of [coordinator, ...ws]) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  const committed = () => keys(target.bucket, 'jobs/ckill/committed/out/second/');
  // kill it once some tasks of the second step (the middle of the DAG) are committed
  await waitFor(async () => (await committed()).length >= 2, 60_000);
  coordinator.kill('SIGKILL');
  await coordinator.result;
  const atKill = new Set([
    ...(await keys(target.bucket, 'jobs/ckill/committed/out/')).map((k) => k.replace(/\.txt$/, '')),
  ]);
  const runs = () => readdirSync(marks).map((f) => f.split('.')[0]!);
  const runsAtKill = runs();
  assert.ok(atKill.size < 2 * n + 1, `killed before the end (${atKill.size} committed)`);

  const again = await runCli(
    ['run', 'job.yaml', '--cluster', 'ckill', '--state-dir', path.join(dir, 'state2'), ...where, '--json'],
    { cwd: dir, env, timeoutMs: 90_000 },
  );
  for (const w of ws) w.kill('SIGTERM');
  await Promise.all(ws.map((w) => w.result));
  assert.equal(again.code, 0, again.stderr);
  const summary = JSON.parse(again.stdout) as { status: string; resumed: boolean; counts: { done: number } };
  assert.equal(summary.status, 'succeeded');
  assert.equal(summary.resumed, true, again.stderr + again.stdout);
  assert.equal(summary.counts.done, 2 * n + 1);
  const expected = Array.from({ length: n }, (_, i) => `${i} KSAT\n`).join('');
  assert.equal(readFileSync(path.join(dir, 'out/all.txt'), 'utf8'), expected);
  // a task committed before the kill ran exactly as often after it as before (not again)
  const stemOf = (k: string) => {
    const [, step, rest] = /^(first|second)\/(.*)$/.exec(k) ?? [];
    return step === 'first' ? `first-${rest}` : `second-${rest}`;
  };
  for (const k of atKill) {
    if (k === 'all') continue;
    const s = stemOf(k);
    assert.equal(
      runs().filter((r) => r === s).length,
      runsAtKill.filter((r) => r === s).length,
      `${k} ran again after the coordinator restarted`,
    );
  }
  t.diagnostic(
    `${atKill.size} outputs committed at the kill; ${runs().length} executions for ${2 * n + 1} tasks`,
  );
});

test('the 26-process HyperFlow mosaic (index form, {{vars}}) via corral run --cluster: every process starts after its inputs are committed', async (t) => {
  const dir = tempDir(t);
  const trace = path.join(dir, 'trace.log');
  writeFiles(dir, {
    ...inputs(),
    'workflow.json': JSON.stringify(mosaic('index', trace)),
  });
  const { target, workers } = await cluster('cmos');
  const pool = workers(dir, 2);
  const where = ['--queue-url', target.queueUrl, '--bucket', target.bucket, '--endpoint-url', peer.endpoint];
  let r: Awaited<ReturnType<typeof runCli>>;
  try {
    r = await runCli(
      ['run', 'workflow.json', '--var', 'scale=2.5', '--cluster', 'cmos', ...where, '--json'],
      {
        cwd: dir,
        env: { ...PEER_ENV, CORRAL_CLUSTER_TICK_MS: '150' },
        timeoutMs: 120_000,
      },
    );
  } finally {
    await pool.stop();
  }
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(JSON.parse(r.stdout).counts.done, 26);
  const mosaicTxt = readFileSync(path.join(dir, 'mosaic.txt'), 'utf8');
  assert.equal(mosaicTxt.split('\n').filter((l) => l.startsWith('projected tile')).length, N);
  assert.match(mosaicTxt, /projected tile 3 x2\.5/);
  // when each signal was committed (commit markers) vs when each process started (trace)
  const committedAt = new Map<string, number>();
  for (const k of await keys(target.bucket, 'jobs/mosaic/committed/')) {
    if (k.startsWith('.tasks/')) continue;
    const body = await peer.s3.send(
      new GetObjectCommand({ Bucket: target.bucket, Key: `jobs/mosaic/committed/${k}` }),
    );
    committedAt.set(k, Date.parse(JSON.parse(await body.Body!.transformToString()).committedAt));
  }
  const started = new Map(
    readFileSync(trace, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' '))
      .map(([, ns, out]) => [out!, Number(BigInt(ns!) / 1_000_000n)] as const),
  );
  const wf = mosaic('name', trace);
  let edges = 0;
  for (const p of wf.processes) {
    const out = p.outs[0] as string;
    for (const input of p.ins as string[]) {
      if (input.startsWith('in_')) continue; // workflow inputs exist before the run
      edges++;
      const ready = committedAt.get(input);
      assert.ok(ready !== undefined, `${input} was committed`);
      // ms clocks of one machine: the consumer started no earlier than its input's commit
      assert.ok(started.get(out)! >= ready! - 1, `${out} started before its input ${input} was committed`);
    }
  }
  assert.equal(edges, 2 * (N - 1) + (N - 1) + 1 + 2 * N + N);
});
