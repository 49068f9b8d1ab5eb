import { setMaxListeners } from 'node:events';
import {
  closeSync,
  fstatSync,
  lstatSync,
  openSync,
  readSync,
  rmSync,
  type Stats,
  statSync,
  writeFileSync,
} from 'node:fs';
import { stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sleep } from '../engine/process-utils.js';
import { taskLogName } from '../engine/state-dir.js';
import { render, shellQuote, taskVars } from '../engine/template.js';
import {
  attemptIdOf,
  attemptOfRun,
  backoffDelay,
  type Completion,
  type Failure,
  type Lease,
  type Queue,
  type TaskPayload,
  taskLabel,
} from '../queue/queue.js';
import { isNoSpace } from '../spec/errors.js';
import type { LoadedJob, StepDef } from '../spec/job.js';
import { placeholdersIn } from '../spec/placeholders.js';
import type { CommitResult, Store } from '../store/store.js';
import {
  type RunCommandOptions,
  runCommand,
  runnerCan,
  type TaskResult,
  type TaskStdin,
} from './run-command.js';
import { loadTaskFunction, runModule } from './run-module.js';
import { runnerAvailable, ShellRunner } from './shell-runner.js';
import { TaskLog } from './task-log.js';
import { isTransient } from './transient.js';

/** Options of a worker agent. */
export interface WorkerAgentOptions {
  /** This worker's id; leases are held in its name. */
  readonly id: string;
  readonly job: LoadedJob;
  readonly queue: Queue;
  readonly store: Store;
  /** Folder of the per-task log files. */
  readonly logsDir: string;
  /** Called on each heartbeat with the process groups of running tasks (for liveness records). */
  readonly onBeat?: (pgids: number[]) => void;
  /** Stop when no task could be claimed for this long. @default - never */
  readonly idleExitMs?: number;
  /** Largest number of tasks claimed at once. @default 2048 */
  readonly maxBatch?: number;
  /** How long the queue or store may stay unreachable before the worker gives up. @default 10m */
  readonly maxOutageMs?: number;
  /** Called when the queue or store is unreachable (the worker pauses and retries). */
  readonly onOutage?: (err: Error) => void;
  /** Called when a task's process group starts (pgid) or ends (undefined). */
  readonly onGroup?: (pgid: number, running: boolean) => void;
  /** Called when the worker finds nothing to claim after it ran tasks (its results are durable then). */
  readonly onIdle?: () => void;
  /**
   * Claim nothing until `wake` (or `stop`): the coordinator starts its workers while it plans the
   * tasks, and lets them claim once the plan is written. @default false
   */
  readonly holdUntilWake?: boolean;
  /**
   * Whether an output that exists before its task runs is the task's result (true), was written
   * by something else (false: the attempt fails), or is gone (undefined: the task runs).
   * @default - always the task's result
   */
  readonly ownsOutput?: (lease: Lease, key: string) => Promise<boolean | undefined>;
  /**
   * Whether a task's own output is older than one of its inputs (made before that input
   * changed): the task runs again and its output is replaced (`Store.replace`). @default - never
   */
  readonly outputStale?: (p: TaskPayload, key: string) => Promise<boolean>;
  /**
   * Whether a task's first attempt looks for its output before it runs. A coordinator that sends
   * only the tasks whose outputs it did not find, and marks every task it or a worker sends again
   * (`lk`), makes that look one request per task for nothing: with false, only a task delivered
   * again (attempt 2 on), marked `lk` or redone looks first. @default true
   */
  readonly lookBeforeFirstAttempt?: boolean;
}

/** Wall time a claimed batch should take: the batch size adapts to the measured task duration. */
const TARGET_BATCH_MS = 50;
/**
 * Largest claim: the batch adapts to TARGET_BATCH_MS, so only tasks shorter than ~25 µs (no-op
 * functions) reach it. Each claim and each ack flush is a write transaction that the other
 * workers wait for: at 256 a million such tasks took ~8,000 of them.
 */
const MAX_BATCH = 2048;
/** A task's process group is reported to the coordinator once the task has run this long. */
const ANNOUNCE_GROUP_AFTER_MS = 200;
/** Longest time completed acks wait before they are flushed. */
const FLUSH_MS = 200;
/**
 * Shell tasks queued in the worker's forker behind the one running, so that the next starts the
 * moment the last exits instead of after a round trip through this process (they still run one
 * at a time). The forker reports every 32 tasks or 25 ms, so the queue must outlast that. A drain
 * or abort starts none of the queued ones. It also bounds what a worker's death costs: the tasks
 * its forker ran whose results it had not committed yet run again, at most this many and the one
 * running (a forker whose worker died starts none of its queue).
 */
export const PIPELINE_DEPTH = 128;
/** Longest pause between claims while there is nothing to do (`wake` cuts it short). */
const MAX_IDLE_SLEEP_MS = 250;

/** A finished attempt whose output the batch loop commits with others (group commit). */
interface PendingCommit {
  readonly key: string;
  readonly attemptId: string;
  readonly logPath: string | undefined;
  /** Its staged output was marked finished (`Store.finish`): the worker's death does not lose it. */
  readonly finished?: boolean;
}
/**
 * Group commit of outputs (adaptive, as databases do it): at most one group is being flushed at
 * a time; a finished attempt's output joins the next group, which starts the moment the one
 * being flushed ends (or at once when none is). So a group is what finished during one flush: one
 * output when tasks are slow or the disk is fast, hundreds when tasks are fast and a flush slow,
 * and an output never waits for more than the flush before it plus its own. The worker waits for
 * the flush under way (it stops running tasks) only when this many finished attempts are pending.
 */
const COMMIT_MAX_PENDING = 256;
/**
 * The same for outputs marked finished (module tasks): the worker's death loses none of them, so
 * more may wait while a slow flush goes on (a flush of the file system takes as long for 2,000
 * outputs as for 256).
 */
const COMMIT_MAX_FINISHED = 2048;

/**
 * Shortest time between the starts of two groups of one worker. A group's flush is a syncfs(2) of
 * the whole file system (on a shared disk, others' dirty pages too) and a flush of the device's
 * cache: started the moment the one before had been flushed, the groups of 5,000 module tasks
 * writing with fs/promises held ~10 outputs each, ~540 flushes a run; 100 ms apart the same run
 * took 2.8-3.7 s instead of 4.3-5.4 s (BENCHMARKS.md, row 9). An output waits at most this long
 * more for its group; the worker does not wait (it runs the next tasks meanwhile).
 */
const GROUP_GAP_MS = 100;
/**
 * How often a batch of module functions that never await lets the event loop run while a group
 * is due or under way (its start, its flush's answer on a pipe, its links): one turn costs
 * microseconds.
 */
const YIELD_MS = 10;

/** How one task ended, as the batch loop sees it. */
type RunOutcome = (
  | { ok: true; outcome: Completion['outcome']; startedAt: number; commit?: PendingCommit }
  | {
      ok: false;
      cancelled?: boolean;
      error?: string;
      logPath?: string;
      startedAt: number;
      /** No attempt can succeed: not retried. */
      final?: boolean;
    }
) & {
  /** How long the task's process ran, as the forker timed it (shell tasks run through it). */
  runMs?: number;
};
/**
 * A worker: claims tasks from the Queue port, runs each (shell command or module function),
 * commits its output through the Store port, acks, and heartbeats its leases meanwhile.
 * `stop('drain')` finishes the running task and hands the rest back; `stop('abort')` kills it too.
 */
export class WorkerAgent {
  private stopping: 'drain' | 'abort' | undefined;
  private readonly abort = new AbortController();
  private readonly groups = new Set<number>();
  private held: Lease[] = [];
  /** Completions of the last batch and of committed groups, written with the next claim (`Queue.completeAndClaim`). */
  private acks: Completion[] = [];
  private batch = 1;
  private avgMs = 0;
  /** Set when a task could not be stopped; the process should exit after `run` returns. */
  poisoned = false;
  /** Tasks this worker ran to the end (whatever the result). */
  ran = 0;

  private readonly steps: Map<string, StepDef>;
  /** Forks shell tasks cheaply (perl-base); absent where there is no perl. */
  private readonly runner = runnerAvailable() ? new ShellRunner() : undefined;
  /** os.hostname() is a syscall; it was 5% of a no-op function task's cost. */
  private readonly host = os.hostname();
  /** The logs folder and a separator: a task's log path is this and its name (no path.join per task). */
  private readonly logsPrefix: string;

  constructor(private readonly o: WorkerAgentOptions) {
    this.steps = new Map(o.job.steps.map((st) => [st.name, st]));
    this.logsPrefix = path.join(o.logsDir, path.sep);
    // every task queued in the forker listens for the abort
    setMaxListeners(PIPELINE_DEPTH + 16, this.abort.signal);
  }

  stop(mode: 'drain' | 'abort'): void {
    if (this.stopping !== 'abort') this.stopping = mode;
    // queued shell tasks never start; the running one finishes (drain) or is killed (abort)
    this.runner?.cancelQueued();
    if (mode === 'abort') this.abort.abort(new Error('worker stopping'));
    this.wake();
  }

  private wakeUp: (() => void) | undefined;
  private woken = false;

  /** Ends a pause between empty claims now (new tasks may be there). */
  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  private idle(ms: number): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(t);
        self.wakeUp = undefined;
        self.woken = false;
        resolve();
      }
      this.wakeUp = done;
    });
  }

  async run(): Promise<void> {
    const { queue, job } = this.o;
    const leaseMs = job.spec.lease;
    const beat = setInterval(
      () => {
        queue.heartbeat(this.o.id, leaseMs).catch(() => {});
        this.o.onBeat?.([...this.groups]);
      },
      Math.max(500, Math.floor(leaseMs / 3)),
    );
    beat.unref();
    this.o.onBeat?.([]);
    // held: until the coordinator's wake after its plan, or a stop (its death is a disconnect,
    // which stops the worker); no timeout, so a long plan is never raced by claims
    if (this.o.holdUntilWake) await this.idle(2 ** 31 - 1);
    let idleSince = Date.now();
    let sleepMs = 5;
    let busy = false;
    try {
      let outageSince: number | undefined;
      while (!this.stopping && !this.poisoned) {
        try {
          const leases = await this.ackAndClaim(leaseMs);
          outageSince = undefined;
          if (leases.length === 0 && (this.pending.length > 0 || this.committing)) {
            // nothing to claim: the outputs of finished tasks are committed and acked now (their
            // dependents may be what is left), and the queue asked again
            await this.settle();
            continue;
          }
          if (leases.length === 0) {
            if (busy) this.o.onIdle?.();
            busy = false;
            if (this.o.idleExitMs !== undefined && Date.now() - idleSince > this.o.idleExitMs) break;
            if (this.woken) sleepMs = 5;
            await this.idle(sleepMs);
            sleepMs = Math.min(MAX_IDLE_SLEEP_MS, sleepMs * 2);
            continue;
          }
          sleepMs = 5;
          busy = true;
          await this.runBatch(await this.agglomerate(leases, leaseMs), leaseMs);
          idleSince = Date.now();
        } catch (err) {
          // The queue or store is unreachable: hand back what we hold if we can (else the leases
          // expire), pause, and try again; only an outage longer than maxOutageMs ends the worker.
          if (!isTransient(err)) throw err;
          outageSince ??= Date.now();
          if (Date.now() - outageSince > (this.o.maxOutageMs ?? 600_000)) throw err;
          await queue.release(this.held).catch(() => {});
          this.held = [];
          this.o.onOutage?.(err as Error);
          await sleep(1000);
          idleSince = Date.now();
        }
      }
    } finally {
      await this.settle().catch(() => {}); // what is not acked runs again when its lease expires
      clearInterval(beat);
      clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
      this.runner?.close();
      if (this.acks.length > 0) await queue.complete(this.acks);
      this.acks = [];
      if (this.held.length > 0) await queue.release(this.held);
      this.held = [];
    }
  }

  /** Writes the last batch's completions, if any, and claims the next batch. */
  private async ackAndClaim(leaseMs: number): Promise<Lease[]> {
    const { queue } = this.o;
    const acks = this.acks;
    if (acks.length === 0) return queue.claim(this.o.id, this.batch, leaseMs);
    if (queue.completeAndClaim) {
      // one transaction: if it fails, neither happened and the acks are written next time. Taken
      // first, so that the acks' timer (carryAcks) never writes them a second time meanwhile
      this.acks = [];
      try {
        return await queue.completeAndClaim(acks, this.o.id, this.batch, leaseMs);
      } catch (err) {
        this.acks = [...acks, ...this.acks];
        throw err;
      }
    }
    await queue.complete(acks);
    this.acks = [];
    return queue.claim(this.o.id, this.batch, leaseMs);
  }

  /**
   * Tops the claim up to `batch` tasks for steps that ask for it, so small tasks of one step share
   * one claim (HyperFlow-style agglomeration).
   */
  private async agglomerate(leases: Lease[], leaseMs: number): Promise<Lease[]> {
    const perStep = new Map<string, Lease[]>();
    for (const l of leases) {
      const got = perStep.get(l.step);
      if (got) got.push(l);
      else perStep.set(l.step, [l]);
    }
    const out: Lease[] = [];
    for (const [name, got] of perStep) {
      const batch = this.steps.get(name)?.batch;
      if (batch === undefined) out.push(...got);
      else if (got.length > batch) {
        // exactly `batch` per claim: hand the extra ones back for other workers
        out.push(...got.slice(0, batch));
        await this.o.queue.release(got.slice(batch));
      } else out.push(...got, ...(await this.o.queue.claim(this.o.id, batch - got.length, leaseMs, name)));
    }
    return out;
  }

  /** Per step: whether its command names `{output}` (parsed once, not per task). */
  private readonly outputNamed = new Map<string, boolean>();

  private usesOutput(step: StepDef): boolean {
    let yes = this.outputNamed.get(step.name);
    if (yes === undefined) {
      yes = step.command !== undefined && placeholdersIn(step.command).includes('output');
      this.outputNamed.set(step.name, yes);
    }
    return yes;
  }

  /** Per step: whether its tasks may go through the forker (as far as the step decides). */
  private readonly forkable = new Map<string, boolean>();

  /** Whether a task goes through the worker's forker, so it may queue there behind another. */
  private pipelines(lease: Lease): boolean {
    if (!this.runner) return false;
    let ok = this.forkable.get(lease.step);
    if (ok === undefined) {
      const step = this.stepOf(lease);
      ok = (step.command !== undefined || step.exec !== undefined) && runnerCan({ kind: 'none' }, step.env);
      this.forkable.set(lease.step, ok);
    }
    if (!ok) return false;
    const p = lease.payload;
    return !(
      this.stepOf(lease).stdin !== 'none' &&
      (p.l !== undefined || p.s !== undefined || p.e !== undefined)
    );
  }

  /** Finished attempts whose outputs are still staged, to be committed as one group. */
  private pending: Array<{ lease: Lease; commit: PendingCommit; startedAt: number; finishedAt: number }> = [];
  /** Pending outputs not marked finished: a death of this process before their commit loses them. */
  private unfinished = 0;
  /** The group commit under way (at most one), while the next tasks run. */
  private committing: Promise<void> | undefined;
  /** Whether the group under way holds outputs not marked finished. */
  private committingUnfinished = false;
  /** What the last group commit failed with, thrown at the next `settle`/`startCommit`. */
  private commitError: unknown;

  /**
   * Starts committing the pending outputs as one group (after the group before has ended): their
   * files are flushed to disk at once, linked, and only then are their tasks acked to the queue.
   * It runs while the next tasks run; a group ends before the worker claims on an empty queue or exits.
   */
  private async startCommit(): Promise<void> {
    if (this.committing) await this.committing;
    this.throwCommitError();
    if (this.pending.length > 0 && !this.committing) this.beginCommit();
  }

  /** A group start is scheduled (`kickCommit`). */
  private kicked = false;
  /** When the last group started (ms since the epoch). */
  private lastGroupAt = 0;
  /** When the batch loop last let the event loop run while a group was due or under way. */
  private yieldedAt = 0;

  /**
   * Starts a group of what is pending, unless a group is being flushed (it starts the next when
   * it ends): after the results at hand are taken in, not at the first of them, and no sooner than
   * GROUP_GAP_MS after the group before started. The forker reports tasks in bulk (up to 32 in one
   * read): started at the first, a group held that one output and the next group the rest, so
   * half the groups paid a flush, a folder fsync and an ack for one.
   */
  private kickCommit(): void {
    if (this.kicked || this.committing || this.pending.length === 0 || this.commitError !== undefined) return;
    this.kicked = true;
    const go = () => {
      this.kicked = false;
      if (!this.committing && this.pending.length > 0 && this.commitError === undefined) this.beginCommit();
    };
    const wait = this.lastGroupAt + GROUP_GAP_MS - Date.now();
    if (wait > 0) setTimeout(go, wait).unref();
    else setImmediate(go);
  }

  /** Starts committing what is pending as one group (none being flushed). */
  private beginCommit(): void {
    this.lastGroupAt = Date.now();
    const group = this.pending;
    this.pending = [];
    this.committingUnfinished = this.unfinished > 0;
    this.unfinished = 0;
    this.committing = this.commitGroup(group)
      .catch((err) => {
        this.commitError ??= err;
      })
      .finally(() => {
        this.committing = undefined;
        this.committingUnfinished = false;
        this.kickCommit(); // what finished meanwhile
      });
  }

  /** Commits what is pending and waits until it is acked. */
  private async settle(): Promise<void> {
    await this.startCommit();
    if (this.committing) await this.committing;
    this.throwCommitError();
  }

  private throwCommitError(): void {
    if (this.commitError === undefined) return;
    const err = this.commitError;
    this.commitError = undefined;
    throw err;
  }

  private async commitGroup(
    group: Array<{ lease: Lease; commit: PendingCommit; startedAt: number; finishedAt: number }>,
  ): Promise<void> {
    const results = await this.o.store.commitAll!(group.map((g) => g.commit));
    const completions: Completion[] = [];
    const failures: Failure[] = [];
    for (let k = 0; k < group.length; k++) {
      const g = group[k]!;
      const c = results[k]!;
      if (c instanceof Error && isTransient(c)) throw c;
      const r = await this.committed(g.lease, g.commit.key, c, g.commit.logPath, g.startedAt);
      if (r.ok)
        completions.push({
          lease: g.lease,
          outcome: r.outcome,
          startedAt: g.startedAt,
          finishedAt: g.finishedAt,
        });
      else failures.push(this.failure(g.lease, r, g.finishedAt));
    }
    if (completions.length) {
      if (this.o.queue.completeAndClaim) this.carryAcks(completions);
      else await this.o.queue.complete(completions);
    }
    if (failures.length) await this.o.queue.fail(failures);
  }

  /** Writes the carried acks on their own when no claim took them within FLUSH_MS. */
  private ackTimer: NodeJS.Timeout | undefined;

  /**
   * A committed group's acks go with the worker's next claim (`Queue.completeAndClaim`: one write
   * transaction for both), or on their own after FLUSH_MS if no claim comes by then (a long task
   * runs). Each group's own transaction waited for the state file's lock that the other workers
   * and the coordinator hold in turn: ~600 of them in a run of 5,000 tasks with outputs, where
   * its claims were ~200 (BENCHMARKS.md, row 9).
   */
  private carryAcks(done: Completion[]): void {
    this.acks.push(...done);
    this.ackTimer ??= setTimeout(() => {
      this.ackTimer = undefined;
      const acks = this.acks;
      if (acks.length === 0) return;
      this.acks = [];
      this.o.queue.complete(acks).catch(() => {
        // written with the next claim, or when the worker ends
        this.acks = [...acks, ...this.acks];
      });
    }, FLUSH_MS);
  }

  private failure(lease: Lease, r: RunOutcome & { ok: false }, finishedAt: number): Failure {
    const { retries } = this.stepOf(lease);
    return {
      lease,
      error: r.error ?? 'failed',
      logPath: r.logPath,
      retryDelayMs: backoffDelay(attemptOfRun(lease, retries.maxAttempts), retries.backoff),
      startedAt: r.startedAt,
      finishedAt,
      final: r.final,
    };
  }

  private async runBatch(claimed: Lease[], leaseMs: number): Promise<void> {
    const leases = [...claimed];
    this.held = [...claimed];
    let completions: Completion[] = [];
    let failures: Failure[] = [];
    let lastFlush = Date.now();
    const t0 = Date.now();
    let n = 0;
    /** Of the `n` tasks, how many the forker timed, and how long they ran in all. */
    let timed = 0;
    let ranMs = 0;
    // Time per task: the batch's wall time over its tasks, which for a few tasks is mostly the
    // round trip of one (claim, forker, report, commit), not what a task costs. Sized by that, a
    // batch of 1 stayed 1 wherever that trip took over TARGET_BATCH_MS / 2 (a loaded machine,
    // a task with an output to commit) and the forker ran one task per round trip: shell tasks
    // timed by the forker count what they ran, when less.
    const perTask = () => {
      const wall = (Date.now() - t0) / n;
      return timed === n ? Math.min(wall, ranMs / n) : wall;
    };
    let ended = false;
    const record = (lease: Lease, r: RunOutcome, finishedAt: number) => {
      const { startedAt } = r;
      if (r.ok) completions.push({ lease, outcome: r.outcome, startedAt, finishedAt });
      else failures.push(this.failure(lease, r, finishedAt));
    };
    // carry: the batch ran to its end and the worker goes on to claim: its completions are
    // written with that claim, in the same transaction (a worker that stops writes them on exit)
    const flush = async (carry = false) => {
      if (completions.length) {
        if (carry) this.acks.push(...completions);
        else await this.o.queue.complete(completions);
      }
      if (failures.length) await this.o.queue.fail(failures);
      completions = [];
      failures = [];
      lastFlush = Date.now();
    };
    // results are taken in claim order; shell tasks may be started (queued) ahead of their turn
    const running: Array<Promise<RunOutcome> | undefined> = [];
    let next = 0;
    let more = true;
    let refill: Promise<void> | undefined;
    // Shell tasks are queued in the forker: the next batch is claimed before this one runs dry,
    // while results keep coming in, so that the forker never waits for a claim (nor for the acks
    // before it). A step with `batch: N` is claimed N at a time, as asked.
    const claimMore = () => {
      refill = (async () => {
        const got = await this.o.queue.claim(this.o.id, this.batch, leaseMs);
        if (got.length === 0 || this.stopping) {
          more = false;
          if (got.length > 0) await this.o.queue.release(got);
          return;
        }
        const add = await this.agglomerate(got, leaseMs);
        leases.push(...add);
        this.held.push(...add);
      })()
        .catch(() => {
          more = false; // the queue is unreachable: the outer loop finds out and waits
        })
        .finally(() => {
          refill = undefined;
        });
    };
    const topUp = (i: number) => {
      while (
        next < leases.length &&
        !this.stopping &&
        !this.poisoned &&
        (next === i ||
          (next - i <= PIPELINE_DEPTH && this.pipelines(leases[i]!) && this.pipelines(leases[next]!)))
      ) {
        running[next] = this.runOne(leases[next]!);
        next++;
      }
    };
    try {
      for (let i = 0; ; i++) {
        while (i >= leases.length && refill) await refill;
        if (i >= leases.length) break;
        // a task that runs in this process (a module function) may take it down: the outputs of
        // the (shell) tasks finished before it are committed first, so that they never run again
        // (outputs marked finished are kept: the coordinator commits them if this process dies)
        if (next === i && (this.unfinished > 0 || this.committingUnfinished) && !this.pipelines(leases[i]!))
          await this.settle();
        // a module function that returns without awaiting anything never lets the event loop run:
        // a group due to start (kickCommit) waited for 2,048 pending outputs, and a group under
        // way for its flush's answer, so the run's last group, the largest, for the end of the
        // queue. A turn of the loop every YIELD_MS while a group is due or under way lets it go on
        // beside the next tasks
        else if (
          next === i &&
          (this.kicked || this.committing) &&
          Date.now() >= this.yieldedAt + YIELD_MS &&
          !this.pipelines(leases[i]!)
        ) {
          await new Promise<void>((resolve) => setImmediate(resolve));
          this.yieldedAt = Date.now();
        }
        topUp(i);
        const last = leases[next - 1]!;
        if (
          more &&
          !refill &&
          !this.stopping &&
          next === leases.length &&
          next > i + 1 &&
          this.pipelines(last) &&
          this.stepOf(last).batch === undefined
        ) {
          if (n > 0) this.adapt(perTask());
          claimMore();
        }
        if (next <= i) break; // stopping: this one and the rest are handed back
        const lease = leases[i]!;
        const r = await running[i]!;
        running[i] = undefined;
        const finishedAt = Date.now();
        // never started, or aborted mid-task: the lease is handed back below
        if (!r.ok && (r.cancelled || this.stopping === 'abort')) continue;
        const h = this.held.indexOf(lease);
        if (h >= 0) this.held.splice(h, 1);
        n++;
        this.ran++;
        if (r.runMs !== undefined) {
          timed++;
          ranMs += r.runMs;
        }
        if (r.ok && r.commit) {
          this.pending.push({ lease, commit: r.commit, startedAt: r.startedAt, finishedAt });
          if (!r.commit.finished) this.unfinished++;
          if (this.unfinished >= COMMIT_MAX_PENDING || this.pending.length >= COMMIT_MAX_FINISHED)
            await this.startCommit();
          else {
            this.throwCommitError();
            this.kickCommit();
          }
        } else record(lease, r, finishedAt);
        if (finishedAt - lastFlush > FLUSH_MS) await flush();
      }
      ended = true;
    } finally {
      if (refill) await refill;
      // a batch that ends early (an error) leaves nothing running behind it
      const left = running.filter((x) => x !== undefined);
      if (left.length > 0) {
        this.runner?.cancelQueued();
        await Promise.allSettled(left);
      }
      await flush(ended && !this.stopping && !this.poisoned && this.o.queue.completeAndClaim !== undefined);
    }
    // what did not run (the runner stopped under it) goes back now; a stopping worker does it on exit
    if (this.held.length > 0 && !this.stopping) {
      await this.o.queue.release(this.held);
      this.held = [];
    }
    if (n > 0) this.adapt(perTask());
  }

  /** Sizes the next claim so that it takes about TARGET_BATCH_MS at the measured time per task. */
  private adapt(perTaskMs: number): void {
    this.avgMs = this.avgMs === 0 ? perTaskMs : this.avgMs * 0.7 + perTaskMs * 0.3;
    const max = this.o.maxBatch ?? MAX_BATCH;
    this.batch = Math.max(1, Math.min(max, Math.floor(TARGET_BATCH_MS / Math.max(this.avgMs, 0.01))));
  }

  private stepOf(lease: Lease): StepDef {
    const st = this.steps.get(lease.step);
    if (!st) throw new Error(`task ${lease.key} belongs to step ${lease.step}, which this job does not have`);
    return st;
  }

  private async runOne(lease: Lease): Promise<RunOutcome> {
    const { job, store } = this.o;
    const { baseDir } = job;
    const step = this.stepOf(lease);
    const p = lease.payload;
    const key = p.o;
    let startedAt = Date.now();
    // an output made from an input that changed since is made again, and replaces it
    let redo = false;
    const look = this.o.lookBeforeFirstAttempt !== false || lease.attempt > 1 || p.r === 1 || p.lk === 1;
    if (key !== undefined && look && (await store.exists(key))) {
      const own = this.o.ownsOutput ? await this.o.ownsOutput(lease, key) : true;
      if (own) {
        redo =
          store.replace !== undefined &&
          (p.r === 1 || (this.o.outputStale !== undefined && (await this.o.outputStale(p, key))));
        if (!redo) return { ok: true, outcome: 'found', startedAt };
      }
      if (own === false)
        return {
          ok: false,
          error: `its output ${key} appeared during this run before the task first ran (written by another step's command or another process), so it is not this task's result: have only this step write it, or remove it`,
          startedAt,
        };
    }
    const changed = await inputChanged(p, baseDir);
    if (changed) return { ok: false, error: changed, startedAt };
    const attemptId = attemptIdOf(lease.attempt, this.o.id);
    let staged: string | undefined;
    try {
      staged = key !== undefined ? await store.stage(key, attemptId) : undefined;
    } catch (err) {
      if (isTransient(err)) throw err;
      return {
        ok: false,
        error: `could not prepare the output: ${(err as Error).message.split('\n')[0]}`,
        startedAt,
      };
    }
    const logPath = this.logsPrefix + taskLogName(lease.key);
    const at = Date.now();
    const log = new TaskLog(
      logPath,
      () =>
        `--- ${new Date(at).toISOString()} task ${taskLabel(lease.key, p)} attempt ${lease.attempt}/${lease.maxAttempts} on ${this.o.id}@${this.host}\n`,
    );
    const vars = taskVars(
      p,
      baseDir,
      { attempt: String(lease.attempt), ...(staged ? { output: staged } : {}) },
      job.s3Dir,
    );
    if (this.stopping) {
      // the worker was told to stop while this task was being prepared: it never starts
      if (key !== undefined) await store.discard(key, attemptId);
      return { ok: false, cancelled: true, startedAt };
    }
    // what a process that writes in place (HyperFlow) finds at its outputs, so that a failed
    // attempt removes only what it wrote
    const outsBefore = p.outs?.map((f) => statOf(path.resolve(baseDir, f), lstatSync));
    // files the attempt's command reads, removed after it: its inputs' list, a long command's script
    const scratch: string[] = [];
    const scratchPrefix = `${this.logsPrefix}.task-${attemptId}-${taskLogName(lease.key)}`;
    let command: RunCommandOptions['command'] | undefined;
    if (step.command !== undefined || step.exec !== undefined)
      try {
        if (p.ins !== undefined && !p.argv) {
          // {inputs.file}: every input path on a line of its own, however many (100,000 or more)
          vars['inputs.file'] = `${scratchPrefix}.inputs`;
          writeFileSync(vars['inputs.file'], vars.inputs ? `${vars.inputs}\n` : '');
          scratch.push(vars['inputs.file']);
        }
        command = p.argv
          ? { file: p.argv[0]!, args: p.argv.slice(1) }
          : step.exec
            ? { file: step.exec.executable, args: step.exec.args }
            : render(step.command!, vars, shellQuote);
        if (typeof command === 'string' && scriptIt(command)) {
          // over Linux's 128 KiB limit for one argument, `sh -c COMMAND` could not start (E2BIG):
          // a long command (a reduce's {inputs}, a long line as {input}) is run from a file
          const script = `${scratchPrefix}.sh`;
          writeFileSync(script, command);
          scratch.push(script);
          command = `${RAISE_STACK}. ${shellQuote(script)}`;
        }
      } catch (err) {
        for (const f of scratch) rmSync(f, { force: true });
        if (key !== undefined) await store.discard(key, attemptId);
        const error = `could not write the command's files: ${(err as Error).message.split('\n')[0]}`;
        log.write(`corral: attempt failed: ${error}\n`);
        log.close();
        return { ok: false, error, logPath: log.written ? logPath : undefined, startedAt };
      }
    const stdin: TaskStdin =
      step.stdin === 'none'
        ? { kind: 'none' }
        : p.l !== undefined
          ? { kind: 'text', text: p.l }
          : { kind: 'file', path: vars.input!, start: p.s, end: p.e };
    let r: TaskResult;
    let announce: NodeJS.Timeout | undefined;
    let announced = false;
    /** Where the command's stdout goes when it is the output (the staged file). */
    let stdoutFile: string | undefined;
    try {
      if (step.command !== undefined || step.exec !== undefined) {
        const usesOutput = this.usesOutput(step);
        // the staged output, or a HyperFlow process's config.executor.stdout file
        stdoutFile =
          staged && !usesOutput
            ? staged
            : p.stdout !== undefined
              ? path.resolve(baseDir, p.stdout)
              : undefined;
        r = await runCommand({
          command: command!,
          cwd: baseDir,
          extraEnv: { ...step.env, ...taskEnv(vars) },
          runner: this.runner,
          stdin,
          stdoutFile,
          log,
          timeoutMs: step.timeout,
          signal: this.abort.signal,
          onGroup: (g) => {
            if (g === undefined) {
              clearTimeout(announce);
              if (announced) for (const x of this.groups) this.o.onGroup?.(x, false);
              this.groups.clear();
            } else {
              this.groups.add(g);
              // only a task that lives a while is worth telling the coordinator about (to kill it
              // if this worker dies); a message per millisecond task would cost more than the task
              announce = setTimeout(() => {
                announced = true;
                this.o.onGroup?.(g, true);
              }, ANNOUNCE_GROUP_AFTER_MS);
            }
          },
        });
      } else {
        const fn = await loadTaskFunction(path.resolve(baseDir, step.module!));
        r = await runModule({
          fn,
          ctx: {
            index: p.i,
            input: vars.input,
            inputs: p.ins?.map((k) => path.resolve(baseDir, k)),
            chunk: p.s !== undefined && p.e !== undefined ? { start: p.s, end: p.e } : undefined,
            output: staged,
            attempt: lease.attempt,
            env: step.env,
          },
          stdin,
          log,
          timeoutMs: step.timeout,
          signal: this.abort.signal,
        });
        if (r.poisoned) this.poisoned = true;
      }
    } catch (err) {
      // corral's own write failed (the task's log on a full disk): not the task's failure
      if (isNoSpace(err)) throw err;
      r = { ok: false, error: (err as Error).message.split('\n')[0] };
    } finally {
      for (const f of scratch) rmSync(f, { force: true });
    }
    startedAt = r.startedAt ?? startedAt;
    if (r.cancelled) {
      // never started (the worker is stopping): no attempt, nothing to clean but the staging
      log.close();
      if (key !== undefined) await store.discard(key, attemptId);
      return { ok: false, cancelled: true, startedAt };
    }
    // a chunk read while its file changed is not the planned chunk either
    if (r.ok) {
      const during = await inputChanged(p, baseDir);
      if (during) r = { ok: false, error: during };
    }
    if (r.ok && p.outs) {
      // a process that writes in place (HyperFlow) must have written every one of its outputs, as files
      const found = p.outs.map((f) => statOf(path.resolve(baseDir, f), statSync));
      const missing = p.outs.filter((_f, k) => found[k] === undefined);
      const folders = p.outs.filter((_f, k) => found[k]?.isDirectory());
      if (missing.length) r = { ok: false, error: `succeeded but did not write ${missing.join(', ')}` };
      else if (folders.length)
        r = { ok: false, error: `succeeded but its output ${folders.join(', ')} is a folder, not a file` };
    }
    if (!r.ok) {
      // the output of a failed attempt is discarded below: what it printed is kept in the log
      if (stdoutFile !== undefined) keepStdout(stdoutFile, log);
      log.write(`corral: attempt failed: ${r.error}\n`);
      if (p.outs) removeWritten(p.outs, outsBefore!, baseDir, log);
    }
    log.close();
    if (!r.ok) {
      if (key !== undefined) await store.discard(key, attemptId);
      return {
        ok: false,
        error: r.error,
        logPath: log.written ? logPath : undefined,
        startedAt,
        final: r.final,
        runMs: r.runMs,
      };
    }
    if (key === undefined) return { ok: true, outcome: 'ok', startedAt, runMs: r.runMs };
    const written = log.written ? logPath : undefined;
    // a first commit goes with the batch's others (one flush to disk for the group). A module
    // task runs in this process, which a later one could take down with the pending group: its
    // output is marked finished first (a rename, no flush), so that the coordinator commits it
    // if this process dies; where it cannot be, it is committed here, before the next task runs
    if (!redo && store.commitAll) {
      if (this.pipelines(lease))
        return {
          ok: true,
          outcome: 'committed',
          startedAt,
          runMs: r.runMs,
          commit: { key, attemptId, logPath: written },
        };
      if (step.module !== undefined && store.finish?.(key, attemptId))
        return {
          ok: true,
          outcome: 'committed',
          startedAt,
          runMs: r.runMs,
          commit: { key, attemptId, logPath: written, finished: true },
        };
    }
    let c: CommitResult | Error;
    try {
      c = redo ? await store.replace!(key, attemptId) : await store.commit(key, attemptId);
    } catch (err) {
      if (isTransient(err)) throw err;
      c = err as Error;
    }
    return this.committed(lease, key, c, written, startedAt);
  }

  /** How a task ended, from how the commit of its output ended. */
  private async committed(
    lease: Lease,
    key: string,
    c: CommitResult | Error,
    logPath: string | undefined,
    startedAt: number,
  ): Promise<RunOutcome> {
    if (c instanceof Error) {
      // the store failed (full disk, unwritable folder): a failed attempt, retried with backoff
      await this.o.store.discard(key, `${lease.attempt}-${this.o.id}`).catch(() => {});
      const error = `could not commit the output: ${c.message.split('\n')[0]}`;
      return { ok: false, error, logPath, startedAt };
    }
    if (c === 'missing') {
      return {
        ok: false,
        error: `succeeded but wrote no output (expected ${key})`,
        logPath,
        startedAt,
      };
    }
    if (c === 'conflict') {
      // a different file at the output path is the result only if an earlier attempt of this
      // task may have committed it; otherwise this result would be lost while the task passed
      if (this.o.ownsOutput && (await this.o.ownsOutput(lease, key)) !== true)
        return {
          ok: false,
          error: `its output ${key} was written by something else while the task ran (another task whose output path differs only by case on a case-insensitive file system, or a process outside corral), with other content: this result was not committed and the file there was left as it is; have only this task write ${key}, or remove it and run again`,
          logPath,
          startedAt,
          final: true,
        };
      return { ok: true, outcome: 'duplicate', startedAt };
    }
    return { ok: true, outcome: c, startedAt };
  }
}

/** How much of a failed attempt's stdout (when stdout is the output) its task's log keeps: the end. */
export const STDOUT_KEPT_BYTES = 64 * 1024;

/**
 * Copies the end of a failed attempt's stdout (its staged output, about to be discarded) into the
 * task's log, at most {@link STDOUT_KEPT_BYTES}, under a line that says what it is.
 */
function keepStdout(file: string, log: TaskLog): void {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const size = fstatSync(fd).size;
    if (size === 0) return;
    const n = Math.min(size, STDOUT_KEPT_BYTES);
    const buf = Buffer.alloc(n);
    const got = readSync(fd, buf, 0, n, size - n);
    log.write(
      `corral: stdout of the failed attempt${size > n ? ` (its last ${n} of ${size} bytes)` : ''}:\n`,
    );
    log.write(buf.subarray(0, got));
    if (buf[got - 1] !== 10) log.write('\n');
  } catch {
    // nothing was written (the command never started), or it cannot be read: nothing to keep
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** A path's stats (`lstatSync` or `statSync`), or undefined when there is nothing there. */
function statOf(p: string, stat: typeof lstatSync): Stats | undefined {
  try {
    return stat(p);
  } catch {
    return undefined;
  }
}

/**
 * After a failed attempt of a process that writes in place: removes the outputs it wrote (a
 * partial output must not pass for a result), but no file it left as it was, and never a folder.
 * A file that cannot be removed is noted in the task's log; it does not stop the worker.
 */
function removeWritten(
  outs: readonly string[],
  before: ReadonlyArray<Stats | undefined>,
  baseDir: string,
  log: TaskLog,
): void {
  outs.forEach((f, k) => {
    const file = path.resolve(baseDir, f);
    const now = statOf(file, lstatSync);
    if (now === undefined || now.isDirectory()) return;
    const was = before[k];
    if (was && was.ino === now.ino && was.size === now.size && was.mtimeMs === now.mtimeMs) return;
    try {
      rmSync(file, { force: true });
    } catch (err) {
      log.write(`corral: could not remove the partial output ${f}: ${(err as Error).message}\n`);
    }
  });
}

/**
 * Before a long command: a soft stack limit under 32 MiB is raised to it, if the hard limit allows.
 * Linux lets a program take arguments up to a quarter of it (capped at 6 MiB): with the usual
 * 8 MiB, `cat {inputs}` over 100,000 outputs failed with "Argument list too long".
 */
const RAISE_STACK =
  '__corral_s=$(ulimit -s); if [ "$__corral_s" != unlimited ] && [ "$__corral_s" -lt 32768 ]; then ulimit -s 32768 2>/dev/null; fi; unset __corral_s; ';

/**
 * Whether a rendered command goes to a script file: past 64 KiB (Snakemake's threshold), well
 * below the 128 KiB Linux allows one argument. One holding a NUL byte never does (it fails, with
 * the reason, in runCommand: a script would run it cut short as well).
 */
function scriptIt(command: string): boolean {
  return command.length > 21_845 && Buffer.byteLength(command) > 65_536 && !command.includes('\0');
}

/** CORRAL_INPUT_NAME for input.name, and so on (a handful of names, each made once). */
const envNames = new Map<string, string>();

/**
 * Linux's limit on one `NAME=VALUE` string of an environment (MAX_ARG_STRLEN, 32 pages, its NUL
 * included): a longer one made the task's start fail with E2BIG.
 */
const MAX_ENV_STRING = 131_072;

/**
 * Environment variables that mirror a task's placeholders, e.g. CORRAL_INPUT, CORRAL_CHUNK_START.
 * A value an environment cannot hold is left out, and the task still starts: one with a NUL byte
 * (a line holding one), or one over 128 KiB (a long line, a reduce's many inputs). The task reads
 * such a line on stdin (`stdin: input`), and a reduce its inputs from CORRAL_INPUTS_FILE.
 */
export function taskEnv(vars: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k in vars) {
    let name = envNames.get(k);
    if (name === undefined) {
      name = `CORRAL_${k.replace('.', '_').toUpperCase()}`;
      envNames.set(k, name);
    }
    const v = vars[k]!;
    // a UTF-8 byte is at most 3 per UTF-16 unit: only a long value is measured
    if (
      v.length * 3 + name.length + 2 > MAX_ENV_STRING &&
      Buffer.byteLength(v) + name.length + 2 > MAX_ENV_STRING
    )
      continue;
    if (v.includes('\0')) continue;
    env[name] = v;
  }
  return env;
}

/**
 * Why a chunk's input file is not the one its chunks were planned on (its size or mtime differ
 * from the plan's), or undefined: a truncated or rewritten input would otherwise give chunks that
 * read nothing, or other bytes, and "succeed".
 */
async function inputChanged(p: TaskPayload, baseDir: string): Promise<string | undefined> {
  // a whole file is read as it is when the task runs (its stamp tells a re-run what the output was made from)
  if (p.z === undefined || p.p === undefined || p.s === undefined) return undefined;
  const planned = `${p.z} bytes, modified ${new Date(p.m ?? 0).toISOString()}`;
  const fix = 'restore it, or run again with --fresh to plan its chunks anew';
  let now: { size: number; mtimeMs: number };
  try {
    now = await stat(path.resolve(baseDir, p.p));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    return `input ${p.p} is gone since its chunks were planned (${planned}; now ${code}): ${fix}`;
  }
  if (now.size === p.z && now.mtimeMs === p.m) return undefined;
  return `input ${p.p} changed since its chunks were planned (${planned}; now ${now.size} bytes, modified ${new Date(now.mtimeMs).toISOString()}), so bytes ${p.s}-${p.e} are not the planned chunk: ${fix}`;
}
