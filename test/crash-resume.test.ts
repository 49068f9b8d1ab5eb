import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { CLI, runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';

test('SIGKILL of a worker mid-task: its task runs again elsewhere and the job completes', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': Array.from({ length: 6 }, (_, i) => `t${i}`).join('\n'),
    // each attempt records its worker's pid: the parent of the forker that started the shell ($PPID)
    'job.yaml': `name: killworker
tasks:
  map: { lines: items.txt }
  command: 'echo $(cut -d" " -f4 /proc/$PPID/stat) >> runs/{index}; sleep 1; echo {input}'
outputs: out/{index}
concurrency: 2
lease: 2s
`,
    'runs/.keep': '',
  });
  const run = startCli(['run', 'job.yaml'], { cwd: dir });
  const victim = await waitFor(() => {
    const f = path.join(dir, 'runs', '0');
    return existsSync(f) && readFileSync(f, 'utf8').trim();
  });
  process.kill(Number(victim), 'SIGKILL');
  const r = await run.result;
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /6\/6 tasks done, 0 failed/);
  const runs0 = readFileSync(path.join(dir, 'runs', '0'), 'utf8')
    .trim()
    .split('\n');
  assert.equal(runs0.length, 2, 'the killed task ran again');
  assert.notEqual(runs0[1], runs0[0], 'on another worker');
  for (let i = 0; i < 6; i++) assert.equal(readFileSync(path.join(dir, 'out', String(i)), 'utf8'), `t${i}\n`);
  const events = await runCli(['logs', 'killworker'], { cwd: dir });
  assert.match(events.stdout, /worker \S+ lost; 1 task\(s\) back to the queue/);
});

test('SIGKILL of the coordinator mid-job: running again completes it and no completed task runs twice', async (t) => {
  const dir = tempDir(t);
  const n = 40;
  writeFiles(dir, {
    'items.txt': Array.from({ length: n }, (_, i) => `t${i}`).join('\n'),
    'job.yaml': `name: killcoord
tasks:
  map: { lines: items.txt }
  command: 'echo x >> runs/{index}; sleep 0.15; echo {input}'
outputs: out/{index}
concurrency: 2
lease: 3s
`,
    'runs/.keep': '',
  });
  const first = startCli(['run', 'job.yaml'], { cwd: dir });
  await waitFor(() => existsSync(path.join(dir, 'out')) && readdirSync(path.join(dir, 'out')).length >= 8);
  first.kill('SIGKILL');
  await first.result;
  const doneBefore = readdirSync(path.join(dir, 'out'));
  assert.ok(doneBefore.length < n, 'the job was still running when killed');
  // the lock file outlived its coordinator: status says so instead of "running" for ever
  const status = await runCli(['status', 'killcoord', '--json'], { cwd: dir });
  assert.equal(status.code, 0, status.stderr);
  assert.equal((JSON.parse(status.stdout) as { status: string }).status, 'interrupted');
  const second = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(second.code, 0, second.stderr + second.stdout);
  assert.match(second.stdout, new RegExp(`${n}/${n} tasks done, 0 failed .*\\(resumed\\)`));
  for (const f of doneBefore) {
    assert.equal(readFileSync(path.join(dir, 'runs', f), 'utf8'), 'x\n', `completed task ${f} ran again`);
  }
  for (let i = 0; i < n; i++) assert.equal(readFileSync(path.join(dir, 'out', String(i)), 'utf8'), `t${i}\n`);
});

/** A job of `n` tasks of `sleep 3` with a single attempt each; each writes runs/INDEX when it starts. */
function sleepyJob(dir: string, name: string, n: number): void {
  writeFiles(dir, {
    'items.txt': Array.from({ length: n }, (_, i) => `t${i}`).join('\n'),
    'job.yaml': `name: ${name}
tasks:
  map: { lines: items.txt }
  command: 'echo x >> runs/{index}; sleep 3; echo {input}'
outputs: out/{index}
concurrency: ${n}
retries:
  maxAttempts: 1
`,
    'runs/.keep': '',
  });
}

const started = (dir: string, n: number) => () => readdirSync(path.join(dir, 'runs')).length > n;

test('kill -9 of the coordinator mid-task: its workers hand their leases back and a resume charges no attempt', async (t) => {
  const dir = tempDir(t);
  sleepyJob(dir, 'orphans', 3);
  const first = startCli(['run', 'job.yaml'], { cwd: dir });
  await waitFor(started(dir, 3));
  // past the moment the workers tell the coordinator about their tasks' process groups (200 ms)
  await new Promise((r) => setTimeout(r, 1000));
  first.kill('SIGKILL');
  await first.result;
  await new Promise((r) => setTimeout(r, 100));
  const t0 = Date.now();
  // before: the workers died of ERR_IPC_CHANNEL_CLOSED holding their leases, which expired 30 s
  // later and were charged: 3 dead letters "lease expired" for tasks that never failed
  const second = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 90_000 });
  assert.equal(second.code, 0, second.stderr + second.stdout);
  assert.match(second.stdout, /3\/3 tasks done, 0 failed .*\(resumed\)/);
  assert.ok(
    Date.now() - t0 < 25_000,
    `the resume waited for the old leases to expire (${Date.now() - t0} ms)`,
  );
  for (let i = 0; i < 3; i++) assert.equal(readFileSync(path.join(dir, 'out', String(i)), 'utf8'), `t${i}\n`);
});

test('kill -9 of the coordinator and its workers: a resume hands their leases back uncharged', async (t) => {
  const dir = tempDir(t);
  sleepyJob(dir, 'orphans2', 2);
  // in a process group of its own, so that the coordinator and its workers die together
  const first = spawn(process.execPath, [CLI, 'run', 'job.yaml'], {
    cwd: dir,
    detached: true,
    stdio: 'ignore',
  });
  const exited = new Promise((r) => first.on('exit', r));
  await waitFor(started(dir, 2));
  process.kill(-first.pid!, 'SIGKILL');
  await exited;
  const second = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 90_000 });
  assert.equal(second.code, 0, second.stderr + second.stdout);
  assert.match(second.stdout, /2\/2 tasks done, 0 failed .*\(resumed\)/);
});
