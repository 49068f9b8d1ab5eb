import type { TaskPayload } from '../queue.js';

/** Version of the message body format. */
export const BODY_VERSION = 1;

/** The body of a task message: everything a worker needs to build a lease. */
export interface TaskMessage {
  /** Body format version. */
  readonly v: number;
  /** Job the task belongs to (one cluster queue serves many jobs). */
  readonly j?: string;
  /** Task key. */
  readonly k: string;
  /** Step. */
  readonly s: string;
  /** Attempts before the task is a dead letter. */
  readonly m: number;
  /** The payload. */
  readonly p: TaskPayload;
  /** Attempts counted before this message was sent (a released task is sent again with it). @default 0 */
  readonly a?: number;
}

/** The body of a dead-letter message (a task message plus why it died). */
export interface DeadMessage extends TaskMessage {
  /** The last error. */
  readonly error: string;
  /** Attempts it had. */
  readonly attempts: number;
  /** Where the last attempt's log is, if it wrote one. */
  readonly logPath?: string;
}

/** Parses a message body; undefined when it is not a corral task. */
export function parseBody(body: string | undefined): TaskMessage | undefined {
  if (!body) return undefined;
  try {
    const m = JSON.parse(body) as Partial<TaskMessage>;
    if (
      m.v !== BODY_VERSION ||
      typeof m.k !== 'string' ||
      typeof m.s !== 'string' ||
      typeof m.p !== 'object'
    ) {
      return undefined;
    }
    return {
      v: m.v,
      j: m.j,
      k: m.k,
      s: m.s,
      m: typeof m.m === 'number' ? m.m : 3,
      p: m.p as TaskPayload,
      a: typeof m.a === 'number' ? m.a : 0,
    };
  } catch {
    return undefined;
  }
}

/** Splits a list into chunks of `n` (SQS batches hold at most 10 entries). */
export function chunks<T>(xs: readonly T[], n = 10): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}
