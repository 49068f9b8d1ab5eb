/**
 * Several tasks per SQS message (bundles, issue 24 item 1), against fauxqs on 127.0.0.1: a bundle
 * is sent, received, deleted and committed as one (one conditional PUT of `bundles/ID` holds the
 * results of its tasks), and every guarantee of one task per message holds: each task's result is
 * committed once, the first attempt of the bundle wins, a failed task is retried and a task that
 * fails every attempt is a dead letter without holding back the rest, a dead or interrupted worker's
 * bundle runs again whole, and a coordinator started again with an empty state folder runs nothing
 * committed again. Task commands append a line per execution to `marks/<index>`.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { loadJobFile } from '../src/spec/job.js';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
import { bundlesOf, tasksPerMessage } from '../src/transport/cluster/cluster-transport.js';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import {
  clusterFlags,
  committedResults,
  createCluster,
  type FakeImds,
  PEER_ENV,
  type Peer,
  startFakeImds,
  startPeer,
} from './cluster-peer.js';
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

/** Executions per task index, from the marks folder. */
function executions(dir: string): Map<number, number> {
  const m = new Map<number, number>();
  const marks = path.join(dir, 'marks');
  if (!existsSync(marks)) return m;
  for (const f of readdirSync(marks))
    m.set(Number(f), readFileSync(path.join(marks, f), 'utf8').split('\n').filter(Boolean).length);
  return m;
}

const sum = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0);

async function depth(queueUrl: string): Promise<number> {
  const r = await peer.sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
    }),
  );
  return (
    Number(r.Attributes?.ApproximateNumberOfMessages ?? 0) +
    Number(r.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0)
  );
}

const cluster = (name: string) => createCluster(peer, name, { visibility: 3, maxReceiveCount: 1000 });

test('how many tasks go in one message: one each up to 127 waiting, then n/64, at most 50; CORRAL_TASKS_PER_MESSAGE sets it', () => {
  assert.equal(tasksPerMessage(1, {}), 1);
  assert.equal(tasksPerMessage(127, {}), 1);
  assert.equal(tasksPerMessage(128, {}), 2);
  assert.equal(tasksPerMessage(2000, {}), 31);
  assert.equal(tasksPerMessage(10_000, {}), 50);
  assert.equal(tasksPerMessage(1_000_000, {}), 50);
  assert.equal(tasksPerMessage(3, { CORRAL_TASKS_PER_MESSAGE: '8' }), 8);
  assert.equal(tasksPerMessage(3, { CORRAL_TASKS_PER_MESSAGE: '500' }), 50);
  assert.equal(tasksPerMessage(300, { CORRAL_TASKS_PER_MESSAGE: 'x' }), 4);
  // a message body is at most 256 KiB: long tasks (a line input of 20 KB) go fewer to a bundle
  const small = Array.from({ length: 120 }, (_, i) => ({ key: String(i), line: 'x' }));
  assert.deepEqual(
    bundlesOf(small, 50).map((b) => b.length),
    [50, 50, 20],
  );
  const long = Array.from({ length: 30 }, (_, i) => ({ key: String(i), line: 'x'.repeat(20_000) }));
  const sizes = bundlesOf(long, 50).map((b) => b.length);
  assert.deepEqual(sizes, [9, 9, 9, 3]);
  assert.ok(bundlesOf(long, 50).every((b) => JSON.stringify(b).length < 256 * 1024));
});

test('bundles of 6: one marker commits each bundle, a task failing once is retried in its bundle, one failing every attempt is dead while its bundle commits the rest; an empty state folder resumes without running anything again', async (t) => {
  const dir = tempDir(t);
  const N = 24;
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: N }, (_, i) => `item-${i}`).join('\n')}\n`,
    // task 5 fails its first attempt, task 11 every attempt
    'job.yaml': `name: bun
tasks:
  map: { lines: items.txt }
  command: 'echo x >> "$MARK/{index}"; if [ {index} = 11 ]; then exit 3; fi; if [ {index} = 5 ] && [ "$(wc -l < "$MARK/5")" -lt 2 ]; then exit 4; fi; echo {input}'
outputs: out/{index}.txt
lease: 30s
retries: { maxAttempts: 2, backoff: { initial: 100ms, factor: 1, max: 100ms } }
`,
  });
  mkdirSync(path.join(dir, 'marks'));
  process.env.MARK = path.join(dir, 'marks');
  process.env.CORRAL_TASKS_PER_MESSAGE = '6';
  t.after(() => {
    delete process.env.CORRAL_TASKS_PER_MESSAGE;
  });
  const target = await cluster('bun');
  peer.requests.clear();
  const run = (state: string) =>
    Promise.all([
      runClusterJob(loadJobFile(path.join(dir, 'job.yaml')), target, {
        stateDir: path.join(dir, state),
        endpointUrl: peer.endpoint,
        tickMs: 100,
        log: () => {},
      }),
      ...['a', 'b'].map((id) =>
        runClusterWorker({
          ...target,
          id,
          endpointUrl: peer.endpoint,
          cacheDir: path.join(dir, `w-${id}`),
          idleExitMs: 1500,
          spot: false,
          log: () => {},
        }),
      ),
    ]);
  const [summary] = await run('state1');
  assert.equal(summary.status, 'failed', 'task 11 is dead');
  assert.equal(summary.counts.done, N - 1);
  assert.equal(summary.counts.dead, 1);

  const results = committedResults(peer, target.bucket, 'bun');
  const want = Array.from({ length: N }, (_, i) => i).filter((i) => i !== 11);
  assert.deepEqual(results.map((r) => r.key).sort(), want.map((i) => `out/${i}.txt`).sort(), 'each once');
  const markers = new Set(results.map((r) => r.marker));
  assert.equal(markers.size, 4, `${N} tasks in bundles of 6: ${[...markers].join(', ')}`);
  for (const r of results) {
    assert.match(r.marker, /^jobs\/bun\/bundles\//);
    assert.equal(r.accepted, 1, r.marker);
    assert.equal(r.text, `item-${r.key.slice(4, -4)}\n`, r.key);
  }
  // downloaded from the bundles' markers into the job folder
  for (const i of want) assert.equal(readFileSync(path.join(dir, 'out', `${i}.txt`), 'utf8'), `item-${i}\n`);
  assert.equal(existsSync(path.join(dir, 'out', '11.txt')), false);
  // the retry ran in its bundle, on the worker that held it; the dead task ran its 2 attempts
  const ex = executions(dir);
  assert.equal(ex.get(5), 2);
  assert.equal(ex.get(11), 2);
  assert.equal(sum(ex), N + 2, 'no other task ran twice');
  assert.deepEqual(peer.objectKeys(target.bucket, 'jobs/bun/failed/'), ['11']);
  assert.equal(await depth(target.deadLetterQueueUrl), 1, 'task 11 in the dead-letter queue');
  assert.equal(await depth(target.queueUrl), 0, 'every bundle message deleted');
  // 4 messages for 24 tasks: sends, receives and deletes are per bundle, not per task
  const sqs = [...peer.requests].filter(([k]) => k.startsWith('sqs:')).reduce((a, [, v]) => a + v, 0);
  t.diagnostic(`requests: ${JSON.stringify(Object.fromEntries(peer.requests))}`);
  assert.ok(
    (peer.requests.get('s3:PUT') ?? 0) < N,
    `fewer PUTs than tasks: ${peer.requests.get('s3:PUT')} (4 markers, 2 failure records, the job's records)`,
  );
  assert.ok(sqs < 60, `SQS requests ${sqs}`);

  // a coordinator with an empty state folder takes the results in from the bundles: nothing runs
  const [again] = await run('state2');
  assert.equal(again.counts.done, N - 1);
  assert.equal(again.counts.dead, 1);
  assert.equal(sum(executions(dir)), N + 2, 'nothing ran again');
  assert.equal(committedResults(peer, target.bucket, 'bun').length, N - 1);
});

test('a worker SIGKILLed and one told of a spot interruption, each mid-bundle: their bundles run again whole elsewhere and every task is committed once, in one marker', async (t) => {
  const dir = tempDir(t);
  const N = 60;
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: N }, (_, i) => `item-${i}`).join('\n')}\n`,
    'job.yaml': `name: bunk
tasks:
  map: { lines: items.txt }
  command: 'echo "$CORRAL_TEST_WORKER" >> "$MARK/{index}"; sleep 0.1; echo {input}'
outputs: out/{index}.txt
lease: 3s
`,
  });
  mkdirSync(path.join(dir, 'marks'));
  const target = await cluster('bunk');
  const env = {
    ...PEER_ENV,
    MARK: path.join(dir, 'marks'),
    CORRAL_TASKS_PER_MESSAGE: '10',
    CORRAL_CLUSTER_TICK_MS: '200',
    CORRAL_SPOT_INTERVAL_MS: '100',
  };
  const where = clusterFlags(peer, target);
  const coordinator = startCli(
    ['run', 'job.yaml', '--cluster', 'bunk', '--state-dir', path.join(dir, 's'), ...where],
    {
      cwd: dir,
      env,
    },
  );
  const worker = (id: string, extra: Record<string, string> = {}) => {
    const w = startCli(['worker', ...where, '--cache-dir', path.join(dir, id), '--idle-exit', '3'], {
      cwd: dir,
      env: { ...env, CORRAL_TEST_WORKER: id, ...extra },
    });
    let err = '';
    w.stderr!.on('data', (d) => {
      err += d;
    });
    return Object.assign(w, { err: () => err });
  };
  const w1 = worker('w1', { CORRAL_IMDS_ENDPOINT: 'http://127.0.0.1:9' });
  const w2 = worker('w2', { CORRAL_IMDS_ENDPOINT: imds.endpoint });
  const procs = [coordinator, w1, w2];
  t.after(() => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  });
  const ranBy = (id: string) =>
    [...readdirSync(path.join(dir, 'marks'))].filter((f) =>
      readFileSync(path.join(dir, 'marks', f), 'utf8').includes(id),
    ).length;
  // w1 dies with a bundle part done (its results not committed: the bundle commits at its end)
  await waitFor(() => ranBy('w1') >= 3, 60_000);
  w1.kill('SIGKILL');
  // w2 hands its bundle back at a spot notice, part done
  await waitFor(() => ranBy('w2') >= 3, 60_000);
  imds.notice();
  await waitFor(() => /handed back (\d+) lease/.exec(w2.err()), 10_000);
  const w3 = worker('w3', { CORRAL_IMDS_ENDPOINT: 'http://127.0.0.1:9' });
  procs.push(w3);
  const r = await coordinator.result;
  assert.equal(r.code, 0, r.stderr);

  const results = committedResults(peer, target.bucket, 'bunk');
  assert.deepEqual(
    results.map((x) => x.key).sort(),
    Array.from({ length: N }, (_, i) => `out/${i}.txt`).sort(),
    'each task committed once',
  );
  for (const x of results) {
    assert.equal(x.accepted, 1, x.marker);
    assert.equal(x.text, `item-${x.key.slice(4, -4)}\n`);
    assert.equal(readFileSync(path.join(dir, x.key), 'utf8'), x.text);
  }
  assert.equal(
    new Set(results.map((x) => x.marker)).size,
    N / 10,
    'a bundle is never split nor sent as a new one',
  );
  const ex = executions(dir);
  assert.ok(sum(ex) > N, `the interrupted bundles' tasks ran again: ${sum(ex)} executions`);
  assert.deepEqual(peer.objectKeys(target.bucket, 'jobs/bunk/attempts/'), [], 'no upload left behind');
  t.diagnostic(`${sum(ex)} executions for ${N} tasks; w2: ${/handed back .*/.exec(w2.err())?.[0]}`);
});

test('a coordinator SIGKILLed with bundles in flight, started again with an empty state folder: it sends no bundled task in a new bundle, and nothing runs twice', async (t) => {
  const dir = tempDir(t);
  const N = 60;
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: N }, (_, i) => `item-${i}`).join('\n')}\n`,
    'job.yaml': `name: bunc
tasks:
  map: { lines: items.txt }
  command: 'echo "$CORRAL_TEST_WORKER" >> "$MARK/{index}"; sleep 0.2; echo {input}'
outputs: out/{index}.txt
lease: 10s
`,
  });
  mkdirSync(path.join(dir, 'marks'));
  const target = await cluster('bunc');
  const where = clusterFlags(peer, target);
  const env = {
    ...PEER_ENV,
    MARK: path.join(dir, 'marks'),
    CORRAL_TASKS_PER_MESSAGE: '10',
    CORRAL_CLUSTER_TICK_MS: '200',
  };
  const coordinator = (state: string) =>
    startCli(['run', 'job.yaml', '--cluster', 'bunc', '--state-dir', path.join(dir, state), ...where], {
      cwd: dir,
      env,
    });
  const first = coordinator('s1');
  const workers = ['w1', 'w2'].map((id) =>
    startCli(['worker', ...where, '--cache-dir', path.join(dir, id), '--idle-exit', '5', '--no-spot'], {
      cwd: dir,
      env: { ...env, CORRAL_TEST_WORKER: id },
    }),
  );
  const procs = [first, ...workers];
  t.after(() => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  });
  // killed once a bundle is committed and others are still running
  await waitFor(() => peer.objectKeys(target.bucket, 'jobs/bunc/bundles/').length >= 1, 60_000);
  first.kill('SIGKILL');
  await first.result;
  const second = coordinator('s2');
  procs.push(second);
  const r = await second.result;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr + r.stdout, /resumed from the bucket/);
  const results = committedResults(peer, target.bucket, 'bunc');
  assert.deepEqual(
    results.map((x) => x.key).sort(),
    Array.from({ length: N }, (_, i) => `out/${i}.txt`).sort(),
  );
  assert.equal(new Set(results.map((x) => x.marker)).size, N / 10, 'the 6 bundles sent first, no other');
  for (const x of results)
    assert.equal(readFileSync(path.join(dir, x.key), 'utf8'), `item-${x.key.slice(4, -4)}\n`);
  assert.equal(sum(executions(dir)), N, 'each task ran once');
});
