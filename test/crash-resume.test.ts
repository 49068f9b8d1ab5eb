import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';

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
