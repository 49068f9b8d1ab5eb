/**
 * The AWS runtime under chaos, against fauxqs on 127.0.0.1 (test/cluster-peer.ts; the sqlite twin
 * is test/chaos.test.ts), with `corral worker` processes (the built CLI).
 * 1. 2,000 tasks (CORRAL_CLUSTER_CHAOS_TASKS; 10,000 in `npm run chaos`) on 6 workers, coordinated
 *    by runClusterJob in this process; a random worker is SIGKILLed every 200–800 ms (seeded:
 *    CORRAL_CHAOS_SEED) and replaced at once, until every task is committed (a round passes while
 *    two replacements are still starting). The results are read from the bucket (the coordinator
 *    does not download them here; the outage test does).
 * 2. With a `corral run --cluster` coordinator (which downloads the outputs) and 3 workers, the
 *    peer stops for 5 s mid-run: a TCP proxy in front of fauxqs (the endpoint of every corral
 *    process) closes its port (new connections are refused) and resets the open ones, then
 *    listens again on the same port; fauxqs keeps its in-memory state throughout.
 * Task commands append one line per execution to `marks/<index>`, which counts executions.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { loadJobFile } from '../src/spec/job.js';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
import { committedResults, committedText, PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { rng, startCli, tempDir, writeFiles } from './helpers.js';

/** Tasks of the chaos job: 2,000 in the suite, CORRAL_CLUSTER_CHAOS_TASKS (10,000 in `npm run chaos`) otherwise. */
const TASKS = Number(process.env.CORRAL_CLUSTER_CHAOS_TASKS ?? 2000);
/** Workers alive at once: a kill takes out one of them. */
const WORKERS = 6;

/**
 * Environment of the corral processes: the peer's dummy credentials, and no NODE_EXTRA_CA_CERTS
 * (set on some machines): Node parses that CA bundle at every start (~50 ms of CPU here), and
 * nothing in these tests uses TLS. A replacement worker starts every ~500 ms.
 */
const CHILD_ENV = { ...PEER_ENV, NODE_EXTRA_CA_CERTS: undefined };

let peer: Peer;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Keys below a prefix (relative to it), from the peer's memory. */
const keys = (bucket: string, prefix: string): string[] => peer.objectKeys(bucket, prefix);

/** Messages in a queue (visible + in flight + delayed). */
async function depth(queueUrl: string): Promise<number> {
  const r = await peer.sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: [
        'ApproximateNumberOfMessages',
        'ApproximateNumberOfMessagesNotVisible',
        'ApproximateNumberOfMessagesDelayed',
      ],
    }),
  );
  const a = r.Attributes ?? {};
  return (
    Number(a.ApproximateNumberOfMessages ?? 0) +
    Number(a.ApproximateNumberOfMessagesNotVisible ?? 0) +
    Number(a.ApproximateNumberOfMessagesDelayed ?? 0)
  );
}

/** The output of task `i` (what its command writes). */
const expected = (i: number) => `${i} t${i}\n`;

/** A job folder of `n` line tasks; each execution appends to `marks/<index>`. */
function chaosJob(dir: string, name: string, n: number, sleepS = 0): void {
  writeFiles(dir, {
    'items.txt': Array.from({ length: n }, (_, i) => `t${i}`).join('\n'),
    'job.yaml': `name: ${name}
tasks:
  map: { lines: items.txt }
  command: 'echo x >> "$MARK/{index}"; ${sleepS ? `sleep ${sleepS}; ` : ''}echo {index} {input} > {output}'
outputs: out/{index}
retries: { maxAttempts: 20, backoff: { initial: 50ms, factor: 2, max: 1s } }
lease: 3s
`,
  });
  mkdirSync(path.join(dir, 'marks'));
}

/** Executions per task index, from the marks. */
function executions(dir: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const f of readdirSync(path.join(dir, 'marks'))) {
    m.set(
      Number(f),
      readFileSync(path.join(dir, 'marks', f), 'utf8')
        .split('\n')
        .filter(Boolean).length,
    );
  }
  return m;
}

/**
 * Files of a job's out/ folder while it runs: every visible output is complete, and nothing else
 * is there but the coordinator's hidden downloads in progress (`.<name>.corral-part`, renamed
 * when whole). Returns the outputs.
 */
function checkOutDir(dir: string): string[] {
  let names: string[] = [];
  try {
    names = readdirSync(path.join(dir, 'out'));
  } catch {
    return [];
  }
  const outs: string[] = [];
  for (const f of names) {
    if (/^\.\d+\.corral-part$/.test(f)) continue;
    assert.match(f, /^\d+$/, `only outputs in out/: ${f}`);
    assert.equal(readFileSync(path.join(dir, 'out', f), 'utf8'), expected(Number(f)), `out/${f}`);
    outs.push(f);
  }
  return outs;
}

interface Committed {
  /** Executions of the task commands (from the marks). */
  readonly executions: number;
  /** Most executions of one task. */
  readonly maxExecutions: number;
  /** Attempt objects in the bucket that no commit marker points at (uploads of killed or late attempts). */
  /** Commit markers refused because the task's result was committed already (late duplicates). */
  readonly refused: number;
  /**
   * Messages still in the queue: copies of tasks already committed (a worker killed between
   * sending a hand-back and deleting the original, or between a commit and its delete). A worker
   * that receives one finds the result committed and deletes it without running the task.
   */
  readonly leftover: number;
}

/**
 * The bucket, the peer's record of conditional writes and the folder after a job: one commit
 * marker per task, written by exactly one accepted conditional PUT, holding the exact content (the
 * outputs are small: the marker is the output); no attempt object at all; no failure marker; an
 * empty DLQ; every task ran at least once. With `downloaded`, every output is in out/, byte-exact,
 * and nothing else is.
 */
async function assertCommittedOnce(
  dir: string,
  q: { bucket: string; queueUrl: string; dlqUrl: string },
  job: string,
  n: number,
  downloaded: boolean,
): Promise<Committed> {
  const prefix = `jobs/${job}/`;
  // its own marker, or its entry in a bundle's marker (tasks sent several to a message)
  const results = committedResults(peer, q.bucket, job);
  const committed = results.map((r) => r.key).sort();
  assert.deepEqual(
    committed,
    Array.from({ length: n }, (_, i) => `out/${i}`).sort(),
    'one committed result per task',
  );
  let refused = 0;
  const markers = new Set<string>();
  for (const r of results) {
    assert.equal(r.accepted, 1, `${r.key}: ${r.accepted} commits of ${r.marker} accepted`);
    assert.equal(r.text, expected(Number(r.key.slice('out/'.length))), `committed ${r.key}`);
    if (!markers.has(r.marker)) refused += r.refused;
    markers.add(r.marker);
  }
  // a killed worker leaves no upload behind: a small output is written only inside its marker
  assert.deepEqual(keys(q.bucket, `${prefix}attempts/`), [], 'no attempt object');
  if (downloaded) {
    assert.deepEqual(checkOutDir(dir).sort(), committed.map((k) => k.slice('out/'.length)).sort());
    assert.deepEqual(
      readdirSync(path.join(dir, 'out')).filter((f) => f.startsWith('.')),
      [],
      'no download left half-done',
    );
  }
  assert.deepEqual(keys(q.bucket, `${prefix}failed/`), [], 'no failure marker');
  assert.equal(await depth(q.dlqUrl), 0, 'no dead letter');
  const ex = executions(dir);
  let total = 0;
  let most = 0;
  for (let i = 0; i < n; i++) {
    const e = ex.get(i) ?? 0;
    assert.ok(e >= 1, `task ${i} never ran`);
    total += e;
    most = Math.max(most, e);
  }
  return {
    executions: total,
    maxExecutions: most,
    refused,
    leftover: await depth(q.queueUrl),
  };
}

type Proc = ReturnType<typeof startCli>;
const running = (p: Proc) => p.exitCode === null && p.signalCode === null;

async function setup(name: string) {
  const { queueUrl, dlqUrl } = await peer.createQueues(name, { visibility: 3, maxReceiveCount: 1000 });
  await peer.createBucket(`${name}-bucket`);
  return { queueUrl, dlqUrl, bucket: `${name}-bucket` };
}

function where(q: { queueUrl: string; dlqUrl: string; bucket: string }, endpoint: string): string[] {
  return ['--queue-url', q.queueUrl, '--dlq-url', q.dlqUrl, '--bucket', q.bucket, '--endpoint-url', endpoint];
}

test(`chaos (sqs/s3): ${TASKS} tasks, ${WORKERS} corral workers, one SIGKILLed every 200–800 ms and replaced; each output committed exactly once`, async (t) => {
  const N = TASKS;
  const seed = Number(process.env.CORRAL_CHAOS_SEED ?? Date.now() % 1_000_000);
  t.diagnostic(`seed ${seed} (CORRAL_CHAOS_SEED=${seed} repeats the kill schedule)`);
  const rand = rng(seed);
  const dir = tempDir(t);
  chaosJob(dir, 'chaos', N);
  const q = await setup('chaos');
  const started = Date.now();
  let allCommitted = false;
  const run = runClusterJob(
    loadJobFile(path.join(dir, 'job.yaml')),
    {
      name: 'chaos',
      queueUrl: q.queueUrl,
      deadLetterQueueUrl: q.dlqUrl,
      bucket: q.bucket,
      region: 'us-east-1',
    },
    {
      stateDir: path.join(dir, 'state'),
      endpointUrl: peer.endpoint,
      collect: false,
      onProgress: (p) => {
        if (p.done === N) allCommitted = true; // the bucket holds every commit marker
      },
    },
  );
  let ended = false;
  void run.then(
    () => (ended = true),
    () => (ended = true),
  );
  const args = where(q, peer.endpoint);
  const env = { ...CHILD_ENV, MARK: path.join(dir, 'marks') };
  let spawned = 0;
  /** Workers that have started (said they are polling). */
  const up = new WeakSet<Proc>();
  const spawnWorker = (): Proc => {
    const w = startCli(
      ['worker', ...args, '--cache-dir', path.join(dir, `w${spawned++}`), '--idle-exit', '120', '--no-spot'],
      { cwd: dir, env },
    );
    w.stderr!.on('data', (d) => {
      if (/: polling /.test(String(d))) up.add(w);
    });
    return w;
  };
  const workers: Proc[] = Array.from({ length: WORKERS }, spawnWorker);
  const all: Proc[] = [...workers];
  t.after(() => {
    for (const c of all) if (running(c)) c.kill('SIGKILL');
  });

  let kills = 0;
  let waited = 0;
  // Bounded: at most 20,000 rounds of ≥ 200 ms; ends once every task is committed. A round waits
  // while 2 replacements are still starting: on a starved machine (other suites running) worker
  // starts (~0.35 s of CPU each) would otherwise take all the CPU and the job would crawl.
  for (let round = 0; round < 20_000 && !allCommitted && !ended; round++) {
    await sleep(200 + Math.floor(rand() * 600));
    if (allCommitted || ended) break;
    if (workers.filter((w) => !up.has(w)).length >= 2) {
      waited++;
      continue;
    }
    const i = Math.floor(rand() * workers.length);
    workers[i]!.kill('SIGKILL');
    kills++;
    workers[i] = spawnWorker();
    all.push(workers[i]!);
  }
  // The survivors drain; the coordinator sees every task committed and ends. (A worker still
  // starting is killed: runClusterWorker misses a SIGTERM that comes before it listens for it.)
  for (const w of workers) if (running(w)) w.kill(up.has(w) ? 'SIGTERM' : 'SIGKILL');
  const summary = await run;
  const finished = (Date.now() - started) / 1000;
  assert.equal(summary.status, 'succeeded');
  assert.deepEqual(
    { done: summary.counts.done, dead: summary.counts.dead, total: summary.counts.total },
    { done: N, dead: 0, total: N },
  );
  await Promise.all(all.map((w) => w.result));
  assert.ok(kills >= 3, `only ${kills} kills`);

  const c = await assertCommittedOnce(dir, q, 'chaos', N, false);
  t.diagnostic(
    `${kills} kills (${waited} round(s) waited for starting replacements), ${spawned} workers started; the job ended after ${finished.toFixed(1)} s; ${c.executions} executions for ${N} tasks (${(((c.executions - N) / N) * 100).toFixed(1)} % repeated, at most ${c.maxExecutions} of one task); ${c.refused} late duplicate(s) refused at commit; ${c.leftover} message(s) of committed tasks left`,
  );
});

/**
 * A TCP proxy on 127.0.0.1 in front of `target`. `stop()` closes its port (connections are
 * refused) and resets every open connection; `start()` listens on the same port again.
 */
async function startProxy(target: number) {
  const clients = new Set<net.Socket>();
  const upstreams = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    clients.add(client);
    upstreams.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      clients.delete(client);
      upstreams.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  let resets = 0;
  return {
    port,
    endpoint: `http://127.0.0.1:${port}`,
    get resets() {
      return resets;
    },
    async stop() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of clients) {
        resets++;
        s.resetAndDestroy();
      }
      for (const s of upstreams) s.destroy();
      clients.clear();
      upstreams.clear();
      await closed;
    },
    start: () =>
      new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      }),
    close: () =>
      new Promise<void>((r) => {
        for (const s of [...clients, ...upstreams]) s.destroy();
        if (server.listening) server.close(() => r());
        else r();
      }),
  };
}

/** How a TCP connection to 127.0.0.1:`port` ends: 'connected', or the error code. */
function probe(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

test('the peer stops for 5 s mid-run: tasks retry, no partial output is ever visible, the job finishes once it is back', async (t) => {
  const N = 60;
  const dir = tempDir(t);
  chaosJob(dir, 'outage', N, 0.1);
  const q = await setup('outage');
  const proxy = await startProxy(Number(new URL(peer.endpoint).port));
  t.after(() => proxy.close());
  const args = where(q, proxy.endpoint);
  const env = { ...CHILD_ENV, MARK: path.join(dir, 'marks'), CORRAL_CLUSTER_TICK_MS: '200' };
  const coordinator = startCli(
    ['run', 'job.yaml', '--cluster', 'outage', '--state-dir', path.join(dir, 'state'), ...args],
    { cwd: dir, env },
  );
  const workers = [0, 1, 2].map((i) =>
    startCli(['worker', ...args, '--cache-dir', path.join(dir, `w${i}`), '--idle-exit', '60', '--no-spot'], {
      cwd: dir,
      env,
    }),
  );
  t.after(() => {
    for (const c of [coordinator, ...workers]) if (running(c)) c.kill('SIGKILL');
  });

  // Every poll (in the peer's memory, not through the proxy): each commit marker holds the exact
  // content, and out/ holds only complete outputs.
  const checked = new Set<string>();
  let polls = 0;
  const poll = () => {
    polls++;
    for (const k of keys(q.bucket, 'jobs/outage/committed/')) {
      if (checked.has(k)) continue;
      const i = Number(k.slice('out/'.length));
      assert.equal(
        committedText(peer, q.bucket, `jobs/outage/committed/${k}`),
        expected(i),
        `committed ${k}`,
      );
      checked.add(k);
    }
    checkOutDir(dir);
  };

  // Once some (not all) outputs are committed, the peer goes away for 5 s.
  for (let i = 0; i < 1200 && checked.size < 5 && running(coordinator); i++) {
    poll();
    await sleep(50);
  }
  assert.ok(checked.size >= 5 && checked.size < N, `outage at ${checked.size}/${N} committed`);
  const atOutage = checked.size;
  await proxy.stop();
  const stoppedAt = Date.now();
  assert.equal(await probe(proxy.port), 'ECONNREFUSED', 'the peer is really gone');
  // what was in flight when the port closed has landed by now; nothing can be committed after
  await sleep(200);
  poll();
  const committedInOutage = checked.size;
  for (let i = 0; i < 200 && Date.now() - stoppedAt < 5000; i++) {
    poll();
    await sleep(100);
  }
  assert.equal(await probe(proxy.port), 'ECONNREFUSED', 'the peer is still gone after 5 s');
  assert.equal(checked.size, committedInOutage, 'nothing was committed while the peer was gone');
  await proxy.start();
  const aliveAfter = [coordinator, ...workers].filter(running).length;

  for (let i = 0; i < 2400 && running(coordinator); i++) {
    poll();
    await sleep(50);
  }
  if (running(coordinator)) {
    coordinator.kill('SIGKILL');
    for (const w of workers) if (running(w)) w.kill('SIGKILL');
    const [c, ...ws] = await Promise.all([coordinator, ...workers].map((p) => p.result));
    assert.fail(
      `the job did not finish after the outage:\n${c!.stderr}\n${ws.map((w) => w!.stderr.slice(-2000)).join('\n---\n')}`,
    );
  }
  const r = await coordinator.result;
  poll();
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    new RegExp(`job outage succeeded on cluster outage: ${N}/${N} tasks done, 0 failed`),
  );
  for (const w of workers) if (running(w)) w.kill('SIGTERM');
  const ws = await Promise.all(workers.map((w) => w.result));
  for (const w of ws) assert.equal(w.code, 0, w.stderr);
  assert.equal(aliveAfter, 4, 'the coordinator and the 3 workers rode out the outage');

  const c = await assertCommittedOnce(dir, q, 'outage', N, true);
  t.diagnostic(
    `outage at ${atOutage}/${N} committed; ${proxy.resets} open connection(s) reset, new ones refused; ${polls} polls; ${c.executions} executions for ${N} tasks; ${c.refused} late duplicate(s) refused at commit`,
  );
});
