import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { SqliteQueue } from '../src/ledger/sqlite-queue.js';
import { tempDir } from './helpers.js';

function open(t: Parameters<typeof tempDir>[0]) {
  const file = path.join(tempDir(t), 'state.db');
  const q = new SqliteQueue(file, { maxAttempts: 2 });
  t.after(() => q.close());
  return { q, file };
}
const tasks = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ key: String(i), step: 'map', payload: { i } }));

test('two connections to one file never claim the same task', async (t) => {
  const { q, file } = open(t);
  q.enqueueSync(tasks(500));
  const other = new SqliteQueue(file);
  t.after(() => other.close());
  const seen = new Set<number>();
  for (let round = 0; round < 100; round++) {
    for (const [conn, owner] of [
      [q, 'a'],
      [other, 'b'],
    ] as const) {
      for (const l of conn.claimSync(owner, 3, 10_000)) {
        assert.equal(seen.has(l.taskId), false, `task ${l.taskId} claimed twice`);
        seen.add(l.taskId);
      }
    }
  }
  assert.equal(seen.size, 500);
  assert.deepEqual(q.countsSync(), {
    pending: 0,
    leased: 500,
    blocked: 0,
    done: 0,
    dead: 0,
    skipped: 0,
    total: 500,
  });
});

test('an expired lease returns the task, counted as an attempt; the last expiry makes it a dead letter', async (t) => {
  const { q } = open(t);
  q.enqueueSync(tasks(1));
  const [l1] = q.claimSync('w1', 1, 2000);
  assert.equal(l1!.attempt, 1);
  assert.equal(await q.reapExpired(Date.now() + 1000), 0, 'a live lease was reaped');
  assert.equal(await q.reapExpired(Date.now() + 5000), 1);
  const [l2] = q.claimSync('w2', 1, 2000);
  assert.equal(l2!.attempt, 2);
  assert.equal(await q.reapExpired(Date.now() + 5000), 1);
  assert.equal(q.countsSync().dead, 1);
  const [dl] = await q.deadLetters();
  assert.match(dl!.error, /lease expired/);
});

test("a dead worker's leases: only the task it was running is charged; what it held behind it goes back uncounted", async (t) => {
  const { q } = open(t);
  q.enqueueSync(tasks(10));
  // two claims, run in that order: 0..3, then 4..6 (a later claim time)
  const first = q.claimSync('w1', 4, 60_000);
  await new Promise((r) => setTimeout(r, 5));
  q.claimSync('w1', 3, 60_000);
  await q.complete([{ lease: first[0]!, outcome: 'ok', startedAt: 0, finishedAt: 1 }]);
  // 1 was finished and committed, but not acknowledged: 2 is the one it was running
  const asked: number[] = [];
  const n = await q.expireOwner('w1', 'worker w1 died (SIGKILL)', async (p) => {
    asked.push(p.i);
    return p.i === 1;
  });
  assert.equal(n, 6);
  assert.deepEqual(
    asked,
    [1, 2],
    'the store was asked in the order the worker runs its tasks, up to the first uncommitted',
  );
  const byKey = new Map(q.claimSync('w2', 10, 60_000).map((l) => [l.key, l.attempt]));
  assert.deepEqual(
    [...byKey].sort((a, b) => Number(a[0]) - Number(b[0])),
    [
      ['1', 1],
      ['2', 2],
      ['3', 1],
      ['4', 1],
      ['5', 1],
      ['6', 1],
      ['7', 1],
      ['8', 1],
      ['9', 1],
    ],
  );
  const rows = q.db
    .prepare(
      "SELECT outcome, count(*) AS n FROM attempts WHERE owner = 'w1' GROUP BY outcome ORDER BY outcome",
    )
    .all();
  assert.deepEqual(rows, [
    { outcome: 'expired', n: 1 },
    { outcome: 'ok', n: 1 },
    { outcome: 'released', n: 5 },
  ]);
  // the lease reaper does the same per owner: w2 stopped heartbeating in its first task
  assert.equal(await q.reapExpired(Date.now() + 120_000), 9);
  const again = q.claimSync('w3', 10, 60_000);
  assert.deepEqual(
    again.filter((l) => l.attempt !== byKey.get(l.key)).map((l) => [l.key, l.attempt]),
    [['1', 2]],
  );
});

test('a heartbeat extends every lease of its owner; release hands a task back without counting an attempt', async (t) => {
  const { q } = open(t);
  q.enqueueSync(tasks(3));
  const leases = q.claimSync('w1', 3, 2000);
  assert.equal(await q.heartbeat('w1', 60_000), 3);
  assert.equal(await q.reapExpired(Date.now() + 10_000), 0, 'the heartbeat did not extend the leases');
  await q.release(leases.slice(0, 2));
  assert.equal(q.countsSync().pending, 2);
  const again = q.claimSync('w2', 5, 2000);
  assert.deepEqual(
    again.map((l) => l.attempt),
    [1, 1],
  );
});

test('fail retries after the backoff delay, then dead-letters after maxAttempts; complete is idempotent', async (t) => {
  const { q } = open(t);
  q.enqueueSync(tasks(2));
  const [a, b] = q.claimSync('w', 2, 5000);
  const now = Date.now();
  await q.fail([{ lease: a!, error: 'boom', retryDelayMs: 60_000, startedAt: now, finishedAt: now }]);
  assert.equal(q.claimSync('w', 5, 5000).length, 0, 'a task in backoff was claimable');
  q.db.prepare('UPDATE tasks SET run_at = 0').run();
  const [a2] = q.claimSync('w', 5, 5000);
  assert.equal(a2!.attempt, 2);
  await q.fail([
    { lease: a2!, error: 'boom again', logPath: '/x.log', retryDelayMs: 0, startedAt: now, finishedAt: now },
  ]);
  const done = { lease: b!, outcome: 'committed' as const, startedAt: now, finishedAt: now };
  await q.complete([done]);
  await q.complete([done]);
  assert.deepEqual(q.countsSync(), {
    pending: 0,
    leased: 0,
    blocked: 0,
    done: 1,
    dead: 1,
    skipped: 0,
    total: 2,
  });
  assert.deepEqual(await q.deadLetters(), [
    { key: '0', step: 'map', index: 0, attempts: 2, error: 'boom again', logPath: '/x.log' },
  ]);
});
