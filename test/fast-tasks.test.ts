import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
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
