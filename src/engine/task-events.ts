/**
 * Per-task events in a local run's event log: each attempt's start, and how it ended (finished,
 * failed and retried, failed for good, handed back), with the task's key, read from the state
 * file once per coordinator tick (the workers write their leases and attempts there).
 */
import type Database from 'better-sqlite3';
import type { Logger } from '../vendor/pino.js';

/**
 * Task events logged one by one per tick; beyond that, one line says how many more there were, so
 * that a million-task run does not spend its time writing two lines per task.
 */
export const TASK_EVENTS_PER_TICK = 200;

interface LeaseRow {
  id: number;
  key: string;
  step: string;
  attempts: number;
  max_attempts: number;
  owner: string | null;
  started_at: number | null;
}

interface AttemptRow {
  seq: number;
  id: number;
  key: string;
  step: string;
  attempt: number;
  max_attempts: number;
  owner: string | null;
  started_at: number | null;
  finished_at: number | null;
  outcome: string;
  error: string | null;
}

const FINISHED = new Set(['ok', 'committed', 'duplicate', 'found']);

/** Logs the task events recorded in a job's state file since the last pass. */
export class TaskEventLog {
  /** Attempts table cursor: the rowid of the last attempt logged or counted. */
  private seq: number;
  /** Task id → the attempt whose start was logged. */
  private readonly started = new Map<number, number>();
  private readonly st;

  constructor(
    db: Database.Database,
    private readonly log: Logger,
    private readonly perTick = TASK_EVENTS_PER_TICK,
  ) {
    this.st = {
      leased: db.prepare<[number], LeaseRow>(
        `SELECT id, key, step, attempts, max_attempts, owner, started_at FROM tasks
         WHERE state = 'leased' ORDER BY started_at, id LIMIT ? + 0`,
      ),
      ended: db.prepare<[number, number], AttemptRow>(
        `SELECT a.rowid AS seq, t.id, t.key, t.step, a.attempt, t.max_attempts, a.owner, a.started_at, a.finished_at, a.outcome, a.error
         FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.rowid > ? ORDER BY a.rowid LIMIT ? + 0`,
      ),
      rest: db.prepare<[number], { n: number; last: number | null }>(
        'SELECT count(*) AS n, max(rowid) AS last FROM attempts WHERE rowid > ?',
      ),
    };
    // a resumed run logs what happens from now on: earlier attempts are in the log already
    this.seq =
      (db.prepare('SELECT max(rowid) AS last FROM attempts').get() as { last: number | null }).last ?? 0;
  }

  /** Logs what happened since the last pass: attempts that ended, then tasks that started. */
  pass(): void {
    let budget = this.perTick;
    const rows = this.st.ended.all(this.seq, budget);
    for (const r of rows) {
      this.seq = r.seq;
      if (r.outcome !== 'released' && this.started.get(r.id) !== r.attempt && budget > 0) {
        this.logStart(r.key, r.step, r.attempt, r.max_attempts, r.owner, r.started_at);
        budget--;
      }
      this.started.delete(r.id);
      this.logEnd(r);
      budget--;
    }
    if (rows.length === this.perTick) {
      // a backlog (a run of very short tasks): counted, so the log never falls behind the run
      const rest = this.st.rest.get(this.seq);
      if (rest && rest.n > 0 && rest.last !== null) {
        this.seq = rest.last;
        this.log.info(
          { event: 'task-events-skipped', attempts: rest.n },
          `${rest.n} more attempt(s) ended (more than ${this.perTick} task events in one tick are counted, not listed)`,
        );
      }
      return;
    }
    if (budget <= 0) return; // the rest next tick
    for (const l of this.st.leased.all(budget)) {
      if (this.started.get(l.id) === l.attempts) continue;
      this.started.set(l.id, l.attempts);
      this.logStart(l.key, l.step, l.attempts, l.max_attempts, l.owner, l.started_at);
    }
  }

  private logStart(
    key: string,
    step: string,
    attempt: number,
    maxAttempts: number,
    worker: string | null,
    startedAt: number | null,
  ): void {
    this.log.info(
      { event: 'task-started', task: key, step, attempt, worker, startedAt },
      `task ${key} started${attempt > 1 ? ` (attempt ${attempt} of ${maxAttempts})` : ''}${worker ? ` on ${worker}` : ''}`,
    );
  }

  private logEnd(r: AttemptRow): void {
    const base = { task: r.key, step: r.step, attempt: r.attempt, worker: r.owner };
    const secs =
      r.started_at !== null && r.finished_at !== null
        ? ` in ${((r.finished_at - r.started_at) / 1000).toFixed(1)}s`
        : '';
    if (FINISHED.has(r.outcome))
      this.log.info(
        { event: 'task-finished', ...base, outcome: r.outcome, ms: msOf(r) },
        `task ${r.key} finished${secs}`,
      );
    else if (r.outcome === 'failed' || r.outcome === 'expired')
      this.log.warn(
        { event: 'task-retried', ...base, outcome: r.outcome, error: r.error },
        `task ${r.key} failed (attempt ${r.attempt} of ${r.max_attempts}), retried: ${r.error ?? r.outcome}`,
      );
    else if (r.outcome === 'dead')
      this.log.error(
        { event: 'task-failed', ...base, error: r.error },
        `task ${r.key} failed after ${r.attempt} attempt(s): ${r.error ?? 'failed'}`,
      );
    else
      this.log.debug(
        { event: 'task-released', ...base, reason: r.error },
        `task ${r.key} handed back to the queue${r.error ? ` (${r.error})` : ''}`,
      );
  }
}

function msOf(r: AttemptRow): number | undefined {
  return r.started_at !== null && r.finished_at !== null ? r.finished_at - r.started_at : undefined;
}
