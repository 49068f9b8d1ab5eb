import { spawn } from 'node:child_process';
import { closeSync, createReadStream, openSync, readFileSync, unlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { getSystemErrorMap } from 'node:util';
import { shellQuote } from '../engine/template.js';
import { isNoSpace } from '../spec/errors.js';
import type { ShellRunner } from './shell-runner.js';
import type { TaskLog } from './task-log.js';

/** What a task reads on stdin. */
export type TaskStdin =
  | { readonly kind: 'none' }
  | { readonly kind: 'file'; readonly path: string; readonly start?: number; readonly end?: number }
  | { readonly kind: 'text'; readonly text: string };

/** How a task body ended. */
export interface TaskResult {
  readonly ok: boolean;
  /** Why it failed, in one line. */
  readonly error?: string;
  /** The attempt ran past its timeout. */
  readonly timedOut?: boolean;
  /** The worker must restart before it runs another task (a module task could not be stopped). */
  readonly poisoned?: boolean;
  /** The task never started: the worker stopped its runner first (drain, abort). Not an attempt. */
  readonly cancelled?: boolean;
  /** When the task's process started (ms since the epoch). */
  readonly startedAt?: number;
  /** How long the task's process ran, as the worker's forker timed it. @default - not timed */
  readonly runMs?: number;
  /** The command cannot start, however often it is tried (too long, a NUL byte): not retried. */
  readonly final?: boolean;
}

/** Options of one shell command run. */
export interface RunCommandOptions {
  /** The command line, already rendered and quoted (run by /bin/sh), or an executable and its arguments (run directly). */
  readonly command: string | { readonly file: string; readonly args: readonly string[] };
  readonly cwd: string;
  /** Environment of a task started through Node's spawn. @default - this process's plus `extraEnv` */
  readonly env?: NodeJS.ProcessEnv;
  readonly stdin: TaskStdin;
  /** Write stdout to this file (the task's staged output) instead of the log. */
  readonly stdoutFile?: string;
  readonly log: TaskLog;
  readonly timeoutMs: number;
  /** Aborting kills the task's process group at once. */
  readonly signal: AbortSignal;
  /** Called with the process group id when the task starts and with undefined when it ends. */
  readonly onGroup?: (pgid: number | undefined) => void;
  /** The variables `env` adds to the worker's own environment (the runner sets only these). */
  readonly extraEnv?: Readonly<Record<string, string>>;
  /** The worker's forker; used when the task needs no piped stdin. @default - Node's spawn */
  readonly runner?: ShellRunner;
}

const KILL_GRACE_MS = 2000;
/**
 * How long the output a task wrote before its shell exited may take to be read from its pipes;
 * after it, the attempt ends whatever still holds them.
 */
const PIPES_GRACE_MS = 1000;

function killGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // the group is gone already
  }
}

/**
 * Runs a shell command in a process group of its own. The task ends when the shell exits; any
 * process it left behind in its group is killed then, and on timeout or abort the whole group is.
 */
export function runCommand(o: RunCommandOptions): Promise<TaskResult> {
  const cmd = typeof o.command === 'string' ? [o.command] : [o.command.file, ...o.command.args];
  if (cmd.some((a) => a.includes('\0')))
    // a command line ends at its first NUL byte: it would run something else than written
    return Promise.resolve({
      ok: false,
      final: true,
      error:
        'could not start the command: it holds a NUL byte (from a placeholder such as {input}), which a command line cannot (fix: read the line on stdin with stdin: input)',
    });
  if (o.runner !== undefined && runnerCan(o.stdin, o.extraEnv)) return runWithRunner(o, o.runner);
  return new Promise((resolve) => {
    const outFd = o.stdoutFile ? openSync(o.stdoutFile, 'w') : undefined;
    const stdinSpec = o.stdin.kind === 'none' ? 'ignore' : 'pipe';
    let child: ReturnType<typeof spawn>;
    try {
      const [file, args] =
        typeof o.command === 'string'
          ? ['/bin/sh', ['-c', o.command]]
          : [o.command.file, [...o.command.args]];
      child = spawn(file, args, {
        cwd: o.cwd,
        env: o.env ?? { ...process.env, ...o.extraEnv },
        detached: true,
        stdio: [stdinSpec, outFd ?? 'pipe', 'pipe'],
      });
    } catch (err) {
      if (outFd !== undefined) closeSync(outFd);
      resolve(startFailure((err as NodeJS.ErrnoException).code, (err as Error).message));
      return;
    }
    if (outFd !== undefined) closeSync(outFd);
    const pid = child.pid;
    let timedOut = false;
    let aborted = false;
    let settled = false;
    let graceTimer: NodeJS.Timeout | undefined;
    let pipesTimer: NodeJS.Timeout | undefined;
    let rs: ReturnType<typeof createReadStream> | undefined;
    const startedAt = Date.now();
    if (pid !== undefined) o.onGroup?.(pid);

    const timer = setTimeout(() => {
      timedOut = true;
      if (pid !== undefined) {
        killGroup(pid, 'SIGTERM');
        graceTimer = setTimeout(() => killGroup(pid, 'SIGKILL'), KILL_GRACE_MS);
      }
    }, o.timeoutMs);
    const onAbort = () => {
      aborted = true;
      if (pid !== undefined) killGroup(pid, 'SIGKILL');
    };
    o.signal.addEventListener('abort', onAbort, { once: true });

    child.stdout?.on('data', (d: Buffer) => o.log.write(d));
    child.stderr?.on('data', (d: Buffer) => o.log.write(d));
    if (child.stdin) {
      child.stdin.on('error', () => {}); // EPIPE when the command does not read its input
      if (o.stdin.kind === 'text')
        child.stdin.end(o.stdin.text.endsWith('\n') ? o.stdin.text : `${o.stdin.text}\n`);
      else if (o.stdin.kind === 'file') {
        const end = o.stdin.end === undefined ? undefined : o.stdin.end - 1;
        if (end !== undefined && o.stdin.start !== undefined && end < o.stdin.start) child.stdin.end();
        else {
          rs = createReadStream(o.stdin.path, { start: o.stdin.start, end });
          rs.on('error', (err) => {
            o.log.write(`corral: cannot read input: ${err.message}\n`);
            child.stdin?.destroy();
          });
          rs.pipe(child.stdin);
        }
      }
    }

    const finish = (r: TaskResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (graceTimer) clearTimeout(graceTimer);
      if (pipesTimer) clearTimeout(pipesTimer);
      o.signal.removeEventListener('abort', onAbort);
      // nothing of the attempt is waited for any more, whoever still holds its pipes
      rs?.destroy();
      child.stdin?.destroy();
      child.stdout?.destroy();
      child.stderr?.destroy();
      o.onGroup?.(undefined);
      resolve({ ...r, startedAt });
    };
    child.on('error', (err) => finish({ ok: false, error: `could not start the command: ${err.message}` }));
    child.on('exit', (code, sig) => {
      // The shell is gone: whatever it left running in its group goes too, so the pipes close.
      if (pid !== undefined) killGroup(pid, 'SIGKILL');
      const done = () => {
        if (timedOut)
          finish({
            ok: false,
            timedOut: true,
            error: `timed out after ${o.timeoutMs / 1000}s; its process group was killed`,
          });
        else if (aborted) finish({ ok: false, error: 'aborted: the worker stopped' });
        else if (code === 0) finish({ ok: true });
        else if (sig) finish({ ok: false, error: `killed by ${sig}` });
        else finish({ ok: false, error: `exited with code ${code}` });
      };
      if (child.stdout || child.stderr) {
        // The pipes close once what the task wrote is read, unless a process outside its group
        // (one that called setsid) still holds them: then the attempt ends without them.
        child.once('close', done);
        pipesTimer = setTimeout(done, PIPES_GRACE_MS);
      } else done();
    });
  });
}

/**
 * A command that could not start. E2BIG (its environment too large for Linux) fails the same way
 * on every attempt: it is not retried.
 */
function startFailure(code: string | undefined, message: string): TaskResult {
  if (code === 'E2BIG')
    return {
      ok: false,
      final: true,
      error:
        'could not start the command: E2BIG, its arguments or environment are over what Linux allows (128 KiB each, about 2 MiB in all) (fix: pass long values in files)',
    };
  return { ok: false, error: `could not start the command: ${message}` };
}

const SIGNAL_NAMES = Object.fromEntries(Object.entries(osConstants.signals).map(([name, n]) => [n, name]));

/**
 * Whether a task with this stdin and these extra variables can run through the worker's forker:
 * its stdin must be nothing or a whole file (ranges and text are piped by Node), and every
 * variable must be one an environment can hold (a name, without `=`, and no NUL).
 */
export function runnerCan(stdin: TaskStdin, extraEnv?: Readonly<Record<string, string>>): boolean {
  if (
    stdin.kind === 'text' ||
    (stdin.kind === 'file' && (stdin.start !== undefined || stdin.end !== undefined))
  )
    return false;
  for (const k in extraEnv)
    if (k === '' || k.includes('=') || k.includes('\0') || extraEnv[k]!.includes('\0')) return false;
  return true;
}

/**
 * The same contract as the spawn path, through the worker's forker (see shell-runner.ts). The
 * timeout counts from the moment the task starts, not from when it was queued in the forker.
 */
async function runWithRunner(o: RunCommandOptions, runner: ShellRunner): Promise<TaskResult> {
  // an executable and its arguments is run as by spawn: `exec` finds it on PATH, never a shell
  // built-in of that name (`echo`, `test`, `printf` would otherwise be the shell's own)
  const body =
    typeof o.command === 'string'
      ? o.command
      : `exec ${[o.command.file, ...o.command.args].map(shellQuote).join(' ')}`;
  const partLog = `${o.log.path}.part`;
  let pgid: number | undefined;
  let startedAt: number | undefined;
  let timedOut = false;
  let aborted = false;
  let timer: NodeJS.Timeout | undefined;
  let graceTimer: NodeJS.Timeout | undefined;
  let watching = false;
  const onAbort = () => {
    aborted = true;
    if (pgid !== undefined) killGroup(pgid, 'SIGKILL');
  };
  try {
    const exit = await runner.run({
      command: body,
      env: o.extraEnv,
      cwd: o.cwd,
      stdinFile: o.stdin.kind === 'file' ? o.stdin.path : undefined,
      stdoutFile: o.stdoutFile,
      logFile: partLog,
      onStart: (g, ended) => {
        pgid = g;
        startedAt = Date.now();
        if (o.signal.aborted) {
          aborted = true;
          if (!ended) killGroup(g, 'SIGKILL');
          return;
        }
        // a short task is reported once it has ended: nothing to watch, time out or announce
        if (ended) return;
        o.onGroup?.(g);
        watching = true;
        o.signal.addEventListener('abort', onAbort, { once: true });
        timer = setTimeout(() => {
          timedOut = true;
          killGroup(g, 'SIGTERM');
          graceTimer = setTimeout(() => killGroup(g, 'SIGKILL'), KILL_GRACE_MS);
        }, o.timeoutMs);
      },
    });
    if (exit === 'cancelled') return { ok: false, cancelled: true, error: 'not started: the worker stopped' };
    const { runMs } = exit;
    // the task's output to the log, behind the attempt's header, only if it printed anything
    // (the runner removed an empty part)
    if (exit.logBytes !== 0) {
      try {
        const part = readFileSync(partLog);
        if (part.length > 0) o.log.write(part);
        unlinkSync(partLog);
      } catch (err) {
        // the log cannot be written (a full disk): the worker stops; the run removes the part
        if (isNoSpace(err)) throw err;
        // no log part: the task could not start
      }
    }
    if (timedOut)
      return {
        ok: false,
        timedOut: true,
        startedAt,
        runMs,
        error: `timed out after ${o.timeoutMs / 1000}s; its process group was killed`,
      };
    if (aborted) return { ok: false, startedAt, runMs, error: 'aborted: the worker stopped' };
    if (exit.spawnErrno !== undefined) {
      const [name, message] = getSystemErrorMap().get(-exit.spawnErrno) ?? [`errno ${exit.spawnErrno}`, ''];
      return { ...startFailure(name, `${name}${message ? `, ${message}` : ''}`), startedAt, runMs };
    }
    if (exit.code === 0) return { ok: true, startedAt, runMs };
    if (exit.signal !== null)
      return {
        ok: false,
        startedAt,
        runMs,
        error: `killed by ${SIGNAL_NAMES[exit.signal] ?? `signal ${exit.signal}`}`,
      };
    if (exit.code === null)
      return { ok: false, startedAt, runMs, error: 'could not start the command (the shell runner stopped)' };
    return { ok: false, startedAt, runMs, error: `exited with code ${exit.code}` };
  } finally {
    if (watching) {
      clearTimeout(timer);
      if (graceTimer) clearTimeout(graceTimer);
      o.signal.removeEventListener('abort', onAbort);
      o.onGroup?.(undefined);
    }
  }
}
