import { accessSync, constants, copyFileSync, existsSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import {
  type Completion,
  type DeadLetter,
  describeInput,
  type Failure,
  type Lease,
  type NewTask,
  type Queue,
  type TaskCounts,
  type TaskPayload,
} from '../queue/queue.js';
import { MIGRATIONS } from './migrations.js';

/** Options of the sqlite queue. */
export interface SqliteQueueOptions {
  /** Attempts per task before it goes to the dead letters. @default 3 */
  readonly maxAttempts?: number;
  /** How long a writer waits for the file lock before failing. @default 30s */
  readonly busyTimeoutMs?: number;
  /** Open without creating or migrating (status, logs). @default false */
  readonly readonly?: boolean;
}

interface ClaimRow {
  id: number;
  key: string;
  step: string;
  payload: string;
  attempts: number;
  max_attempts: number;
}

/**
 * Changes of the `counts` table that no trigger makes (migration 0003): a task's insert, a claim
 * (pending → leased) and a completion (leased → done). Summed over a transaction by its writer
 * and written once per step and state (`SqliteQueue.addCounts`) in the same transaction.
 */
export class CountDeltas {
  private readonly byKey = new Map<string, { step: string; state: string; n: number }>();

  /** `n` more tasks of `step` in `state` (fewer if negative). */
  add(step: string, state: string, n = 1): void {
    const k = `${state}\0${step}`;
    const e = this.byKey.get(k);
    if (e) e.n += n;
    else this.byKey.set(k, { step, state, n });
  }

  /** `n` tasks of `step` moved from one state to another. */
  move(step: string, from: string, to: string, n = 1): void {
    this.add(step, from, -n);
    this.add(step, to, n);
  }

  /** The non-zero changes. */
  entries(): { step: string; state: string; n: number }[] {
    return [...this.byKey.values()].filter((e) => e.n !== 0);
  }
}

/** The leases of claimed rows. */
function leasesOf(rows: readonly ClaimRow[], owner: string): Lease[] {
  return rows.map((r) => ({
    taskId: r.id,
    key: r.key,
    step: r.step,
    attempt: r.attempts,
    maxAttempts: r.max_attempts,
    payload: JSON.parse(r.payload) as TaskPayload,
    owner,
  }));
}

/** A lease as the state file holds it (the reaper and a dead worker's clean-up read these). */
interface LeaseRow {
  id: number;
  attempts: number;
  max_attempts: number;
  owner: string;
  started_at: number;
  payload: string;
}

/** A worker process as recorded in the state file. */
export interface WorkerRow {
  id: string;
  pid: number;
  host: string;
  started_at: number;
  heartbeat_at: number;
  task_pgids: string | null;
  state: string;
}

/**
 * better-sqlite3's compiled addon, given to it directly: otherwise it looks for it through the
 * `bindings` package, trying one path after another (~3 ms of every process that opens a state
 * file). `undefined` (its own lookup) where the build put it elsewhere.
 */
const NATIVE_BINDING = (() => {
  try {
    const pkg = createRequire(import.meta.url).resolve('better-sqlite3/package.json');
    const addon = path.join(path.dirname(pkg), 'build/Release/better_sqlite3.node');
    return existsSync(addon) ? addon : undefined;
  } catch {
    return undefined;
  }
})();

/**
 * Opens (creating and migrating if needed) a state file with WAL and sane pragmas. Read-only, it
 * works in a folder that cannot be written too (a read-only mount, another user's files): sqlite
 * cannot create the shared-memory file a WAL reader needs there, so it reads a private copy.
 */
export function openStateDb(file: string, opts: SqliteQueueOptions = {}): Database.Database {
  if (!opts.readonly) return openDb(file, opts);
  try {
    return openDb(file, opts); // its first read (the format) opens the file and its -shm
  } catch (err) {
    if ((err as { code?: string }).code !== 'SQLITE_CANTOPEN' || writable(path.dirname(file))) throw err;
    return openCopy(file, opts);
  }
}

/** Whether a folder can be written (access(2) says yes to root everywhere; a read-only mount says no only to a write). */
function writable(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    rmdirSync(mkdtempSync(path.join(dir, '.corral-probe-')));
    return true;
  } catch {
    return false;
  }
}

/** Opens a read-only copy of a state file (and its WAL) in a temporary folder, removed on close. */
function openCopy(file: string, opts: SqliteQueueOptions): Database.Database {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'corral-state-'));
  try {
    const copy = path.join(tmp, path.basename(file));
    copyFileSync(file, copy);
    if (existsSync(`${file}-wal`)) copyFileSync(`${file}-wal`, `${copy}-wal`);
    const db = openDb(copy, opts);
    const close = db.close.bind(db);
    db.close = () => {
      close();
      rmSync(tmp, { recursive: true, force: true });
      return db;
    };
    return db;
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

function openDb(file: string, opts: SqliteQueueOptions): Database.Database {
  const db = new Database(file, {
    readonly: opts.readonly ?? false,
    fileMustExist: opts.readonly ?? false,
    nativeBinding: NATIVE_BINDING,
  });
  db.pragma(`busy_timeout = ${opts.busyTimeoutMs ?? 30_000}`);
  // before anything is written to it (WAL mode, migrations)
  try {
    refuseNewer(db);
  } catch (err) {
    db.close();
    throw err;
  }
  if (!opts.readonly) {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    migrate(db);
  }
  return db;
}

/** Error code of a state file whose format is newer than this corral's (see `unreadableState`). */
export const NEWER_STATE = 'CORRAL_NEWER_STATE';

/**
 * Refuses a state file written by a newer corral: its counts and leases follow rules this one does
 * not know (format 3 counts claims and completions in code, not by trigger), so reading or writing
 * it would give wrong numbers.
 */
function refuseNewer(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw Object.assign(
      new Error(
        `written by a newer corral (state file format ${version}; this corral reads up to ${MIGRATIONS.length})`,
      ),
      { code: NEWER_STATE },
    );
  }
}

function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  for (let v = version; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
}

/**
 * The embedded Queue adapter: one sqlite file (WAL) that the coordinator and every local worker
 * open. A claim is one `UPDATE … RETURNING` in an immediate transaction, so two workers never get
 * the same task; a lease is `owner` + `lease_expires`; a heartbeat is one UPDATE per worker.
 */
export class SqliteQueue implements Queue {
  readonly db: Database.Database;
  private readonly defaultMaxAttempts: number;
  private readonly st;

  constructor(file: string, opts: SqliteQueueOptions = {}) {
    this.db = openStateDb(file, opts);
    this.defaultMaxAttempts = opts.maxAttempts ?? 3;
    const db = this.db;
    this.st = opts.readonly
      ? undefined
      : {
          insert: db.prepare(
            'INSERT OR IGNORE INTO tasks (key, step, payload, max_attempts) VALUES (?, ?, ?, ?)',
          ),
          has_deps: db.prepare<[], { x: number }>('SELECT 1 AS x FROM deps LIMIT 1'),
          release_dependents: db.prepare(
            `UPDATE tasks SET deps_left = deps_left - 1,
               state = CASE WHEN state = 'blocked' AND deps_left <= 1 THEN 'pending' ELSE state END
             WHERE id IN (SELECT dependent_id FROM deps WHERE task_id = ?)`,
          ),
          // deepest step first (a workflow streams: a ready parse task goes before the next fetch),
          // then due time and plan order.
          // `LIMIT ? + 0`, not `LIMIT ?`: sqlite reads a bare LIMIT parameter's value when it plans
          // the statement, so a new value (each claim's batch) made it compile the claim again,
          // triggers and all, every time (~0.5 ms of CPU per claim)
          claim: db.prepare<[string, number, number, number, number], ClaimRow>(
            `UPDATE tasks SET state = 'leased', owner = ?, lease_expires = ?, started_at = ?, attempts = attempts + 1
             WHERE id IN (SELECT id FROM tasks WHERE state = 'pending' AND run_at <= ? ORDER BY depth DESC, run_at, id LIMIT ? + 0)
             RETURNING id, key, step, payload, attempts, max_attempts`,
          ),
          claimStep: db.prepare<[string, number, number, number, string, number], ClaimRow>(
            `UPDATE tasks SET state = 'leased', owner = ?, lease_expires = ?, started_at = ?, attempts = attempts + 1
             WHERE id IN (SELECT id FROM tasks WHERE state = 'pending' AND run_at <= ? AND step = ? ORDER BY depth DESC, run_at, id LIMIT ? + 0)
             RETURNING id, key, step, payload, attempts, max_attempts`,
          ),
          heartbeat: db.prepare("UPDATE tasks SET lease_expires = ? WHERE owner = ? AND state = 'leased'"),
          // a completion of a leased task (counted by the writer), else of one in any other state
          // but done (a late ack after its lease was reaped: counted by the trigger)
          completeLeased: db.prepare<[number, string, number], { step: string }>(
            `UPDATE tasks SET state = 'done', owner = NULL, lease_expires = NULL, finished_at = ?, outcome = ?, last_error = NULL
             WHERE id = ? AND state = 'leased' RETURNING step`,
          ),
          complete: db.prepare(
            `UPDATE tasks SET state = 'done', owner = NULL, lease_expires = NULL, finished_at = ?, outcome = ?, last_error = NULL
             WHERE id = ? AND state NOT IN ('done', 'leased')`,
          ),
          count: db.prepare(
            `INSERT INTO counts (step, state, n) VALUES (?, ?, ?)
             ON CONFLICT (step, state) DO UPDATE SET n = n + excluded.n`,
          ),
          retry: db.prepare(
            `UPDATE tasks SET state = 'pending', owner = NULL, lease_expires = NULL, run_at = ?, last_error = ?, log_path = ?
             WHERE id = ? AND owner = ? AND state = 'leased'`,
          ),
          dead: db.prepare(
            `UPDATE tasks SET state = 'dead', owner = NULL, lease_expires = NULL, finished_at = ?, last_error = ?, log_path = ?
             WHERE id = ? AND owner = ? AND state = 'leased'`,
          ),
          release: db.prepare(
            `UPDATE tasks SET state = 'pending', owner = NULL, lease_expires = NULL, attempts = attempts - 1, run_at = 0
             WHERE id = ? AND owner = ? AND state = 'leased'`,
          ),
          attempt: db.prepare(
            'INSERT INTO attempts (task_id, attempt, owner, started_at, finished_at, outcome, error) VALUES (?, ?, ?, ?, ?, ?, ?)',
          ),
          // a worker's leases in the order it runs them: claim after claim, each in id order
          held: db.prepare<[string], LeaseRow>(
            `SELECT id, attempts, max_attempts, owner, started_at, payload FROM tasks
             WHERE owner = ? AND state = 'leased' ORDER BY started_at, id`,
          ),
          expired: db.prepare<[number], LeaseRow>(
            `SELECT id, attempts, max_attempts, owner, started_at, payload FROM tasks INDEXED BY tasks_leased
             WHERE state = 'leased' AND lease_expires <= ? ORDER BY owner, started_at, id`,
          ),
          expireOne: db.prepare(
            `UPDATE tasks SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
               owner = NULL, lease_expires = NULL, run_at = 0, last_error = ?,
               finished_at = CASE WHEN attempts >= max_attempts THEN ? ELSE finished_at END
             WHERE id = ? AND owner = ? AND state = 'leased'`,
          ),
        };
  }

  private get stmts() {
    if (!this.st) throw new Error('the state file is open read-only');
    return this.st;
  }

  async enqueue(tasks: readonly NewTask[]): Promise<void> {
    this.enqueueSync(tasks);
  }

  /** Synchronous enqueue in one transaction (used by the task expansion loop). */
  enqueueSync(tasks: readonly NewTask[], maxAttempts = this.defaultMaxAttempts): void {
    const { insert } = this.stmts;
    this.db
      .transaction(() => {
        const d = new CountDeltas();
        for (const t of tasks)
          if (insert.run(t.key, t.step, JSON.stringify(t.payload), maxAttempts).changes > 0)
            d.add(t.step, 'pending');
        this.addCounts(d);
      })
      .immediate();
  }

  /** Writes count changes that no trigger makes (inside the caller's write transaction). */
  addCounts(d: CountDeltas): void {
    const { count } = this.stmts;
    for (const e of d.entries()) count.run(e.step, e.state, e.n);
  }

  /** Counts `n` tasks of `step` moved from one state to another by a statement no trigger counts. */
  moveCounts(step: string, from: string, to: string, n = 1): void {
    const d = new CountDeltas();
    d.move(step, from, to, n);
    this.addCounts(d);
  }

  /** Claimed rows (pending → leased) counted. */
  private countClaimed(rows: readonly ClaimRow[]): readonly ClaimRow[] {
    if (rows.length === 0) return rows;
    const d = new CountDeltas();
    for (const r of rows) d.move(r.step, 'pending', 'leased');
    this.addCounts(d);
    return rows;
  }

  async claim(owner: string, max: number, leaseMs: number, step?: string): Promise<Lease[]> {
    return this.claimSync(owner, max, leaseMs, step);
  }

  claimSync(owner: string, max: number, leaseMs: number, step?: string): Lease[] {
    const now = Date.now();
    const rows = this.db
      .transaction(() =>
        this.countClaimed(
          step === undefined
            ? this.stmts.claim.all(owner, now + leaseMs, now, now, max)
            : this.stmts.claimStep.all(owner, now + leaseMs, now, now, step, max),
        ),
      )
      .immediate();
    return leasesOf(rows, owner);
  }

  /**
   * A worker's ack of its last batch and its next claim in one write transaction: each is a wait
   * for the file lock that the other workers hold in turn (for a million no-op tasks, half of the
   * transactions).
   */
  async completeAndClaim(
    done: readonly Completion[],
    owner: string,
    max: number,
    leaseMs: number,
  ): Promise<Lease[]> {
    const rows = this.db
      .transaction(() => {
        this.completeRows(done);
        const now = Date.now();
        return this.countClaimed(this.stmts.claim.all(owner, now + leaseMs, now, now, max));
      })
      .immediate();
    return leasesOf(rows, owner);
  }

  async heartbeat(owner: string, leaseMs: number): Promise<number> {
    return this.stmts.heartbeat.run(Date.now() + leaseMs, owner).changes;
  }

  async complete(done: readonly Completion[]): Promise<void> {
    this.db.transaction(() => this.completeRows(done)).immediate();
  }

  /** The body of `complete`, inside a write transaction. */
  private completeRows(done: readonly Completion[]): void {
    const { completeLeased, complete, attempt, release_dependents, has_deps } = this.stmts;
    // read inside the write transaction: no task can gain a dependent between this and the updates
    const deps = has_deps.get() !== undefined;
    const d = new CountDeltas();
    for (const c of done) {
      const id = c.lease.taskId;
      const leased = completeLeased.get(c.finishedAt, c.outcome, id);
      if (leased) d.move(leased.step, 'leased', 'done');
      if ((leased || complete.run(c.finishedAt, c.outcome, id).changes > 0) && deps)
        release_dependents.run(id);
      attempt.run(id, c.lease.attempt, c.lease.owner, c.startedAt, c.finishedAt, c.outcome, null);
    }
    this.addCounts(d);
  }

  async fail(failures: readonly Failure[]): Promise<void> {
    const { retry, dead, attempt } = this.stmts;
    this.db
      .transaction(() => {
        for (const f of failures) {
          const l = f.lease;
          const last = l.attempt >= l.maxAttempts || f.final === true;
          if (last) dead.run(f.finishedAt, f.error, f.logPath ?? null, l.taskId, l.owner);
          else retry.run(f.finishedAt + f.retryDelayMs, f.error, f.logPath ?? null, l.taskId, l.owner);
          attempt.run(
            l.taskId,
            l.attempt,
            l.owner,
            f.startedAt,
            f.finishedAt,
            last ? 'dead' : 'failed',
            f.error,
          );
        }
      })
      .immediate();
  }

  async release(leases: readonly Lease[]): Promise<void> {
    this.releaseSync(leases);
  }

  releaseSync(leases: readonly Lease[]): void {
    const { release, attempt } = this.stmts;
    const now = Date.now();
    this.db
      .transaction(() => {
        for (const l of leases) {
          if (release.run(l.taskId, l.owner).changes > 0) {
            attempt.run(l.taskId, l.attempt, l.owner, null, now, 'released', null);
          }
        }
      })
      .immediate();
  }

  async reapExpired(now = Date.now()): Promise<number> {
    // looked for first without the write lock (WAL: a read waits for no one): nearly every tick
    // of the coordinator finds none, and taking the lock for nothing made the workers' claims and
    // acks wait, in SQLite's busy handler that sleeps 1, 2, 5, 10… ms (BENCHMARKS.md, row 9)
    if (this.stmts.expired.get(now) === undefined) return 0;
    return this.db
      .transaction(() => {
        const byOwner = new Map<string, LeaseRow[]>();
        for (const r of this.stmts.expired.all(now)) {
          const rows = byOwner.get(r.owner);
          if (rows) rows.push(r);
          else byOwner.set(r.owner, [r]);
        }
        let n = 0;
        for (const rows of byOwner.values())
          n += this.endLeases(rows, rows[0], 'lease expired: the worker stopped heartbeating', now);
        return n;
      })
      .immediate();
  }

  /**
   * Ends every lease held by `owner`, a worker known to be gone. Only the task it was running is
   * charged an attempt: the first of its leases in the order it runs them (claim time, then id)
   * whose output is not `committed`. The ones queued behind it, and those it finished but had not
   * acknowledged yet, go back to the queue as if never claimed: a worker holds a claimed batch
   * (hundreds of short tasks), and counting its death against each would dead-letter tasks that
   * never ran. Returns how many tasks went back to the queue or to the dead letters.
   */
  async expireOwner(
    owner: string,
    reason: string,
    committed?: (payload: TaskPayload, attempt: number) => Promise<boolean>,
  ): Promise<number> {
    const rows = this.stmts.held.all(owner);
    let suspect: LeaseRow | undefined;
    for (const r of rows) {
      if (!committed || !(await committed(JSON.parse(r.payload) as TaskPayload, r.attempts))) {
        suspect = r;
        break;
      }
    }
    const now = Date.now();
    // the worker is gone, so nothing changes these leases meanwhile but the reaper: each
    // statement below acts only on a lease still held by `owner`
    return this.db.transaction(() => this.endLeases(rows, suspect, reason, now)).immediate();
  }

  /**
   * Ends leases of one owner (in the order it runs them): `suspect` is charged the attempt, as a
   * failure with `reason` (or a dead letter after its last attempt); the others are released.
   */
  private endLeases(
    rows: readonly LeaseRow[],
    suspect: LeaseRow | undefined,
    reason: string,
    now: number,
  ): number {
    const { expireOne, release, attempt } = this.stmts;
    let n = 0;
    for (const r of rows) {
      if (r === suspect) {
        const last = r.attempts >= r.max_attempts;
        if (expireOne.run(reason, now, r.id, r.owner).changes === 0) continue;
        attempt.run(r.id, r.attempts, r.owner, r.started_at, now, last ? 'dead' : 'expired', reason);
      } else {
        if (release.run(r.id, r.owner).changes === 0) continue;
        attempt.run(r.id, r.attempts, r.owner, r.started_at, now, 'released', reason);
      }
      n++;
    }
    return n;
  }

  /** Counts one input of each task waiting on `taskId` as there; a task with none left becomes pending. */
  releaseDependents(taskId: number): void {
    this.stmts.release_dependents.run(taskId);
  }

  /**
   * Hands back the leases held by `owner` without counting the attempts (its coordinator went
   * away: not the tasks' fault); with `expiredBy`, only those whose lease expired by then.
   */
  releaseOwner(owner: string, expiredBy?: number): number {
    return this.db
      .prepare(
        `UPDATE tasks SET state = 'pending', owner = NULL, lease_expires = NULL, attempts = attempts - 1, run_at = 0
         WHERE owner = ? AND state = 'leased' AND lease_expires <= ?`,
      )
      .run(owner, expiredBy ?? Number.MAX_SAFE_INTEGER).changes;
  }

  async counts(): Promise<TaskCounts> {
    return this.countsSync();
  }

  countsSync(step?: string): TaskCounts {
    const rows = (
      step === undefined
        ? this.db.prepare('SELECT state, sum(n) AS n FROM counts GROUP BY state').all()
        : this.db.prepare('SELECT state, n FROM counts WHERE step = ?').all(step)
    ) as { state: string; n: number }[];
    const c: TaskCounts = { pending: 0, leased: 0, blocked: 0, done: 0, dead: 0, skipped: 0, total: 0 };
    for (const r of rows) {
      if (r.state in c) c[r.state as keyof TaskCounts] = r.n;
      c.total += r.n;
    }
    return c;
  }

  async deadLetters(limit = 1000): Promise<DeadLetter[]> {
    const rows = this.db
      .prepare(
        "SELECT key, step, payload, attempts, last_error, log_path FROM tasks WHERE state = 'dead' ORDER BY id LIMIT ? + 0",
      )
      .all(limit) as {
      key: string;
      step: string;
      payload: string;
      attempts: number;
      last_error: string;
      log_path: string | null;
    }[];
    return rows.map((r) => {
      const p = JSON.parse(r.payload) as TaskPayload;
      const input = describeInput(p);
      return {
        key: r.key,
        step: r.step,
        index: p.i,
        attempts: r.attempts,
        error: r.last_error ?? '',
        logPath: r.log_path ?? undefined,
        ...(input !== undefined ? { input } : {}),
      };
    });
  }

  /** Reads a value of the job's metadata. */
  getMeta(k: string): string | undefined {
    return (this.db.prepare('SELECT v FROM meta WHERE k = ?').get(k) as { v: string } | undefined)?.v;
  }

  /** Writes a value of the job's metadata. */
  setMeta(k: string, v: string): void {
    this.db
      .prepare('INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v')
      .run(k, v);
  }

  /** Records a worker's liveness and the process groups of the tasks it runs. */
  workerBeat(id: string, pid: number, host: string, taskPgids: number[], state = 'running'): void {
    const now = Date.now();
    this.db
      .prepare(
        `INSERT INTO workers (id, pid, host, started_at, heartbeat_at, task_pgids, state) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, task_pgids = excluded.task_pgids, state = excluded.state`,
      )
      .run(id, pid, host, now, now, JSON.stringify(taskPgids), state);
  }

  /** The workers recorded in the state file. */
  workers(): WorkerRow[] {
    return this.db.prepare('SELECT * FROM workers ORDER BY started_at').all() as WorkerRow[];
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
