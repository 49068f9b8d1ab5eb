/**
 * The AWS runtime across processes, against fauxqs on 127.0.0.1: a coordinator (`corral run
 * --cluster`, the built CLI) and three `corral worker` processes, each with its own fake IMDSv2.
 * One worker gets a spot notice mid-task, one is SIGKILLed mid-task, and the coordinator is
 * SIGKILLed and started again with an empty state dir. Task commands leave a marker file per
 * execution (`<stem>.<worker>.<pid>`) in a shared folder, which counts executions.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import {
  committedText,
  type FakeImds,
  PEER_ENV,
  type Peer,
  startFakeImds,
  startPeer,
} from './cluster-peer.js';
import { runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';

let peer: Peer;
let imds: FakeImds[];
before(async () => {
  peer = await startPeer();
  imds = await Promise.all([startFakeImds(), startFakeImds(), startFakeImds()]);
});
after(async () => {
  for (const i of imds) await i.stop();
  await peer.stop();
});

const TASKS = 10;

async function keys(bucket: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  for (let page = 0; page < 100; page++) {
    const r = await peer.s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const c of r.Contents ?? []) if (c.Key) out.push(c.Key.slice(prefix.length));
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
    if (!token) break;
  }
  return out;
}

test('3 corral worker processes + corral run --cluster: spot notice, SIGKILLed worker, coordinator restarted with an empty state dir', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  mkdirSync(marks);
  const files: Record<string, string> = {
    'job.yaml': `name: dist
tasks:
  map: { glob: "in/*.txt" }
  command: 'touch "$MARK/{input.stem}.$CORRAL_TEST_WORKER.$$"; sleep 1; tr a-z A-Z < {input}'
outputs: out/{input.stem}.txt
lease: 3s
`,
  };
  for (let i = 0; i < TASKS; i++) files[`in/t${i}.txt`] = `task ${i}\n`;
  writeFiles(dir, files);
  const { queueUrl, dlqUrl } = await peer.createQueues('dist');
  await peer.createBucket('dist-bucket');
  const where = [
    '--queue-url',
    queueUrl,
    '--dlq-url',
    dlqUrl,
    '--bucket',
    'dist-bucket',
    '--endpoint-url',
    peer.endpoint,
  ];
  const env = { ...PEER_ENV, MARK: marks, CORRAL_CLUSTER_TICK_MS: '200', CORRAL_SPOT_INTERVAL_MS: '200' };
  const execs = () => readdirSync(marks).map((f) => f.split('.'));
  const runsOf = (stem: string) => execs().filter(([s]) => s === stem);

  const coordinator = startCli(
    ['run', 'job.yaml', '--cluster', 'dist', '--state-dir', path.join(dir, 'state1'), ...where],
    {
      cwd: dir,
      env,
    },
  );
  const workers = ['w1', 'w2', 'w3'].map((id, i) => {
    const w = startCli(
      ['worker', ...where, '--cache-dir', path.join(dir, id), '--idle-exit', '30', '--prefetch', '1'],
      {
        cwd: dir,
        env: { ...env, CORRAL_TEST_WORKER: id, CORRAL_IMDS_ENDPOINT: imds[i]!.endpoint },
      },
    );
    let err = '';
    w.stderr!.on('data', (d) => {
      err += d;
    });
    return Object.assign(w, { id, err: () => err });
  });
  const [w1, w2, w3] = workers as [(typeof workers)[0], (typeof workers)[0], (typeof workers)[0]];
  t.after(() => {
    for (const c of [coordinator, ...workers])
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  // Spot notice while w1 runs a task: its leases must be back within 1 s.
  await waitFor(() => execs().some(([, w]) => w === 'w1'), 30_000);
  imds[0]!.notice();
  const handed = await waitFor(() => /handed back (\d+) lease\(s\) in (\d+) ms/.exec(w1.err()), 10_000);
  const seenToBack = Date.now() - imds[0]!.servedAt!;
  const releaseMs = Number(handed[2]);
  assert.ok(Number(handed[1]) >= 1, `w1 held a lease at the notice: ${handed[0]}`);
  assert.ok(
    releaseMs < 1000 && seenToBack < 1000,
    `leases back ${releaseMs} ms after the worker saw the notice (${seenToBack} ms from IMDS serving it to the log line); must be < 1000`,
  );
  t.diagnostic(
    `spot: ${handed[1]} lease(s) back in ${releaseMs} ms (IMDS served → logged: ${seenToBack} ms)`,
  );

  // SIGKILL w2 mid-task: its task comes back after the 3 s lease and completes elsewhere.
  const w2runs = await waitFor(() => {
    const runs = execs().filter(([, w]) => w === 'w2');
    return runs.length > 0 && runs; // an empty list is truthy: wait for a real run
  }, 30_000);
  w2.kill('SIGKILL');
  const killedStem = w2runs[0]![0]!;

  // SIGKILL the coordinator once some (not all) outputs are committed.
  const committedPrefix = 'jobs/dist/committed/';
  let before: string[] = [];
  for (let i = 0; i < 300; i++) {
    before = await keys('dist-bucket', committedPrefix);
    if (before.length >= 3) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  coordinator.kill('SIGKILL');
  await coordinator.result;
  assert.ok(
    before.length >= 3 && before.length < TASKS,
    `killed the coordinator at ${before.length} committed`,
  );
  const committedAtKill = await keys('dist-bucket', committedPrefix);
  const runsAtKill = new Map(committedAtKill.map((k) => [k, runsOf(path.basename(k, '.txt')).length]));

  // A new coordinator with an empty state dir resumes from the bucket.
  const again = await runCli(
    ['run', 'job.yaml', '--cluster', 'dist', '--state-dir', path.join(dir, 'state2'), ...where],
    {
      cwd: dir,
      env,
      timeoutMs: 60_000,
    },
  );
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /\d+ already committed, 0 enqueued \(resumed from the bucket\)/);
  assert.match(
    again.stdout,
    new RegExp(`job dist succeeded on cluster dist: ${TASKS}/${TASKS} tasks done, 0 failed`),
  );

  for (const w of [w1, w3]) if (w.exitCode === null) w.kill('SIGTERM');
  const [r1, , r3] = await Promise.all(workers.map((w) => w.result));
  assert.equal(r1!.code, 0, r1!.stderr);
  assert.match(w1.err(), /stopped for a spot interruption/);
  assert.equal(r3!.code, 0, r3!.stderr);

  // Every output is committed once, with the right content, downloaded by the coordinator.
  const committed = (await keys('dist-bucket', committedPrefix)).sort();
  assert.deepEqual(committed, [...Array(TASKS).keys()].map((i) => `out/t${i}.txt`).sort());
  for (const k of committed) {
    const c = peer.conditionalPuts.get(`/dist-bucket/${committedPrefix}${k}`);
    assert.equal(c?.accepted, 1, `${k}: ${c?.accepted} commit markers accepted`);
    assert.equal(committedText(peer, 'dist-bucket', `${committedPrefix}${k}`), `TASK ${k.slice(5, -4)}\n`);
  }
  // small outputs live in their markers: no attempt object is uploaded, none is left behind
  assert.deepEqual(await keys('dist-bucket', 'jobs/dist/attempts/'), []);
  for (let i = 0; i < TASKS; i++) {
    assert.equal(readFileSync(path.join(dir, 'out', `t${i}.txt`), 'utf8'), `TASK ${i}\n`);
    assert.ok(runsOf(`t${i}`).length >= 1);
  }
  // The SIGKILLed worker's task ran again on another worker.
  assert.ok(
    runsOf(killedStem).some(([, w]) => w !== 'w2'),
    `task ${killedStem} re-ran after w2 died: ${JSON.stringify(runsOf(killedStem))}`,
  );
  // Nothing committed before the coordinator died ran again.
  for (const [k, n] of runsAtKill) assert.equal(runsOf(path.basename(k, '.txt')).length, n, `${k} re-ran`);
  for (const i of imds) assert.equal(i.tokenless, 0, 'IMDSv2 only');

  // status and logs --cluster read the queue and the bucket.
  const st = await runCli(['status', '--cluster', 'dist', ...where, '--json'], { cwd: dir, env });
  assert.equal(st.code, 0, st.stderr);
  const s = JSON.parse(st.stdout) as {
    queue: { pending: number };
    jobs: Array<{ job: string; done: number; total: number; failed: number; workers: string[] }>;
  };
  assert.equal(s.queue.pending, 0);
  assert.deepEqual(
    s.jobs.map((j) => [j.job, j.done, j.total, j.failed]),
    [['dist', TASKS, TASKS, 0]],
  );
  assert.ok(s.jobs[0]!.workers.length >= 1 && s.jobs[0]!.workers.length <= 3, String(s.jobs[0]!.workers));
  const text = await runCli(['status', 'dist', '--cluster', 'dist', ...where], { cwd: dir, env });
  assert.match(text.stdout, /job dist: 10\/10 done, 0 failed; workers seen: \d/);
  const logs = await runCli(['logs', 'dist', '0', '--cluster', 'dist', ...where], { cwd: dir, env });
  assert.equal(logs.code, 0, logs.stderr);
  assert.match(logs.stdout, /task 0 of job dist|\S/);
  t.diagnostic(
    `executions: ${execs().length} for ${TASKS} tasks; ${committedAtKill.length} committed when the coordinator was killed`,
  );
});
