import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { runCli, tempDir, writeFiles } from './helpers.js';
import { inputs, mosaic, N } from './hyperflow-mosaic.js';

for (const form of ['index', 'name'] as const) {
  test(`HyperFlow workflow (${form} form, 26 processes) runs to completion in a valid topological order`, async (t) => {
    const dir = tempDir(t);
    const wf = mosaic(form);
    writeFiles(dir, { ...inputs(), 'workflow.json': JSON.stringify(wf, null, 1) });
    const r = await runCli(['run', 'workflow.json', '--var', 'scale=2.5', '--json'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const s = JSON.parse(r.stdout);
    assert.equal(s.counts.done, 26);
    // outputs land in the workflow's folder under their signal names
    const mosaicTxt = readFileSync(path.join(dir, 'mosaic.txt'), 'utf8');
    assert.equal(mosaicTxt.split('\n').filter((l) => l.startsWith('projected tile')).length, N);
    assert.match(mosaicTxt, /projected tile 3 x2\.5/);
    // every edge producer → consumer: the producer finished before the consumer started
    const db = new Database(path.join(dir, '.corral/jobs/mosaic/state.db'), { readonly: true });
    t.after(() => db.close());
    const rows = db.prepare('SELECT id, started_at, finished_at FROM tasks').all() as {
      id: number;
      started_at: number;
      finished_at: number;
    }[];
    const byId = new Map(rows.map((x) => [x.id, x]));
    const edges = db.prepare('SELECT task_id, dependent_id FROM deps').all() as {
      task_id: number;
      dependent_id: number;
    }[];
    assert.equal(edges.length, 2 * (N - 1) + (N - 1) + 1 + 2 * N + N, 'edges of the mosaic');
    for (const e of edges) {
      const a = byId.get(e.task_id)!;
      const b = byId.get(e.dependent_id)!;
      assert.ok(a.finished_at <= b.started_at, `task ${e.dependent_id} started before ${e.task_id} finished`);
    }
    // per-step counts group processes by name
    const st = JSON.parse((await runCli(['status', 'mosaic', '--json'], { cwd: dir })).stdout);
    assert.equal(st.steps.mProject.done, N);
    assert.equal(st.steps.mAdd.done, 1);
  });
}

test('HyperFlow: missing inputs, unset {{vars}} and unsupported functions exit 2 naming them', async (t) => {
  const dir = tempDir(t);
  const wf = mosaic('name');
  writeFiles(dir, { 'workflow.json': JSON.stringify(wf) });
  const a = await runCli(['run', 'workflow.json', '--var', 'scale=1'], { cwd: dir });
  assert.equal(a.code, 2);
  assert.match(a.stderr, /ins: workflow inputs in_0\.txt, in_1\.txt.* not found/);
  writeFiles(dir, inputs());
  const b = await runCli(['run', 'workflow.json'], { cwd: dir });
  assert.equal(b.code, 2);
  assert.match(
    b.stderr,
    /processes\[0\]\.config\.executor\.args\[3\]: uses \{\{scale\}\}, which has no value \(fix: pass --var scale=VALUE\)/,
  );
  const js = {
    ...wf,
    processes: [...wf.processes, { name: 'sum', function: 'add', ins: ['diffs.tbl'], outs: [] }],
  };
  writeFiles(dir, { 'workflow.json': JSON.stringify(js) });
  const c = await runCli(['run', 'workflow.json', '--var', 'scale=1'], { cwd: dir });
  assert.equal(c.code, 2);
  assert.match(
    c.stderr,
    /processes\[26\]\.function: process "sum" uses function "add", which corral does not run/,
  );
});
