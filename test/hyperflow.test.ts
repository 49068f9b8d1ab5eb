import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';
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

/** A workflow of shell processes: each is [name, script, ins, outs]; signals are every name used. */
function shellWorkflow(
  name: string,
  processes: Array<[string, string, string[], string[]]>,
  ins: string[],
  outs: string[] = [],
): string {
  const names = [...new Set([...ins, ...processes.flatMap(([, , i, o]) => [...i, ...o])])];
  return JSON.stringify({
    name,
    processes: processes.map(([n, sh, i, o]) => ({
      name: n,
      function: 'command',
      type: 'dataflow',
      config: { executor: { executable: 'sh', args: ['-c', sh] } },
      ins: i,
      outs: o,
    })),
    signals: names.map((n) => ({ name: n })),
    ins,
    outs,
  });
}

test('HyperFlow: a workflow input that a process writes is refused at import, and the input is kept', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'input.csv': 'a,b\n1,2\n',
    'wf.json': shellWorkflow('clobber', [['p', 'exit 1', [], ['input.csv']]], ['input.csv']),
  });
  const r = await runCli(['run', 'wf.json'], { cwd: dir });
  assert.equal(r.code, 2, r.stderr + r.stdout);
  assert.match(
    r.stderr,
    /^corral: error: .*processes\[0\]\.outs\[0\]: process "p" writes "input\.csv", which is a workflow input \(ins\): a failed attempt would delete it \(fix: /m,
  );
  assert.equal(readFileSync(path.join(dir, 'input.csv'), 'utf8'), 'a,b\n1,2\n');
  assert.equal(existsSync(path.join(dir, '.corral')), false, 'nothing created');
});

test('HyperFlow: an output that names a folder is refused at import; one that turns out a folder fails its attempt', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, { 'in.txt': 'x\n' });
  mkdirSync(path.join(dir, 'sub'));
  mkdirSync(path.join(dir, 'made'));
  // known at import: the working directory itself, a trailing slash, a folder that exists
  for (const [out, what] of [
    ['sub/..', /writes "sub\/\.\.", which names a folder, not a file/],
    ['.', /writes "\.", which names a folder, not a file/],
    ['res/', /writes "res\/", which names a folder, not a file/],
    ['made', /writes "made", which is a folder in .*, not a file/],
  ] as const) {
    writeFiles(dir, { 'wf.json': shellWorkflow('dirs', [['p', 'exit 1', ['in.txt'], [out]]], ['in.txt']) });
    const r = await runCli(['run', 'wf.json'], { cwd: dir });
    assert.equal(r.code, 2, `${out}: ${r.stderr}${r.stdout}`);
    assert.match(r.stderr, what);
    assert.doesNotMatch(r.stderr, /internal error|\n\s+at /);
    assert.equal(existsSync(path.join(dir, '.corral')), false, 'nothing created');
  }
  // known only when the process has run: a folder where a file was promised is a failed
  // attempt with the reason, whether the process succeeded or failed; the rest of the run goes on
  writeFiles(dir, {
    'wf.json': shellWorkflow(
      'dirs',
      [
        ['mkdir', 'mkdir -p res && touch res/a', ['in.txt'], ['res']],
        ['mkdirfail', 'mkdir -p res2; exit 3', ['in.txt'], ['res2']],
        ['ok', 'cp in.txt ok.txt', ['in.txt'], ['ok.txt']],
      ],
      ['in.txt'],
    ),
  });
  const r = await runCli(['run', 'wf.json', '--json'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr + r.stdout);
  const s = JSON.parse(r.stdout);
  assert.equal(s.counts.done, 1);
  assert.equal(s.counts.dead, 2);
  const errors = Object.fromEntries(
    (s.deadLetters as { key: string; error: string }[]).map((d) => [d.key, d.error]),
  );
  assert.match(errors['mkdir/0']!, /succeeded but its output res is a folder, not a file/);
  assert.match(errors['mkdirfail/0']!, /exited with code 3/);
  // a failed attempt removes the files it wrote, never a folder
  assert.ok(statSync(path.join(dir, 'res2')).isDirectory());
  assert.equal(readFileSync(path.join(dir, 'res/a'), 'utf8'), '');
});

test('HyperFlow: after the state is lost, --fresh runs only the processes whose outputs are not all there', async (t) => {
  const dir = tempDir(t);
  // each process notes that it ran; c writes two outputs
  writeFiles(dir, {
    'in.txt': 'x\n',
    'wf.json': shellWorkflow(
      'again',
      [
        ['a', 'echo a >> runs.log; cp in.txt a.txt', ['in.txt'], ['a.txt']],
        ['b', 'echo b >> runs.log; cp a.txt b.txt', ['a.txt'], ['b.txt']],
        ['c', 'echo c >> runs.log; cp b.txt c1.txt; cp b.txt c2.txt', ['b.txt'], ['c1.txt', 'c2.txt']],
        ['d', 'echo d >> runs.log', ['c1.txt'], []],
      ],
      ['in.txt'],
      ['c2.txt'],
    ),
  });
  const runs = () => readFileSync(path.join(dir, 'runs.log'), 'utf8').split('\n').filter(Boolean);
  const first = await runCli(['run', 'wf.json', '--json'], { cwd: dir });
  assert.equal(first.code, 0, first.stderr + first.stdout);
  assert.deepEqual(runs(), ['a', 'b', 'c', 'd']);
  // the state is lost: every process with outputs is done without running (d has none: it runs)
  rmSync(path.join(dir, '.corral'), { recursive: true });
  const again = await runCli(['run', 'wf.json', '--fresh', '--json'], { cwd: dir });
  assert.equal(again.code, 0, again.stderr + again.stdout);
  assert.equal(JSON.parse(again.stdout).counts.done, 4);
  assert.deepEqual(runs(), ['a', 'b', 'c', 'd', 'd']);
  // one of c's two outputs is gone: c runs again, the others do not
  rmSync(path.join(dir, 'c2.txt'));
  const third = await runCli(['run', 'wf.json', '--fresh', '--json'], { cwd: dir });
  assert.equal(third.code, 0, third.stderr + third.stdout);
  assert.deepEqual(runs(), ['a', 'b', 'c', 'd', 'd', 'c', 'd']);
  assert.equal(readFileSync(path.join(dir, 'c2.txt'), 'utf8'), 'x\n');
});

/** A chain of `n` processes (p0 → p1 → …), each with its own name; process `fail` fails. */
function failingChain(n: number, fail = 0): string {
  return JSON.stringify({
    name: 'chain',
    processes: Array.from({ length: n }, (_, i) => ({
      name: `p${i}`,
      config: { executor: { executable: 'sh', args: ['-c', i === fail ? 'exit 1' : `cp s${i} s${i + 1}`] } },
      ins: [i],
      outs: [i + 1],
    })),
    signals: Array.from({ length: n + 1 }, (_, i) => ({ name: `s${i}` })),
    ins: [0],
    outs: [n],
  });
}

test('HyperFlow: a failure at the head of 8,000 chained processes skips the rest in linear time', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, { s0: 'x\n', 'wf.json': failingChain(8000) });
  // it took > 10 minutes when each pass over every step passed the failure on one link further
  const t0 = Date.now();
  const r = await runCli(['run', 'wf.json', '--json'], { cwd: dir, timeoutMs: 90_000 });
  const seconds = (Date.now() - t0) / 1000;
  assert.equal(r.code, 1, `${r.signal ?? ''} after ${seconds} s: ${r.stderr.slice(-500)}`);
  const s = JSON.parse(r.stdout);
  assert.equal(s.counts.dead, 1);
  assert.equal(s.counts.skipped, 7999);
  assert.ok(seconds < 60, `took ${seconds} s`);
  assert.match(s.failedPaths[0], /^p0\/0 \(in s0 → out s1\) failed → p1\/0 skipped → p2\/0 skipped/);
});

test('HyperFlow: a SIGTERM while a failure spreads through 8,000 processes ends the run at once; the resume finishes it', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, { s0: 'x\n', 'wf.json': failingChain(8000) });
  const child = startCli(['run', 'wf.json', '--json'], { cwd: dir });
  t.after(() => child.kill('SIGKILL'));
  // the head has failed: the coordinator now passes that on down the chain
  const db = path.join(dir, '.corral/jobs/chain/state.db');
  await waitFor(
    () => {
      if (!existsSync(db)) return false;
      const d = new Database(db, { readonly: true, fileMustExist: true });
      try {
        return (
          (d.prepare("SELECT count(*) AS n FROM tasks WHERE state = 'dead'").get() as { n: number }).n > 0
        );
      } catch {
        return false; // not planned yet
      } finally {
        d.close();
      }
    },
    60_000,
    20,
  );
  await endsOnSigterm(child);
  const again = await runCli(['run', 'wf.json', '--json'], { cwd: dir, timeoutMs: 90_000 });
  assert.equal(again.code, 1, again.stderr.slice(-500));
  const s = JSON.parse(again.stdout);
  assert.equal(s.counts.dead, 1);
  assert.equal(s.counts.skipped, 7999);
});

test('HyperFlow: a SIGTERM during the plan of 6,000 processes ends the run; the resume takes the plan up again', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, { s0: 'x\n', 'wf.json': failingChain(6000, 3) });
  const child = startCli(['run', 'wf.json', '--json'], { cwd: dir });
  t.after(() => child.kill('SIGKILL'));
  // the plan is written in transactions of 2,000 rows: the first is there
  const db = path.join(dir, '.corral/jobs/chain/state.db');
  await waitFor(
    () => {
      if (!existsSync(db)) return false;
      const d = new Database(db, { readonly: true, fileMustExist: true });
      try {
        return (d.prepare('SELECT count(*) AS n FROM tasks').get() as { n: number }).n > 0;
      } catch {
        return false;
      } finally {
        d.close();
      }
    },
    60_000,
    10,
  );
  await endsOnSigterm(child);
  // the resume plans the rest once, with every edge: p3 fails and its failure reaches the end
  const again = await runCli(['run', 'wf.json', '--json'], { cwd: dir, timeoutMs: 90_000 });
  assert.equal(again.code, 1, again.stderr.slice(-500));
  const s = JSON.parse(again.stdout);
  assert.deepEqual([s.counts.total, s.counts.done, s.counts.dead, s.counts.skipped], [6000, 3, 1, 5996]);
  const d = new Database(db, { readonly: true });
  t.after(() => d.close());
  const viaEdges = d
    .prepare(
      "SELECT count(*) AS n FROM tasks WHERE state = 'skipped' AND last_error LIKE 'skipped: needs task %'",
    )
    .get() as { n: number };
  assert.equal(viaEdges.n, 5996, 'every skip passed along an edge');
});

/** SIGTERM ends the run promptly: interrupted (130), or already finished with the failure (1); never killed after a wait. */
async function endsOnSigterm(child: ReturnType<typeof startCli>): Promise<void> {
  const t0 = Date.now();
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const r = await child.result;
  clearTimeout(timer);
  const seconds = (Date.now() - t0) / 1000;
  assert.ok(r.code === 130 || r.code === 1, `exit ${r.code} (${r.signal}) ${seconds} s after SIGTERM`);
  assert.ok(seconds < 15, `ended ${seconds} s after SIGTERM`);
}

test('HyperFlow: {{vars}} are filled in every string of the document (signal names, refs, executable, stdout)', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in-a.txt': 'a\n',
    'wf.json': JSON.stringify({
      name: 'wf-{{tag}}',
      processes: [
        {
          name: 'copy-{{tag}}',
          function: '{{function}}',
          config: {
            executor: {
              executable: '{{shell}}',
              args: ['-c', 'cat in-{{tag}}.txt; echo {{tag}}'],
              stdout: 'out-{{tag}}.txt',
            },
          },
          ins: ['in-{{tag}}.txt'],
          outs: ['out-{{tag}}.txt'],
        },
      ],
      signals: [{ name: 'in-{{tag}}.txt' }, { name: 'out-{{tag}}.txt' }],
      ins: ['in-{{tag}}.txt'],
      outs: ['out-{{tag}}.txt'],
    }),
  });
  const r = await runCli(
    ['run', 'wf.json', '--var', 'tag=a', '--var', 'function=command', '--var', 'shell=sh', '--json'],
    { cwd: dir },
  );
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const s = JSON.parse(r.stdout);
  assert.equal(s.job, 'wf-a');
  assert.equal(s.counts.done, 1);
  // config.executor.stdout: the process's stdout is the file, not its log
  assert.equal(readFileSync(path.join(dir, 'out-a.txt'), 'utf8'), 'a\na\n');
});

test('HyperFlow: a 7 MB workflow (20,000 processes) is read as JSON, not through the YAML reader', async (t) => {
  const dir = tempDir(t);
  const n = 20_000;
  const wf = JSON.stringify(
    {
      name: 'big',
      processes: Array.from({ length: n }, (_, i) => ({
        name: `p${i % 50}`,
        function: 'command',
        type: 'dataflow',
        firingLimit: 1,
        config: {
          executor: { executable: 'sh', args: ['-c', `cp s${i}.dat s${i + 1}.dat`, 'x'.repeat(40)] },
        },
        ins: [i],
        outs: [i + 1],
      })),
      signals: Array.from({ length: n + 1 }, (_, i) => ({ name: `s${i}.dat` })),
      ins: [0],
      outs: [n],
    },
    null,
    1,
  );
  assert.ok(wf.length > 7_000_000, `${wf.length} bytes`);
  writeFiles(dir, { 'wf.json': wf });
  // the whole document is read and checked: the missing input is found (it was refused as over
  // 4 MiB; through the YAML reader 3.3 MB took 35 s on a loaded 2-core machine)
  const t0 = Date.now();
  const r = await runCli(['run', 'wf.json'], { cwd: dir, timeoutMs: 120_000 });
  const seconds = (Date.now() - t0) / 1000;
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^corral: error: .*ins: workflow input s0\.dat not found/m);
  assert.ok(seconds < 60, `took ${seconds} s`);
  assert.equal(existsSync(path.join(dir, '.corral')), false, 'nothing created');
});
