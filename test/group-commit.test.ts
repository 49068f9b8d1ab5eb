// Issue 24, item 2: outputs are committed as a group (one flush to disk for many), staged in one
// folder (no folder per attempt), and a kill -9 between an output's write and its task's ack
// leaves either the complete output (counted done on resume) or none (the task runs again).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { FsStore } from '../src/store/fs/fs-store.js';
import { CLI, runCli, tempDir, waitFor, writeFiles } from './helpers.js';

/** What task `i` writes: long enough that a partial write is told from a whole one. */
const content = (i: number) => `${JSON.stringify({ i, pad: 'x'.repeat(4000) })}\n`;

test('fs store: commitAll commits a group (first wins, missing told), staging one folder, no folder per attempt', async (t) => {
  const root = tempDir(t);
  const store = new FsStore(root, { scope: 'j' });
  const keys = ['a/1.json', 'a/2.json', 'b/3.json', 'a/4.json'];
  const staged = await Promise.all(keys.map((k) => store.stage(k, '1-w1')));
  // every attempt stages a file in the same folder, ending in its output's own name
  assert.equal(new Set(staged.map((p) => path.dirname(p))).size, 1);
  for (const [k, p] of staged.entries()) assert.ok(p.endsWith(path.basename(keys[k]!)), p);
  const { writeFileSync, mkdirSync } = await import('node:fs');
  for (const [k, p] of staged.entries()) if (k !== 3) writeFileSync(p, content(k));
  // an earlier attempt committed b/3.json: it stays, this one is a duplicate
  mkdirSync(path.join(root, 'b'));
  writeFileSync(path.join(root, 'b/3.json'), content(2));
  const res = await store.commitAll([...keys.map((key) => ({ key, attemptId: '1-w1' }))]);
  assert.deepEqual(res, ['committed', 'committed', 'duplicate', 'missing']);
  assert.equal(readFileSync(path.join(root, 'a/1.json'), 'utf8'), content(0));
  assert.equal(readFileSync(path.join(root, 'a/2.json'), 'utf8'), content(1));
  // nothing is left staged: the staging folder holds no file and no folder
  assert.deepEqual(readdirSync(path.dirname(staged[0]!)), []);
});

test('kill -9 of the workers between outputs written and acked: each output is whole or absent, and a resume finishes every task once', async (t) => {
  const dir = tempDir(t);
  const n = 800;
  writeFiles(dir, {
    'lines.txt': `${Array.from({ length: n }, (_, i) => `l${i}`).join('\n')}\n`,
    // writes its output in two parts, a moment apart, so a kill can land between them; records
    // its index and its staged output's folder
    'w.mjs': `import { appendFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
export default async function (ctx) {
  const s = JSON.stringify({ i: ctx.index, pad: 'x'.repeat(4000) }) + '\\n';
  writeFileSync(ctx.output, s.slice(0, 100));
  await new Promise((r) => setImmediate(r));
  appendFileSync(ctx.output, s.slice(100));
  appendFileSync('seen.txt', ctx.index + ' ' + path.dirname(ctx.output) + '\\n');
}
`,
    'job.yaml': `name: gc
tasks:
  map: { lines: lines.txt }
  module: ./w.mjs
outputs: out/{index}.json
concurrency: 2
`,
  });
  // in a process group of its own, so that the coordinator and its workers die together
  const first = spawn(process.execPath, [CLI, 'run', 'job.yaml'], {
    cwd: dir,
    detached: true,
    stdio: 'ignore',
  });
  const exited = new Promise((r) => first.on('exit', r));
  // killed while tasks run and outputs are being committed
  await waitFor(
    () => existsSync(path.join(dir, 'out')) && readdirSync(path.join(dir, 'out')).length >= 100,
    60_000,
    5,
  );
  process.kill(-first.pid!, 'SIGKILL');
  await exited;
  const out = path.join(dir, 'out');
  const before = readdirSync(out);
  assert.ok(before.length < n, `the job was still running when killed (${before.length}/${n} outputs)`);
  // never a partial file at an output path, nor a staged file
  for (const f of before) {
    const i = Number(f.replace('.json', ''));
    assert.equal(readFileSync(path.join(out, f), 'utf8'), content(i), `out/${f} is whole`);
  }
  const second = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 120_000 });
  assert.equal(second.code, 0, second.stderr + second.stdout);
  assert.match(second.stdout, new RegExp(`${n}/${n} tasks done, 0 failed`));
  const after = readdirSync(out).sort();
  assert.equal(after.length, n);
  for (const f of after) {
    const i = Number(f.replace('.json', ''));
    assert.equal(readFileSync(path.join(out, f), 'utf8'), content(i), `out/${f} is whole`);
  }
  // an output committed before the kill (acked or not) counts as done: its task did not run again
  const seen = readFileSync(path.join(dir, 'seen.txt'), 'utf8').trim().split('\n');
  const runs = new Map<string, number>();
  for (const l of seen) runs.set(l.split(' ')[0]!, (runs.get(l.split(' ')[0]!) ?? 0) + 1);
  for (const f of before) assert.equal(runs.get(f.replace('.json', '')), 1, `task of out/${f} ran once`);
  // staging: one folder per job, never one per attempt
  assert.equal(new Set(seen.map((l) => l.split(' ')[1])).size, 1, 'one staging folder');
  assert.ok(!existsSync(path.join(dir, '.corral-staging')), 'no staging left after the run');
});

test('an output is committed and its task acked while the next task of the worker still runs (a group never waits for a long task)', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'lines.txt': 'a\nb\n',
    // the first task to run returns at once; the second says it started and runs for 8 s
    'w.mjs': `import { existsSync, writeFileSync } from 'node:fs';
export default async function (ctx) {
  writeFileSync(ctx.output, String(ctx.index));
  if (!existsSync('first')) return writeFileSync('first', String(ctx.index));
  writeFileSync('second', String(ctx.index));
  await new Promise((r) => setTimeout(r, 8000));
}
`,
    'job.yaml': `name: slow
tasks:
  map: { lines: lines.txt }
  module: ./w.mjs
outputs: out/{index}.json
concurrency: 1
`,
  });
  const run = runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 60_000 });
  await waitFor(() => existsSync(path.join(dir, 'second')), 30_000, 20);
  const first = readFileSync(path.join(dir, 'first'), 'utf8');
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(path.join(dir, '.corral/jobs/slow/state.db'), { readonly: true });
  try {
    // the second task runs for 8 s: the first one's output is committed and acked meanwhile
    const done = await waitFor(
      () => {
        const r = db.prepare('SELECT state FROM tasks WHERE key = ?').get(first) as { state: string };
        return r.state === 'done' ? r : undefined;
      },
      6_000,
      20,
    ).catch(() => undefined);
    assert.ok(done, 'the first task is done in the state file while the second still runs');
    assert.ok(!existsSync(path.join(dir, 'out', `${readFileSync(path.join(dir, 'second'), 'utf8')}.json`)));
  } finally {
    db.close();
  }
  const r = await run;
  assert.equal(r.code, 0, r.stderr + r.stdout);
});

/**
 * A `sync` first in PATH that records each call and takes `ms` before it runs the real one: the
 * workers' group flushes (`sync -f DIR`) become slow enough that module tasks finish while the
 * outputs of those before them are not committed yet.
 */
function slowSync(dir: string, ms: number): NodeJS.ProcessEnv {
  const real = ['/usr/bin/sync', '/bin/sync'].find((p) => existsSync(p))!;
  writeFiles(dir, {
    'bin/sync': `#!/bin/sh\necho "$*" >> "${path.join(dir, 'syncs.txt')}"\nsleep ${ms / 1000}\nexec ${real} "$@"\n`,
  });
  chmodSync(path.join(dir, 'bin/sync'), 0o755);
  return { PATH: `${path.join(dir, 'bin')}:${process.env.PATH}` };
}

/** A module job of 40 tasks, one worker; task 10 runs `poison` (JS) on its first attempt, then SIGKILLs its worker. */
function poisonJob(dir: string, poison: string, maxAttempts: number): void {
  writeFiles(dir, {
    'items.txt': Array.from({ length: 40 }, (_, i) => `x${i}`).join('\n'),
    'poison.mjs': `import { appendFileSync, existsSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
export default async (task) => {
  appendFileSync('runs-' + task.index, 'x');
  if (task.index === 10 && !existsSync('killed')) {
    // the tasks before it whose outputs are committed at this moment
    writeFileSync('killed', JSON.stringify(Array.from({ length: 10 }, (_, i) => i).filter((i) => existsSync('out/' + i))));
    ${poison}
    process.kill(process.pid, 'SIGKILL');
  }
  return 'ok ' + task.index;
};
`,
    'job.yaml': `name: poison
tasks:
  map: { lines: items.txt }
  module: ./poison.mjs
outputs: out/{index}
concurrency: 1
retries: { maxAttempts: ${maxAttempts}, backoff: { initial: 10ms } }
`,
  });
}

test('module tasks commit their outputs in groups, and a worker killed before a group was committed loses none of its finished tasks: they never run again', async (t) => {
  const dir = tempDir(t);
  const env = slowSync(dir, 1000);
  poisonJob(dir, '', 1);
  const r = await runCli(['run', 'job.yaml', '--json'], { cwd: dir, env, timeoutMs: 90_000 });
  assert.equal(r.code, 1, r.stderr);
  const summary = JSON.parse(r.stdout) as {
    counts: Record<string, number>;
    deadLetters: { key: string; error: string }[];
  };
  // the worker's death is charged to the task that killed it, not to a finished one
  assert.deepEqual(
    summary.deadLetters.map((d) => d.key),
    ['10'],
  );
  assert.match(summary.deadLetters[0]!.error, /worker .* died \(SIGKILL\)/);
  assert.equal(summary.counts.done, 39, r.stdout);
  // when task 10 killed its worker, tasks 0-9 had finished but some outputs were not committed yet
  const committedAtKill = JSON.parse(readFileSync(path.join(dir, 'killed'), 'utf8')) as number[];
  assert.ok(
    committedAtKill.length < 10,
    `${committedAtKill.length} of 10 outputs were committed when the worker died`,
  );
  for (let i = 0; i < 40; i++) {
    assert.equal(readFileSync(path.join(dir, `runs-${i}`), 'utf8'), 'x', `runs of task ${i}`);
    if (i !== 10) assert.equal(readFileSync(path.join(dir, 'out', String(i)), 'utf8'), `ok ${i}`);
  }
  // one flush for many outputs: fewer flushes than tasks
  const syncs = readFileSync(path.join(dir, 'syncs.txt'), 'utf8').trim().split('\n');
  assert.ok(syncs.length > 0 && syncs.length < 20, `${syncs.length} flushes for 39 outputs`);
  assert.ok(!existsSync(path.join(dir, '.corral-staging')), 'no staging left after the run');
});

test('a finished output staged in another boot (a power loss) is never taken for a result: its task runs again', async (t) => {
  const dir = tempDir(t);
  const env = slowSync(dir, 1000);
  // as a worker of an earlier boot would leave them: its finished outputs under another boot id
  poisonJob(
    dir,
    `const s = '.corral-staging/poison';
    for (const d of readdirSync(s)) if (d.startsWith('finished-')) renameSync(s + '/' + d, s + '/finished-00000000-0000-4000-8000-000000000000');`,
    2,
  );
  const r = await runCli(['run', 'job.yaml', '--json'], { cwd: dir, env, timeoutMs: 90_000 });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const committedAtKill = JSON.parse(readFileSync(path.join(dir, 'killed'), 'utf8')) as number[];
  assert.ok(
    committedAtKill.length < 10,
    `${committedAtKill.length} of 10 outputs were committed when the worker died`,
  );
  for (let i = 0; i < 40; i++) {
    // a task whose finished output was not committed, moved to another boot's folder, ran again
    const again = i === 10 || (i < 10 && !committedAtKill.includes(i));
    assert.equal(readFileSync(path.join(dir, `runs-${i}`), 'utf8'), again ? 'xx' : 'x', `runs of task ${i}`);
    assert.equal(readFileSync(path.join(dir, 'out', String(i)), 'utf8'), `ok ${i}`);
  }
  assert.ok(!existsSync(path.join(dir, '.corral-staging')), 'no staging left after the run');
});
