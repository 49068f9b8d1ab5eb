import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { createSqsClient } from '../src/aws/clients.js';
import type { Failure, Lease, NewTask } from '../src/queue/queue.js';
import { SqsQueue, type SqsQueueOptions } from '../src/queue/sqs/sqs-queue.js';
import { type Peer, startPeer } from './cluster-peer.js';

let peer: Peer;
let n = 0;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

async function queue(opts: Partial<SqsQueueOptions> = {}, maxReceiveCount = 5) {
  const { queueUrl, dlqUrl } = await peer.createQueues(`q${n++}`, { maxReceiveCount });
  const client = createSqsClient({ region: 'us-east-1', endpointUrl: peer.endpoint });
  const q = new SqsQueue({
    client,
    queueUrl,
    deadLetterQueueUrl: dlqUrl,
    waitTimeSeconds: 0,
    ackDelayMs: 50,
    ...opts,
  });
  return { q, queueUrl, dlqUrl, client };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const tasks = (count: number): NewTask[] =>
  Array.from({ length: count }, (_, i) => ({ key: String(i), step: 'map', payload: { i, o: `out/${i}` } }));

const failure = (lease: Lease, retryDelayMs = 0): Failure => ({
  lease,
  error: 'exited with code 1',
  retryDelayMs,
  startedAt: Date.now(),
  finishedAt: Date.now(),
});

test('batch enqueue and claim: 25 tasks in 3 sends, claims of 10, each task once', async () => {
  const { q } = await queue();
  const before = peer.requests.get('sqs:SendMessageBatch') ?? 0;
  await q.enqueue(tasks(25));
  assert.equal((peer.requests.get('sqs:SendMessageBatch') ?? 0) - before, 3);
  const got: Lease[] = [];
  for (let i = 0; i < 6 && got.length < 25; i++) got.push(...(await q.claim('w1', 10, 30_000)));
  assert.deepEqual(
    got.map((l) => l.payload.i).sort((a, b) => a - b),
    [...Array(25).keys()],
  );
  assert.ok(got.every((l) => l.attempt === 1 && l.step === 'map' && l.owner === 'w1'));
  await q.complete(
    got.map((lease) => ({ lease, outcome: 'committed' as const, startedAt: 0, finishedAt: 0 })),
  );
  await q.flushDeletes();
  const c = await q.counts();
  assert.deepEqual(
    { pending: c.pending, leased: c.leased, done: c.done },
    { pending: 0, leased: 0, done: 25 },
  );
  await q.close();
});

test('a claim of one buffers the rest of the receive for its owner (after a first receive of one message, one receive serves 10 tasks)', async () => {
  const { q } = await queue();
  await q.enqueue(tasks(11));
  const before = peer.requests.get('sqs:ReceiveMessage') ?? 0;
  const seen = new Set<number>();
  for (let i = 0; i < 11; i++) for (const l of await q.claim('w1', 1, 30_000)) seen.add(l.payload.i);
  assert.equal(seen.size, 11);
  // the first receive asks for one message: how many tasks a message carries is not known yet
  assert.equal((peer.requests.get('sqs:ReceiveMessage') ?? 0) - before, 2);
  await q.close();
});

test('a bundle: its tasks are leased together, settled together (one delete), a failed task is retried by its holder after its backoff, and a hand-back sends the bundle again whole and marked', async () => {
  const { q, queueUrl, client } = await queue({ maxAttempts: 3, job: 'j' });
  const bundle = (id: string, from: number, count: number) => ({
    id,
    tasks: tasks(from + count).slice(from),
  });
  await q.enqueueBundles([bundle('b1', 0, 20), bundle('b2', 20, 20)]);
  // a worker wanting 10 tasks takes one bundle of 20 after its first receive, not ten bundles
  const first = await q.claim('w1', 10, 30_000);
  assert.deepEqual(
    first.map((l) => l.payload.i),
    [...Array(10).keys()],
  );
  assert.deepEqual(
    {
      id: q.bundleOf(first[0]!)?.id,
      open: q.bundleOf(first[0]!)?.open.size,
      again: q.bundleOf(first[0]!)?.again,
    },
    { id: 'b1', open: 20, again: false },
  );
  const rest = await q.claim('w1', 10, 30_000);
  assert.deepEqual(
    rest.map((l) => l.payload.i),
    [...Array(20).keys()].slice(10),
    'the rest of the bundle, from the buffer',
  );
  const deletes = peer.requests.get('sqs:DeleteMessageBatch') ?? 0;
  // task 3 fails: retried here, after its backoff, with the next attempt number
  await q.fail([failure(first[3]!, 300)]);
  // the claim waits for it (it is this worker's to run), not for the queue
  const t0 = Date.now();
  const retried = await q.claim('w1', 1, 30_000);
  assert.ok(Date.now() - t0 >= 250, `waited ${Date.now() - t0} ms of a 300 ms backoff`);
  assert.deepEqual(
    retried.map((l) => [l.key, l.attempt]),
    [['3', 2]],
  );
  const all = [...first.filter((_l, i) => i !== 3), ...retried, ...rest];
  await q.complete(
    all.slice(0, 19).map((lease) => ({ lease, outcome: 'committed' as const, startedAt: 0, finishedAt: 0 })),
  );
  await q.flushDeletes();
  assert.equal(peer.requests.get('sqs:DeleteMessageBatch') ?? 0, deletes, 'not deleted before its last task');
  await q.complete([{ lease: all[19]!, outcome: 'committed', startedAt: 0, finishedAt: 0 }]);
  await q.flushDeletes();
  assert.equal((peer.requests.get('sqs:DeleteMessageBatch') ?? 0) - deletes, 1, 'one delete for the bundle');
  // b2: released after one of its tasks ran: it goes back whole, marked, with the attempts counted
  const b2 = await q.claim('w2', 10, 30_000);
  assert.equal(q.bundleOf(b2[0]!)?.id, 'b2');
  await q.release([b2[0]!]);
  assert.equal(q.bundleOf(b2[1]!), undefined, 'every task of the bundle is forgotten');
  const r = await client.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10 }));
  assert.equal(r.Messages?.length, 1);
  const body = JSON.parse(r.Messages![0]!.Body!) as {
    b: string;
    lk?: number;
    t: Array<{ k: string; a: number }>;
  };
  assert.equal(body.b, 'b2');
  assert.equal(body.lk, 1);
  assert.deepEqual(
    body.t.map((t) => t.k),
    [...Array(40).keys()].slice(20).map(String),
  );
  assert.ok(
    body.t.every((t) => t.a === 0),
    'a hand-back is not an attempt',
  );
  await q.close();
});

test('an expired lease returns the task with the next attempt number; a heartbeat keeps it', async () => {
  const { q } = await queue({ prefetch: 1 });
  await q.enqueue(tasks(2));
  const [a] = await q.claim('w1', 1, 1000);
  const [b] = await q.claim('w2', 1, 1000);
  assert.ok(a && b);
  // w1 heartbeats, w2 does not
  const beat = setInterval(() => q.heartbeat('w1', 1000).catch(() => {}), 300);
  let back: Lease | undefined;
  for (let i = 0; i < 40 && !back; i++) {
    [back] = await q.claim('w3', 1, 30_000);
    if (!back) await new Promise((r) => setTimeout(r, 100));
  }
  clearInterval(beat);
  assert.ok(back, 'the expired task came back');
  assert.equal(back.key, b.key, 'only the task without heartbeats expired');
  assert.equal(back.attempt, 2);
  assert.equal(await q.heartbeat('w1', 30_000), 1);
  await q.close();
});

test('fail with retry delays the next attempt; the last failure dead-letters it with its error', async () => {
  const dead: string[] = [];
  const { q, dlqUrl, client } = await queue({
    maxAttempts: 2,
    prefetch: 1,
    onDeadLetter: (d) => void dead.push(d.key),
  });
  await q.enqueue([{ key: '0', step: 'map', payload: { i: 0, p: 'in/a.txt', o: 'out/0' } }]);
  const [l1] = await q.claim('w1', 1, 30_000);
  assert.equal(l1!.attempt, 1);
  await q.fail([failure(l1!, 1000)]);
  assert.deepEqual(await q.claim('w1', 1, 30_000), [], 'not visible during its backoff');
  let l2: Lease | undefined;
  for (let i = 0; i < 30 && !l2; i++) {
    await new Promise((r) => setTimeout(r, 100));
    [l2] = await q.claim('w1', 1, 30_000);
  }
  assert.equal(l2?.attempt, 2);
  await q.fail([failure(l2!)]);
  assert.deepEqual(dead, ['0']);
  const dl = await q.deadLetters();
  assert.equal(dl.length, 1);
  assert.deepEqual(
    { key: dl[0]!.key, attempts: dl[0]!.attempts, error: dl[0]!.error, input: dl[0]!.input },
    { key: '0', attempts: 2, error: 'exited with code 1', input: 'in/a.txt' },
  );
  assert.equal((await q.counts()).dead, 1);
  const left = await client.send(new ReceiveMessageCommand({ QueueUrl: dlqUrl, WaitTimeSeconds: 0 }));
  assert.equal(left.Messages?.length, 1);
  await q.close();
});

test('release hands a lease back at once, and a lease that expired on its last attempt is a dead letter', async () => {
  const dead: string[] = [];
  const { q } = await queue({ maxAttempts: 1, prefetch: 1, onDeadLetter: (d) => void dead.push(d.error) });
  await q.enqueue(tasks(1));
  const [l] = await q.claim('w1', 1, 30_000);
  assert.equal(l?.payload.lk, undefined);
  await q.release([l!]);
  // released: visible again at once, and the released attempt does not count
  const [again] = await q.claim('w2', 1, 1000);
  assert.equal(again?.key, '0');
  assert.equal(again?.attempt, 1);
  // but it is marked: it may have committed just before it was handed back, so a cluster worker
  // looks for its result before this first attempt (lookBeforeFirstAttempt: false otherwise)
  assert.equal(again?.payload.lk, 1);
  assert.deepEqual({ ...again!.payload, lk: undefined }, { ...l!.payload, lk: undefined });
  await new Promise((r) => setTimeout(r, 1300));
  // w2's lease expired on attempt 1 of 1: dead
  assert.deepEqual(await q.claim('w3', 1, 1000), []);
  assert.equal(dead.length, 1);
  assert.match(dead[0]!, /lease expired/);
  await q.close();
});

test('the redrive policy moves a message received maxReceiveCount times to the DLQ (backstop)', async () => {
  const { q, dlqUrl, client } = await queue({ maxAttempts: 10, prefetch: 1, releaseMode: 'visibility' }, 2);
  await q.enqueue(tasks(1));
  for (let i = 0; i < 2; i++) {
    const [l] = await q.claim('w1', 1, 30_000);
    assert.ok(l);
    await q.release([l]);
  }
  assert.deepEqual(await q.claim('w1', 1, 30_000), []);
  const r = await client.send(new ReceiveMessageCommand({ QueueUrl: dlqUrl, WaitTimeSeconds: 0 }));
  assert.equal(r.Messages?.length, 1, 'redriven');
  await q.close();
});

test('a queue scoped to a job hands other jobs their messages back', async () => {
  const { q: a, queueUrl, client } = await queue({ job: 'a', prefetch: 10 });
  const b = new SqsQueue({ client, queueUrl, job: 'b', waitTimeSeconds: 0 });
  await a.enqueue(tasks(3));
  await b.enqueue(tasks(3));
  const gotB = await b.claim('w', 10, 30_000);
  assert.ok(gotB.length <= 3);
  let all = gotB.length;
  for (let i = 0; i < 5 && all < 3; i++) all += (await b.claim('w', 10, 30_000)).length;
  assert.equal(all, 3);
  const gotA: Lease[] = [];
  for (let i = 0; i < 5 && gotA.length < 3; i++) gotA.push(...(await a.claim('w', 10, 30_000)));
  assert.equal(gotA.length, 3);
  await a.close();
  await b.close();
});

test('a long poll whose caller went away holds the message it took for the poll visibility only, not the lease', async () => {
  const {
    q: gone,
    queueUrl,
    client,
  } = await queue({ waitTimeSeconds: 5, pollVisibilitySeconds: 1, prefetch: 1 });
  // The poll waits at the peer when its caller goes away (the request is dropped, as when the
  // process is SIGKILLed); the peer still hands the next message to that poll.
  const receives = peer.requests.get('sqs:ReceiveMessage') ?? 0;
  const claim = gone.claim('gone', 1, 60_000);
  for (let i = 0; i < 80 && (peer.requests.get('sqs:ReceiveMessage') ?? 0) === receives; i++) await sleep(25);
  await sleep(100);
  gone.interrupt();
  assert.deepEqual(await claim, []);
  const live = new SqsQueue({ client, queueUrl, waitTimeSeconds: 1, prefetch: 1 });
  await live.enqueue(tasks(1));
  const now = await client.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 0 }));
  assert.equal(now.Messages, undefined, 'the dropped poll took the message');
  // With the 60 s lease as its visibility it would stay away for a minute; it is back in ~1 s.
  let back: Lease | undefined;
  for (let i = 0; i < 15 && !back; i++) [back] = await live.claim('w2', 1, 60_000);
  assert.ok(back, 'the message came back long before the lease');
  assert.equal(back.attempt, 2, 'the dropped poll received it first');
  await live.complete([{ lease: back, outcome: 'committed', startedAt: 0, finishedAt: 0 }]);
  await live.close();
});

test('what a long poll took is extended to the lease while its holder keeps it', async () => {
  const { q, queueUrl, client } = await queue({ waitTimeSeconds: 1, pollVisibilitySeconds: 1, prefetch: 1 });
  await q.enqueue(tasks(1));
  const [l] = await q.claim('w1', 1, 30_000);
  assert.ok(l);
  const before = peer.requests.get('sqs:ChangeMessageVisibilityBatch') ?? 0;
  // no heartbeat: past its 1 s poll visibility the message stays invisible all the same
  await sleep(2500);
  const other = await client.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 0 }));
  assert.equal(other.Messages, undefined, 'still leased');
  assert.equal((peer.requests.get('sqs:ChangeMessageVisibilityBatch') ?? 0) - before, 1, 'one extension');
  await q.complete([{ lease: l, outcome: 'committed', startedAt: 0, finishedAt: 0 }]);
  await q.close();
});
