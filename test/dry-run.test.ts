import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, tempDir, writeFiles } from './helpers.js';

/** Every file below `dir` with its size and modification time. */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!existsSync(dir)) return out;
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const f = path.join(e.parentPath, e.name);
    const st = statSync(f);
    out[path.relative(dir, f)] = e.isDirectory() ? 'dir' : `${st.size} ${st.mtimeMs}`;
  }
  return out;
}

const WORKFLOW = `name: preview
steps:
  - name: parse
    map: { lines: xs.txt }
    command: 'touch ran-{index}; echo {input}'
    outputs: parsed/{index}
  - name: enrich
    map: { outputsOf: parse }
    command: 'touch ran-enrich; cat {input}'
    outputs: enriched/{index}
  - name: report
    reduce: enrich
    command: 'cat {inputs}'
    outputs: report.txt
  - name: build
    needs: [report]
    command: 'mkdir -p gen; echo x > gen/a.txt'
  - name: later
    needs: [build]
    map: { glob: "gen/*.txt" }
    command: 'cat {input}'
    outputs: later/{input.name}
`;

test('run --dry-run validates, plans and prints counts per step, the first tasks and what is committed; it runs nothing and writes no state (issue 22, item 3)', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'xs.txt': 'a\n\nb\nc\n',
    'wf.yaml': WORKFLOW,
    'once.yaml':
      'name: once\ntasks:\n  map: { lines: xs.txt }\n  command: "echo {input}"\noutputs: once/{index}\n',
    // parse/1's output is there already: a run would skip it
    'parsed/1': 'b\n',
  });
  // a state folder with another job's state in it, which the dry run must leave as it is
  const ran = await runCli(['run', 'once.yaml', '-q'], { cwd: dir });
  assert.equal(ran.code, 0, ran.stderr);
  const before = tree(dir);
  assert.ok(before['.corral/jobs/once/state.db']);

  const r = await runCli(['run', 'wf.yaml', '--dry-run'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    [
      'dry run of job preview: 8 task(s), 1 already committed (skipped), 7 would run',
      '  step parse   3 task(s): 2 to run, 1 committed',
      '  step enrich  3 task(s): 3 to run, 0 committed (after parse)',
      '  step report  1 task(s): 1 to run, 0 committed (after enrich)',
      '  step build   1 task(s): 1 to run, 0 committed (after report)',
      '  step later   planned once build has run (its inputs are files written by then)',
      'first 8 task(s):',
      '  parse/0  line 1 "a" → parsed/0',
      '  parse/1  line 3 "b" → parsed/1  (committed: skipped)',
      '  parse/2  line 4 "c" → parsed/2',
      '  enrich/0  parsed/0 → enriched/0',
      '  enrich/1  parsed/1 → enriched/1',
      '  enrich/2  parsed/2 → enriched/2',
      '  report/0  3 inputs → report.txt',
      '  build/0  -',
      'nothing was run and no state was written',
      '',
    ].join('\n'),
  );
  const j = await runCli(['run', 'wf.yaml', '--dry-run', '--json'], { cwd: dir });
  assert.equal(j.code, 0, j.stderr);
  const plan = JSON.parse(j.stdout);
  assert.deepEqual([plan.total, plan.committed, plan.toRun], [8, 1, 7]);
  assert.deepEqual(
    plan.steps.map((s: { name: string; tasks: number; state: string; after: string[] }) => [
      s.name,
      s.tasks,
      s.state,
      s.after,
    ]),
    [
      ['parse', 3, 'planned', []],
      ['enrich', 3, 'planned', ['parse']],
      ['report', 1, 'planned', ['enrich']],
      ['build', 1, 'planned', ['report']],
      ['later', 0, 'waiting', ['build']],
    ],
  );
  assert.deepEqual(plan.tasks[1], {
    key: 'parse/1',
    step: 'parse',
    input: 'line 3 "b"',
    output: 'parsed/1',
    committed: true,
  });
  // nothing ran, nothing was written: the folder (state folder included) is as it was
  assert.deepEqual(tree(dir), before);

  // bad input is refused as by a run: exit 2, one line, nothing created
  writeFiles(dir, { 'bad.yaml': 'name: bad\ntasks:\n  map: { lines: none.txt }\n  command: "true"\n' });
  const before2 = tree(dir);
  const bad = await runCli(['run', 'bad.yaml', '--dry-run'], { cwd: dir });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^corral: error: tasks\.map\.lines: .*none\.txt/);
  assert.deepEqual(tree(dir), before2);
});

test('corral dag writes the graph as Graphviz dot and Mermaid: steps with edges, and tasks for small workflows (issue 22, item 3)', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, { 'xs.txt': 'a\nb\n', 'wf.yaml': WORKFLOW });
  const before = tree(dir);

  const dot = await runCli(['dag', 'wf.yaml'], { cwd: dir });
  assert.equal(dot.code, 0, dot.stderr);
  const d = dot.stdout;
  assert.match(d, /^digraph "preview" \{\n/);
  assert.match(d, /\n\}\n$/);
  // small: every task, in a cluster per step, with its input, and the task-to-task edges
  assert.equal((d.match(/subgraph cluster_s\d \{/g) ?? []).length, 5);
  assert.match(
    d,
    /subgraph cluster_s0 \{\n {4}label="parse";\n {4}t1 \[label="parse\/0\\nline 1 \\"a\\""\];\n {4}t2 \[label="parse\/1\\nline 2 \\"b\\""\];\n {2}\}/,
  );
  assert.match(d, /\n {2}t1 -> t3;\n {2}t2 -> t4;\n/);
  assert.match(d, /t4 -> t5 \[label="all outputs", ltail=cluster_s1, lhead=cluster_s2\];/);
  assert.match(d, /t5 -> t6 \[label="needs", style=dashed, ltail=cluster_s2, lhead=cluster_s3\];/);
  assert.match(d, /s4 \[label="later\\n\(planned once build has run\)", style=dashed\];/);
  // balanced braces, one statement per line
  assert.equal((d.match(/\{/g) ?? []).length, (d.match(/\}/g) ?? []).length);

  const steps = await runCli(['dag', 'wf.yaml', '--no-tasks', '--format', 'mermaid'], { cwd: dir });
  assert.equal(steps.code, 0, steps.stderr);
  assert.equal(
    steps.stdout,
    [
      'flowchart LR',
      '  s0["parse<br/>2 tasks"]',
      '  s1["enrich<br/>2 tasks"]',
      '  s2["report<br/>1 task"]',
      '  s3["build<br/>1 task"]',
      '  s4["later<br/>(planned once build has run)"]',
      '  s0 -->|each output| s1',
      '  s1 -->|all outputs| s2',
      '  s2 -.->|needs| s3',
      '  s3 -.->|needs| s4',
      '',
    ].join('\n'),
  );
  const mer = await runCli(['dag', 'wf.yaml', '--format', 'mermaid', '-o', 'g.mmd'], { cwd: dir });
  assert.equal(mer.code, 0, mer.stderr);
  const m = readFileSync(path.join(dir, 'g.mmd'), 'utf8');
  assert.match(m, /\n {2}subgraph s0\["parse"\]\n {4}t1\["parse\/0<br\/>line 1 #quot;a#quot;"\]\n/);
  assert.match(m, /\n {2}t1 --> t3\n {2}t2 --> t4\n$/);
  assert.equal((m.match(/^ {2}subgraph /gm) ?? []).length, (m.match(/^ {2}end$/gm) ?? []).length);

  // over 50 tasks: the steps only, unless --tasks
  writeFiles(dir, { 'xs.txt': `${Array.from({ length: 60 }, (_, i) => `l${i}`).join('\n')}\n` });
  const big = await runCli(['dag', 'wf.yaml'], { cwd: dir });
  assert.equal(big.code, 0, big.stderr);
  assert.doesNotMatch(big.stdout, /subgraph|t\d+ /);
  assert.match(big.stdout, /s0 \[label="parse\\n60 tasks"\];/);
  assert.match(big.stdout, /s0 -> s1 \[label="each output"\];/);
  const forced = await runCli(['dag', 'wf.yaml', '--tasks'], { cwd: dir });
  assert.equal((forced.stdout.match(/ -> /g) ?? []).length, 60 + 3);
  // it planned in memory: no state folder
  assert.ok(!existsSync(path.join(dir, '.corral')));
  assert.deepEqual(Object.keys(tree(dir)).sort(), [...Object.keys(before), 'g.mmd'].sort());
});

test('corral dag groups HyperFlow processes by name, with an edge per signal between names (issue 22, item 3)', async (t) => {
  const dir = tempDir(t);
  const wf = {
    name: 'hf',
    processes: [
      { name: 'split', config: { executor: { executable: 'cp', args: ['s0', 's1'] } }, ins: [0], outs: [1] },
      { name: 'work', config: { executor: { executable: 'cp', args: ['s1', 's2'] } }, ins: [1], outs: [2] },
      { name: 'work', config: { executor: { executable: 'cp', args: ['s1', 's3'] } }, ins: [1], outs: [3] },
      {
        name: 'join',
        config: { executor: { executable: 'cat', args: ['s2', 's3'] } },
        ins: [2, 3],
        outs: [4],
      },
    ],
    signals: [{ name: 's0' }, { name: 's1' }, { name: 's2' }, { name: 's3' }, { name: 's4' }],
    ins: [0],
    outs: [4],
  };
  writeFiles(dir, { 'wf.json': JSON.stringify(wf), s0: 'x\n' });
  const steps = await runCli(['dag', 'wf.json', '--no-tasks', '--format', 'mermaid'], { cwd: dir });
  assert.equal(steps.code, 0, steps.stderr);
  assert.equal(
    steps.stdout,
    [
      'flowchart LR',
      '  s0["split<br/>1 task"]',
      '  s1["work<br/>2 tasks"]',
      '  s2["join<br/>1 task"]',
      '  s0 --> s1',
      '  s1 --> s2',
      '',
    ].join('\n'),
  );
  const tasks = await runCli(['dag', 'wf.json'], { cwd: dir });
  assert.equal(tasks.code, 0, tasks.stderr);
  assert.match(
    tasks.stdout,
    /subgraph cluster_s1 \{\n {4}label="work";\n {4}t2 \[label="work\/0\\nin s1 → out s2"\];\n {4}t3 \[label="work\/1\\nin s1 → out s3"\];\n {2}\}/,
  );
  assert.deepEqual(tasks.stdout.match(/t\d -> t\d/g), ['t1 -> t2', 't1 -> t3', 't2 -> t4', 't3 -> t4']);
  const dry = await runCli(['run', 'wf.json', '--dry-run'], { cwd: dir });
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /^dry run of job hf: 4 task\(s\), 0 already committed \(skipped\), 4 would run\n/);
  assert.match(dry.stdout, /\n {2}work\/1 {2}in s1 → out s3\n/);
  assert.ok(!existsSync(path.join(dir, '.corral')));
  assert.ok(!existsSync(path.join(dir, 's1')));
});
