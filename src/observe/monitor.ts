/**
 * A live view of one job for the dashboard and the metrics: the state file's core snapshot plus
 * what is learnt by tailing its attempts table (throughput, retries, recent failures), so that
 * each update reads only what changed since the last one.
 */
import {
  type AttemptRow,
  type CoreSnapshot,
  FAILED_OUTCOMES,
  RETRIED_OUTCOMES,
  StateReader,
  tailLines,
} from './snapshot.js';

/** A task that failed at least once, with the end of its log. */
export interface FailureView {
  readonly key: string;
  /** What the task ran on (its file, line or byte range; a HyperFlow process's signals). */
  readonly input?: string;
  readonly step: string;
  /** `dead` (a dead letter) or the state it is in while it is retried. */
  readonly state: string;
  readonly attempts: number;
  readonly error: string;
  readonly logPath?: string;
  readonly logTail: string[];
}

/** Finished attempts per time bucket, for the throughput chart. */
export interface Throughput {
  /** Start of the first bucket (ms since epoch). */
  readonly start: number;
  readonly bucketMs: number;
  /** Attempts that succeeded, per bucket. */
  readonly ok: number[];
  /** Attempts that failed, per bucket. */
  readonly failed: number[];
}

/** What the dashboard shows, pushed to it on every change. */
export interface LiveView extends CoreSnapshot {
  /** Tasks finished per second over the last 10 seconds. */
  readonly rate: number;
  /**
   * Seconds left at that rate for the tasks not finished (pending, running, waiting); null while
   * the job runs without a rate yet, or when it does not run.
   */
  readonly eta: number | null;
  readonly throughput: Throughput;
  /** Attempts that failed and were retried. */
  readonly retries: number;
  readonly attemptsTotal: number;
  /** The most recent tasks that failed at least once (newest first). */
  readonly failures: FailureView[];
}

/** Called with each newly seen attempt (the metrics observe durations this way). */
export type AttemptListener = (a: AttemptRow) => void;

const SECOND = 1000;
/** Most points the throughput chart gets. */
const MAX_POINTS = 120;
/** Failures kept in the live view. */
const MAX_FAILURES = 20;
/** Attempts read per update, so a big history is caught up in slices. */
const SLICE = 20_000;

/** Tails one job's state file; `update()` reads what changed, `view()` builds the dashboard's view. */
export class JobMonitor {
  readonly reader: StateReader;
  private seq = 0;
  /** Finished attempts per second (ms of the second → [ok, failed]). */
  private readonly perSecond = new Map<number, [number, number]>();
  private readonly recentFailures: number[] = [];
  /** The error of the last failed attempt of each task in recentFailures. */
  private readonly lastErrors = new Map<number, string>();
  private retries = 0;
  private attempts = 0;
  private readonly listeners: AttemptListener[] = [];
  private core: CoreSnapshot | undefined;
  private generation = 0;

  constructor(stateDir: string, job: string) {
    this.reader = new StateReader(stateDir, job);
  }

  /** The job's name. */
  get job(): string {
    return this.reader.job;
  }

  /** Registers a listener for attempts seen from now on (register before the first update to see them all). */
  onAttempt(fn: AttemptListener): void {
    this.listeners.push(fn);
  }

  /** Reads new attempts (up to `maxSlices` slices) and the core snapshot; returns the core. */
  update(maxSlices = 5): CoreSnapshot {
    this.core = this.reader.core();
    if (this.reader.generation !== this.generation) this.reset();
    for (let i = 0; i < maxSlices; i++) {
      const rows = this.reader.attemptsSince(this.seq, SLICE);
      for (const a of rows) this.see(a);
      if (rows.length < SLICE) break;
    }
    return this.core;
  }

  /** Forgets what was learnt from a state file that has been replaced. */
  private reset(): void {
    this.generation = this.reader.generation;
    this.seq = 0;
    this.perSecond.clear();
    this.recentFailures.length = 0;
    this.lastErrors.clear();
    this.retries = 0;
    this.attempts = 0;
  }

  /** The last core snapshot read (reads one if none yet). */
  latest(): CoreSnapshot {
    return this.core ?? this.update();
  }

  private see(a: AttemptRow): void {
    this.seq = a.seq;
    this.attempts++;
    if (RETRIED_OUTCOMES.has(a.outcome)) this.retries++;
    const failed = FAILED_OUTCOMES.has(a.outcome);
    if (failed) {
      const i = this.recentFailures.indexOf(a.taskId);
      if (i >= 0) this.recentFailures.splice(i, 1);
      this.recentFailures.unshift(a.taskId);
      this.lastErrors.set(a.taskId, a.error ?? a.outcome);
      if (this.recentFailures.length > MAX_FAILURES) this.lastErrors.delete(this.recentFailures.pop()!);
    }
    if (a.finishedAt !== null && a.startedAt !== null) {
      const s = Math.floor(a.finishedAt / SECOND) * SECOND;
      const b = this.perSecond.get(s) ?? [0, 0];
      b[failed ? 1 : 0]++;
      this.perSecond.set(s, b);
    }
    for (const fn of this.listeners) fn(a);
  }

  /** Updates, then builds the full live view. */
  view(): LiveView {
    const core = this.update();
    const throughput = this.throughput(core.at);
    const last10 = [...this.perSecond.entries()]
      .filter(([s]) => s >= core.at - 10 * SECOND)
      .reduce((n, [, b]) => n + b[0] + b[1], 0);
    const failures = this.reader.tasksByIds(this.recentFailures).map((t) => ({
      key: t.key,
      input: t.input ?? undefined,
      step: t.step,
      state: t.state,
      attempts: t.attempts,
      error: t.lastError ?? this.lastErrors.get(t.id) ?? '',
      logPath: t.logPath ?? undefined,
      logTail: tailLines(t.logPath, 8),
    }));
    const rate = core.status === 'running' ? last10 / 10 : 0;
    const left = core.counts.pending + core.counts.leased + core.counts.blocked;
    return {
      ...core,
      rate,
      eta: core.status === 'running' && rate > 0 ? left / rate : null,
      throughput,
      retries: this.retries,
      attemptsTotal: this.attempts,
      failures,
    };
  }

  /** Finished attempts per bucket from the first one to now, at most MAX_POINTS buckets. */
  private throughput(now: number): Throughput {
    const seconds = [...this.perSecond.keys()];
    if (seconds.length === 0) return { start: now, bucketMs: SECOND, ok: [], failed: [] };
    const first = Math.min(...seconds);
    const end = this.core?.status === 'running' ? Math.max(now, ...seconds) : Math.max(...seconds);
    const span = end - first + SECOND;
    const bucketMs = Math.max(SECOND, Math.ceil(span / MAX_POINTS / SECOND) * SECOND);
    const n = Math.max(1, Math.ceil(span / bucketMs));
    const ok = new Array<number>(n).fill(0);
    const failed = new Array<number>(n).fill(0);
    for (const [s, [o, f]] of this.perSecond) {
      const i = Math.min(n - 1, Math.floor((s - first) / bucketMs));
      ok[i]! += o;
      failed[i]! += f;
    }
    return { start: first, bucketMs, ok, failed };
  }

  /** Closes the state file. */
  close(): void {
    this.reader.close();
  }
}
