/**
 * The one coordination loop of a run, whatever its shape (a map job is a one-step workflow) and
 * wherever its workers are. Each tick it takes in what the workers did (`Dispatcher.collect`),
 * lets the workflow's ledger decide what follows (`DagState.advance`: plans, releases, skips),
 * settles tasks that can no longer run, hands ready tasks to the workers (`dispatch`) and reports
 * progress; at the end it reads the outcome from the ledger. The transport only moves tasks: on
 * one machine, worker processes claim them from the ledger themselves (src/engine/coordinator.ts);
 * on a cluster, they are sent to SQS and their ends come back from the bucket
 * (src/transport/cluster/cluster-transport.ts). The engine names neither: both are a `Dispatcher`
 * (src/engine/ports.ts).
 */
import type { SqliteQueue } from '../ledger/sqlite-queue.js';
import type { DeadLetter, TaskCounts } from '../queue/queue.js';
import type { DagEvents, DagState } from './dag.js';
import type { Dispatcher } from './ports.js';

/** Progress of a running job, as reported to the CLI. */
export interface Progress extends TaskCounts {
  /** Worker processes running now. */
  readonly workers: number;
  /** Tasks finished per second, over the last few seconds. */
  readonly rate: number;
  /** Seconds since the run started. */
  readonly elapsed: number;
}

/** Options of the loop. */
export interface DriveOptions {
  /** Milliseconds between ticks. */
  readonly tickMs: number;
  /** When the run started (ms since the epoch), for `elapsed`. */
  readonly started: number;
  /** Aborting ends the loop; the run is `interrupted`. */
  readonly signal?: AbortSignal;
  /** Called once a tick. */
  readonly onProgress?: (p: Progress) => void;
  /** What the ledger decided (planned, released, skipped steps). */
  readonly onDag: (ev: DagEvents) => void;
  /** Tasks skipped because what they wait for can no longer come. */
  readonly onUnreachable: (tasks: number) => void;
  /** Seconds of the rate's sliding window. @default 5 */
  readonly rateWindowS?: number;
}

/** How the loop ended: the ledger's counts, and whether it was interrupted. */
export interface Driven {
  readonly counts: TaskCounts;
  readonly interrupted: boolean;
}

/** Whether a run has work left: tasks not finished, or steps not yet planned. */
function open(c: TaskCounts, dag: DagState): boolean {
  return c.pending + c.leased + c.blocked > 0 || !dag.allExpanded();
}

/** Nothing can run, yet tasks wait: what they wait for has failed or will never come. */
function stuck(c: TaskCounts, dag: DagState): boolean {
  return c.pending + c.leased === 0 && c.blocked > 0 && dag.allExpanded();
}

/**
 * When nothing can run but tasks wait, one more pass of the ledger first (the last running task
 * may have completed between the last pass and the counts), then those still waiting are skipped.
 * Returns the counts after, and whether tasks became ready.
 */
async function settle(
  ledger: SqliteQueue,
  dag: DagState,
  o: DriveOptions,
  counts: TaskCounts,
): Promise<{ counts: TaskCounts; news: boolean }> {
  let news = false;
  if (!stuck(counts, dag)) return { counts, news };
  const last = await dag.advance();
  o.onDag(last);
  news = last.released.length + last.expanded.length > 0;
  counts = ledger.countsSync();
  if (!stuck(counts, dag)) return { counts, news };
  const n = dag.skipUnreachable();
  if (n > 0) o.onUnreachable(n);
  const after = await dag.advance();
  o.onDag(after);
  news ||= after.released.length + after.expanded.length > 0;
  return { counts: ledger.countsSync(), news };
}

/**
 * Runs the loop until every task of the ledger is finished (done, dead or skipped) and every step
 * planned, or until aborted. The caller has planned the first steps and dispatched them.
 */
export async function drive(
  ledger: SqliteQueue,
  dag: DagState,
  t: Dispatcher,
  o: DriveOptions,
): Promise<Driven> {
  const window: Array<[number, number]> = [];
  const windowMs = (o.rateWindowS ?? 5) * 1000;
  const finishedOf = (c: TaskCounts) => c.done + c.dead + c.skipped;
  let { counts, news } = await settle(ledger, dag, o, ledger.countsSync());
  if (news) await t.dispatch(true);
  let interrupted = false;
  while (open(counts, dag)) {
    if (o.signal?.aborted) {
      interrupted = true;
      break;
    }
    t.check?.();
    await t.wait(o.tickMs);
    const before = finishedOf(counts);
    const moved = await t.collect();
    if (moved === undefined) continue;
    const ev = await dag.advance();
    o.onDag(ev);
    news = moved > 0 || ev.expanded.length + ev.released.length > 0;
    const settled = await settle(ledger, dag, o, ledger.countsSync());
    await t.dispatch(news || settled.news);
    counts = ledger.countsSync();
    const shown = await t.observe(counts, finishedOf(counts) > before);
    const now = Date.now();
    const finished = counts.done + counts.dead;
    window.push([now, finished]);
    while (window.length > 2 && now - window[0]![0] > windowMs) window.shift();
    const [t0, f0] = window[0]!;
    const rate = now > t0 ? ((finished - f0) * 1000) / (now - t0) : 0;
    o.onProgress?.({ ...shown.counts, workers: shown.workers, rate, elapsed: (now - o.started) / 1000 });
  }
  return { counts: ledger.countsSync(), interrupted };
}

/** What a finished run's summary reads from its ledger. */
export interface Outcome {
  readonly status: 'succeeded' | 'failed' | 'interrupted';
  readonly counts: TaskCounts;
  /** The first 100 dead letters. */
  readonly deadLetters: DeadLetter[];
  /** How failures spread through the workflow, e.g. `split/3 failed → count/3 skipped → step total skipped`. */
  readonly failedPaths: string[];
  /** Steps never planned because a step they need failed. */
  readonly skippedSteps: string[];
  /** Promised workflow outputs (HyperFlow `outs`) that are not there at the end. */
  readonly missingOutputs: string[];
  /** Steps that could not be planned once the steps they need had run, with the reason. */
  readonly unplanned: string[];
}

/**
 * How the run ended, from its ledger: the status, counts, the first 100 dead letters and how
 * failures spread. `checkOutputs` false: promised outputs are not looked for in the job folder
 * (a cluster run that does not download them).
 */
export async function outcomeOf(
  ledger: SqliteQueue,
  dag: DagState,
  interrupted: boolean,
  checkOutputs = true,
): Promise<Outcome> {
  const counts = ledger.countsSync();
  const deadLetters = await ledger.deadLetters(100);
  const { status, skippedSteps, missingOutputs } = dag.outcome(counts, interrupted, checkOutputs);
  return {
    status,
    counts,
    deadLetters,
    failedPaths: dag.failedPaths(),
    skippedSteps,
    missingOutputs,
    unplanned: dag.unplanned(),
  };
}
