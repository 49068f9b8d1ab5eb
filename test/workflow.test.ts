import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';

test('map → map over outputs → reduce: the result is verified, and a task starts before its whole upstream step ends', async (t) => {
  const dir = tempDir(t);
  const n = 30;
  writeFiles(dir, {
    'nums.txt': `${Array.from({ length: n }, (_, i) => i + 1).join('\n')}\n`,
    'job.yaml': `name: sumsq
steps:
  - name: square
    map: { lines: nums.txt }
    # task 0 ends only once plus1/5 has run (or after 60 s): with a stage barrier plus1/5 could
    # not run before it, so the order below is the proof, whatever the machine's load
    command: 'if [ {index} = 0 ]; then for i in $(seq 600); do [ -e t/plus1-5 ] && break; sleep 0.1; done; fi; echo $(({input} * {input})); date +%s%N > t/square-{index}'
    outputs: sq/{index}
    batch: 1
  - name: plus1
    map: { outputsOf: square }
    # the stamp appears whole (renamed into place): square/0 sees the file only once its time is in it
    command: 'echo $(( $(cat {input}) + 1 )); date +%s%N > t/.plus1-{index}; mv t/.plus1-{index} t/plus1-{index}'
    outputs: p1/{index}
  - name: total
    reduce: plus1
    command: 'cat {inputs} | awk "{s+=\\$1} END {print s}"'
    outputs: total.txt
concurrency: 2
`,
    't/.keep': '',
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const expected = Array.from({ length: n }, (_, i) => (i + 1) ** 2 + 1).reduce((a, b) => a + b, 0);
  assert.equal(readFileSync(path.join(dir, 'total.txt'), 'utf8').trim(), String(expected));
  const ts = (name: string) => BigInt(readFileSync(path.join(dir, 't', name), 'utf8').trim());
  // no stage barrier: plus1 of a fast input finished before the slow square/0 did
  assert.ok(ts('plus1-5') < ts('square-0'), 'plus1/5 waited for the whole square step');
  const st = JSON.parse((await runCli(['status', 'sumsq', '--json'], { cwd: dir })).stdout);
  assert.deepEqual(
    Object.fromEntries(Object.entries(st.steps).map(([k, v]) => [k, (v as { done: number }).done])),
    { square: n, plus1: n, total: 1 },
  );
});

test('a 1,000-task diamond DAG runs every task once in dependency order', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'ids.txt': `${Array.from({ length: 499 }, (_, i) => `n${i}`).join('\n')}\n`,
    'job.yaml': `name: diamond
steps:
  - name: top
    command: 'echo top'
    outputs: top.txt
  - name: left
    needs: [top]
    map: { lines: ids.txt }
    command: 'cat top.txt; echo left {input}'
    outputs: left/{index}
  - name: right
    map: { outputsOf: left }
    command: 'cat {input}; echo right'
    outputs: right/{index}
  - name: bottom
    needs: [left]
    reduce: right
    command: 'cat {inputs} | grep -c right'
    outputs: bottom.txt
`,
  });
  const r = await runCli(['run', 'job.yaml', '--json'], { cwd: dir, timeoutMs: 240_000 });
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.equal(s.counts.total, 1000);
  assert.equal(s.counts.done, 1000);
  assert.equal(readFileSync(path.join(dir, 'bottom.txt'), 'utf8').trim(), '499');
  assert.equal(readFileSync(path.join(dir, 'right', '7'), 'utf8'), 'top\nleft n7\nright\n');
  assert.equal(readdirSync(path.join(dir, 'right')).length, 499);
});

test('a dead task skips its dependents with the reason; continueOnFailure lets the reduce run', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'xs.txt': 'a\nbad\nc\n',
    'job.yaml': `name: failpath
retries: { maxAttempts: 2, backoff: { initial: 10ms } }
steps:
  - name: parse
    map: { lines: xs.txt }
    command: '[ {input} != bad ] && echo {input}'
    outputs: parsed/{index}
  - name: enrich
    map: { outputsOf: parse }
    command: 'cat {input}'
    outputs: enriched/{index}
  - name: report
    reduce: enrich
    command: 'cat {inputs}'
    outputs: report.txt
`,
    'tolerant.yaml': `name: tolerant
retries: { maxAttempts: 1 }
steps:
  - name: parse
    map: { lines: xs.txt }
    command: '[ {input} != bad ] && echo {input}'
    outputs: parsed2/{index}
    continueOnFailure: true
  - name: report
    reduce: parse
    command: 'cat {inputs} 2>/dev/null; true'
    outputs: report2.txt
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stdout, /job failpath failed: 4\/7 tasks done, 1 failed, 2 skipped/);
  assert.match(r.stdout, /parse\/1 \(line 2 "bad"\) failed → enrich\/1 skipped → step report skipped/);
  const st = JSON.parse((await runCli(['status', 'failpath', '--json'], { cwd: dir })).stdout);
  assert.equal(st.steps.enrich.skipped, 1);
  assert.equal(st.steps.report.skipped, 1);
  const t2 = await runCli(['run', 'tolerant.yaml'], { cwd: dir });
  assert.equal(t2.code, 1, t2.stderr);
  assert.equal(readFileSync(path.join(dir, 'report2.txt'), 'utf8'), 'a\nc\n');
});

test('workflow validation: cycles, unknown steps and missing outputs exit 2 naming them; nothing is created', async (t) => {
  const dir = tempDir(t);
  const cases: Array<[string, RegExp]> = [
    [
      `name: c\nsteps:\n  - { name: a, needs: [b], command: "true" }\n  - { name: b, needs: [a], command: "true" }\n`,
      /steps\[0\]\.needs: steps form a cycle: a → b → a/,
    ],
    [
      `name: u\nsteps:\n  - { name: a, needs: [nope], command: "true" }\n`,
      /steps\[0\]\.needs\[0\]: names step "nope", which does not exist/,
    ],
    [
      `name: o\nsteps:\n  - { name: a, command: "true" }\n  - { name: b, map: { outputsOf: a }, command: "true" }\n`,
      /steps\[1\]\.map\.outputsOf: step "a" has no outputs to take/,
    ],
  ];
  for (const [yaml, re] of cases) {
    writeFiles(dir, { 'bad.yaml': yaml });
    const r = await runCli(['run', 'bad.yaml'], { cwd: dir });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, re);
  }
  assert.deepEqual(readdirSync(dir), ['bad.yaml']);
});

test('SIGKILL of the coordinator mid-DAG: the resumed run re-runs no completed task', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'xs.txt': `${Array.from({ length: 20 }, (_, i) => `x${i}`).join('\n')}\n`,
    'job.yaml': `name: resume-dag
steps:
  - name: a
    map: { lines: xs.txt }
    command: 'echo run >> runs/a-{index}; sleep 0.1; echo {input}'
    outputs: a/{index}
  - name: b
    map: { outputsOf: a }
    command: 'echo run >> runs/b-{index}; sleep 0.1; cat {input}'
    outputs: b/{index}
  - name: all
    reduce: b
    command: 'echo run >> runs/all; cat {inputs}'
    outputs: all.txt
concurrency: 2
`,
    'runs/.keep': '',
  });
  const first = startCli(['run', 'job.yaml'], { cwd: dir });
  await waitFor(() => readdirSync(path.join(dir, 'runs')).filter((f) => f.startsWith('b-')).length >= 4);
  first.kill('SIGKILL');
  await first.result;
  const committed = [
    ...readdirSync(path.join(dir, 'a')).map((f) => `a-${f}`),
    ...readdirSync(path.join(dir, 'b')).map((f) => `b-${f}`),
  ];
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  for (const f of committed)
    assert.equal(readFileSync(path.join(dir, 'runs', f), 'utf8'), 'run\n', `${f} ran again`);
  assert.equal(readFileSync(path.join(dir, 'all.txt'), 'utf8').split('\n').filter(Boolean).length, 20);
});

test('batch: N claims small tasks of a step N at a time (agglomeration)', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'xs.txt': `${Array.from({ length: 20 }, (_, i) => `x${i}`).join('\n')}\n`,
    'job.yaml': `name: batched
steps:
  - name: tiny
    map: { lines: xs.txt }
    command: 'echo {input}'
    outputs: out/{index}
    batch: 5
concurrency: 2
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(path.join(dir, '.corral/jobs/batched/state.db'), { readonly: true });
  t.after(() => db.close());
  // tasks claimed together share their owner and claim time; a claim topped up to `batch` is a
  // second statement a millisecond or two later, while the next round starts only after 5 tasks ran
  // (an attempt row 'released' is a task handed back unrun: not part of any batch)
  const rows = db
    .prepare(
      "SELECT a.owner AS owner, t.started_at AS at FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.outcome <> 'released' ORDER BY a.owner, t.started_at",
    )
    .all() as { owner: string; at: number }[];
  const sizes: number[] = [];
  let prev: { owner: string; at: number } | undefined;
  for (const r of rows) {
    if (prev && prev.owner === r.owner && r.at - prev.at <= 3) sizes[sizes.length - 1]!++;
    else sizes.push(1);
    prev = r;
  }
  assert.equal(
    sizes.reduce((a, b) => a + b, 0),
    20,
  );
  assert.ok(Math.max(...sizes) === 5, `claim sizes ${sizes.join(',')}`);
});

test('100 chained `needs` steps all run: a barrier released while a worker finishes the step before is never taken as unreachable', async (t) => {
  const dir = tempDir(t);
  const n = 100;
  const steps = Array.from(
    { length: n },
    (_, i) => `  - name: s${i}\n    command: "true"\n${i ? `    needs: [s${i - 1}]\n` : ''}`,
  ).join('');
  writeFiles(dir, { 'job.yaml': `name: chain\nsteps:\n${steps}` });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /succeeded: 100\/100 tasks done/);
  const st = JSON.parse((await runCli(['status', 'chain', '--json'], { cwd: dir })).stdout);
  assert.deepEqual(
    Object.values(st.steps).map((v) => (v as { done: number }).done),
    Array.from({ length: n }, () => 1),
  );
});

test('outputs another step or an input can name are refused at load; outputs apart from them run', async (t) => {
  const dir = tempDir(t);
  const data = { 'data/a.txt': 'b\na\n', 'data/b.txt': 'd\nc\n', 'ids.txt': '1\n2\n3\n' };
  const refused: Record<string, [string, RegExp]> = {
    // the second step never ran: its outputs were there when it started
    same: [
      `steps:
  - { name: a, map: { glob: "data/*.txt" }, command: "wc -c < {input}", outputs: "out/{index}.txt" }
  - { name: b, map: { glob: "data/*.txt" }, command: "wc -l < {input}", outputs: "./out/{index}.txt" }`,
      /steps\[1\]\.outputs: "\.\/out\/\{index\}\.txt" can name the same files as the outputs of step a/,
    ],
    // 0 tasks ran, "succeeded"
    inputs: [
      `tasks: { map: { glob: "data/*.txt" }, command: "sort {input}" }
outputs: "data/{input.name}"`,
      /outputs: "data\/\{input\.name\}" can name the input files \(map\.glob: "data\/\*\.txt"\)/,
    ],
    own: [
      `steps:
  - { name: s, map: { glob: "data/*" }, command: "sort {input}", outputs: "data/{input.stem}.sorted" }`,
      /steps\[0\]\.outputs: "data\/\{input\.stem\}\.sorted" can name files of its own input/,
    ],
  };
  for (const [name, [body, re]] of Object.entries(refused)) {
    const d = path.join(dir, name);
    writeFiles(d, { ...data, 'job.yaml': `name: ${name}\n${body}\n` });
    const r = await runCli(['run', 'job.yaml'], { cwd: d });
    assert.equal(r.code, 2, `${name}: ${r.stderr}${r.stdout}`);
    assert.match(r.stderr, re);
    assert.deepEqual(readdirSync(d).sort(), ['data', 'ids.txt', 'job.yaml'], name);
    assert.deepEqual(readdirSync(path.join(d, 'data')).sort(), ['a.txt', 'b.txt'], name);
  }
  // per-task outputs beside a reduce's fixed one, and a map over what the step it needs wrote
  const ok = path.join(dir, 'ok');
  writeFiles(ok, {
    ...data,
    'job.yaml': `name: ok
steps:
  - { name: split, map: { lines: ids.txt }, command: "echo {input}", outputs: "parts/{index}.txt" }
  - { name: double, needs: [split], map: { glob: "parts/*.txt" }, command: "echo $(( $(cat {input}) * 2 ))", outputs: "out/{index}.txt" }
  - name: total
    reduce: double
    command: 'cat {inputs} | awk "{s+=\\$1} END {print s}"'
    outputs: out/total.txt
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: ok });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(readFileSync(path.join(ok, 'out/total.txt'), 'utf8').trim(), '12');
});

test('an output another step wrote during the run is not taken as a task result; one from an earlier run still is', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'ids.txt': '1\n2\n3\n',
    // step a writes, undeclared, the file that b/0 will output
    'job.yaml': `name: sneak
steps:
  - { name: a, command: "mkdir -p out && echo from a > out/0.txt" }
  - name: b
    needs: [a]
    map: { lines: ids.txt }
    command: "echo b {input}; echo >> runs-{index}"
    outputs: out/{index}.txt
    retries: { maxAttempts: 2, backoff: { initial: 10ms } }
`,
  });
  const r = await runCli(['run', 'job.yaml', '--json'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr + r.stdout);
  const summary = JSON.parse(r.stdout) as {
    counts: { done: number };
    deadLetters: { key: string; error: string }[];
  };
  assert.equal(summary.counts.done, 3);
  assert.deepEqual(
    summary.deadLetters.map((d) => d.key),
    ['b/0'],
  );
  assert.match(
    summary.deadLetters[0]!.error,
    /its output out\/0\.txt appeared during this run before the task first ran/,
  );
  assert.equal(readFileSync(path.join(dir, 'out/1.txt'), 'utf8'), 'b 2\n');
  // the state is lost: outputs there before the run are the truth, those tasks do not run again
  rmSync(path.join(dir, '.corral'), { recursive: true });
  rmSync(path.join(dir, 'out/0.txt'));
  writeFiles(dir, {
    'job.yaml': readFileSync(path.join(dir, 'job.yaml'), 'utf8').replace(' && echo from a > out/0.txt', ''),
  });
  const again = await runCli(['run', 'job.yaml', '--json'], { cwd: dir });
  assert.equal(again.code, 0, again.stderr + again.stdout);
  assert.equal(readFileSync(path.join(dir, 'out/0.txt'), 'utf8'), 'b 1\n');
  for (const i of [1, 2])
    assert.equal(readFileSync(path.join(dir, `runs-${i}`), 'utf8'), '\n', `runs of b/${i}`);
});

test('a workflow streams: ready tasks of later steps are claimed before the rest of the first step (issue 22, item 4)', async (t) => {
  const dir = tempDir(t);
  const n = 12;
  writeFiles(dir, {
    'urls.txt': `${Array.from({ length: n }, (_, i) => `u${i}`).join('\n')}\n`,
    'job.yaml': `name: stream
steps:
  - name: fetch
    map: { lines: urls.txt }
    command: 'sleep 0.2; echo {input}'
    outputs: fetched/{index}
  - name: parse
    map: { outputsOf: fetch }
    command: 'sleep 0.2; tr a-z A-Z < {input}'
    outputs: parsed/{index}
  - name: publish
    map: { outputsOf: parse }
    command: 'sleep 0.2; cat {input}'
    outputs: published/{index}
concurrency: 2
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const { default: Database } = await import('better-sqlite3');
  const db = new Database(path.join(dir, '.corral/jobs/stream/state.db'), { readonly: true });
  const starts = db
    .prepare(
      `SELECT t.step, min(a.started_at) AS first, max(a.started_at) AS last, count(DISTINCT t.id) AS n
       FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.started_at IS NOT NULL GROUP BY t.step`,
    )
    .all() as { step: string; first: number; last: number; n: number }[];
  db.close();
  const by = Object.fromEntries(starts.map((s) => [s.step, s]));
  assert.deepEqual(starts.map((s) => [s.step, s.n]).sort(), [
    ['fetch', n],
    ['parse', n],
    ['publish', n],
  ]);
  // order, not speed: results flow out while the first step still runs
  assert.ok(
    by.parse!.first < by.fetch!.last,
    `the first parse started after the last fetch: ${JSON.stringify(by)}`,
  );
  assert.ok(
    by.publish!.first < by.fetch!.last,
    `the first publish started after the last fetch: ${JSON.stringify(by)}`,
  );
  assert.equal(readFileSync(path.join(dir, 'published/0'), 'utf8'), 'U0\n');
});
