import { type ChildProcess, fork } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LocalWorkerConfig } from '../../worker/local-main.js';
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
   * start where it is set), and hand it back to the tasks they run. @default false
   */
  readonly commandsOnly?: boolean;
}

/** Where a worker started without NODE_EXTRA_CA_CERTS finds it for its tasks. */
export const TASK_EXTRA_CA_CERTS = 'CORRAL_TASK_NODE_EXTRA_CA_CERTS';

const here = fileURLToPath(import.meta.url);
const ext = path.extname(here);
/** The worker entry next to this build (`.ts` under tsx, `.js` when compiled). */
const WORKER_ENTRY = path.resolve(path.dirname(here), '../../worker/local-main' + ext);

interface Slot {
  readonly id: string;
  readonly child: ChildProcess;
  stopping: boolean;
  /** Process groups of the tasks it runs now. */
  readonly groups: Set<number>;
  readonly exited: Promise<void>;
}

/**
 * The embedded Compute adapter: each worker is a Node child process with an IPC channel,
 * running the worker agent against the job's sqlite state file. A worker that exits without
 * being asked is reported `lost` (its leases are the coordinator's to reclaim) and replaced.
 */
export class LocalCompute implements Compute {
  private readonly slots = new Map<string, Slot>();
  private seq = 0;
  private target = 0;
  private closing = false;

  constructor(private readonly o: LocalComputeOptions) {}

  running(): number {
    return this.slots.size;
  }

  async scaleTo(count: number): Promise<void> {
    this.target = count;
    while (!this.closing && this.slots.size < this.target) this.spawnOne();
  }

  /**
   * Starts workers until `count` run, each waiting for `wake` before its first claim: their
   * start-up overlaps the coordinator's planning, and they claim only once the plan is written.
   */
  prestart(count: number): void {
    this.target = count;
    while (!this.closing && this.slots.size < this.target) this.spawnOne(true);
  }

  private spawnOne(hold = false): void {
    const id = `${this.o.idPrefix}-${++this.seq}`;
    const cfg: LocalWorkerConfig = {
      id,
      jobJson: this.o.jobJson,
      db: this.o.db,
      logsDir: this.o.logsDir,
      storeRoot: this.o.storeRoot,
      ...(hold ? { hold } : {}),
    };
    const logFd = openSync(path.join(this.o.workersDir, `${id}.log`), 'a');
    const ca = process.env.NODE_EXTRA_CA_CERTS;
    let env: NodeJS.ProcessEnv | undefined;
    if (this.o.commandsOnly && ca !== undefined) {
      env = { ...process.env, [TASK_EXTRA_CA_CERTS]: ca };
      delete env.NODE_EXTRA_CA_CERTS;
    }
    const child = fork(WORKER_ENTRY, [JSON.stringify(cfg)], {
      env,
      stdio: ['ignore', logFd, logFd, 'ipc'],
      execArgv: ext === '.ts' ? ['--import', 'tsx'] : [],
      serialization: 'json',
    });
    closeSync(logFd);
    let resolveExit!: () => void;
    const exited = new Promise<void>((r) => {
      resolveExit = r;
    });
    const slot: Slot = { id, child, stopping: false, groups: new Set(), exited };
    this.slots.set(id, slot);
    this.o.onEvent?.({ worker: id, type: 'started' });
    child.on('error', () => {});
    child.on('message', (m: { type?: string; pgid?: number; running?: boolean }) => {
      if (m?.type === 'group' && typeof m.pgid === 'number') {
        if (m.running) slot.groups.add(m.pgid);
        else slot.groups.delete(m.pgid);
      } else if (m?.type === 'idle') this.o.onIdle?.();
    });
    child.on('exit', (code, signal) => {
      this.slots.delete(id);
      // A task left behind by a dead worker would run on unsupervised: end its process group.
      for (const g of slot.groups) {
        try {
          process.kill(-g, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      const expected = slot.stopping || this.closing;
      this.o.onEvent?.({ worker: id, type: expected || code === 75 ? 'exited' : 'lost', code, signal });
      resolveExit();
      if (!this.closing && this.slots.size < this.target) this.spawnOne();
    });
  }

  /** Tells idle (or held) workers to claim now (new tasks are pending), instead of after their pause. */
  wake(): void {
    for (const s of this.slots.values()) {
      if (s.stopping || !s.child.connected) continue;
      try {
        s.child.send({ type: 'wake' });
      } catch {
        // exiting
      }
    }
  }

  /** Pids of the running workers by id. */
  pids(): Map<string, number> {
    const m = new Map<string, number>();
    for (const s of this.slots.values()) if (s.child.pid) m.set(s.id, s.child.pid);
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
    const slots = [...this.slots.values()];
    for (const s of slots) {
      s.stopping = true;
      try {
        s.child.send({ type: mode });
      } catch {
        s.child.kill('SIGTERM');
      }
    }
    const all = Promise.all(slots.map((s) => s.exited));
    const timer = setTimeout(() => {
      for (const s of slots) s.child.kill('SIGKILL');
    }, timeoutMs);
    await all;
    clearTimeout(timer);
  }
}
