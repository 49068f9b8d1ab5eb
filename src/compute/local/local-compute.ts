import { type ChildProcess, fork } from 'node:child_process';
import { closeSync, createWriteStream, openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AWAIT_CONFIG, type LocalWorkerConfig, TASK_EXTRA_CA_CERTS } from '../../protocol/local-worker.js';
import { EXIT_NO_SPACE } from '../../spec/errors.js';
import type { Compute, WorkerEvent } from '../compute.js';

/** Options of the local Compute adapter. */
export interface LocalComputeOptions {
  readonly jobJson: string;
  readonly db: string;
  readonly logsDir: string;
  readonly storeRoot: string;
  /** Folder of the workers' own logs (their stdout and stderr). */
  readonly workersDir: string;
  /** Prefix of worker ids; ids are `<prefix>-<n>`. */
  readonly idPrefix: string;
  /** Called when a worker starts or exits. An exit is `lost` when the worker was not asked to stop. */
  readonly onEvent?: (e: WorkerEvent) => void;
  /** How long `drain` waits before it kills workers. @default 30s */
  readonly drainTimeoutMs?: number;
  /** Called when a worker found nothing to claim after running tasks (its results are durable). */
  readonly onIdle?: () => void;
  /**
   * The workers run shell commands only, no module function in their own process: they make no
   * TLS connection, so they start without loading NODE_EXTRA_CA_CERTS (~50 ms of CPU per Node
   * start where it is set), and hand it back to the tasks they run. Several of them then share
   * one process (`LANES_PER_PROCESS`). @default false
   */
  readonly commandsOnly?: boolean;
  /**
   * Worker processes started before the job was loaded (`prestartWorkers`), used before any new
   * one is forked; those not needed, or started for another kind of job, are stopped.
   */
  readonly prestarted?: PrestartedWorker[];
}

/**
 * Worker processes that exit by themselves (with an error, not by a signal) before they are up or
 * this soon after, this many times in a row, are not started again: they cannot start here.
 */
const CRASH_LOOP = { withinMs: 3000, times: 5 };

/**
 * Workers of a commands-only job hosted by one Node process. Such a worker only feeds its forker
 * and records results, so one process keeps several busy, and each process spared is its start-up
 * and JIT warm-up spared (~0.3 s of CPU in a 2,000-task run). Module functions run inside their
 * worker, so those workers get a process each.
 */
export const LANES_PER_PROCESS = 4;

/** Processes for `workers` workers of a job. */
export function processesFor(workers: number, commandsOnly: boolean): number {
  return commandsOnly ? Math.ceil(workers / LANES_PER_PROCESS) : workers;
}

/** A worker process started ahead of its job: Node and its modules load while the CLI loads the spec. */
export interface PrestartedWorker {
  readonly child: ChildProcess;
  /** For a job of shell commands only: started without NODE_EXTRA_CA_CERTS, with COMMANDS_ONLY_V8_FLAGS. */
  readonly commandsOnly: boolean;
  /** Resolves when the worker listens for its config (a message sent before would be lost). */
  readonly ready: Promise<void>;
}

const here = fileURLToPath(import.meta.url);
const ext = path.extname(here);
/** The worker entry next to this build (`.ts` under tsx, `.js` when compiled). */
const WORKER_ENTRY = path.resolve(path.dirname(here), '../../worker/local-main' + ext);
/**
 * V8 flags of a commands-only worker: it runs nothing but corral's own per-task glue, and V8's
 * optimizing compiler spent more CPU on that glue (on threads of its own, beside the tasks) than
 * it saved until a run was long, so it optimizes 16 times later (BENCHMARKS.md, 1a: ~90 ms less
 * CPU per 2,000 tasks, the same at 8,000). A worker that runs module functions keeps the defaults.
 */
const COMMANDS_ONLY_V8_FLAGS = ['--interrupt-budget=1081344'];

function forkWorker(arg: string, stdio: 'pipe' | number, commandsOnly: boolean): ChildProcess {
  const ca = process.env.NODE_EXTRA_CA_CERTS;
  let env: NodeJS.ProcessEnv | undefined;
  if (commandsOnly && ca !== undefined) {
    env = { ...process.env, [TASK_EXTRA_CA_CERTS]: ca };
    delete env.NODE_EXTRA_CA_CERTS;
  }
  const child = fork(WORKER_ENTRY, [arg], {
    env,
    stdio: stdio === 'pipe' ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', stdio, stdio, 'ipc'],
    execArgv: [
      ...(ext === '.ts' ? ['--import', 'tsx'] : []),
      ...(commandsOnly ? COMMANDS_ONLY_V8_FLAGS : []),
    ],
    serialization: 'json',
  });
  child.on('error', () => {});
  return child;
}

/** Resolves when the worker says it listens on its IPC channel (or is gone). */
function readyOf(child: ChildProcess): Promise<void> {
  return new Promise<void>((resolve) => {
    const onMessage = (m: { type?: string }) => {
      if (m?.type !== 'ready') return;
      child.off('message', onMessage);
      resolve();
    };
    child.on('message', onMessage);
    child.once('exit', () => resolve());
  });
}

/**
 * Starts `count` worker processes before the job is known, as Ray prestarts its workers: their
 * Node start-up and module loading (~100 ms each) overlap the CLI's loading of the spec instead
 * of following it. Each waits for its config; one that gets none exits when the CLI does.
 * `commandsOnly`: the job (as far as the CLI could tell unparsed) runs no module function.
 */
export function prestartWorkers(count: number, commandsOnly: boolean): PrestartedWorker[] {
  const out: PrestartedWorker[] = [];
  for (let i = 0; i < count; i++) {
    const child = forkWorker(AWAIT_CONFIG, 'pipe', commandsOnly);
    out.push({ child, commandsOnly, ready: readyOf(child) });
  }
  return out;
}

/** Stops prestarted workers that were not used. */
export function discardPrestarted(ws: PrestartedWorker[]): void {
  for (const w of ws.splice(0)) {
    w.child.kill('SIGKILL');
    if (w.child.connected) w.child.disconnect();
  }
}

const gone = (c: ChildProcess) => !c.connected || c.exitCode !== null || c.signalCode !== null;

/** One worker process and the workers (lanes) it hosts. */
interface Slot {
  /** The workers' ids; the first names the process. */
  readonly ids: string[];
  readonly child: ChildProcess;
  stopping: boolean;
  /** Process groups of the tasks it runs now. */
  readonly groups: Set<number>;
  readonly exited: Promise<void>;
  /** Sends a message once the worker listens (an ES module worker drops what comes before). */
  readonly post: (m: object) => void;
}

/**
 * The embedded Compute adapter: workers live in Node child processes with an IPC channel, running
 * the worker agent against the job's sqlite state file; a commands-only job's workers share
 * processes, up to `LANES_PER_PROCESS` each. A process that exits without being asked has its
 * workers reported `lost` (their leases are the coordinator's to reclaim), and is replaced.
 */
export class LocalCompute implements Compute {
  private readonly slots = new Map<string, Slot>();
  private seq = 0;
  /** Workers wanted. */
  private target = 0;
  private closing = false;
  private readonly prestarted: PrestartedWorker[];
  private readonly lanes: number;
  /** Worker processes lost right after they started, in a row. */
  private quickLosses = 0;
  /**
   * Why no worker is started any more: they kept dying at start (a broken install, say). The
   * coordinator ends the run with it instead of waiting for workers that never come.
   */
  failure: string | undefined;
  /** A worker stopped because its disk is full (the state file or a log could not be written). */
  noSpace = false;

  constructor(private readonly o: LocalComputeOptions) {
    this.lanes = o.commandsOnly ? LANES_PER_PROCESS : 1;
    // only those of this job's kind: a commands-only worker starts without the CA and with V8's
    // late optimizing, neither of which suits a worker that runs module functions (or vice versa)
    const mine = (w: PrestartedWorker) => w.commandsOnly === Boolean(o.commandsOnly);
    const all = o.prestarted?.splice(0) ?? []; // ours now
    this.prestarted = all.filter((w) => mine(w) && !gone(w.child));
    discardPrestarted(all.filter((w) => !this.prestarted.includes(w)));
  }

  /** Stops the prestarted processes not used by now. */
  discardSpare(): void {
    discardPrestarted(this.prestarted);
  }

  /** Workers running now (not processes). */
  running(): number {
    let n = 0;
    for (const s of this.slots.values()) n += s.ids.length;
    return n;
  }

  async scaleTo(count: number): Promise<void> {
    this.target = count;
    this.fill(false);
  }

  /**
   * Starts workers until `count` run, each waiting for `wake` before its first claim: their
   * start-up overlaps the coordinator's planning, and they claim only once the plan is written.
   */
  prestart(count: number): void {
    this.target = count;
    this.fill(true);
  }

  private fill(hold: boolean): void {
    while (!this.closing && this.failure === undefined && this.running() < this.target)
      this.spawnOne(Math.min(this.lanes, this.target - this.running()), hold);
  }

  private spawnOne(lanes: number, hold: boolean): void {
    const ids = Array.from({ length: lanes }, () => `${this.o.idPrefix}-${++this.seq}`);
    const cfg: LocalWorkerConfig = {
      ids,
      jobJson: this.o.jobJson,
      db: this.o.db,
      logsDir: this.o.logsDir,
      storeRoot: this.o.storeRoot,
      ...(hold ? { hold } : {}),
    };
    const logPath = path.join(this.o.workersDir, `${ids[0]}.log`);
    let child: ChildProcess;
    let ready: Promise<void>;
    let warm = this.prestarted.shift();
    while (warm && gone(warm.child)) {
      discardPrestarted([warm]);
      warm = this.prestarted.shift();
    }
    if (warm) {
      child = warm.child;
      // its stdout and stderr are pipes (it started before this folder was known)
      const log = createWriteStream(logPath, { flags: 'a' });
      log.on('error', () => {});
      child.stdout?.pipe(log, { end: false });
      child.stderr?.pipe(log, { end: false });
      child.once('close', () => log.end());
      ready = warm.ready;
    } else {
      const logFd = openSync(logPath, 'a');
      child = forkWorker(JSON.stringify(cfg), logFd, Boolean(this.o.commandsOnly));
      closeSync(logFd);
      ready = readyOf(child);
    }
    let resolveExit!: () => void;
    const exited = new Promise<void>((r) => {
      resolveExit = r;
    });
    // messages keep their order: each waits for `ready`, then for the one before it
    let chain = ready;
    const post = (m: object) => {
      chain = chain.then(() => {
        if (!child.connected) return;
        try {
          child.send(m);
        } catch {
          // it died meanwhile: its exit is handled below like any worker's
        }
      });
    };
    if (warm) post({ type: 'config', cfg });
    const slot: Slot = { ids, child, stopping: false, groups: new Set(), exited, post };
    // "at start" is counted from when the process is up (a loaded machine may take seconds to
    // start Node); one that dies before it is up died at start whatever the time
    let upAt: number | undefined;
    ready.then(
      () => {
        upAt = Date.now();
      },
      () => {},
    );
    this.slots.set(ids[0]!, slot);
    for (const id of ids) this.o.onEvent?.({ worker: id, type: 'started' });
    child.on('message', (m: { type?: string; pgid?: number; running?: boolean }) => {
      if (m?.type === 'group' && typeof m.pgid === 'number') {
        if (m.running) slot.groups.add(m.pgid);
        else slot.groups.delete(m.pgid);
      } else if (m?.type === 'idle') this.o.onIdle?.();
    });
    child.on('exit', (code, signal) => {
      this.slots.delete(ids[0]!);
      // A task left behind by a dead worker would run on unsupervised: end its process group.
      for (const g of slot.groups) {
        try {
          process.kill(-g, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      if (code === EXIT_NO_SPACE) {
        // restarting workers into a full disk would only fail their tasks: the run stops here
        this.noSpace = true;
        this.failure ??= `a worker could not write (no space left on device); see ${logPath}`;
      }
      const expected = slot.stopping || this.closing;
      const type = expected || code === 75 ? 'exited' : 'lost';
      for (const id of ids) this.o.onEvent?.({ worker: id, type, code, signal });
      // it exited by itself (not killed by a signal: chaos, the OOM killer) soon after it started
      if (
        type === 'lost' &&
        signal === null &&
        (upAt === undefined || Date.now() - upAt < CRASH_LOOP.withinMs)
      ) {
        if (++this.quickLosses >= CRASH_LOOP.times)
          this.failure = `${this.quickLosses} worker processes in a row exited within ${CRASH_LOOP.withinMs / 1000}s of starting (last: exit ${code}); see ${logPath}`;
      } else this.quickLosses = 0;
      resolveExit();
      this.fill(false);
    });
  }

  /** Tells idle (or held) workers to claim now (new tasks are pending), instead of after their pause. */
  wake(): void {
    for (const s of this.slots.values()) if (!s.stopping && s.child.connected) s.post({ type: 'wake' });
  }

  /** Pids of the running workers by id. */
  pids(): Map<string, number> {
    const m = new Map<string, number>();
    for (const s of this.slots.values()) if (s.child.pid) for (const id of s.ids) m.set(id, s.child.pid);
    return m;
  }

  async drain(): Promise<void> {
    await this.stopAll('drain', this.o.drainTimeoutMs ?? 30_000);
  }

  async abort(): Promise<void> {
    await this.stopAll('abort', 5000);
  }

  private async stopAll(mode: 'drain' | 'abort', timeoutMs: number): Promise<void> {
    this.closing = true;
    this.discardSpare();
    const slots = [...this.slots.values()];
    for (const s of slots) {
      s.stopping = true;
      if (s.child.connected) s.post({ type: mode });
      else s.child.kill('SIGTERM');
    }
    const all = Promise.all(slots.map((s) => s.exited));
    const timer = setTimeout(() => {
      for (const s of slots) s.child.kill('SIGKILL');
    }, timeoutMs);
    await all;
    clearTimeout(timer);
  }
}
