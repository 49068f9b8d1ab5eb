import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, tempDir, writeFiles } from './helpers.js';

test('a 200-task shell job on 2 workers commits every output once', async (t) => {
  const dir = tempDir(t);
  const lines = Array.from({ length: 200 }, (_, i) => `item-${i}`).join('\n');
  writeFiles(dir, {
    'items.txt': `${lines}\n`,
    'job.yaml': `name: two-hundred
tasks:
  map: { lines: items.txt }
  command: "echo {input} {index} > {output}; echo ran {index} >> runs/{index}"
outputs: out/{index}.txt
concurrency: 2
`,
    'runs/.keep': '',
  });
  const r = await runCli(['run', 'job.yaml', '--json'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.equal(summary.status, 'succeeded');
  assert.deepEqual(
    { done: summary.counts.done, dead: summary.counts.dead, total: summary.counts.total },
    { done: 200, dead: 0, total: 200 },
  );
  const outs = readdirSync(path.join(dir, 'out'));
  assert.equal(outs.length, 200);
  for (let i = 0; i < 200; i += 37) {
    assert.equal(readFileSync(path.join(dir, 'out', `${i}.txt`), 'utf8'), `item-${i} ${i}\n`);
    assert.equal(readFileSync(path.join(dir, 'runs', String(i)), 'utf8'), `ran ${i}\n`);
  }
  // status --json agrees with the summary, and shows two workers were used
  const s = await runCli(['status', 'two-hundred', '--json'], { cwd: dir });
  assert.equal(s.code, 0, s.stderr);
  const status = JSON.parse(s.stdout);
  assert.equal(status.status, 'succeeded');
  assert.equal(status.counts.done, 200);
  // (on failure, say why a third worker was started: the events log has each worker's exit)
  const events = () =>
    readFileSync(path.join(dir, '.corral/jobs/two-hundred/events.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"worker-'))
      .join('\n');
  assert.equal(status.workers.length, 2, `${JSON.stringify(status.workers)}\n${events()}`);
});

test('module tasks: a TypeScript function over a glob returns its output; shell-unsafe file names stay data', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/a.txt': 'hello\n',
    'in/b c.txt': 'two words\n',
    'in/$(touch PWNED); x.txt': 'tricky\n',
    'upper.ts': `import { readFile } from 'node:fs/promises';
export default async (task: { input: string; index: number; log: (m: string) => void }) => {
  task.log('upper ' + task.index);
  const text: string = await readFile(task.input, 'utf8');
  return text.toUpperCase();
};
`,
    'job.yaml': `name: upper
tasks:
  map: { glob: "in/*.txt" }
  module: ./upper.ts
outputs: out/{input.stem}.up
`,
    'shell.yaml': `name: names
tasks:
  map: { glob: "in/*.txt" }
  command: "cat {input} > {output}; echo {input.name} >> {output}"
outputs: shell/{index}.txt
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const outs = readdirSync(path.join(dir, 'out')).sort();
  assert.equal(outs.length, 3);
  assert.equal(readFileSync(path.join(dir, 'out', 'a.up'), 'utf8'), 'HELLO\n');
  assert.equal(readFileSync(path.join(dir, 'out', 'b_c.up'), 'utf8'), 'TWO WORDS\n');
  const s = await runCli(['run', 'shell.yaml'], { cwd: dir });
  assert.equal(s.code, 0, s.stderr);
  const texts = readdirSync(path.join(dir, 'shell')).map((f) =>
    readFileSync(path.join(dir, 'shell', f), 'utf8'),
  );
  assert.ok(texts.includes('tricky\n$(touch PWNED); x.txt\n'), texts.join('|'));
  assert.equal(readdirSync(dir).includes('PWNED'), false, 'a file name ran as a command');
  // the module's task.log lines are in the task log
  const logs = await runCli(['logs', 'upper', '0'], { cwd: dir });
  assert.match(logs.stdout, /upper 0/);
});

test('re-running a finished job runs nothing again', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': 'a\nb\nc\n',
    'job.yaml': `name: again
tasks:
  map: { lines: items.txt }
  command: "echo {input} >> ran.txt; echo {input}"
outputs: out/{index}
`,
  });
  assert.equal((await runCli(['run', 'job.yaml'], { cwd: dir })).code, 0);
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /3\/3 tasks done/);
  assert.equal(readFileSync(path.join(dir, 'ran.txt'), 'utf8').trim().split('\n').length, 3);
  // --fresh plans again, but committed outputs still count as done
  const f = await runCli(['run', 'job.yaml', '--fresh'], { cwd: dir });
  assert.equal(f.code, 0, f.stderr);
  assert.equal(readFileSync(path.join(dir, 'ran.txt'), 'utf8').trim().split('\n').length, 3);
  assert.equal(readFileSync(path.join(dir, 'out', '1'), 'utf8'), 'b\n');
});

test('corral init writes a starter job that runs and a cluster spec that plans; it never overwrites', async (t) => {
  const dir = tempDir(t);
  const r = await runCli(['init', 'proj'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const run = await runCli(['run', 'proj/job.yaml', '--json'], { cwd: dir });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(JSON.parse(run.stdout).counts.done, 3);
  assert.equal(readFileSync(path.join(dir, 'proj/out/1.txt'), 'utf8'), 'processing bravo\n6\n');
  const plan = await runCli(['plan', 'proj/cluster.yaml', '--json'], { cwd: dir, timeoutMs: 120_000 });
  assert.equal(plan.code, 0, plan.stderr + plan.stdout.slice(0, 2000));
  const again = await runCli(['init', 'proj'], { cwd: dir });
  assert.equal(again.code, 2);
  assert.match(again.stderr, /DIR: job\.yaml, inputs\.txt, cluster\.yaml already exist/);
});

test("shell braces are not placeholders: awk '{print}' runs as written, {{input}} is a literal {input}", async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/a.txt': 'one two\nthree four\n',
    'job.yaml': `name: braces
tasks:
  map: { glob: "in/*.txt" }
  # awk's own braces stay as written; {input} is corral's; {{input}} reaches the shell as {input}
  command: "awk '{print}' {input}; echo '{{input}}' \${HOME:+set}"
outputs: out/{input.stem}.txt
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(path.join(dir, 'out/a.txt'), 'utf8'), 'one two\nthree four\n{input} set\n');
});

test('two folders with a job of the same name: the second is refused, the first state untouched, --state-dir separates them', async (t) => {
  const dir = tempDir(t);
  const job =
    'name: my-job\ntasks:\n  map: { glob: "*.txt" }\n  command: "cat {input}"\noutputs: out/{input.stem}.txt\n';
  writeFiles(dir, { 'a/in.txt': 'a\n', 'a/job.yaml': job, 'b/in.txt': 'b\n', 'b/job.yaml': job });
  const a = await runCli(['run', 'a/job.yaml', '--json'], { cwd: dir });
  assert.equal(a.code, 0, a.stderr);
  const db = path.join(dir, '.corral/jobs/my-job/state.db');
  const before = readFileSync(db);
  // WHEN the other folder's job of the same name runs from the same place
  const b = await runCli(['run', 'b/job.yaml'], { cwd: dir });
  // THEN it is refused with a fix that destroys nothing (not --fresh), and the first state is as it was
  assert.equal(b.code, 2, b.stderr);
  assert.match(
    b.stderr,
    /state of job my-job in \.corral belongs to the job in .*\/a, not .*\/b .*--state-dir b\/\.corral/,
  );
  assert.doesNotMatch(b.stderr, /--fresh/);
  assert.deepEqual(readFileSync(db), before);
  const again = await runCli(['run', 'a/job.yaml', '--json'], { cwd: dir });
  assert.equal(JSON.parse(again.stdout).counts.done, 1);
  // and with its own state folder it runs
  const own = await runCli(['run', 'b/job.yaml', '--state-dir', 'b/.corral'], { cwd: dir });
  assert.equal(own.code, 0, own.stderr);
  assert.equal(readFileSync(path.join(dir, 'b/out/in.txt'), 'utf8'), 'b\n');
});

test('two inputs that map to one output are refused at plan, naming both; nothing runs or is created', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'data/a b.txt': 'space\n',
    'data/a_b.txt': 'underscore\n',
    'job.yaml':
      'name: clash\ntasks:\n  map: { glob: "data/*.txt" }\n  command: "cat {input}"\noutputs: out/{input.name}.gz\n',
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 2, r.stderr);
  assert.match(
    r.stderr,
    /^corral: error: outputs: "out\/\{input\.name\}\.gz" gives out\/a_b\.txt\.gz for both "data\/a(_| )b\.txt" and "data\/a(_| )b\.txt": one result would be lost \(fix: put \{input\.path\} or \{index\}/m,
  );
  assert.deepEqual(readdirSync(dir).sort(), ['data', 'job.yaml']);
  // with {index} in the pattern they are always apart
  writeFiles(dir, {
    'job.yaml':
      'name: clash\ntasks:\n  map: { glob: "data/*.txt" }\n  command: "cat {input}"\noutputs: out/{index}.txt\n',
  });
  const ok = await runCli(['run', 'job.yaml', '--json'], { cwd: dir });
  assert.equal(JSON.parse(ok.stdout).counts.done, 2, ok.stderr);
});
