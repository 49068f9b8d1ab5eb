import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { runCli, tempDir, writeFiles } from './helpers.js';

/** How many times each task ran: every command appends its name to runs.log. */
function runsOf(dir: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of readFileSync(path.join(dir, 'runs.log'), 'utf8').split('\n').filter(Boolean))
    m.set(line, (m.get(line) ?? 0) + 1);
  return m;
}

test('re-running a failed workflow retries its failed and skipped tasks and steps; done tasks do not run again', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'ids.txt': 'a\nb\nc\n',
    broken: '',
    'job.yaml': `name: retry-wf
steps:
  - name: first
    map: { lines: ids.txt }
    command: 'echo first-{input} >> runs.log; if [ {input} = b ] && [ -e broken ]; then echo broken >&2; exit 3; fi; echo {input}'
    outputs: first/{index}
  - name: second
    map: { outputsOf: first }
    command: 'echo second-{index} >> runs.log; cat {input}; echo second'
    outputs: second/{index}
  - name: total
    reduce: second
    command: 'echo total >> runs.log; cat {inputs}'
    outputs: total.txt
  - name: listed
    needs: [second]
    map: { glob: 'second/*' }
    command: 'echo listed-{input.name} >> runs.log; wc -l < {input}'
    outputs: listed/{input.name}
retries:
  maxAttempts: 2
  backoff: { initial: 10ms }
`,
  });
  const r1 = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r1.code, 1, r1.stderr + r1.stdout);
  assert.match(r1.stdout, /job retry-wf failed: 4\/7 tasks done, 1 failed, 2 skipped/);
  assert.match(
    r1.stdout,
    /to retry the failed and skipped tasks \(done ones do not run again\): corral run job\.yaml\n/,
  );
  const before = runsOf(dir);
  assert.equal(before.get('first-b'), 2, 'the failing task ran its two attempts');
  assert.equal(before.get('total'), undefined);

  rmSync(path.join(dir, 'broken'));
  const r2 = await runCli(['run', 'job.yaml', '--json'], { cwd: dir });
  assert.equal(r2.code, 0, r2.stderr + r2.stdout);
  const s = JSON.parse(r2.stdout);
  assert.equal(s.status, 'succeeded');
  assert.deepEqual(s.retried, { dead: 1, skipped: 2, steps: 1 });
  assert.deepEqual(
    { done: s.counts.done, dead: s.counts.dead, skipped: s.counts.skipped, total: s.counts.total },
    { done: 10, dead: 0, skipped: 0, total: 10 },
  );
  const after = runsOf(dir);
  // committed work stays done: only the failed task, what was skipped behind it, and the rest ran
  for (const k of ['first-a', 'first-c', 'second-0', 'second-2'])
    assert.equal(after.get(k), 1, `${k} ran again`);
  assert.equal(after.get('first-b'), 3);
  assert.equal(after.get('second-1'), 1);
  assert.equal(after.get('total'), 1);
  assert.equal(after.get('listed-0'), 1);
  assert.equal(readFileSync(path.join(dir, 'total.txt'), 'utf8'), 'a\nsecond\nb\nsecond\nc\nsecond\n');
  // a third run has nothing left to do
  const r3 = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r3.code, 0, r3.stderr + r3.stdout);
  assert.doesNotMatch(r3.stdout, /retried/);
  assert.equal(runsOf(dir).get('first-b'), 3);
});

test('re-running a failed map job retries its dead tasks with their attempts again; the retry command keeps --state-dir', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/x.txt': 'x\n',
    'in/y.txt': 'y\n',
    broken: '',
    'job.yaml': `name: retry-map
tasks:
  map: { glob: 'in/*.txt' }
  command: 'echo {input.name} >> runs.log; if [ {input.name} = y.txt ] && [ -e broken ]; then exit 1; fi; cat {input}'
outputs: out/{input.name}
retries: { maxAttempts: 1 }
`,
  });
  const r1 = await runCli(['run', 'job.yaml', '--state-dir', 'my state'], { cwd: dir });
  assert.equal(r1.code, 1, r1.stderr + r1.stdout);
  assert.match(r1.stdout, /: corral run job\.yaml --state-dir 'my state'\n/);
  const again = await runCli(['run', 'job.yaml', '--state-dir', 'my state'], { cwd: dir });
  assert.equal(again.code, 1, 'a task that fails again is dead again');
  assert.match(again.stdout, /retried the last run's failures: 1 failed and 0 skipped task\(s\)/);
  rmSync(path.join(dir, 'broken'));
  const r2 = await runCli(['run', 'job.yaml', '--state-dir', 'my state'], { cwd: dir });
  assert.equal(r2.code, 0, r2.stderr + r2.stdout);
  assert.match(r2.stdout, /2\/2 tasks done, 0 failed/);
  assert.equal(readFileSync(path.join(dir, 'out/y.txt'), 'utf8'), 'y\n');
  assert.deepEqual(Object.fromEntries(runsOf(dir)), { 'x.txt': 1, 'y.txt': 3 });
  // attempt numbers go on (the log holds the attempts that wrote to it: the failed ones)
  const log = await runCli(['logs', 'retry-map', '1', '--state-dir', 'my state'], { cwd: dir });
  assert.match(log.stdout, /attempt 1\/1 .*\n.*\n.*attempt 2\/2 /);
});

test("a re-run's retries back off from the initial delay again, not from where the last run's left off", async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/x.txt': 'x\n',
    // fails every attempt; a retry waits 1 s, then 1 s × 100 (capped at 5 min) if the attempts of
    // the last run counted: the re-run's second attempt would come 5 minutes after its first
    'job.yaml': `name: retry-backoff
tasks:
  map: { glob: 'in/*.txt' }
  command: 'echo {input.name} >> runs.log; exit 1'
retries: { maxAttempts: 2, backoff: { initial: 1s, factor: 100 } }
`,
  });
  const r1 = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(r1.code, 1, r1.stderr + r1.stdout);
  const again = await runCli(['run', 'job.yaml', '--json'], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(
    again.code,
    1,
    `the re-run ended (${again.signal ?? 'no signal'}): ${again.stderr.slice(-500)}`,
  );
  const s = JSON.parse(again.stdout);
  assert.deepEqual(s.retried, { dead: 1, skipped: 0, steps: 0 });
  assert.equal(s.counts.dead, 1);
  assert.deepEqual(Object.fromEntries(runsOf(dir)), { 'x.txt': 4 }, 'two attempts in each run');
});

test('a re-run plans inputs that appeared, counts those that changed, and --redo-changed redoes them, replacing each output atomically', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/a.txt': 'alpha\n',
    'in/b.txt': 'bravo\n',
    'in/c.txt': 'charlie\n',
    'job.yaml': `name: inputs
tasks:
  map: { glob: 'in/*.txt' }
  command: 'echo {input.name} >> runs.log; if [ -e slow ]; then sleep 1; fi; if grep -q fail {input}; then exit 1; fi; tr a-z A-Z < {input}'
outputs: out/{input.stem}.up
retries: { maxAttempts: 1 }
`,
  });
  const help = await runCli(['run', '--help'], { cwd: dir });
  assert.match(help.stdout, /--redo-changed +run again the tasks whose input file changed/);
  const out = (n: string) => readFileSync(path.join(dir, 'out', `${n}.up`), 'utf8');
  assert.equal((await runCli(['run', 'job.yaml'], { cwd: dir })).code, 0);
  // a file that sorts first appears, another changes
  writeFiles(dir, { 'in/0.txt': 'zero\n', 'in/a.txt': 'alpha two\n' });
  const r2 = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r2.code, 0, r2.stderr + r2.stdout);
  assert.match(r2.stdout, /job inputs succeeded: 4\/4 tasks done/);
  assert.match(r2.stdout, /planned 1 new input\(s\) since the last run\n/);
  assert.match(
    r2.stdout,
    /1 input\(s\) changed since their outputs were made; corral run job\.yaml --redo-changed redoes them\n/,
  );
  assert.equal(out('0'), 'ZERO\n');
  assert.equal(out('a'), 'ALPHA\n', 'a changed input was redone without being asked');
  // the new file is keyed after the others: no key changes meaning
  const db = new Database(path.join(dir, '.corral/jobs/inputs/state.db'), { readonly: true });
  const keys = db.prepare('SELECT key, payload FROM tasks ORDER BY id').all() as {
    key: string;
    payload: string;
  }[];
  db.close();
  assert.deepEqual(
    keys.map((k) => [k.key, JSON.parse(k.payload).p]),
    [
      ['0', 'in/a.txt'],
      ['1', 'in/b.txt'],
      ['2', 'in/c.txt'],
      ['3', 'in/0.txt'],
    ],
  );

  // the redo replaces the output in place: a reader polling it never finds it missing or partial
  writeFiles(dir, { slow: '' });
  const seen = new Set<string>();
  let polling = true;
  const poll = (async () => {
    while (polling) {
      seen.add(readFileSync(path.join(dir, 'out/a.up'), 'utf8'));
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const r3 = await runCli(['run', 'job.yaml', '--redo-changed'], { cwd: dir });
  polling = false;
  await poll;
  assert.equal(r3.code, 0, r3.stderr + r3.stdout);
  assert.match(r3.stdout, /redid 1 task\(s\) whose input changed since their output was made\n/);
  assert.deepEqual([...seen].sort(), ['ALPHA\n', 'ALPHA TWO\n']);
  assert.equal(out('a'), 'ALPHA TWO\n');
  rmSync(path.join(dir, 'slow'));

  // a redo that fails leaves the old output in place
  writeFiles(dir, { 'in/b.txt': 'bravo fail\n' });
  const r4 = await runCli(['run', 'job.yaml', '--redo-changed'], { cwd: dir });
  assert.equal(r4.code, 1, r4.stderr + r4.stdout);
  assert.equal(out('b'), 'BRAVO\n');
  // the next plain run retries the failed redo (it fails again), and finds nothing else changed
  const r5 = await runCli(['run', 'job.yaml', '--json'], { cwd: dir });
  assert.equal(r5.code, 1, r5.stderr + r5.stdout);
  assert.equal(out('b'), 'BRAVO\n');
  assert.deepEqual(JSON.parse(r5.stdout).inputs, { added: 0, waiting: 0, changed: 0, redone: 0 });
  assert.deepEqual(Object.fromEntries(runsOf(dir)), {
    '0.txt': 1,
    'a.txt': 2,
    'b.txt': 3,
    'c.txt': 1,
  });
});

test('--fresh after an input changed makes its output again (an output older than its input is not taken as done), and what reads it too', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/a.txt': 'alpha\n',
    'in/b.txt': 'bravo\n',
    'job.yaml': `name: fresh-inputs
steps:
  - name: up
    map: { glob: 'in/*.txt' }
    command: 'echo up-{input.name} >> runs.log; tr a-z A-Z < {input}'
    outputs: up/{input.stem}
  - name: all
    reduce: up
    command: 'echo all >> runs.log; cat {inputs}'
    outputs: all.txt
`,
  });
  assert.equal((await runCli(['run', 'job.yaml'], { cwd: dir })).code, 0);
  writeFiles(dir, { 'in/b.txt': 'bravo two\n' });
  const r = await runCli(['run', 'job.yaml', '--fresh'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(readFileSync(path.join(dir, 'up/b'), 'utf8'), 'BRAVO TWO\n');
  assert.equal(readFileSync(path.join(dir, 'all.txt'), 'utf8'), 'ALPHA\nBRAVO TWO\n');
  assert.deepEqual(Object.fromEntries(runsOf(dir)), { 'up-a.txt': 1, 'up-b.txt': 2, all: 2 });
  // nothing changed since: a second --fresh redoes nothing
  assert.equal((await runCli(['run', 'job.yaml', '--fresh'], { cwd: dir })).code, 0);
  assert.deepEqual(Object.fromEntries(runsOf(dir)), { 'up-a.txt': 1, 'up-b.txt': 2, all: 2 });
  // a new input of a step that another step reads is counted by a plain re-run, planned by --fresh
  writeFiles(dir, { 'in/c.txt': 'charlie\n' });
  const plain = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(plain.code, 0, plain.stderr + plain.stdout);
  assert.match(
    plain.stdout,
    /1 new input\(s\) not planned: other steps read the step they belong to; corral run job\.yaml --fresh plans them/,
  );
  assert.equal((await runCli(['run', 'job.yaml', '--fresh'], { cwd: dir })).code, 0);
  assert.equal(readFileSync(path.join(dir, 'all.txt'), 'utf8'), 'ALPHA\nBRAVO TWO\nCHARLIE\n');
  assert.deepEqual(Object.fromEntries(runsOf(dir)), { 'up-a.txt': 1, 'up-b.txt': 2, 'up-c.txt': 1, all: 3 });
});

test('a file that appears in a glob and maps to the output of a planned input is refused on re-run, naming both', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/a.txt': 'a\n',
    'job.yaml': `name: clash-later
tasks:
  map: { glob: 'in/*' }
  command: 'cat {input}'
outputs: out/{input.stem}
`,
  });
  assert.equal((await runCli(['run', 'job.yaml'], { cwd: dir })).code, 0);
  writeFiles(dir, { 'in/a.csv': 'other\n' });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 2, r.stderr + r.stdout);
  assert.match(
    r.stderr,
    /\ncorral: error: outputs: "out\/\{input\.stem\}" gives out\/a for both "in\/a\.txt" and "in\/a\.csv": one result would be lost \(fix: .*\)\n$/,
  );
  assert.equal(readFileSync(path.join(dir, 'out/a'), 'utf8'), 'a\n');
});
