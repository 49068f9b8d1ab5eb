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

/**
 * The body of a message carrying several tasks of one job (a bundle, issue 24 item 1): one send,
 * receive and delete for all of them, and one commit marker (`bundles/<b>`) holding their results,
 * written once by the attempt that finishes the bundle. A bundle is never split: its tasks are
 * handed back, redelivered and committed together, always under the same id.
 */
export interface BundleMessage {
  /** Body format version. */
  readonly v: number;
  /** Job the tasks belong to. */
  readonly j?: string;
  /** The bundle's id: the name of its commit marker. */
  readonly b: string;
  /** Attempts per task. */
  readonly m: number;
  /** Was sent before (a hand-back, a coordinator's re-send): a worker looks for its marker first. */
  readonly lk?: 1;
  /** Its tasks: key, step, payload, attempts counted before this message was sent. */
  readonly t: ReadonlyArray<{
    readonly k: string;
    readonly s: string;
    readonly p: TaskPayload;
    readonly a?: number;
  }>;
}

/** The tasks of a message body (one, or a bundle's); undefined when it is not corral's. */
export function parseMessage(
  body: string | undefined,
): { readonly tasks: TaskMessage[]; readonly bundle?: BundleMessage } | undefined {
  if (!body) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch {
    return undefined;
  }
  const m = raw as Partial<BundleMessage>;
  if (!Array.isArray(m?.t)) {
    const one = taskOf(raw);
    return one ? { tasks: [one] } : undefined;
  }
  if (m.v !== BODY_VERSION || typeof m.b !== 'string') return undefined;
  const max = typeof m.m === 'number' ? m.m : 3;
  const tasks: TaskMessage[] = [];
  for (const t of m.t) {
    const one = taskOf({ v: m.v, j: m.j, m: max, ...t });
    if (!one) return undefined;
    tasks.push(one);
  }
  return {
    tasks,
    bundle: { v: m.v, j: m.j, b: m.b, m: max, ...(m.lk === 1 ? { lk: 1 as const } : {}), t: m.t },
  };
}

/** A parsed body of one task; undefined when it is not a corral task. */
function taskOf(raw: unknown): TaskMessage | undefined {
  const m = raw as Partial<TaskMessage> | null;
  if (
    m?.v !== BODY_VERSION ||
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
}

/** Splits a list into chunks of `n` (SQS batches hold at most 10 entries). */
export function chunks<T>(xs: readonly T[], n = 10): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}
