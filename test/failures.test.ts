import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { alive, runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';

test('a task that always fails lands in the dead letters after maxAttempts, with its error and log', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': 'ok1\nbad\nok2\n',
    'job.yaml': `name: flaky
tasks:
  map: { lines: items.txt }
  command: 'echo attempt >> tries-{index}; if [ {input} = bad ]; then echo "boom on {input}" >&2; exit 3; fi; echo fine'
outputs: out/{index}
retries:
  maxAttempts: 3
  backoff: { initial: 50ms, factor: 2 }
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stdout, /job flaky failed: 2\/3 tasks done, 1 failed/);
  assert.match(
    r.stdout,
    /task 1 \(line 2 "bad"\): exited with code 3 after 3 attempt\(s\); log: \.corral\/jobs\/flaky\/logs\/1\.log/,
  );
  assert.equal(readFileSync(path.join(dir, 'tries-1'), 'utf8'), 'attempt\n'.repeat(3));
  assert.equal(readFileSync(path.join(dir, 'tries-0'), 'utf8'), 'attempt\n');
  assert.equal(existsSync(path.join(dir, 'out', '1')), false, 'a failed attempt left an output');
  // the log holds every attempt's stderr
  const log = await runCli(['logs', 'flaky', '1'], { cwd: dir });
  assert.equal(log.stdout.match(/boom on bad/g)?.length, 3);
  assert.match(log.stdout, /attempt 3\/3/);
  const st = JSON.parse((await runCli(['status', 'flaky', '--json'], { cwd: dir })).stdout);
  assert.equal(st.status, 'failed');
  assert.deepEqual(
    st.deadLetters.map((d: { key: string; attempts: number }) => [d.key, d.attempts]),
    [['1', 3]],
  );
});

for (const runner of ['native', 'perl', 'node'] as const) {
  test(`a task past its timeout is killed with its whole process group (${runner} forker)`, async (t) => {
    const dir = tempDir(t);
    writeFiles(dir, {
      'items.txt': 'slow\n',
      'job.yaml': `name: slow
tasks:
  map: { lines: items.txt }
  command: 'sleep 60 & echo $! > bg.pid; wait'
timeout: 1s
retries: { maxAttempts: 1 }
`,
    });
    const r = await runCli(['run', 'job.yaml'], {
      cwd: dir,
      timeoutMs: 30_000,
      env: { CORRAL_SHELL_RUNNER: runner },
    });
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stdout,
      /task 0 \(line 1 "slow"\): timed out after 1s; its process group was killed after 1 attempt/,
    );
    const bg = Number(readFileSync(path.join(dir, 'bg.pid'), 'utf8'));
    await waitFor(() => !alive(bg), 5000);
  });
}

test('a process that left the group with setsid does not hold the attempt past its end or its timeout (Node spawn path)', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': 'fast\nslow\n',
    // stdin: input pipes the line through Node's spawn; the setsid child holds the pipes for ever
    'job.yaml': `name: escaper
tasks:
  map: { lines: items.txt }
  stdin: input
  command: "setsid sh -c 'echo $$ >> bg.pids; exec sleep 1000' & if [ {input} = slow ]; then sleep 100; fi; wc -l"
outputs: out/{index}
timeout: 2s
retries: { maxAttempts: 1 }
`,
  });
  // before: the run never ended (the pipes never closed); 60 s is a bound, it takes ~3 s
  const r = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 60_000 });
  for (const pid of readFileSync(path.join(dir, 'bg.pids'), 'utf8').trim().split('\n'))
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {}
  assert.equal(r.signal, null, 'the run hung');
  assert.equal(r.code, 1, r.stderr + r.stdout);
  assert.match(r.stdout, /1\/2 tasks done, 1 failed/);
  assert.match(
    r.stdout,
    /task 1 \(line 2 "slow"\): timed out after 2s; its process group was killed after 1 attempt/,
  );
  assert.equal(readFileSync(path.join(dir, 'out', '0'), 'utf8').trim(), '1');
});

test('a line over 128 KiB or with a NUL byte reaches its task on stdin; a NUL byte in a command fails at once, with the reason', async (t) => {
  const dir = tempDir(t);
  const long = 'x'.repeat(200_000);
  writeFiles(dir, {
    'items.txt': `short\n${long}\na\0b\n`,
    // the environment mirrors a line only when it can hold it: CORRAL_INPUT is unset for the others
    'job.yaml': `name: longlines
steps:
  - name: count
    map: { lines: items.txt }
    stdin: input
    command: 'wc -c; echo "\${CORRAL_INPUT-unset}" | cut -c1-5'
    outputs: out/{index}
  - name: echo
    map: { lines: items.txt }
    command: 'printf %s {input} | wc -c'
    outputs: echo/{index}
retries: { maxAttempts: 3, backoff: { initial: 50ms } }
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  // before: "could not start the command: spawn E2BIG" and "must be a string without null bytes"
  assert.equal(r.code, 1, r.stderr + r.stdout);
  const out = (i: number) => readFileSync(path.join(dir, 'out', String(i)), 'utf8').split('\n');
  assert.deepEqual(out(0).slice(0, 2), ['6', 'short']);
  assert.deepEqual(out(1).slice(0, 2), ['200001', 'unset']);
  assert.deepEqual(out(2).slice(0, 2), ['4', 'unset']);
  assert.equal(readFileSync(path.join(dir, 'echo', '0'), 'utf8'), '5\n');
  // a command line ends at a NUL byte: never run cut short, and not retried
  assert.match(
    r.stdout,
    /task echo\/2 \(line 3 "a\\u0000b"\): could not start the command: it holds a NUL byte .*\(fix: read the line on stdin with stdin: input\) after 1 attempt\(s\)/,
  );
});

test('a reduce over more inputs than a command line holds runs, and gets them as a file too', async (t) => {
  const dir = tempDir(t);
  const n = 700;
  // long paths: 700 of them are over Linux's 128 KiB limit for the one argument of sh -c
  const deep = 'd'.repeat(200);
  writeFiles(dir, {
    'n.txt': Array.from({ length: n }, (_, i) => String(i + 1)).join('\n'),
    'job.yaml': `name: bigreduce
steps:
  - name: each
    map: { lines: n.txt }
    command: 'echo {input}'
    outputs: out/${deep}/{index}.txt
  - name: all
    reduce: each
    command: 'cat {inputs} | wc -l; wc -l < {inputs.file}; sort -n {inputs} | tail -1'
    outputs: total.txt
retries: { maxAttempts: 3, backoff: { initial: 50ms } }
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 240_000 });
  // before: "task all/0: exited with code 126 after 3 attempt(s)" and a log that said nothing more
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(readFileSync(path.join(dir, 'total.txt'), 'utf8'), `${n}\n${n}\n${n}\n`);
  // the script and the list were the attempt's: gone after it
  assert.deepEqual(
    readdirSync(path.join(dir, '.corral/jobs/bigreduce/logs')).filter((f) => f.startsWith('.task-')),
    [],
  );
});

test('a command that cannot start says why, and is not retried', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': 'a\n',
    // one variable over Linux's 128 KiB limit: the shell cannot be started (E2BIG)
    'job.yaml': `name: nostart
tasks:
  map: { lines: items.txt }
  command: 'true'
  env: { BIG: ${'x'.repeat(140_000)} }
outputs: out/{index}
retries: { maxAttempts: 3, backoff: { initial: 50ms } }
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  // before: "exited with code 126 after 3 attempt(s)", and nothing in the log
  assert.equal(r.code, 1, r.stderr + r.stdout);
  assert.match(
    r.stdout,
    /task 0 \(line 1 "a"\): could not start the command: E2BIG, .* after 1 attempt\(s\)/,
  );
  const log = await runCli(['logs', 'nostart', '0'], { cwd: dir });
  assert.match(log.stdout, /attempt failed: could not start the command: E2BIG/);
});

test('a module task that throws is retried and reports the error', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': 'x\n',
    'fail.mjs': `export default async (task) => { if (task.attempt < 2) throw new TypeError('not yet'); return 'done ' + task.attempt; };\n`,
    'job.yaml': `name: throws
tasks:
  map: { lines: items.txt }
  module: ./fail.mjs
outputs: out/{index}
retries: { maxAttempts: 2, backoff: { initial: 10ms } }
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(path.join(dir, 'out', '0'), 'utf8'), 'done 2');
  const log = await runCli(['logs', 'throws', '0'], { cwd: dir });
  assert.match(log.stdout, /TypeError: not yet/);
});

test('module tasks that kill their worker are dead-lettered after their attempts; the tasks the worker held behind them are not charged', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': Array.from({ length: 40 }, (_, i) => `x${i}`).join('\n'),
    // every run leaves a mark; tasks 10 and 20 take their whole worker process down
    'poison.mjs': `import { appendFileSync } from 'node:fs';
export default async (task) => {
  appendFileSync('runs-' + task.index, 'x');
  if (task.index === 10 || task.index === 20) process.kill(process.pid, 'SIGKILL');
  return 'ok ' + task.index;
};
`,
    'job.yaml': `name: poison
tasks:
  map: { lines: items.txt }
  module: ./poison.mjs
outputs: out/{index}
concurrency: 1
retries: { maxAttempts: 2, backoff: { initial: 10ms } }
`,
  });
  const r = await runCli(['run', 'job.yaml', '--json'], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(r.code, 1, r.stderr);
  const summary = JSON.parse(r.stdout) as {
    counts: Record<string, number>;
    deadLetters: { key: string; attempts: number; error: string }[];
  };
  // each worker that died had claimed tasks after the poison with it: none of them was charged
  assert.deepEqual(summary.deadLetters.map((d) => [d.key, d.attempts]).sort(), [
    ['10', 2],
    ['20', 2],
  ]);
  for (const d of summary.deadLetters) assert.match(d.error, /worker .* died \(SIGKILL\)/);
  assert.equal(summary.counts.done, 38, r.stdout);
  for (let i = 0; i < 40; i++) {
    const poison = i === 10 || i === 20;
    assert.equal(readFileSync(path.join(dir, `runs-${i}`), 'utf8'), poison ? 'xx' : 'x', `runs of task ${i}`);
    if (!poison) assert.equal(readFileSync(path.join(dir, 'out', String(i)), 'utf8'), `ok ${i}`);
  }
});

test('a chunk input truncated during the run fails its tasks with the reason instead of "succeeding" with empty chunks', async (t) => {
  const dir = tempDir(t);
  const lines = Array.from({ length: 2000 }, (_, i) => `line ${i}`).join('\n');
  writeFiles(dir, {
    'big.txt': `${lines}\n`,
    // every task waits for "go": one that started before the truncation reads it while it changes
    'job.yaml': `name: shrink
tasks:
  map: { chunks: big.txt, chunkSize: 1000 }
  command: 'touch started; while [ ! -e go ]; do sleep 0.02; done; wc -c'
  stdin: input
outputs: out/{index}.txt
concurrency: 2
retries: { maxAttempts: 2, backoff: { initial: 10ms } }
`,
  });
  const run = startCli(['run', 'job.yaml', '--json'], { cwd: dir });
  t.after(() => run.kill('SIGKILL'));
  await waitFor(() => existsSync(path.join(dir, 'started')), 60_000);
  writeFileSync(path.join(dir, 'big.txt'), '');
  writeFileSync(path.join(dir, 'go'), '');
  const timer = setTimeout(() => run.kill('SIGKILL'), 90_000);
  const r = await run.result;
  clearTimeout(timer);
  assert.equal(r.code, 1, r.stderr + r.stdout);
  const summary = JSON.parse(r.stdout) as {
    counts: Record<string, number>;
    deadLetters: { key: string; error: string }[];
  };
  assert.equal(summary.counts.done, 0, r.stdout);
  assert.ok(summary.counts.dead >= 18, r.stdout);
  assert.equal(summary.deadLetters.length, summary.counts.dead);
  for (const d of summary.deadLetters)
    assert.match(
      d.error,
      /^input big\.txt changed since its chunks were planned \(18890 bytes, .*; now 0 bytes, .*\), so bytes \d+-\d+ are not the planned chunk: restore it, or run again with --fresh/,
    );
  assert.deepEqual(existsSync(path.join(dir, 'out')) ? readdirSync(path.join(dir, 'out')) : [], []);
});
