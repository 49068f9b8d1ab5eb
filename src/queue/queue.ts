/**
 * The Queue port: how tasks are handed to workers and how their fate is recorded.
 * Adapters: `sqlite` (embedded default, one WAL file shared by the coordinator and local workers)
 * and, on AWS, `sqs` (the visibility timeout is the lease).
 */

import type { TaskPayload } from '../spec/task.js';

export type { TaskPayload };

/** A task to add to the queue. */
export interface NewTask {
  /** Unique, stable key of the task within its job (its index as text for map jobs). */
  readonly key: string;
  /** Step of the job the task belongs to. */
  readonly step: string;
  readonly payload: TaskPayload;
}

/** A worker's claim on one task, valid until it expires or is acked, failed or released. */
export interface Lease {
  readonly taskId: number;
  readonly key: string;
  readonly step: string;
  /** Attempt number of this claim, from 1. */
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly payload: TaskPayload;
  /** The worker holding it. */
  readonly owner: string;
}

/** The id of an attempt (its staged output's name): the lease's attempt number and holder. */
export function attemptIdOf(attempt: number, owner: string): string {
  return `${attempt}-${owner}`;
}

/** How one attempt ended successfully. */
export interface Completion {
  readonly lease: Lease;
  /** `committed`: this attempt's output became the result; `duplicate`: an earlier attempt's had; `found`: the output was already in the store. */
  readonly outcome: 'committed' | 'duplicate' | 'found' | 'ok';
  readonly startedAt: number;
  readonly finishedAt: number;
}

/** A failed attempt. */
export interface Failure {
  readonly lease: Lease;
  readonly error: string;
  /** Where the attempt's log is, if it wrote one. */
  readonly logPath?: string;
  /** Delay before the next attempt, if there is one. */
  readonly retryDelayMs: number;
  /** No attempt can succeed (the command cannot start): a dead letter now, whatever attempts are left. */
  readonly final?: boolean;
  readonly startedAt: number;
  readonly finishedAt: number;
}

/** Counts of tasks by state. */
export interface TaskCounts {
  /** Ready to run (or waiting for a retry's backoff). */
  pending: number;
  /** Claimed by a worker. */
  leased: number;
  /** Waiting for tasks or steps they need. */
  blocked: number;
  done: number;
  /** Failed every attempt (dead letters). */
  dead: number;
  /** Not run because something they need failed. */
  skipped: number;
  total: number;
}

/** A task that exhausted its attempts. */
export interface DeadLetter {
  readonly key: string;
  readonly step: string;
  readonly index: number;
  readonly attempts: number;
  readonly error: string;
  readonly logPath?: string;
  /** What the task ran on, as people name it (see {@link describeInput}). */
  readonly input?: string;
}

/** A line's text as shown beside its task: quoted, at most 60 characters. */
function quoteShort(text: string, max = 60): string {
  return JSON.stringify(text.length > max ? `${text.slice(0, max - 1)}…` : text);
}

/**
 * What a task runs on, as people name it: `data/a.txt`, `data/big.csv bytes 0-1048576`,
 * `line 12 "some text"`, `12 inputs` (a reduce), `in a.fits b.hdr → out p.fits` (a HyperFlow
 * process, whose step is its name). Undefined for a task with no input (a step's single task).
 */
export function describeInput(p: TaskPayload): string | undefined {
  if (p.argv !== undefined)
    return `in ${p.ins?.length ? p.ins.join(' ') : '-'} → out ${p.outs?.length ? p.outs.join(' ') : '-'}`;
  if (p.p !== undefined) return p.s !== undefined && p.e !== undefined ? `${p.p} bytes ${p.s}-${p.e}` : p.p;
  if (p.l !== undefined) return `line ${p.n ?? '?'} ${quoteShort(p.l)}`;
  if (p.ins !== undefined) return `${p.ins.length} input${p.ins.length === 1 ? '' : 's'}`;
  return undefined;
}

/** A task as people see it: its key, and its input beside it, `3 (data/d.txt)`. */
export function taskLabel(key: string, p: TaskPayload | undefined): string {
  const input = p ? describeInput(p) : undefined;
  return input === undefined ? key : `${key} (${input})`;
}

/** The Queue port. Every method is batch-friendly: one call, one round trip or transaction. */
export interface Queue {
  /** Adds tasks; tasks whose key exists already are left as they are. */
  enqueue(tasks: readonly NewTask[]): Promise<void>;
  /** Claims up to `max` ready tasks (of `step`, if given) for `owner` for `leaseMs`. */
  claim(owner: string, max: number, leaseMs: number, step?: string): Promise<Lease[]>;
  /** Extends every lease `owner` holds by `leaseMs` from now; returns how many it still holds. */
  heartbeat(owner: string, leaseMs: number): Promise<number>;
  /** Marks tasks done. */
  complete(done: readonly Completion[]): Promise<void>;
  /**
   * Marks tasks done, then claims up to `max` ready tasks for `owner`, as `complete` and `claim`
   * would, in one write (a worker's ack of a batch and its next claim). @default - absent: the
   * worker calls `complete`, then `claim`
   */
  completeAndClaim?(
    done: readonly Completion[],
    owner: string,
    max: number,
    leaseMs: number,
  ): Promise<Lease[]>;
  /** Records failed attempts; each task is retried after its delay, or goes to the dead letters after its last attempt. */
  fail(failures: readonly Failure[]): Promise<void>;
  /** Hands leases back at once, without counting the attempt (spot notice, drain). */
  release(leases: readonly Lease[]): Promise<void>;
  /** Returns expired leases to the queue (or the dead letters); returns how many. */
  reapExpired(now?: number): Promise<number>;
  /** Counts tasks by state. */
  counts(): Promise<TaskCounts>;
  /** Lists the dead letters. */
  deadLetters(limit?: number): Promise<DeadLetter[]>;
  close(): Promise<void>;
}

/**
 * The number of an attempt within this run of the job. A re-run gives each failed task
 * `maxAttempts` more attempts (its lease's `maxAttempts` grows by that much), so its retries
 * back off from `initial` again instead of from where the last run's left off.
 */
export function attemptOfRun(lease: Pick<Lease, 'attempt' | 'maxAttempts'>, maxAttempts: number): number {
  return Math.max(1, lease.attempt - Math.max(0, lease.maxAttempts - maxAttempts));
}

/** Delay before attempt `attempt + 1`, given the attempt (of this run, {@link attemptOfRun}) that just failed. */
export function backoffDelay(
  attempt: number,
  policy: { initial: number; factor: number; max: number },
): number {
  return Math.min(policy.max, policy.initial * policy.factor ** Math.max(0, attempt - 1));
}
