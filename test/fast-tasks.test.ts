import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteQueue } from '../src/ledger/sqlite-queue.js';
import { runCli, tempDir, writeFiles } from './helpers.js';

// Issue 24, item 3: a million no-op function tasks. Each claim and each ack flush is a write
// transaction that the other workers wait for; tasks this short are claimed in batches of up to
// 2,048 (it was 256), and a function that returns no promise gets no timer nor abort signal.

test('no-op function tasks are claimed in batches larger than 256, and every completion is in the state file', async (t) => {
  const dir = tempDir(t);
  const n = 20_000;
  writeFiles(dir, {
    'lines.txt': `${Array.from({ length: n }, (_, i) => String(i)).join('\n')}\n`,
    'noop.mjs': 'export default function noop() {}\n',
    'job.yaml': 'name: fast\ntasks:\n  map: { lines: lines.txt }\n  module: ./noop.mjs\nconcurrency: 1\n',
  });
  const r = await runCli(['run', 'job.yaml', '--json'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const db = new Database(path.join(dir, '.corral/jobs/fast/state.db'), { readonly: true });
  try {
    // a claim stamps every task it leases with the same started_at (one worker here)
    const claims = db
      .prepare('SELECT started_at, count(*) AS n FROM tasks GROUP BY started_at ORDER BY n DESC')
      .all() as { n: number }[];
    const largest = claims[0]?.n ?? 0;
    assert.ok(largest > 256, `largest claim ${largest} tasks`);
    assert.ok(claims.length < n / 100, `${claims.length} claims for ${n} tasks`);
    const c = db
      .prepare(
        "SELECT sum(state = 'done') AS done, (SELECT count(*) FROM attempts WHERE outcome = 'ok') AS ok FROM tasks",
      )
      .get() as { done: number; ok: number };
    assert.deepEqual(c, { done: n, ok: n });
  } finally {
    db.close();
  }
});

test("a function whose result is the string 'timeout' succeeds with it as its output; one past its timeout fails and sees its signal aborted", async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'lines.txt': 'a\nb\n',
    'f.mjs': `export default async function f(task) {
  if (task.input === 'a') return 'timeout';
  await new Promise((res) => task.signal.addEventListener('abort', res));
  throw new Error('aborted: ' + task.signal.reason.message);
}
`,
    'job.yaml': `name: results
tasks:
  map: { lines: lines.txt }
  module: ./f.mjs
timeout: 1s
retries: { maxAttempts: 1 }
outputs: out/{index}.txt
concurrency: 1
`,
  });
  const r = await runCli(['run', 'job.yaml', '--json'], { cwd: dir });
  const summary = JSON.parse(r.stdout);
  assert.deepEqual({ done: summary.counts.done, dead: summary.counts.dead }, { done: 1, dead: 1 }, r.stderr);
  assert.equal(readFileSync(path.join(dir, 'out/0.txt'), 'utf8'), 'timeout');
  const db = new Database(path.join(dir, '.corral/jobs/results/state.db'), { readonly: true });
  try {
    const dead = db.prepare("SELECT last_error FROM tasks WHERE state = 'dead'").get() as {
      last_error: string;
    };
    assert.match(dead.last_error, /timed out after 1s/);
  } finally {
    db.close();
  }
});

test("a worker's acks and its next claim are one write: both or neither", async (t) => {
  const file = path.join(tempDir(t), 'state.db');
  const q = new SqliteQueue(file);
  t.after(() => q.close());
  q.enqueueSync(Array.from({ length: 10 }, (_, i) => ({ key: String(i), step: 'map', payload: { i } })));
  const first = q.claimSync('w', 4, 30_000);
  const now = Date.now();
  const acks = first.map((lease) => ({ lease, outcome: 'ok' as const, startedAt: now, finishedAt: now }));
  const next = await q.completeAndClaim(acks, 'w', 4, 30_000);
  assert.deepEqual(
    next.map((l) => l.payload.i),
    [4, 5, 6, 7],
  );
  assert.deepEqual(
    { ...q.countsSync(), total: undefined },
    { pending: 2, leased: 4, blocked: 0, done: 4, dead: 0, skipped: 0, total: undefined },
  );
  // another connection holds the write lock: neither the acks nor the claim happen
  const other = new Database(file);
  t.after(() => other.close());
  other.exec('BEGIN IMMEDIATE');
  const blocked = new SqliteQueue(file, { busyTimeoutMs: 50 });
  t.after(() => blocked.close());
  const acks2 = next.map((lease) => ({ lease, outcome: 'ok' as const, startedAt: now, finishedAt: now }));
  await assert.rejects(blocked.completeAndClaim(acks2, 'w', 4, 30_000), /SQLITE_BUSY|locked/);
  other.exec('ROLLBACK');
  assert.deepEqual(
    { ...q.countsSync(), total: undefined },
    { pending: 2, leased: 4, blocked: 0, done: 4, dead: 0, skipped: 0, total: undefined },
  );
  const done = await q.completeAndClaim(acks2, 'w', 4, 30_000);
  assert.deepEqual(
    done.map((l) => l.payload.i),
    [8, 9],
  );
  const attempts = q.db.prepare("SELECT count(*) AS n FROM attempts WHERE outcome = 'ok'").get() as {
    n: number;
  };
  assert.equal(attempts.n, 8);
});
