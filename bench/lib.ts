import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

/** The repository root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The built CLI: the bench times what users run. */
export const CLI = path.join(ROOT, 'dist/cli/main.js');

export type Size = 'tiny' | 'full';

/** What every benchmark file receives. */
export interface BenchContext {
  readonly size: Size;
  /** Repetitions of each interleaved measurement (best of N). */
  readonly reps: number;
  /** A scratch folder of this run, removed at the end. */
  readonly tmp: string;
  /** Progress lines (stderr). */
  readonly log: (line: string) => void;
}

/**
 * One line of the table. `ratio` is always "how corral compares with the peer or the limit"
 * in the direction the `ratioText` says (e.g. `0.93× xargs throughput`, `0.41× of the 300 MB budget`).
 */
export interface Row {
  /** Issue target number and letter, e.g. `1a`. */
  readonly id: string;
  readonly what: string;
  /** corral's figure, with its unit. */
  readonly corral: string;
  /** The peer's figure and what the peer is, or the limit. */
  readonly peer: string;
  /** The ratio as printed, e.g. `0.93× xargs`. */
  readonly ratio: string;
  readonly target: string;
  readonly status: 'met' | 'missed' | 'skipped' | 'info';
  /** How the corral side was run. */
  readonly command: string;
  readonly note?: string;
}

/** A benchmark file's entry point. */
export type Bench = (ctx: BenchContext) => Promise<Row[]>;

/** `Intel(R) Xeon(R) … × 2 cores, 7.8 GiB RAM, Linux 6.1, Node v20.20.2`. */
export function machineLine(): string {
  const cpus = os.cpus();
  const model = cpus[0]?.model.trim().replace(/\s+/g, ' ') ?? 'unknown CPU';
  const gib = (os.totalmem() / 2 ** 30).toFixed(1);
  return `${model} × ${cpus.length} cores, ${gib} GiB RAM, ${os.type()} ${os.release()}, Node ${process.version}`;
}

export interface Timed {
  readonly ms: number;
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Peak resident set (VmHWM of /proc/<pid>/status) of the started process, when polled. */
  readonly hwmKb?: number;
}

export interface RunOptions {
  readonly cwd: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Text fed on stdin. */
  readonly input?: string;
  /** Kill after this long. @default 10 min */
  readonly timeoutMs?: number;
  /** Poll VmHWM of the process every this many ms. @default - not polled */
  readonly hwmEveryMs?: number;
  /** Called once the process started (e.g. to find its workers). */
  readonly onStart?: (child: ChildProcess) => void;
}

function readHwmKb(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Runs a command to its end and times it (wall clock, from spawn to exit). */
export function timeRun(file: string, args: readonly string[], o: RunOptions): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file, [...args], {
      cwd: o.cwd,
      env: { ...process.env, ...o.env },
      stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let hwm: number | undefined;
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d;
    });
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d;
    });
    if (o.input !== undefined) {
      child.stdin?.on('error', () => {});
      child.stdin?.end(o.input);
    }
    const poll =
      o.hwmEveryMs !== undefined && child.pid !== undefined
        ? setInterval(() => {
            const h = readHwmKb(child.pid!);
            if (h !== undefined) hwm = Math.max(hwm ?? 0, h);
          }, o.hwmEveryMs)
        : undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 600_000);
    o.onStart?.(child);
    child.on('error', (err) => {
      clearTimeout(timer);
      if (poll) clearInterval(poll);
      reject(err);
    });
    child.on('exit', () => {
      // the last reading before the process is reaped
      if (poll && child.pid !== undefined) {
        const h = readHwmKb(child.pid);
        if (h !== undefined) hwm = Math.max(hwm ?? 0, h);
      }
    });
    child.on('close', (code) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      if (poll) clearInterval(poll);
      resolve({ ms, code, stdout, stderr, hwmKb: hwm });
    });
  });
}

/** Fails with the command's output when it did not exit 0. */
export function mustSucceed(what: string, r: Timed): Timed {
  if (r.code !== 0)
    throw new Error(`${what} exited with ${r.code}\n${r.stderr.slice(-2000)}${r.stdout.slice(-1000)}`);
  return r;
}

/**
 * Runs each measurement `reps` times, interleaved (a, b, a, b, …) so that load from other
 * processes hits every contender alike, and keeps each one's best (lowest) value.
 */
export async function interleaved<K extends string, V>(
  reps: number,
  fns: Record<K, () => Promise<V>>,
  score: (v: V) => number,
): Promise<Record<K, { best: V; all: V[] }>> {
  const keys = Object.keys(fns) as K[];
  const all = Object.fromEntries(keys.map((k) => [k, [] as V[]])) as unknown as Record<K, V[]>;
  for (let i = 0; i < reps; i++) for (const k of keys) all[k].push(await fns[k]());
  const out = {} as Record<K, { best: V; all: V[] }>;
  for (const k of keys) {
    const vs = all[k];
    const best = vs.reduce((a, b) => (score(b) < score(a) ? b : a));
    out[k] = { best, all: vs };
  }
  return out;
}

/** A fresh folder below the run's scratch folder. */
export function scratch(ctx: BenchContext, name: string): string {
  const dir = path.join(ctx.tmp, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A temp folder for a whole run. */
export function makeTmp(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'corral-bench-'));
}

/** Writes `1\n2\n…n\n`. */
export function writeLines(file: string, n: number): void {
  const parts: string[] = [];
  for (let i = 1; i <= n; i++) parts.push(String(i));
  writeFileSync(file, `${parts.join('\n')}\n`);
}

/** Runs `corral run` on a job file in `dir` (state in `dir/.corral`, fresh). */
export function corralRun(dir: string, job: string, extra: Partial<RunOptions> = {}): Promise<Timed> {
  return timeRun(process.execPath, [CLI, 'run', job, '--fresh', '-q'], { cwd: dir, ...extra });
}

/** Execution window of a finished job from its state file: first start to last finish. */
export function execWindow(stateDb: string): {
  tasks: number;
  done: number;
  ms: number;
  firstStart: number;
  lastFinish: number;
} {
  const db = new Database(stateDb, { readonly: true, fileMustExist: true });
  try {
    const r = db
      .prepare(
        "SELECT count(*) AS tasks, sum(state = 'done') AS done, min(started_at) AS a, max(finished_at) AS b FROM tasks",
      )
      .get() as { tasks: number; done: number; a: number; b: number };
    return { tasks: r.tasks, done: r.done, ms: r.b - r.a, firstStart: r.a, lastFinish: r.b };
  } finally {
    db.close();
  }
}

export function fmtMs(ms: number): string {
  return ms >= 10_000
    ? `${(ms / 1000).toFixed(1)} s`
    : ms >= 1000
      ? `${(ms / 1000).toFixed(2)} s`
      : `${ms.toFixed(0)} ms`;
}

export function fmtRate(perSec: number): string {
  return perSec >= 10_000 ? `${Math.round(perSec / 1000)}k tasks/s` : `${Math.round(perSec)} tasks/s`;
}

export function fmtX(x: number): string {
  return `${x >= 10 ? x.toFixed(0) : x.toFixed(2)}×`;
}

/** Whether an executable is on PATH. */
export function onPath(name: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    try {
      accessSync(path.join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

/**
 * Of a generated section, what `--only` keeps: the table rows and note lines of the benches not
 * run (by the number their ids start with), and the lines saying which runs they came from.
 */
export function keptRows(
  section: string,
  ran: ReadonlySet<string>,
): { header: string[]; rows: Array<[string, string]>; notes: Array<[string, string]> } {
  const header: string[] = [];
  const rows: Array<[string, string]> = [];
  const notes: Array<[string, string]> = [];
  const keep = (id: string) => !ran.has(String(Number.parseInt(id, 10)));
  for (const line of section.split('\n')) {
    const row = /^\| ([0-9][0-9a-z]*) \|/.exec(line);
    const note = /^- \*\*([0-9][0-9a-z]*)\*\* /.exec(line);
    if (row) {
      if (keep(row[1]!)) rows.push([row[1]!, line]);
    } else if (note) {
      if (keep(note[1]!)) notes.push([note[1]!, line]);
    } else if (/^(Run|Rows|Machine)/.test(line)) header.push(line);
  }
  // a "Rows 4, 10: run …" line (and its machine line) of rows all run again now says nothing kept
  const out: string[] = [];
  for (let i = 0; i < header.length; i++) {
    const m = /^Rows ([0-9a-z, ]+): run/.exec(header[i]!);
    if (m && m[1]!.split(', ').every((t) => ran.has(t))) {
      if (header[i + 1]?.startsWith('Machine')) i++;
      continue;
    }
    out.push(header[i]!);
  }
  return { header: rows.length ? out : [], rows, notes };
}
