// Issue 24, item 2: module functions that return without awaiting anything (the README's first
// way: return the output) never let their worker's event loop run, yet their outputs are
// committed while the next tasks run, not only once 2,048 of them are pending.
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, tempDir, writeFiles } from './helpers.js';

test('outputs of module functions that return at once are committed while the next tasks run, not after 2,048 of them', async (t) => {
  const dir = tempDir(t);
  const n = 2100;
  writeFiles(dir, {
    'lines.txt': `${Array.from({ length: n }, (_, i) => `l${i}`).join('\n')}\n`,
    // 2 ms of work, synchronously, then the output is returned
    'w.mjs': `export default function (ctx) {
  const end = Date.now() + 2;
  while (Date.now() < end);
  return ctx.input + '\\n';
}
`,
    'job.yaml': `name: sync
tasks:
  map: { lines: lines.txt }
  module: ./w.mjs
outputs: out/{index}.txt
concurrency: 1
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  for (let i = 0; i < n; i++) assert.equal(readFileSync(path.join(dir, `out/${i}.txt`), 'utf8'), `l${i}\n`);
  // the first output was linked to its path (its change time) after how many tasks had finished
  const linked = statSync(path.join(dir, 'out/0.txt')).ctimeMs;
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(path.join(dir, '.corral/jobs/sync/state.db'), { readonly: true });
  try {
    const { before } = db
      .prepare('SELECT count(*) AS before FROM tasks WHERE finished_at < ?')
      .get(linked) as {
      before: number;
    };
    // a group every 100 ms (~50 tasks of 2 ms) and its flush; before, the first group started at
    // 2,048 outputs pending
    assert.ok(before < 1000, `task 0's output was committed after ${before} tasks had finished`);
  } finally {
    db.close();
  }
});
