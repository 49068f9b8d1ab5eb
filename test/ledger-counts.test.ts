/**
 * Issue 24, item 3: the state file counts tasks per statement, not per row (migration 0003), and a
 * state file of the schema before it still resumes with right counts.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { MIGRATIONS } from '../src/ledger/migrations.js';
import { SqliteQueue } from '../src/ledger/sqlite-queue.js';
import { runCli, tempDir, writeFiles } from './helpers.js';

/** Rows written by the connection (sqlite's total_changes() counts those of triggers too). */
const changes = (q: SqliteQueue) => (q.db.prepare('SELECT total_changes() AS n').get() as { n: number }).n;

/** The counts table against a count of the tasks themselves, per step and state. */
function countsAgree(db: Database.Database): void {
  const kept = db.prepare('SELECT step, state, n FROM counts WHERE n <> 0 ORDER BY step, state').all();
  const real = db
    .prepare('SELECT step, state, count(*) AS n FROM tasks GROUP BY step, state ORDER BY step, state')
    .all();
  assert.deepEqual(kept, real);
}

test('a claim and a completion of 1,000 tasks write their counts once per statement, not once per task, and one lease index', async (t) => {
  const q = new SqliteQueue(path.join(tempDir(t), 'state.db'), { maxAttempts: 2 });
  t.after(() => q.close());
  const n = 1000;
  let c = changes(q);
  q.enqueueSync(Array.from({ length: n }, (_, i) => ({ key: `m/${i}`, step: 'm', payload: { i } })));
  // the rows and one counts row (before: a counts write per row, by a trigger)
  assert.equal(changes(q) - c, n + 1);
  c = changes(q);
  const leases = q.claimSync('w', n, 60_000);
  assert.equal(leases.length, n);
  assert.equal(changes(q) - c, n + 2, 'the rows, then pending and leased once each');
  c = changes(q);
  const now = Date.now();
  // a worker's acks and its next (empty) claim, in one transaction
  const next = await q.completeAndClaim(
    leases.map((l) => ({ lease: l, outcome: 'ok', startedAt: now, finishedAt: now })),
    'w',
    10,
    60_000,
  );
  assert.equal(next.length, 0);
  assert.equal(changes(q) - c, 2 * n + 2, 'each row and its attempt, then leased and done once each');
  assert.deepEqual(q.countsSync(), {
    pending: 0,
    leased: 0,
    blocked: 0,
    done: n,
    dead: 0,
    skipped: 0,
    total: n,
  });
  countsAgree(q.db);
  // and one index of the leases (a claim and a completion wrote two before)
  const leaseIndexes = (
    q.db.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'").all() as {
      name: string;
      sql: string | null;
    }[]
  ).filter((r) => r.sql?.includes("WHERE state = 'leased'"));
  assert.deepEqual(
    leaseIndexes.map((r) => r.name),
    ['tasks_leased'],
  );
  assert.deepEqual(
    (
      q.db.prepare("SELECT name FROM pragma_index_info('tasks_leased') ORDER BY seqno").all() as {
        name: string;
      }[]
    ).map((r) => r.name),
    ['owner', 'lease_expires'],
  );
});

test('the moves no statement counts itself (retry, dead letter, expiry, late ack) are still counted', async (t) => {
  const q = new SqliteQueue(path.join(tempDir(t), 'state.db'), { maxAttempts: 2 });
  t.after(() => q.close());
  q.enqueueSync(Array.from({ length: 6 }, (_, i) => ({ key: `m/${i}`, step: 'm', payload: { i } })));
  const [a, b, c, d, e] = q.claimSync('w', 5, 60_000);
  const now = Date.now();
  const f = { startedAt: now, finishedAt: now, error: 'x', retryDelayMs: 0 };
  await q.fail([{ lease: a!, ...f }]); // retried: pending
  await q.fail([{ lease: b!, ...f, final: true }]); // dead
  await q.release([c!]); // back to pending
  await q.reapExpired(now + 120_000); // d and e expire: pending again
  // a late ack of an expired lease, then an ack of a task another worker holds now
  await q.complete([{ lease: d!, outcome: 'ok', startedAt: now, finishedAt: now }]);
  const again = q.claimSync('v', 10, 60_000);
  assert.equal(again.length, 4);
  await q.complete([{ lease: e!, outcome: 'ok', startedAt: now, finishedAt: now }]);
  countsAgree(q.db);
  assert.deepEqual(q.countsSync(), {
    pending: 0,
    leased: 3,
    blocked: 0,
    done: 2,
    dead: 1,
    skipped: 0,
    total: 6,
  });
});

/** What migration 0003 replaced. */
const OLD_SCHEMA = `
  CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO counts (step, state, n) VALUES (NEW.step, NEW.state, 1)
      ON CONFLICT (step, state) DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER tasks_count_update AFTER UPDATE OF state ON tasks WHEN OLD.state <> NEW.state BEGIN
    UPDATE counts SET n = n - 1 WHERE step = OLD.step AND state = OLD.state;
    INSERT INTO counts (step, state, n) VALUES (NEW.step, NEW.state, 1)
      ON CONFLICT (step, state) DO UPDATE SET n = n + 1;
  END;
  DROP INDEX tasks_leased;
  CREATE INDEX tasks_leased ON tasks (lease_expires) WHERE state = 'leased';
  CREATE INDEX tasks_owner ON tasks (owner) WHERE state = 'leased';`;

test('a state file of the schema before (counts by trigger) resumes: migrated, its counts right, done tasks not run again', async (t) => {
  assert.equal(MIGRATIONS.length, 3, 'the schema this test migrates from is version 2');
  const dir = tempDir(t);
  writeFiles(dir, {
    'lines.txt': `${Array.from({ length: 300 }, (_, i) => `l${i}`).join('\n')}\n`,
    broken: '',
    'task.mjs': `import { appendFileSync, existsSync } from 'node:fs';
export default function (task) {
  appendFileSync('runs.log', task.input + '\\n');
  if (Number(task.input.slice(1)) % 7 === 3 && existsSync('broken')) throw new Error('broken');
}
`,
    'job.yaml': `name: old
tasks:
  map: { lines: lines.txt }
  module: ./task.mjs
retries: { maxAttempts: 1 }
concurrency: 2
`,
  });
  const r1 = await runCli(['run', 'job.yaml', '--quiet'], { cwd: dir });
  assert.equal(r1.code, 1, r1.stderr + r1.stdout);
  // the file as the version before left it: its schema (the count triggers, two lease indexes), version 2
  const file = path.join(dir, '.corral/jobs/old/state.db');
  const db = new Database(file);
  db.exec(`DROP TRIGGER tasks_count_update; ${OLD_SCHEMA} PRAGMA user_version = 2;`);
  countsAgree(db);
  db.close();
  rmSync(path.join(dir, 'broken'));
  const r2 = await runCli(['run', 'job.yaml', '--json'], { cwd: dir });
  assert.equal(r2.code, 0, r2.stderr + r2.stdout);
  const s = JSON.parse(r2.stdout);
  assert.deepEqual(
    { done: s.counts.done, dead: s.counts.dead, total: s.counts.total },
    { done: 300, dead: 0, total: 300 },
  );
  const status = await runCli(['status', 'old', '--json'], { cwd: dir });
  assert.equal(status.code, 0, status.stderr);
  const st = JSON.parse(status.stdout);
  assert.equal(st.counts.done, 300);
  assert.equal(st.counts.total, 300);
  const after = new Database(file, { readonly: true });
  t.after(() => after.close());
  assert.equal(after.pragma('user_version', { simple: true }), 3);
  countsAgree(after);
  // each of the 43 failed tasks ran twice, every other task once
  const runs = readFileSync(path.join(dir, 'runs.log'), 'utf8').trim().split('\n');
  assert.equal(runs.length, 300 + 43);
});
