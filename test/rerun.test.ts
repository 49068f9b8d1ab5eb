import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
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
});
