import { createReadStream, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import type { TaskResult, TaskStdin } from './run-command.js';
import type { TaskLog } from './task-log.js';

/** What a module task's function receives. */
export interface TaskContext {
  /** The task's index in the job, from 0. */
  readonly index: number;
  /** The input: an absolute file path (glob and chunk maps) or the line's text (line maps). */
  readonly input?: string;
  /** The inputs of a reduce: absolute paths of every output of the reduced step. */
  readonly inputs?: readonly string[];
  /** The byte range of a chunk map, end exclusive. */
  readonly chunk?: { readonly start: number; readonly end: number };
  /** Where to write the output, if the job has `outputs` (or return it instead). */
  readonly output?: string;
  /** Attempt number, from 1. */
  readonly attempt: number;
  /** Aborted when the attempt times out or the worker stops. */
  readonly signal: AbortSignal;
  /** The job's `tasks.env`. */
  readonly env: Readonly<Record<string, string>>;
  /** Streams the input (the file, the chunk's bytes, or the line). */
  read(): Readable;
  /** Appends a line to the task's log. */
  log(...args: unknown[]): void;
}

/** A module task's default export. Its result, if any, becomes the output. */
export type TaskFunction = (task: TaskContext) => unknown | Promise<unknown>;

const cache = new Map<string, Promise<TaskFunction>>();

/** Loads a task module once per process (TypeScript through tsx). */
export function loadTaskFunction(file: string): Promise<TaskFunction> {
  let p = cache.get(file);
  if (!p) {
    p = (async () => {
      const url = pathToFileURL(file).href;
      const mod = /\.(c|m)?tsx?$/.test(file)
        ? await (await import('tsx/esm/api')).tsImport(url, import.meta.url)
        : await import(url);
      const fn = (mod as { default?: unknown }).default;
      const f = typeof fn === 'function' ? fn : (fn as { default?: unknown } | undefined)?.default;
      if (typeof f !== 'function') throw new Error(`${path.basename(file)} has no default export function`);
      return f as TaskFunction;
    })();
    cache.set(file, p);
  }
  return p;
}

/** Options of one module task run. */
export interface RunModuleOptions {
  readonly fn: TaskFunction;
  readonly ctx: Omit<TaskContext, 'read' | 'log' | 'signal'>;
  readonly stdin: TaskStdin;
  readonly log: TaskLog;
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
}

function inputStream(stdin: TaskStdin): Readable {
  if (stdin.kind === 'file') {
    if (stdin.end !== undefined && stdin.start !== undefined && stdin.end <= stdin.start)
      return Readable.from([]);
    return createReadStream(stdin.path, {
      start: stdin.start,
      end: stdin.end === undefined ? undefined : stdin.end - 1,
    });
  }
  if (stdin.kind === 'text') return Readable.from([Buffer.from(stdin.text)]);
  return Readable.from([]);
}

/**
 * Writes a returned value as the output, unless the task wrote one itself: synchronously (a
 * small file's open, write and close take microseconds; each call through libuv's thread pool
 * was a round trip of the event loop, ~1 ms on a loaded machine).
 */
function writeResult(output: string, value: unknown): void {
  if (value === undefined || value === null) return;
  const data =
    typeof value === 'string' || value instanceof Uint8Array ? value : `${JSON.stringify(value)}\n`;
  try {
    writeFileSync(output, data, { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

/** What a timed-out race resolves to (a unique value: a task may return any string). */
const TIMEOUT = Symbol('timeout');

/**
 * Runs a module task in this process. A task past its timeout is failed; since a function cannot
 * be killed, the result says `poisoned` and the worker restarts before taking more work.
 * A function that returns no promise has ended when it returns: it gets no timer, and its
 * `signal` is made only if it reads it (both were ~30% of a no-op task's cost in the worker).
 */
export async function runModule(o: RunModuleOptions): Promise<TaskResult> {
  let ac: AbortController | undefined;
  let onAbort: (() => void) | undefined;
  const signal = (): AbortSignal => {
    if (!ac) {
      const c = new AbortController();
      ac = c;
      if (o.signal.aborted) c.abort(o.signal.reason);
      else {
        onAbort = () => c.abort(o.signal.reason);
        o.signal.addEventListener('abort', onAbort, { once: true });
      }
    }
    return ac.signal;
  };
  let timer: NodeJS.Timeout | undefined;
  const ctx: TaskContext = {
    ...o.ctx,
    get signal() {
      return signal();
    },
    read: () => inputStream(o.stdin),
    log: (...args) =>
      o.log.write(`${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}\n`),
  };
  try {
    let r = o.fn(ctx);
    if (isThenable(r)) {
      const run = Promise.resolve(r);
      const timeout = new Promise<typeof TIMEOUT>((res) => {
        timer = setTimeout(() => res(TIMEOUT), o.timeoutMs);
      });
      r = await Promise.race([run, timeout]);
      if (r === TIMEOUT) {
        signal();
        ac?.abort(new Error('timeout'));
        run.catch(() => {});
        return { ok: false, timedOut: true, poisoned: true, error: `timed out after ${o.timeoutMs / 1000}s` };
      }
    }
    if (o.signal.aborted) return { ok: false, error: 'aborted: the worker stopped' };
    if (o.ctx.output) writeResult(o.ctx.output, r);
    return { ok: true };
  } catch (err) {
    const e = err as Error;
    o.log.write(`${e?.stack ?? String(err)}\n`);
    return { ok: false, error: `threw ${e?.name ?? 'Error'}: ${(e?.message ?? String(err)).split('\n')[0]}` };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    if (onAbort) o.signal.removeEventListener('abort', onAbort);
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    v !== null &&
    (typeof v === 'object' || typeof v === 'function') &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}
