import type { Message, SQSClient } from '@aws-sdk/client-sqs';
import { sqsSdk } from '../../aws/sdk.js';
import {
  type Completion,
  type DeadLetter,
  describeInput,
  type Failure,
  type Lease,
  type NewTask,
  type Queue,
  type TaskCounts,
} from '../queue.js';
import { BODY_VERSION, chunks, type DeadMessage, parseBody, type TaskMessage } from './message.js';

const {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
} = sqsSdk;

/** Options of the SQS queue adapter. */
export interface SqsQueueOptions {
  readonly client: SQSClient;
  /** URL of the job queue (stack output QueueUrl). */
  readonly queueUrl: string;
  /**
   * URL of its dead-letter queue (stack output DeadLetterQueueUrl); failed tasks are sent there
   * after their last attempt.
   * @default - none: a task that fails its last attempt is only deleted (and reported by `onDeadLetter`)
   */
  readonly deadLetterQueueUrl?: string;
  /**
   * Job whose tasks this queue hands out: `enqueue` stamps it on each message and `claim` hands
   * any other job's message straight back (visibility 0).
   * @default - none: every message, whatever its job
   */
  readonly job?: string;
  /** Attempts per task, stamped on each message at enqueue. @default 3 */
  readonly maxAttempts?: number;
  /**
   * Long-polling wait of a claim that finds nothing, in seconds (0–20).
   * @default 5
   */
  readonly waitTimeSeconds?: number;
  /**
   * Longest visibility timeout of a receive that long-polls, in seconds (1 to the lease). A
   * long poll can hand messages to a caller that died while it waited (a SIGKILLed or reclaimed
   * worker: fauxqs does, and SQS gives no promise otherwise); they then stay invisible for the
   * receive's visibility timeout. So a waiting receive takes its messages for this long only, and
   * what is still held halfway through is extended to the lease (one batch call, unless a
   * heartbeat came first). A receive that does not wait uses the lease.
   * @default 5
   */
  readonly pollVisibilitySeconds?: number;
  /**
   * Messages received per ReceiveMessage call (1–10). A claim of fewer tasks keeps the rest in a
   * local buffer, leased to the claiming owner and heartbeated with its leases, so one receive
   * serves up to 10 tasks.
   * @default 10
   */
  readonly prefetch?: number;
  /**
   * Longest time a completion waits before its message is deleted (deletes go in batches of 10).
   * @default 1000
   */
  readonly ackDelayMs?: number;
  /**
   * How a lease is handed back (release, spot notice, another job's message): `resend` sends
   * the task again with its attempt count unchanged and deletes the received message, so a
   * hand-back never counts as an attempt; `visibility` sets the visibility to 0 (one call per 10
   * leases, but SQS counts the receive, so a task handed back often can reach its last attempt).
   * @default 'resend'
   */
  readonly releaseMode?: 'resend' | 'visibility';
  /** Called for each task that became a dead letter (last attempt failed, or its lease expired on it). */
  readonly onDeadLetter?: (d: DeadLetter & { readonly job?: string }) => Promise<void> | void;
}

/** What the adapter remembers of a message it received. */
interface Held {
  readonly lease: Lease;
  readonly body: TaskMessage;
  receiptHandle: string;
  /** When the message becomes visible again unless extended (ms since the epoch). */
  visibleUntil: number;
  /** The lease it was claimed for. */
  readonly leaseMs: number;
}

/** Stamped on tasks that exhausted their attempts because their lease expired. */
const EXPIRED = 'lease expired: the worker stopped heartbeating';

/**
 * The Queue port on Amazon SQS (standard queue). The visibility timeout is the lease: a claim
 * receives messages with `VisibilityTimeout = leaseMs`, a heartbeat extends it with
 * ChangeMessageVisibility, an expired lease makes the message visible again by itself. The
 * attempt number is the message's ApproximateReceiveCount. A failure with a retry sets the
 * visibility to the backoff delay; the last failed attempt sends the task to the dead-letter
 * queue and deletes it (explicitly, not by redrive, so a released receive never dead-letters a
 * task; the queue's redrive policy stays as the backstop for poison messages). Sends, receives,
 * deletes and visibility changes go in batches of 10.
 *
 * `counts()`: pending, leased and dead are the queues' approximate attributes; done is this
 * instance's own ledger of completions. The cluster coordinator takes done/failed from the
 * bucket instead (the store is the truth of completion).
 */
export class SqsQueue implements Queue {
  private readonly o: SqsQueueOptions;
  private readonly held = new Map<number, Held>();
  /** Received but not handed out yet, per owner. */
  private readonly buffer = new Map<string, Held[]>();
  private pendingDeletes: string[] = [];
  private deleteTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private nextId = 1;
  private done = 0;
  private readonly polls = new Set<AbortController>();
  /** Timers extending messages a long poll received with the short poll visibility. */
  private readonly extensions = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(o: SqsQueueOptions) {
    this.o = o;
  }

  get queueUrl(): string {
    return this.o.queueUrl;
  }

  async enqueue(tasks: readonly NewTask[]): Promise<void> {
    const m = this.o.maxAttempts ?? 3;
    const batches = chunks(
      tasks.map((t) =>
        JSON.stringify({
          v: BODY_VERSION,
          j: this.o.job,
          k: t.key,
          s: t.step,
          m,
          p: t.payload,
        } satisfies TaskMessage),
      ),
    );
    // A few batches in flight at once: enqueueing 10,000 tasks is 1,000 calls.
    const inFlight = 8;
    for (let i = 0; i < batches.length; i += inFlight) {
      await Promise.all(batches.slice(i, i + inFlight).map((b) => this.sendBatch(this.o.queueUrl, b)));
    }
  }

  private async sendBatch(queueUrl: string, bodies: readonly string[], delaySeconds?: number): Promise<void> {
    let entries = bodies.map((b, i) => ({ Id: String(i), MessageBody: b, DelaySeconds: delaySeconds }));
    for (let tries = 0; entries.length > 0; tries++) {
      const r = await this.o.client.send(
        new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries }),
      );
      const failed = new Set((r.Failed ?? []).map((f) => f.Id));
      if (failed.size === 0) return;
      if (tries >= 4) {
        const f = r.Failed![0]!;
        throw new Error(`SQS refused ${failed.size} message(s): ${f.Code} ${f.Message ?? ''}`);
      }
      entries = entries.filter((e) => failed.has(e.Id));
      await sleep(100 * 2 ** tries);
    }
  }

  async claim(owner: string, max: number, leaseMs: number): Promise<Lease[]> {
    const out: Lease[] = [];
    const buffered = this.buffer.get(owner) ?? [];
    while (out.length < max && buffered.length > 0) out.push(buffered.shift()!.lease);
    if (out.length >= max || this.closed) return out;
    const prefetch = Math.min(10, Math.max(1, this.o.prefetch ?? 10, Math.min(10, max - out.length)));
    const ac = new AbortController();
    this.polls.add(ac);
    // Long-poll only when we have nothing to hand out; a long poll takes messages for a short time.
    const wait = out.length > 0 ? 0 : (this.o.waitTimeSeconds ?? 5);
    const leaseS = visibilitySeconds(leaseMs);
    const visibility = wait > 0 ? Math.min(leaseS, Math.max(1, this.o.pollVisibilitySeconds ?? 5)) : leaseS;
    const receivedAt = Date.now();
    let messages: Message[];
    try {
      const r = await this.o.client.send(
        new ReceiveMessageCommand({
          QueueUrl: this.o.queueUrl,
          MaxNumberOfMessages: prefetch,
          VisibilityTimeout: visibility,
          WaitTimeSeconds: wait,
          MessageSystemAttributeNames: ['ApproximateReceiveCount'],
        }),
        { abortSignal: ac.signal },
      );
      messages = r.Messages ?? [];
    } catch (err) {
      if (ac.signal.aborted) return out;
      throw err;
    } finally {
      this.polls.delete(ac);
    }
    const foreign: Array<{ body: TaskMessage; receipt: string; counted: number }> = [];
    const dead: Array<{ body: TaskMessage; receipt: string; attempts: number }> = [];
    const short: Held[] = [];
    for (const msg of messages) {
      const body = parseBody(msg.Body);
      const receipt = msg.ReceiptHandle!;
      const received = Number(msg.Attributes?.ApproximateReceiveCount ?? '1');
      const attempts = (body?.a ?? 0) + received;
      if (!body) {
        dead.push({
          body: { v: BODY_VERSION, k: msg.MessageId ?? '?', s: '?', m: 0, p: { i: -1 } },
          receipt,
          attempts,
        });
        continue;
      }
      if (this.o.job !== undefined && body.j !== this.o.job) {
        foreign.push({ body, receipt, counted: attempts - 1 });
        continue;
      }
      if (attempts > body.m) {
        // Its last attempt's lease expired: that attempt counts, and it was the last.
        dead.push({ body, receipt, attempts: attempts - 1 });
        continue;
      }
      const taskId = this.nextId++;
      const lease: Lease = {
        taskId,
        key: body.k,
        step: body.s,
        attempt: attempts,
        maxAttempts: body.m,
        payload: body.p,
        owner,
      };
      const h: Held = {
        lease,
        body,
        receiptHandle: receipt,
        visibleUntil: receivedAt + visibility * 1000,
        leaseMs,
      };
      this.held.set(taskId, h);
      if (visibility < leaseS) short.push(h);
      if (out.length < max) out.push(lease);
      else {
        const b = this.buffer.get(owner) ?? [];
        b.push(h);
        this.buffer.set(owner, b);
      }
    }
    if (short.length) this.extendLater(short, (visibility * 1000) / 2);
    if (foreign.length) await this.handBack(foreign);
    if (dead.length) {
      await this.toDeadLetters(
        dead.map((d) => ({
          ...d.body,
          error: d.body.s === '?' ? 'not a corral task message' : EXPIRED,
          attempts: d.attempts,
        })),
        dead.map((d) => d.receipt),
      );
    }
    return out;
  }

  /**
   * After `ms`, extends to their lease the messages of `batch` still held and not extended since
   * (by a heartbeat); a message SQS refuses is no longer ours. An error (an outage) is left to
   * the heartbeats: at worst the message is received again and its result is committed once.
   */
  private extendLater(batch: readonly Held[], ms: number): void {
    const timer = setTimeout(() => {
      this.extensions.delete(timer);
      const due = batch.filter(
        (h) => this.held.get(h.lease.taskId) === h && h.visibleUntil - Date.now() < h.leaseMs / 2,
      );
      if (due.length === 0) return;
      const at = Date.now();
      this.changeVisibility(
        due.map((h) => ({ receipt: h.receiptHandle, seconds: visibilitySeconds(h.leaseMs) })),
      )
        .then((lost) => {
          for (const h of due) {
            if (lost.has(h.receiptHandle)) this.forget(h.lease);
            else h.visibleUntil = Math.max(h.visibleUntil, at + h.leaseMs);
          }
        })
        .catch(() => {});
    }, ms);
    timer.unref();
    this.extensions.add(timer);
  }

  /** The job of a held lease's message. */
  jobOf(lease: Lease): string | undefined {
    return this.held.get(lease.taskId)?.body.j;
  }

  /** The leases an owner holds (handed out or buffered). */
  private heldBy(owner: string): Held[] {
    return [...this.held.values()].filter((h) => h.lease.owner === owner);
  }

  async heartbeat(owner: string, leaseMs: number): Promise<number> {
    const mine = this.heldBy(owner);
    const at = Date.now();
    const lost = await this.changeVisibility(
      mine.map((h) => ({ receipt: h.receiptHandle, seconds: visibilitySeconds(leaseMs) })),
    );
    for (const h of mine) {
      if (lost.has(h.receiptHandle)) this.forget(h.lease);
      else h.visibleUntil = Math.max(h.visibleUntil, at + leaseMs);
    }
    return mine.length - lost.size;
  }

  async complete(done: readonly Completion[]): Promise<void> {
    for (const c of done) {
      const h = this.held.get(c.lease.taskId);
      if (!h) continue;
      this.held.delete(c.lease.taskId);
      this.pendingDeletes.push(h.receiptHandle);
      this.done++;
    }
    // Full batches go now; a partial one waits up to ackDelayMs for more completions.
    if (this.pendingDeletes.length >= 10) await this.flushDeletes(false);
    if (this.pendingDeletes.length > 0 && !this.deleteTimer) {
      this.deleteTimer = setTimeout(() => {
        this.flushDeletes().catch(() => {});
      }, this.o.ackDelayMs ?? 1000);
      this.deleteTimer.unref();
    }
  }

  /** Deletes every completed message now (`all`), or only full batches of 10. */
  async flushDeletes(all = true): Promise<void> {
    if (all) {
      if (this.deleteTimer) clearTimeout(this.deleteTimer);
      this.deleteTimer = undefined;
    }
    const run = async () => {
      while (this.pendingDeletes.length >= (all ? 1 : 10)) {
        const batch = this.pendingDeletes.splice(
          0,
          all ? this.pendingDeletes.length : Math.floor(this.pendingDeletes.length / 10) * 10,
        );
        await Promise.all(chunks(batch).map((b) => this.deleteBatch(this.o.queueUrl, b)));
      }
    };
    this.flushing = this.flushing.then(run, run);
    await this.flushing;
  }

  private async deleteBatch(queueUrl: string, receipts: readonly string[]): Promise<void> {
    // A receipt of an older receive may fail (the message was received again): the later receive deletes it.
    await this.o.client.send(
      new DeleteMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: receipts.map((r, i) => ({ Id: String(i), ReceiptHandle: r })),
      }),
    );
  }

  async fail(failures: readonly Failure[]): Promise<void> {
    const retry: Array<{ receipt: string; seconds: number }> = [];
    const dead: DeadMessage[] = [];
    const deadReceipts: string[] = [];
    for (const f of failures) {
      const h = this.held.get(f.lease.taskId);
      if (!h) continue;
      this.held.delete(f.lease.taskId);
      const l = f.lease;
      if (l.attempt >= l.maxAttempts || f.final === true) {
        dead.push({
          v: BODY_VERSION,
          j: h.body.j,
          k: l.key,
          s: l.step,
          m: l.maxAttempts,
          p: l.payload,
          error: f.error,
          attempts: l.attempt,
          logPath: f.logPath,
        });
        deadReceipts.push(h.receiptHandle);
      } else
        retry.push({ receipt: h.receiptHandle, seconds: Math.min(43_200, Math.ceil(f.retryDelayMs / 1000)) });
    }
    if (retry.length) await this.changeVisibility(retry);
    if (dead.length) await this.toDeadLetters(dead, deadReceipts);
  }

  private async toDeadLetters(dead: readonly DeadMessage[], receipts: readonly string[]): Promise<void> {
    if (this.o.deadLetterQueueUrl) {
      await this.sendBatchAll(
        this.o.deadLetterQueueUrl,
        dead.map((d) => JSON.stringify(d)),
      );
    }
    for (const d of dead) {
      await this.o.onDeadLetter?.({
        job: d.j,
        key: d.k,
        step: d.s,
        index: d.p.i,
        attempts: d.attempts,
        error: d.error,
        logPath: d.logPath,
      });
    }
    await Promise.all(chunks(receipts).map((b) => this.deleteBatch(this.o.queueUrl, b)));
  }

  private async sendBatchAll(queueUrl: string, bodies: readonly string[]): Promise<void> {
    await Promise.all(chunks(bodies).map((b) => this.sendBatch(queueUrl, b)));
  }

  async release(leases: readonly Lease[]): Promise<void> {
    const back: Array<{ body: TaskMessage; receipt: string; counted: number }> = [];
    for (const l of leases) {
      const h = this.held.get(l.taskId);
      if (!h) continue;
      this.forget(l);
      back.push({ body: h.body, receipt: h.receiptHandle, counted: l.attempt - 1 });
    }
    await this.handBack(back);
  }

  /** Makes messages available again at once, their receive not counted as an attempt (see `releaseMode`). */
  private async handBack(
    items: ReadonlyArray<{ body: TaskMessage; receipt: string; counted: number }>,
  ): Promise<void> {
    if (items.length === 0) return;
    if ((this.o.releaseMode ?? 'resend') === 'visibility') {
      await this.changeVisibility(items.map((x) => ({ receipt: x.receipt, seconds: 0 })));
      return;
    }
    await this.sendBatchAll(
      this.o.queueUrl,
      // marked: it may have committed just before it was handed back (a worker looks first then)
      items.map((x) =>
        JSON.stringify({ ...x.body, p: { ...x.body.p, lk: 1 }, a: x.counted } satisfies TaskMessage),
      ),
    );
    await Promise.all(chunks(items.map((x) => x.receipt)).map((b) => this.deleteBatch(this.o.queueUrl, b)));
  }

  /**
   * Hands back at once every lease `owner` holds, handed out or buffered (spot notice), and stops
   * any claim waiting on a long poll. Returns how many.
   */
  async releaseAll(owner?: string): Promise<number> {
    for (const ac of this.polls) ac.abort();
    const all = [...this.held.values()].filter((h) => owner === undefined || h.lease.owner === owner);
    await this.release(all.map((h) => h.lease));
    return all.length;
  }

  /** Hands back at once the messages received ahead and not handed out yet; returns how many. */
  async releaseBuffered(): Promise<number> {
    const buffered = [...this.buffer.values()].flat();
    this.buffer.clear();
    if (buffered.length) await this.release(buffered.map((h) => h.lease));
    return buffered.length;
  }

  /** Makes claims return nothing from now on and aborts a claim waiting on a long poll. */
  interrupt(): void {
    this.closed = true;
    for (const ac of this.polls) ac.abort();
  }

  private forget(l: Lease): void {
    this.held.delete(l.taskId);
    const b = this.buffer.get(l.owner);
    if (b) {
      const i = b.findIndex((h) => h.lease.taskId === l.taskId);
      if (i >= 0) b.splice(i, 1);
    }
  }

  /** Changes visibility in batches; returns the receipts SQS refused (the lease is gone). */
  private async changeVisibility(
    items: ReadonlyArray<{ receipt: string; seconds: number }>,
  ): Promise<Set<string>> {
    const lost = new Set<string>();
    await Promise.all(
      chunks(items).map(async (b) => {
        const r = await this.o.client.send(
          new ChangeMessageVisibilityBatchCommand({
            QueueUrl: this.o.queueUrl,
            Entries: b.map((x, i) => ({
              Id: String(i),
              ReceiptHandle: x.receipt,
              VisibilityTimeout: x.seconds,
            })),
          }),
        );
        for (const f of r.Failed ?? []) lost.add(b[Number(f.Id)]!.receipt);
      }),
    );
    return lost;
  }

  async reapExpired(): Promise<number> {
    // SQS makes a message visible again by itself when its visibility timeout ends.
    return 0;
  }

  async counts(): Promise<TaskCounts> {
    const names = [
      'ApproximateNumberOfMessages',
      'ApproximateNumberOfMessagesNotVisible',
      'ApproximateNumberOfMessagesDelayed',
    ] as const;
    const q = await this.o.client.send(
      new GetQueueAttributesCommand({ QueueUrl: this.o.queueUrl, AttributeNames: [...names] }),
    );
    const a = q.Attributes ?? {};
    let dead = 0;
    if (this.o.deadLetterQueueUrl) {
      const d = await this.o.client.send(
        new GetQueueAttributesCommand({
          QueueUrl: this.o.deadLetterQueueUrl,
          AttributeNames: ['ApproximateNumberOfMessages'],
        }),
      );
      dead = Number(d.Attributes?.ApproximateNumberOfMessages ?? 0);
    }
    const pending =
      Number(a.ApproximateNumberOfMessages ?? 0) + Number(a.ApproximateNumberOfMessagesDelayed ?? 0);
    const leased = Number(a.ApproximateNumberOfMessagesNotVisible ?? 0);
    // blocked/skipped: SQS only holds runnable tasks (a variable, not a literal: older ports lack them).
    const c = {
      pending,
      leased,
      blocked: 0,
      done: this.done,
      dead,
      skipped: 0,
      total: pending + leased + this.done + dead,
    };
    return c;
  }

  /**
   * Reads dead letters without removing them (received with visibility 0). SQS offers no
   * listing, so this is a best effort of a few receives.
   */
  async deadLetters(limit = 100): Promise<DeadLetter[]> {
    if (!this.o.deadLetterQueueUrl) return [];
    const seen = new Map<string, DeadLetter>();
    for (let i = 0; i < Math.ceil(limit / 10) + 2 && seen.size < limit; i++) {
      const r = await this.o.client.send(
        new ReceiveMessageCommand({
          QueueUrl: this.o.deadLetterQueueUrl,
          MaxNumberOfMessages: 10,
          VisibilityTimeout: 0,
          WaitTimeSeconds: 0,
        }),
      );
      const msgs = r.Messages ?? [];
      if (msgs.length === 0) break;
      // Some peers read VisibilityTimeout 0 as "the queue default": make them visible explicitly.
      await this.o.client.send(
        new ChangeMessageVisibilityBatchCommand({
          QueueUrl: this.o.deadLetterQueueUrl,
          Entries: msgs.map((m, j) => ({
            Id: String(j),
            ReceiptHandle: m.ReceiptHandle,
            VisibilityTimeout: 0,
          })),
        }),
      );
      for (const m of msgs) {
        const d = JSON.parse(m.Body ?? '{}') as Partial<DeadMessage>;
        if (this.o.job !== undefined && d.j !== this.o.job) continue;
        seen.set(m.MessageId!, {
          key: d.k ?? '?',
          step: d.s ?? '?',
          index: d.p?.i ?? -1,
          attempts: d.attempts ?? 0,
          error: d.error ?? 'moved to the dead-letter queue by its redrive policy',
          logPath: d.logPath,
          input: d.p ? describeInput(d.p) : undefined,
        });
      }
    }
    return [...seen.values()].slice(0, limit);
  }

  async close(): Promise<void> {
    this.interrupt();
    for (const t of this.extensions) clearTimeout(t);
    this.extensions.clear();
    const buffered = [...this.buffer.values()].flat();
    this.buffer.clear();
    if (buffered.length) await this.release(buffered.map((h) => h.lease));
    await this.flushDeletes();
  }
}

/** A lease in whole seconds, as SQS wants it (1 s to 12 h). */
function visibilitySeconds(ms: number): number {
  return Math.min(43_200, Math.max(1, Math.ceil(ms / 1000)));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
