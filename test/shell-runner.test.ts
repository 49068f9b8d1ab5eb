/**
 * The worker's forker, both builds of it: the C one (compiled by `npm run build`) and the perl
 * fallback. Each must keep the same contract: exit codes and signals, stdio redirection, the log
 * part removed when empty, a long task reported while it runs, leftovers of a task killed with its
 * process group, an unreachable folder as exit 126, queued tasks never started after a stop, and
 * fields and variables of any content.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { type RunnerExit, type RunnerTask, ShellRunner } from '../src/worker/shell-runner.js';
import { alive, ROOT, tempDir, waitFor } from './helpers.js';

const saved = process.env.CORRAL_SHELL_RUNNER;
after(() => {
  if (saved === undefined) delete process.env.CORRAL_SHELL_RUNNER;
  else process.env.CORRAL_SHELL_RUNNER = saved;
});

test('npm run build compiled the C forker', () => {
  assert.ok(existsSync(path.join(ROOT, 'dist/native/corral-forker')), 'dist/native/corral-forker is missing');
});

for (const kind of ['native', 'perl'] as const) {
  /** Runs tasks through a fresh runner of this kind; returns their exits and start reports. */
  const withRunner = async <T>(fn: (r: ShellRunner) => Promise<T>): Promise<T> => {
    process.env.CORRAL_SHELL_RUNNER = kind;
    const r = new ShellRunner();
    try {
      return await fn(r);
    } finally {
      r.close();
    }
  };
  const task = (dir: string, command: string, extra: Partial<RunnerTask> = {}) => {
    const starts: number[] = [];
    const t: RunnerTask = {
      command,
      cwd: dir,
      logFile: path.join(dir, `${Math.random().toString(36).slice(2)}.part`),
      onStart: (pgid) => starts.push(pgid),
      ...extra,
    };
    return { t, starts };
  };

  test(`${kind} forker: exit codes, signals, stdio and the log part`, async (t) => {
    const dir = tempDir(t);
    writeFileSync(path.join(dir, 'in.txt'), 'hello\n');
    await withRunner(async (r) => {
      const ok = task(dir, 'true');
      const code = task(dir, 'echo oops >&2; exit 3');
      const sig = task(dir, 'kill -TERM $$');
      const io = task(dir, 'tr a-z A-Z; pwd >&2', {
        stdinFile: 'in.txt',
        stdoutFile: path.join(dir, 'out.txt'),
      });
      // written in one go: they queue in the forker and run one after another
      const [e1, e2, e3, e4] = (await Promise.all(
        [ok, code, sig, io].map((x) => r.run(x.t)),
      )) as RunnerExit[];
      const { runMs: _r1, ...x1 } = e1!;
      const { runMs: _r2, ...x2 } = e2!;
      assert.deepEqual(x1, { code: 0, signal: null, logBytes: 0 });
      assert.equal(existsSync(ok.t.logFile), false, 'an empty log part is removed');
      assert.deepEqual(x2, { code: 3, signal: null, logBytes: 5 });
      assert.equal(readFileSync(code.t.logFile, 'utf8'), 'oops\n');
      assert.equal(e3?.signal, 15);
      assert.equal(e3?.code, null);
      assert.equal(e4?.code, 0);
      assert.equal(readFileSync(path.join(dir, 'out.txt'), 'utf8'), 'HELLO\n');
      assert.equal(readFileSync(io.t.logFile, 'utf8').trim(), dir);
      for (const x of [ok, code, sig, io])
        assert.equal(x.starts.length, 1, 'every task is reported started once');
    });
    // the forker leaves no scratch file behind once closed
    await waitFor(() => readdirSync(dir).every((f) => !f.startsWith('.forker-')), 5000);
  });

  test(`${kind} forker: fields with tabs, newlines, % and quotes, and variables for the task's environment`, async (t) => {
    const dir = path.join(tempDir(t), 'a dir\twith %41 tab');
    mkdirSync(dir);
    const odd = `it's "100%"\tdone\nnext line %0a \\ end`;
    await withRunner(async (r) => {
      const x = task(
        dir,
        `printf '%s|%s|%s|%s' "$ODD" "$HOME" "$(pwd)" "$EMPTY" > out.txt; printf '%s' "$ODD" >&2`,
        {
          env: { ODD: odd, HOME: '/elsewhere', EMPTY: '' },
          logFile: path.join(dir, 'log %25 part'),
        },
      );
      const e = (await r.run(x.t)) as RunnerExit;
      assert.equal(e.code, 0);
      // the variables reach the task as they are; HOME is replaced, not doubled
      assert.equal(readFileSync(path.join(dir, 'out.txt'), 'utf8'), `${odd}|/elsewhere|${dir}|`);
      assert.equal(readFileSync(path.join(dir, 'log %25 part'), 'utf8'), odd);
      // and the next task, without them, has the worker's own environment back
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, not a template
      const y = task(dir, 'printf %s "${ODD-unset} $HOME" > out2.txt');
      assert.equal(((await r.run(y.t)) as RunnerExit).code, 0);
      assert.equal(readFileSync(path.join(dir, 'out2.txt'), 'utf8'), `unset ${process.env.HOME}`);
      // as many variables as a task has (a step's env and the task's placeholders): none is dropped
      const many = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`V${i}`, `v${i}`]));
      const z = task(dir, 'printf %s "$V0 $V255 $V256 $V299" > out3.txt', { env: many });
      assert.equal(((await r.run(z.t)) as RunnerExit).code, 0);
      assert.equal(readFileSync(path.join(dir, 'out3.txt'), 'utf8'), 'v0 v255 v256 v299');
    });
  });

  test(`${kind} forker: each task's run time is reported, from its start to its exit, not counting its wait in the queue`, async (t) => {
    // the worker sizes its claims by it: the round trip of one task through the worker, the
    // forker and back is no measure of what a task costs
    const dir = tempDir(t);
    await withRunner(async (r) => {
      const slow = task(dir, 'sleep 0.3');
      const quick = task(dir, 'true');
      const failed = task(dir, 'exit 5');
      // written in one go: the quick ones wait in the forker's queue behind the slow one
      const [s, q, f] = (await Promise.all([slow, quick, failed].map((x) => r.run(x.t)))) as RunnerExit[];
      assert.equal(s!.code, 0);
      assert.equal(typeof s!.runMs, 'number', 'the run time is reported');
      assert.ok(s!.runMs! >= 295 && s!.runMs! < 60_000, `sleep 0.3 ran ${s!.runMs} ms`);
      assert.ok(
        q!.runMs! >= 0 && q!.runMs! < s!.runMs!,
        `true ran ${q!.runMs} ms, not its wait behind sleep 0.3`,
      );
      assert.equal(f!.code, 5);
      assert.ok(f!.runMs! >= 0 && f!.runMs! < s!.runMs!, `a failed task's run time too: ${f!.runMs} ms`);
    });
  });

  test(`${kind} forker: a long task is reported while it runs, and its leftovers die with its group`, async (t) => {
    const dir = tempDir(t);
    await withRunner(async (r) => {
      const long = task(dir, 'sleep 60 & echo $! > bg.pid; sleep 0.3');
      const p = r.run(long.t);
      await waitFor(() => long.starts.length === 1, 5000);
      assert.equal(r.inFlight, 1);
      const e = (await p) as RunnerExit;
      assert.equal(e.code, 0);
      const bg = Number(readFileSync(path.join(dir, 'bg.pid'), 'utf8'));
      await waitFor(() => !alive(bg), 5000);
    });
  });

  test(`${kind} forker: a folder that cannot be entered is exit 126`, async (t) => {
    const dir = tempDir(t);
    await withRunner(async (r) => {
      const e = (await r.run(task(dir, 'true', { cwd: path.join(dir, 'missing') }).t)) as RunnerExit;
      assert.equal(e.code, 126);
      const next = (await r.run(task(dir, 'exit 4').t)) as RunnerExit;
      assert.equal(next.code, 4, 'the forker goes on after a task that could not start');
    });
  });

  test(`${kind} forker: after cancelQueued the running task ends and the queued ones never start`, async (t) => {
    const dir = tempDir(t);
    await withRunner(async (r) => {
      const first = task(dir, 'sleep 0.4; touch first');
      const queued = [1, 2, 3].map((i) => task(dir, `touch queued${i}`));
      const ps = [first, ...queued].map((x) => r.run(x.t));
      await waitFor(() => first.starts.length === 1, 5000);
      r.cancelQueued();
      const [e1, ...rest] = await Promise.all(ps);
      assert.equal((e1 as RunnerExit).code, 0);
      assert.deepEqual(rest, ['cancelled', 'cancelled', 'cancelled']);
      assert.ok(existsSync(path.join(dir, 'first')));
      for (const i of [1, 2, 3]) assert.equal(existsSync(path.join(dir, `queued${i}`)), false);
      // the next run starts a fresh forker
      assert.equal(((await r.run(task(dir, 'true').t)) as RunnerExit).code, 0);
    });
  });

  test(`${kind} forker: when its worker dies, the running task ends and the queued ones never start`, async (t) => {
    const dir = tempDir(t);
    // a worker process (the built runner) queues four tasks, and is SIGKILLed once the first runs
    const worker = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { ShellRunner } from ${JSON.stringify(path.join(ROOT, 'dist/worker/shell-runner.js'))};
const r = new ShellRunner();
const task = (command) => ({ command, cwd: process.cwd(), logFile: 'log-' + Math.random() + '.part',
  onStart: () => process.kill(process.pid, 'SIGKILL') });
for (const c of ['sleep 0.4; touch first', 'touch queued1', 'touch queued2', 'touch queued3']) r.run(task(c));`,
      ],
      { cwd: dir, env: { ...process.env, CORRAL_SHELL_RUNNER: kind }, stdio: 'ignore' },
    );
    const [, signal] = (await once(worker, 'exit')) as [number | null, string | null];
    assert.equal(signal, 'SIGKILL');
    await waitFor(() => existsSync(path.join(dir, 'first')), 5000);
    // the forker, orphaned, looked at its parent before each queued task and started none
    await new Promise((r) => setTimeout(r, 300));
    for (const i of [1, 2, 3])
      assert.equal(existsSync(path.join(dir, `queued${i}`)), false, `queued${i} ran`);
  });
}
