/**
 * Read-only views of a job's state file for the dashboard, the metrics and the report.
 *
 * Every read goes through a read-only better-sqlite3 connection: it never writes to the file
 * and, the file being in WAL mode, never blocks the coordinator or the workers. Reads that must
 * agree with each other run in one read transaction, i.e. on one snapshot of the file.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import type Database from 'better-sqlite3';
import { pidAlive } from '../engine/process-utils.js';
import { jobPaths } from '../engine/state-dir.js';
import { workflowSteps } from '../engine/step-order.js';
import { openStateDb } from '../ledger/sqlite-queue.js';
import { describeInput, type TaskPayload, taskLabel } from '../queue/queue.js';

/** Tasks by state (the queue's TaskCounts, plus `skipped`: tasks of a workflow not run because a step they need failed). */
export interface Counts {
  pending: number;
  /** Waiting for tasks of other steps (workflows). */
  blocked: number;
  leased: number;
  done: number;
  dead: number;
  skipped: number;
  total: number;
}

/** One step of a job (a map job has one, named `map`) with the steps it needs. */
export interface StepView {
  readonly name: string;
  readonly needs: string[];
  readonly counts: Counts;
  /**
   * `skipped` when a step it needs failed before it was planned (it has no task), `planned` once
   * its tasks are written, `waiting` before. @default 'waiting'
   */
  readonly state?: 'waiting' | 'planned' | 'skipped';
}

/** A worker process and the tasks it holds now. */
export interface WorkerView {
  readonly id: string;
  readonly pid: number;
  readonly host: string;
  readonly state: string;
  readonly startedAt: number;
  readonly heartbeatAt: number;
  /** The tasks it runs, each with its input beside its key: `3 (data/d.txt)`. */
  readonly tasks: string[];
}

/** The consistent core of a job's state: counts, steps, workers, times. */
export interface CoreSnapshot {
  readonly job: string;
  /** `running` while a live coordinator holds the job, else how its last run ended (or `planned`). */
  readonly status: string;
  /** When this snapshot was read (ms since epoch). */
  readonly at: number;
  readonly startedAt?: number;
  readonly finishedAt?: number;
  /** The runs that started an attempt, [start, end] in ms (meta `runs`), oldest first. */
  readonly runs?: readonly (readonly [number, number])[];
  readonly counts: Counts;
  readonly steps: StepView[];
  readonly workers: WorkerView[];
}

/** One attempt of a task, as recorded when it ended. */
export interface AttemptRow {
  /** Position in the attempts table (only grows), used as a cursor. */
  readonly seq: number;
  readonly taskId: number;
  readonly key: string;
  readonly step: string;
  readonly attempt: number;
  /** The worker that ran it. */
  readonly owner: string | null;
  /** Null for released attempts (handed back before they ran to an end). */
  readonly startedAt: number | null;
  readonly finishedAt: number | null;
  /** `committed`, `duplicate`, `ok`, `found`, `failed`, `expired`, `dead` or `released`. */
  readonly outcome: string;
  readonly error: string | null;
}

/** A task row, for failures and the report. */
export interface TaskRow {
  readonly id: number;
  readonly key: string;
  readonly step: string;
  readonly state: string;
  readonly attempts: number;
  readonly startedAt: number | null;
  readonly finishedAt: number | null;
  readonly lastError: string | null;
  readonly logPath: string | null;
  readonly outcome: string | null;
  /** What the task ran on (its file, line or byte range; a HyperFlow process's signals). */
  readonly input: string | null;
}

/** Outcomes of attempts that ended in failure (the task was retried or went to the dead letters). */
export const FAILED_OUTCOMES: ReadonlySet<string> = new Set(['failed', 'expired', 'dead']);
/** Outcomes of attempts that were retried. */
export const RETRIED_OUTCOMES: ReadonlySet<string> = new Set(['failed', 'expired']);

function emptyCounts(): Counts {
  return { pending: 0, blocked: 0, leased: 0, done: 0, dead: 0, skipped: 0, total: 0 };
}

/** Whether a live coordinator holds the job (its lock file names a running process). */
export function isRunning(lockFile: string): boolean {
  try {
    const pid = Number(readFileSync(lockFile, 'utf8').trim());
    return pid > 0 && pidAlive(pid);
  } catch {
    return false;
  }
}

/**
 * The steps and their `needs` from a serialized LoadedJob (`spec.steps`, or `steps` beside it), in
 * workflow order (topological, then file order); none for a map job, whose one step (`map`) is
 * then known from the counts alone. A step's `reduce` and `map.outputsOf` count as needs too, and
 * a HyperFlow process needs the processes whose signals it reads.
 */
export function stepsOf(jobJson: string | undefined): Array<{ name: string; needs: string[] }> {
  return workflowSteps(jobJson);
}

/** The last `maxLines` lines of a text file, reading at most its last `maxBytes`. */
export function tailLines(file: string | null | undefined, maxLines = 10, maxBytes = 8192): string[] {
  if (!file || !existsSync(file)) return [];
  let fd: number | undefined;
  try {
    const size = statSync(file).size;
    const len = Math.min(size, maxBytes);
    const buf = Buffer.alloc(len);
    fd = openSync(file, 'r');
    readSync(fd, buf, 0, len, size - len);
    const lines = buf.toString('utf8').split('\n');
    if (len < size) lines.shift(); // a partial first line
    if (lines.at(-1) === '') lines.pop();
    return lines.slice(-maxLines);
  } catch {
    return [];
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

interface RawAttempt {
  seq: number;
  task_id: number;
  key: string;
  step: string;
  attempt: number;
  owner: string | null;
  started_at: number | null;
  finished_at: number | null;
  outcome: string;
  error: string | null;
}

interface RawTask {
  id: number;
  key: string;
  step: string;
  state: string;
  attempts: number;
  started_at: number | null;
  finished_at: number | null;
  last_error: string | null;
  log_path: string | null;
  outcome: string | null;
  payload: string;
}

function toAttempt(r: RawAttempt): AttemptRow {
  return {
    seq: r.seq,
    taskId: r.task_id,
    key: r.key,
    step: r.step,
    attempt: r.attempt,
    owner: r.owner,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    outcome: r.outcome,
    error: r.error,
  };
}

function toTask(r: RawTask): TaskRow {
  return {
    id: r.id,
    key: r.key,
    step: r.step,
    state: r.state,
    attempts: r.attempts,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    lastError: r.last_error,
    logPath: r.log_path,
    outcome: r.outcome,
    input: describeInput(JSON.parse(r.payload) as TaskPayload) ?? null,
  };
}

/** Everything recorded about a job, for the report. */
export interface FullSnapshot {
  readonly core: CoreSnapshot;
  /** Every worker that ever ran for the job. */
  readonly workers: WorkerView[];
  /** Every attempt, in the order they ended. */
  readonly attempts: AttemptRow[];
  /** Tasks that failed at least once (dead, retried, or still to be retried). */
  readonly troubled: TaskRow[];
  /** The job's metadata (except its spec). */
  readonly meta: Record<string, string>;
}

const ATTEMPT_COLUMNS = `a.rowid AS seq, a.task_id, t.key, t.step, a.attempt, a.owner, a.started_at, a.finished_at, a.outcome, a.error`;
const TASK_COLUMNS =
  'id, key, step, state, attempts, started_at, finished_at, last_error, log_path, outcome, payload';

/**
 * A read-only reader of one job's state file. Opens the file lazily (it may not exist yet while a
 * run is starting) and reports an empty, `planned` job until its schema is there.
 */
export class StateReader {
  private db: Database.Database | undefined;
  private ino = 0;
  private readonly paths;
  /** Grows each time the state file is found replaced (a `run --fresh`): cursors into the old one are void. */
  generation = 0;

  constructor(
    readonly stateDir: string,
    readonly job: string,
  ) {
    this.paths = jobPaths(stateDir, job);
  }

  /** Whether the state file exists. */
  exists(): boolean {
    return existsSync(this.paths.db);
  }

  private open(): Database.Database | undefined {
    let ino: number;
    try {
      ino = statSync(this.paths.db).ino;
    } catch {
      this.close();
      return undefined;
    }
    if (this.db?.open && ino === this.ino) return this.db;
    if (this.db) {
      this.close();
      this.generation++;
    }
    // A reader waits briefly on a checkpoint or recovery; it never holds a write lock.
    const db = openStateDb(this.paths.db, { readonly: true, busyTimeoutMs: 2000 });
    const ready = db
      .prepare(
        "SELECT count(*) AS n FROM sqlite_master WHERE name IN ('tasks', 'counts', 'attempts', 'workers', 'meta')",
      )
      .get() as { n: number };
    if (ready.n < 5) {
      db.close();
      return undefined;
    }
    this.db = db;
    this.ino = ino;
    return db;
  }

  /** Runs `fn` on one consistent snapshot of the file (one read transaction). */
  private read<T>(fn: (db: Database.Database) => T): T | undefined {
    const db = this.open();
    if (!db) return undefined;
    return db.transaction(() => fn(db))();
  }

  /** Counts, steps (with `needs`), workers and their current tasks, times and status, from one snapshot. */
  core(): CoreSnapshot {
    const at = Date.now();
    const running = isRunning(this.paths.lock);
    const empty: CoreSnapshot = {
      job: this.job,
      status: running ? 'running' : 'planned',
      at,
      counts: emptyCounts(),
      steps: [],
      workers: [],
    };
    const snap = this.read((db) => {
      const meta = new Map(
        (
          db
            .prepare(
              "SELECT k, v FROM meta WHERE k IN ('status', 'started_at', 'finished_at', 'spec', 'runs', 'queued')",
            )
            .all() as {
            k: string;
            v: string;
          }[]
        ).map((r) => [r.k, r.v]),
      );
      const counts = emptyCounts();
      const byStep = new Map<string, Counts>();
      for (const r of db.prepare('SELECT step, state, n FROM counts').all() as {
        step: string;
        state: string;
        n: number;
      }[]) {
        const c = byStep.get(r.step) ?? emptyCounts();
        byStep.set(r.step, c);
        if (r.state in c && r.state !== 'total') {
          c[r.state as keyof Counts] += r.n;
          counts[r.state as keyof Counts] += r.n;
        }
        c.total += r.n;
        counts.total += r.n;
      }
      // A cluster run's ledger leases every sent task to its queue; those still waiting there, not
      // yet received by a worker (meta `queued`, written each tick), are shown as pending.
      let queued = Math.min(Number(meta.get('queued') ?? 0) || 0, counts.leased);
      counts.leased -= queued;
      counts.pending += queued;
      for (const c of byStep.values()) {
        const q = Math.min(queued, c.leased);
        c.leased -= q;
        c.pending += q;
        queued -= q;
      }
      const held = new Map<string, string[]>();
      for (const r of db
        .prepare("SELECT owner, key, payload FROM tasks WHERE state = 'leased' ORDER BY id")
        .all() as {
        owner: string | null;
        key: string;
        payload: string;
      }[]) {
        if (r.owner === null) continue;
        // each beside its input: `3 (data/d.txt)`
        const label = taskLabel(r.key, JSON.parse(r.payload) as TaskPayload);
        const l = held.get(r.owner);
        if (l) l.push(label);
        else held.set(r.owner, [label]);
      }
      const workers = (
        db
          .prepare(
            'SELECT id, pid, host, started_at, heartbeat_at, state FROM workers ORDER BY started_at DESC, id LIMIT 200',
          )
          .all() as {
          id: string;
          pid: number;
          host: string;
          started_at: number;
          heartbeat_at: number;
          state: string;
        }[]
      ).map((w) => ({
        id: w.id,
        pid: w.pid,
        host: w.host,
        state: w.state,
        startedAt: w.started_at,
        heartbeatAt: w.heartbeat_at,
        tasks: held.get(w.id) ?? [],
      }));
      const stepStates = new Map(
        (db.prepare('SELECT name, state FROM steps').all() as { name: string; state: string }[]).map((r) => [
          r.name,
          r.state === 'skipped' ? ('skipped' as const) : ('planned' as const),
        ]),
      );
      return { meta, counts, byStep, workers, stepStates };
    });
    if (!snap) return empty;
    const { meta, counts, byStep, workers, stepStates } = snap;
    const declared = stepsOf(meta.get('spec') ?? readJobJson(this.paths.jobJson));
    const stateOf = (name: string) => stepStates.get(name) ?? 'waiting';
    const steps: StepView[] = declared.map((s) => ({
      ...s,
      counts: byStep.get(s.name) ?? emptyCounts(),
      state: stateOf(s.name),
    }));
    for (const [name, c] of byStep)
      if (!declared.some((s) => s.name === name))
        steps.push({ name, needs: [], counts: c, state: stateOf(name) });
    const num = (k: string) => (meta.has(k) ? Number(meta.get(k)) : undefined);
    return {
      job: this.job,
      status: running ? 'running' : (meta.get('status') ?? 'planned'),
      at,
      startedAt: num('started_at'),
      finishedAt: running ? undefined : num('finished_at'),
      runs: runsOf(meta.get('runs')),
      counts,
      steps,
      workers: running ? workers : workers.map((w) => ({ ...w, tasks: [] })),
    };
  }

  /** Attempts recorded after cursor `afterSeq`, oldest first, at most `limit`. */
  attemptsSince(afterSeq: number, limit = 20_000): AttemptRow[] {
    return (
      this.read((db) =>
        (
          db
            .prepare(
              `SELECT ${ATTEMPT_COLUMNS} FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.rowid > ? ORDER BY a.rowid LIMIT ? + 0`,
            )
            .all(afterSeq, limit) as RawAttempt[]
        ).map(toAttempt),
      ) ?? []
    );
  }

  /** The tasks with these ids (for failures). */
  tasksByIds(ids: readonly number[]): TaskRow[] {
    if (ids.length === 0) return [];
    return (
      this.read((db) => {
        const st = db.prepare(`SELECT ${TASK_COLUMNS} FROM tasks WHERE id = ?`);
        return ids
          .map((id) => st.get(id) as RawTask | undefined)
          .filter((r): r is RawTask => r !== undefined)
          .map(toTask);
      }) ?? []
    );
  }

  /** Everything the report needs, from one snapshot: the core, every attempt and every task that failed at least once. */
  full(): FullSnapshot {
    const core = this.core();
    const rest = this.read((db) => ({
      workers: (
        db
          .prepare(
            'SELECT id, pid, host, started_at, heartbeat_at, state FROM workers ORDER BY started_at, id',
          )
          .all() as {
          id: string;
          pid: number;
          host: string;
          started_at: number;
          heartbeat_at: number;
          state: string;
        }[]
      ).map((w) => ({
        id: w.id,
        pid: w.pid,
        host: w.host,
        state: w.state,
        startedAt: w.started_at,
        heartbeatAt: w.heartbeat_at,
        tasks: [],
      })),
      attempts: (
        db
          .prepare(
            `SELECT ${ATTEMPT_COLUMNS} FROM attempts a JOIN tasks t ON t.id = a.task_id ORDER BY a.rowid`,
          )
          .all() as RawAttempt[]
      ).map(toAttempt),
      troubled: (
        db
          .prepare(
            `SELECT ${TASK_COLUMNS} FROM tasks WHERE state = 'dead' OR last_error IS NOT NULL OR attempts > 1 ORDER BY id`,
          )
          .all() as RawTask[]
      ).map(toTask),
      meta: Object.fromEntries(
        (db.prepare("SELECT k, v FROM meta WHERE k <> 'spec'").all() as { k: string; v: string }[]).map(
          (r) => [r.k, r.v],
        ),
      ),
    }));
    return {
      core,
      workers: rest?.workers ?? [],
      attempts: rest?.attempts ?? [],
      troubled: rest?.troubled ?? [],
      meta: rest?.meta ?? {},
    };
  }

  /** Closes the connection (it is opened again on the next read). */
  close(): void {
    if (this.db?.open) this.db.close();
    this.db = undefined;
  }
}

function readJobJson(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Meta `runs` as pairs of numbers; undefined when absent or unreadable. */
function runsOf(v: string | undefined): [number, number][] | undefined {
  if (v === undefined) return undefined;
  try {
    const r = JSON.parse(v) as unknown;
    return Array.isArray(r) && r.every((x) => Array.isArray(x) && x.length === 2 && x.every(Number.isFinite))
      ? (r as [number, number][])
      : undefined;
  } catch {
    return undefined;
  }
}
