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
import {
  BODY_VERSION,
  type BundleMessage,
  chunks,
  type DeadMessage,
  parseMessage,
  type TaskMessage,
} from './message.js';

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

/** A message received: one task's, or a bundle's (several tasks, settled together). */
interface Received {
  receiptHandle: string;
  /** When the message becomes visible again unless extended (ms since the epoch). */
  visibleUntil: number;
  /** The lease it was claimed for. */
  readonly leaseMs: number;
  /** The bundle it carries. @default - one task */
  readonly bundle?: BundleMessage;
  /** A bundle's tasks not settled yet (completed or dead), by key; when none is left, the message is deleted. */
  readonly open: Set<string>;
  /** Received before (its receive count) or marked as sent again: a worker looks for its result first. */
  readonly again: boolean;
}

/** What the adapter remembers of a task it received. */
interface Held {
  readonly lease: Lease;
  readonly body: TaskMessage;
  readonly msg: Received;
  /** A bundle's task retried here: not handed out before this time (its backoff). @default - at once */
  readonly notBefore?: number;
}

/** A bundle to send: its id (the name of its commit marker) and its tasks. */
export interface NewBundle {
  readonly id: string;
  readonly tasks: readonly NewTask[];
}

/** A message to hand back: its tasks and the attempts each counted so far. */
interface HandBack {
  readonly msg: Received;
  readonly tasks: ReadonlyArray<{ readonly body: TaskMessage; readonly counted: number }>;
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
  /** Tasks in the last message received (0: none received yet): how many messages a receive asks for. */
  private perMessage = 0;
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

  /**
   * Sends bundles: one message each, its tasks settled together (see BundleMessage). `again`: they
   * may have been sent before, so a worker looks for the bundle's marker first.
   */
  async enqueueBundles(bundles: readonly NewBundle[], again = false): Promise<void> {
    const m = this.o.maxAttempts ?? 3;
    const bodies = bundles.map((b) =>
      JSON.stringify({
        v: BODY_VERSION,
        j: this.o.job,
        b: b.id,
        m,
        ...(again ? { lk: 1 as const } : {}),
        t: b.tasks.map((t) => ({ k: t.key, s: t.step, p: t.payload })),
      } satisfies BundleMessage),
    );
    await this.sendBatchAll(this.o.queueUrl, bodies);
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
    const out = this.takeBuffered(owner, max);
    if (out.length >= max || this.closed) return out;
    if (out.length === 0) {
      // a bundle's task retried here is waited for: it is this worker's to run, and the claim
      // must not look idle meanwhile (the worker would exit and hand the bundle back)
      const due = this.nextRetry(owner);
      if (due !== undefined) {
        await this.pause(due - Date.now());
        return this.takeBuffered(owner, max);
      }
    }
    // messages to receive for the tasks wanted: a bundle's message carries many (its tasks are
    // this worker's alone, so a worker takes few bundles at a time); the first receive takes one
    const wanted = Math.max(1, this.o.prefetch ?? 10, max - out.length);
    const prefetch =
      this.perMessage === 0 ? 1 : Math.min(10, Math.max(1, Math.ceil(wanted / this.perMessage)));
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
    const foreign: HandBack[] = [];
    const dead: DeadMessage[] = [];
    const deadReceipts: string[] = [];
    const short: Received[] = [];
    for (const msg of messages) {
      const parsed = parseMessage(msg.Body);
      const receipt = msg.ReceiptHandle!;
      const received = Number(msg.Attributes?.ApproximateReceiveCount ?? '1');
      if (!parsed) {
        dead.push({
          v: BODY_VERSION,
          k: msg.MessageId ?? '?',
          s: '?',
          m: 0,
          p: { i: -1 },
          error: 'not a corral task message',
          attempts: received,
        });
        deadReceipts.push(receipt);
        continue;
      }
      const { tasks, bundle } = parsed;
      this.perMessage = tasks.length;
      const rec: Received = {
        receiptHandle: receipt,
        visibleUntil: receivedAt + visibility * 1000,
        leaseMs,
        bundle,
        open: new Set(bundle ? tasks.map((t) => t.k) : []),
        again: received > 1 || bundle?.lk === 1 || tasks.some((t) => (t.a ?? 0) > 0),
      };
      if (this.o.job !== undefined && tasks[0]!.j !== this.o.job) {
        foreign.push({
          msg: rec,
          tasks: tasks.map((body) => ({ body, counted: (body.a ?? 0) + received - 1 })),
        });
        continue;
      }
      let handed = 0;
      for (const body of tasks) {
        const attempts = (body.a ?? 0) + received;
        if (attempts > body.m) {
          // Its last attempt's lease expired: that attempt counts, and it was the last.
          dead.push({ ...body, error: EXPIRED, attempts: attempts - 1 });
          rec.open.delete(body.k);
          continue;
        }
        const lease: Lease = {
          taskId: this.nextId++,
          key: body.k,
          step: body.s,
          attempt: attempts,
          maxAttempts: body.m,
          payload: body.p,
          owner,
        };
        this.hold({ lease, body, msg: rec }, out, max);
        handed++;
      }
      if (handed === 0) deadReceipts.push(receipt);
      else if (visibility < leaseS) short.push(rec);
    }
    if (short.length) this.extendLater(short, (visibility * 1000) / 2);
    if (foreign.length) await this.handBack(foreign);
    if (dead.length) await this.toDeadLetters(dead, deadReceipts);
    return out;
  }

  /** Records a held task: handed out now while `out` has room, else buffered for its owner. */
  private hold(h: Held, out: Lease[], max: number): void {
    this.held.set(h.lease.taskId, h);
    if (out.length < max && h.notBefore === undefined) out.push(h.lease);
    else {
      const b = this.buffer.get(h.lease.owner) ?? [];
      b.push(h);
      this.buffer.set(h.lease.owner, b);
    }
  }

  /** Up to `max` of the owner's buffered tasks that may run now. */
  private takeBuffered(owner: string, max: number): Lease[] {
    const out: Lease[] = [];
    const buffered = this.buffer.get(owner);
    if (!buffered) return out;
    const now = Date.now();
    for (let i = 0; i < buffered.length && out.length < max; ) {
      const h = buffered[i]!;
      if (h.notBefore !== undefined && h.notBefore > now) i++;
      else {
        buffered.splice(i, 1);
        out.push(h.lease);
      }
    }
    return out;
  }

  /** When the owner's next retried task may run, if it has one waiting. */
  private nextRetry(owner: string): number | undefined {
    let at: number | undefined;
    for (const h of this.buffer.get(owner) ?? [])
      if (h.notBefore !== undefined) at = Math.min(at ?? h.notBefore, h.notBefore);
    return at;
  }

  /** Waits `ms`, or until `interrupt` (a stop, a spot notice). */
  private async pause(ms: number): Promise<void> {
    if (ms <= 0) return;
    const ac = new AbortController();
    this.polls.add(ac);
    try {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, ms);
        ac.signal.addEventListener('abort', () => {
          clearTimeout(t);
          resolve();
        });
      });
    } finally {
      this.polls.delete(ac);
    }
  }

  /**
   * After `ms`, extends to their lease the messages of `batch` still held and not extended since
   * (by a heartbeat); a message SQS refuses is no longer ours. An error (an outage) is left to
   * the heartbeats: at worst the message is received again and its result is committed once.
   */
  private extendLater(batch: readonly Received[], ms: number): void {
    const timer = setTimeout(() => {
      this.extensions.delete(timer);
      const held = this.heldMessages();
      const due = batch.filter((m) => held.has(m) && m.visibleUntil - Date.now() < m.leaseMs / 2);
      if (due.length === 0) return;
      this.extend(due, (m) => m.leaseMs).catch(() => {});
    }, ms);
    timer.unref();
    this.extensions.add(timer);
  }

  /** Extends messages' visibility; a message SQS refuses is no longer ours (its tasks are forgotten). */
  private async extend(msgs: readonly Received[], leaseMsOf: (m: Received) => number): Promise<number> {
    const at = Date.now();
    const lost = await this.changeVisibility(
      msgs.map((m) => ({ receipt: m.receiptHandle, seconds: visibilitySeconds(leaseMsOf(m)) })),
    );
    for (const m of msgs) {
      if (lost.has(m.receiptHandle)) for (const h of this.tasksOf(m)) this.forget(h.lease);
      else m.visibleUntil = Math.max(m.visibleUntil, at + leaseMsOf(m));
    }
    return msgs.length - lost.size;
  }

  /** The messages of the tasks held, of one owner or all. */
  private heldMessages(owner?: string): Set<Received> {
    const out = new Set<Received>();
    for (const h of this.held.values()) if (owner === undefined || h.lease.owner === owner) out.add(h.msg);
    return out;
  }

  /** The held tasks of a message. */
  private tasksOf(m: Received): Held[] {
    return [...this.held.values()].filter((h) => h.msg === m);
  }

  /** The job of a held lease's message. */
  jobOf(lease: Lease): string | undefined {
    return this.held.get(lease.taskId)?.body.j;
  }

  /**
   * The bundle of a held lease, if its message carries several tasks: its id, its tasks not
   * settled yet, and whether it was received or sent before (its marker may exist).
   */
  bundleOf(lease: Lease):
    | {
        readonly id: string;
        readonly open: ReadonlySet<string>;
        readonly again: boolean;
      }
    | undefined {
    const m = this.held.get(lease.taskId)?.msg;
    return m?.bundle ? { id: m.bundle.b, open: m.open, again: m.again } : undefined;
  }

  /** Whether a task of a held lease's bundle was handed out (not only received ahead). */
  bundleStarted(lease: Lease): boolean {
    const m = this.held.get(lease.taskId)?.msg;
    if (!m?.bundle) return false;
    const buffered = new Set(this.buffer.get(lease.owner) ?? []);
    return this.tasksOf(m).some((h) => !buffered.has(h));
  }

  /** Every lease held, handed out or buffered, of one owner or all. */
  heldLeases(owner?: string): Lease[] {
    return [...this.held.values()]
      .filter((h) => owner === undefined || h.lease.owner === owner)
      .map((h) => h.lease);
  }

  /** The leases received ahead and not handed out yet. */
  bufferedLeases(): Lease[] {
    return [...this.buffer.values()].flat().map((h) => h.lease);
  }

  /**
   * Settles a bundle whole: every task of it held here is done (its results are committed, by
   * this attempt or another) and its message is deleted.
   */
  async settleBundle(lease: Lease): Promise<void> {
    const h = this.held.get(lease.taskId);
    if (!h?.msg.bundle) return;
    for (const t of this.tasksOf(h.msg)) this.forget(t.lease);
    h.msg.open.clear();
    await this.deleteBatch(this.o.queueUrl, [h.msg.receiptHandle]);
  }

  async heartbeat(owner: string, leaseMs: number): Promise<number> {
    return this.extend([...this.heldMessages(owner)], () => leaseMs);
  }

  async complete(done: readonly Completion[]): Promise<void> {
    for (const c of done) {
      const h = this.held.get(c.lease.taskId);
      if (!h) continue;
      this.held.delete(c.lease.taskId);
      this.done++;
      if (this.settled(h)) this.pendingDeletes.push(h.msg.receiptHandle);
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

  /**
   * A task is done with here (completed, or dead); true when its message has no task left, to be
   * deleted (one task's message at once, a bundle's with its last task).
   */
  private settled(h: Held): boolean {
    h.msg.open.delete(h.body.k);
    return h.msg.open.size === 0;
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

  /**
   * A failed attempt. One task's message: retried after the backoff by its visibility, or sent to
   * the dead letters after its last attempt. A bundle's task is retried here, by this worker,
   * after its backoff (a bundle is never split), or is dead and leaves the bundle; its message is
   * deleted with the bundle's last task.
   */
  async fail(failures: readonly Failure[]): Promise<void> {
    const retry: Array<{ receipt: string; seconds: number }> = [];
    const dead: DeadMessage[] = [];
    const deadReceipts: string[] = [];
    for (const f of failures) {
      const h = this.held.get(f.lease.taskId);
      if (!h) continue;
      this.held.delete(f.lease.taskId);
      const l = f.lease;
      const last = l.attempt >= l.maxAttempts || f.final === true;
      if (last)
        dead.push({
          ...h.body,
          error: f.error,
          attempts: l.attempt,
          logPath: f.logPath,
        });
      if (h.msg.bundle && !last) {
        const lease = { ...l, taskId: this.nextId++, attempt: l.attempt + 1 };
        this.hold({ lease, body: h.body, msg: h.msg, notBefore: Date.now() + f.retryDelayMs }, [], 0);
      } else if (last) {
        if (this.settled(h)) deadReceipts.push(h.msg.receiptHandle);
      } else
        retry.push({
          receipt: h.msg.receiptHandle,
          seconds: Math.min(43_200, Math.ceil(f.retryDelayMs / 1000)),
        });
    }
    if (retry.length) await this.changeVisibility(retry);
    if (dead.length || deadReceipts.length) await this.toDeadLetters(dead, deadReceipts);
  }

  private async toDeadLetters(dead: readonly DeadMessage[], receipts: readonly string[]): Promise<void> {
    if (this.o.deadLetterQueueUrl && dead.length) {
      await this.sendBatchAll(
        this.o.deadLetterQueueUrl,
        dead.map((d) => JSON.stringify(d)),
      );
    }
    for (const d of dead) {
      if (d.s === '?') continue; // not a corral task: only moved to the dead-letter queue
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

  /**
   * Hands leases back at once. A bundle goes back whole, whichever of its tasks were released:
   * every task of it this worker holds is forgotten (one finishing later commits nothing).
   */
  async release(leases: readonly Lease[]): Promise<void> {
    const back = new Map<Received, HandBack>();
    for (const l of leases) {
      const h = this.held.get(l.taskId);
      if (!h || back.has(h.msg)) continue;
      const tasks = h.msg.bundle ? this.tasksOf(h.msg) : [h];
      for (const t of tasks) this.forget(t.lease);
      back.set(h.msg, {
        msg: h.msg,
        tasks: tasks.map((t) => ({ body: t.body, counted: t.lease.attempt - 1 })),
      });
    }
    await this.handBack([...back.values()]);
  }

  /** Makes messages available again at once, their receive not counted as an attempt (see `releaseMode`). */
  private async handBack(items: readonly HandBack[]): Promise<void> {
    if (items.length === 0) return;
    if ((this.o.releaseMode ?? 'resend') === 'visibility') {
      await this.changeVisibility(items.map((x) => ({ receipt: x.msg.receiptHandle, seconds: 0 })));
      return;
    }
    await this.sendBatchAll(
      this.o.queueUrl,
      // marked: it may have committed just before it was handed back (a worker looks first then)
      items.map(({ msg, tasks }) =>
        msg.bundle
          ? JSON.stringify({
              ...msg.bundle,
              lk: 1,
              t: tasks.map((t) => ({ k: t.body.k, s: t.body.s, p: t.body.p, a: t.counted })),
            } satisfies BundleMessage)
          : JSON.stringify({
              ...tasks[0]!.body,
              p: { ...tasks[0]!.body.p, lk: 1 },
              a: tasks[0]!.counted,
            } satisfies TaskMessage),
      ),
    );
    await Promise.all(
      chunks(items.map((x) => x.msg.receiptHandle)).map((b) => this.deleteBatch(this.o.queueUrl, b)),
    );
  }

  /**
   * Hands back at once every lease `owner` holds, handed out or buffered (spot notice), and stops
   * any claim waiting on a long poll. Returns how many.
   */
  async releaseAll(owner?: string): Promise<number> {
    for (const ac of this.polls) ac.abort();
    const all = this.heldLeases(owner);
    await this.release(all);
    return all.length;
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
