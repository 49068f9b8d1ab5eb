/**
 * Chaos on the AWS runtime, across processes, against fauxqs on 127.0.0.1 (mirrors the sqlite
 * chaos suite in `test/chaos.test.ts`): a coordinator (`corral run --cluster`, the built CLI) and
 * `corral worker` processes.
 * 1. A random worker is SIGKILLed every 200–800 ms (seeded) and replaced until the job ends.
 * 2. The peer is unreachable for 5 s mid-run: a TCP proxy in front of fauxqs (which every corral
 *    process uses as its endpoint) destroys its connections and resets new ones, then resumes;
 *    fauxqs keeps its in-memory state throughout.
 * Task commands append one line per execution to `marks/<index>`, which counts executions.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { PEER_ENV, type Peer, startPeer } from '../cluster-peer.js';
import { rng, startCli, tempDir, writeFiles } from '../helpers.js';

let peer: Peer;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

async function getText(bucket: string, key: string): Promise<string> {
  const r = await peer.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return (await r.Body!.transformToString()) ?? '';
}

/** Messages in a queue (visible + in flight). */
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
 * The bucket and the folder after a job: one commit marker per task, each pointing at an object
 * with the exact content; every output downloaded with it; no failure marker, an empty DLQ; every
 * task ran at least once. Returns the executions.
 */
async function assertCommittedOnce(
  dir: string,
  bucket: string,
  job: string,
  n: number,
  dlqUrl: string,
): Promise<number> {
  const committed = (await keys(bucket, `jobs/${job}/committed/`)).sort();
  assert.deepEqual(committed, Array.from({ length: n }, (_, i) => `out/${i}`).sort());
  for (let i = 0; i < n; i++) {
    const marker = JSON.parse(await getText(bucket, `jobs/${job}/committed/out/${i}`)) as { object: string };
    assert.equal(await getText(bucket, marker.object), `${i} t${i}\n`, `committed out/${i}`);
  }
  const outs = readdirSync(path.join(dir, 'out')).sort();
  assert.equal(outs.length, n, `outputs: ${outs.length}/${n}`);
  for (let i = 0; i < n; i++) {
    assert.equal(readFileSync(path.join(dir, 'out', String(i)), 'utf8'), `${i} t${i}\n`, `out/${i}`);
  }
  assert.deepEqual(await keys(bucket, `jobs/${job}/failed/`), [], 'no failure marker');
  assert.equal(await depth(dlqUrl), 0, 'no dead letter');
  const ex = executions(dir);
  let total = 0;
  for (let i = 0; i < n; i++) {
    assert.ok((ex.get(i) ?? 0) >= 1, `task ${i} ran`);
    total += ex.get(i) ?? 0;
  }
  return total;
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

test('chaos (sqs/s3): 150 tasks, 3 corral workers, one SIGKILLed every 200–800 ms and replaced; each output committed exactly once', async (t) => {
  const N = 150;
  const seed = Number(process.env.CORRAL_CHAOS_SEED ?? Date.now() % 1_000_000);
  t.diagnostic(`seed ${seed} (CORRAL_CHAOS_SEED=${seed} repeats the kill schedule)`);
  const rand = rng(seed);
  const dir = tempDir(t);
  chaosJob(dir, 'chaos', N);
  const q = await setup('chaos');
  const args = where(q, peer.endpoint);
  const env = { ...PEER_ENV, MARK: path.join(dir, 'marks'), CORRAL_CLUSTER_TICK_MS: '200' };
  const coordinator = startCli(
    ['run', 'job.yaml', '--cluster', 'chaos', '--state-dir', path.join(dir, 'state'), ...args],
    { cwd: dir, env },
  );
  let started = 0;
  const spawnWorker = (): Proc =>
    startCli(
      ['worker', ...args, '--cache-dir', path.join(dir, `w${started++}`), '--idle-exit', '60', '--no-spot'],
      { cwd: dir, env },
    );
  const workers: Proc[] = [spawnWorker(), spawnWorker(), spawnWorker()];
  const all: Proc[] = [...workers];
  t.after(() => {
    for (const c of [coordinator, ...all]) if (running(c)) c.kill('SIGKILL');
  });

  let kills = 0;
  // Bounded: at most 400 rounds (≤ 320 s), ends when the coordinator exits.
  for (let round = 0; round < 400 && running(coordinator); round++) {
    await sleep(200 + Math.floor(rand() * 600));
    if (!running(coordinator)) break;
    const i = Math.floor(rand() * workers.length);
    workers[i]!.kill('SIGKILL');
    kills++;
    workers[i] = spawnWorker();
    all.push(workers[i]!);
  }
  const r = await coordinator.result;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`job chaos succeeded on cluster chaos: ${N}/${N} tasks done, 0 failed`));
  for (const w of workers) if (running(w)) w.kill('SIGTERM');
  await Promise.all(all.map((w) => w.result));

  const total = await assertCommittedOnce(dir, q.bucket, 'chaos', N, q.dlqUrl);
  const orphans = (await keys(q.bucket, 'jobs/chaos/attempts/')).length - N;
  t.diagnostic(
    `${kills} kills, ${started} workers started, ${total} executions for ${N} tasks (${(((total - N) / N) * 100).toFixed(1)} % repeated), ${orphans} uncommitted attempt object(s) left`,
  );
});

/** A TCP proxy on 127.0.0.1 in front of `target`; `pause()` resets every connection until `resume()`. */
async function startProxy(target: number) {
  const sockets = new Set<net.Socket>();
  let paused = false;
  let resets = 0;
  const server = net.createServer((client) => {
    if (paused) {
      resets++;
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    get resets() {
      return resets;
    },
    pause() {
      paused = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    resume() {
      paused = false;
    },
    stop: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

test('the peer unreachable for 5 s mid-run: the job finishes once it is back, each output committed exactly once', async (t) => {
  const N = 60;
  const dir = tempDir(t);
  chaosJob(dir, 'outage', N, 0.1);
  const q = await setup('outage');
  const proxy = await startProxy(Number(new URL(peer.endpoint).port));
  t.after(() => proxy.stop());
  const args = where(q, proxy.endpoint);
  const env = { ...PEER_ENV, MARK: path.join(dir, 'marks'), CORRAL_CLUSTER_TICK_MS: '200' };
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

  // Every poll (directly against fauxqs, not through the proxy): each committed marker points at
  // an object with the exact content, and out/ holds only complete outputs.
  const checked = new Set<string>();
  let polls = 0;
  const poll = async () => {
    polls++;
    for (const k of await keys(q.bucket, 'jobs/outage/committed/')) {
      if (checked.has(k)) continue;
      const i = Number(k.slice('out/'.length));
      const marker = JSON.parse(await getText(q.bucket, `jobs/outage/committed/${k}`)) as { object: string };
      assert.equal(await getText(q.bucket, marker.object), `${i} t${i}\n`, `committed ${k}`);
      checked.add(k);
    }
    let outs: string[] = [];
    try {
      outs = readdirSync(path.join(dir, 'out'));
    } catch {}
    for (const f of outs) {
      assert.match(f, /^\d+$/, `only outputs in out/: ${f}`);
      assert.equal(readFileSync(path.join(dir, 'out', f), 'utf8'), `${f} t${f}\n`);
    }
  };

  // Once some (not all) outputs are committed, the peer goes away for 5 s.
  for (let i = 0; i < 600 && checked.size < 5 && running(coordinator); i++) {
    await poll();
    await sleep(50);
  }
  assert.ok(checked.size >= 5 && checked.size < N, `outage at ${checked.size}/${N} committed`);
  const atOutage = checked.size;
  proxy.pause();
  for (let i = 0; i < 25; i++) {
    await sleep(200);
    await poll();
  }
  proxy.resume();
  const aliveAfter = [coordinator, ...workers].filter(running).length;

  for (let i = 0; i < 1200 && running(coordinator); i++) {
    await poll();
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
  await poll();
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    new RegExp(`job outage succeeded on cluster outage: ${N}/${N} tasks done, 0 failed`),
  );
  for (const w of workers) if (running(w)) w.kill('SIGTERM');
  const ws = await Promise.all(workers.map((w) => w.result));
  for (const w of ws) assert.equal(w.code, 0, w.stderr);
  assert.equal(aliveAfter, 4, 'the coordinator and the 3 workers survived the outage');

  const total = await assertCommittedOnce(dir, q.bucket, 'outage', N, q.dlqUrl);
  t.diagnostic(
    `outage at ${atOutage}/${N} committed; ${proxy.resets} connection(s) reset during it; ${polls} polls; ${total} executions for ${N} tasks`,
  );
});
