import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { alive, runCli, tempDir, waitFor, writeFiles } from './helpers.js';

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
    /task 1: exited with code 3 after 3 attempt\(s\); log: \.corral\/jobs\/flaky\/logs\/1\.log/,
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
    assert.match(r.stdout, /task 0: timed out after 1s; its process group was killed after 1 attempt/);
    const bg = Number(readFileSync(path.join(dir, 'bg.pid'), 'utf8'));
    await waitFor(() => !alive(bg), 5000);
  });
}

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
