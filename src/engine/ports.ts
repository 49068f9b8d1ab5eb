/**
 * What the engine needs from the world, as interfaces it owns. The adapters live outside the
 * engine (src/transport, src/store, src/compute, src/observe); the composition root
 * (src/transport/local.ts, src/transport/cluster) builds them and hands them in. The engine names
 * none of them (test/layers.test.ts).
 */
import type { Compute, WorkerEvent } from '../compute/compute.js';
import type { TaskCounts } from '../queue/queue.js';
import type { Logger } from '../vendor/pino.js';

/**
 * The Transport port, as the one coordination loop (src/engine/drive.ts) sees it: how ready tasks
 * reach the workers of a run and how their ends come back into the ledger. On one machine the
 * coordinator wraps a {@link WorkerTransport} (workers claim from the ledger); on a cluster,
 * src/transport/cluster/cluster-transport.ts sends them to SQS and reads the bucket's markers.
 */
export interface Dispatcher {
  /**
   * Takes into the ledger what the workers did since the last tick that the ledger does not
   * know yet (local: expired leases reaped; cluster: commits and dead letters read from the
   * bucket). Returns how many tasks it moved, or `undefined` when the workers cannot be seen
   * now (an outage: nothing is decided this tick).
   */
  collect(): Promise<number | undefined>;
  /** Hands ready tasks to the workers; `news` says whether tasks became ready since the last call. */
  dispatch(news: boolean): Promise<void>;
  /** Waits until the next tick, or less when the transport knows something happened. */
  wait(ms: number): Promise<void>;
  /**
   * What to show of the ledger's counts (a cluster splits its leased tasks into queued and
   * running from the queue's own counts) and how many workers run; `progressed` says whether
   * tasks finished this tick. Called once a tick.
   */
  observe(counts: TaskCounts, progressed: boolean): Promise<{ counts: TaskCounts; workers: number }>;
  /** Throws when the transport cannot go on (workers that keep dying at start). */
  check?(): void;
}

/** Objects named by `s3://` inputs: what expanding a map over them needs. */
export interface ObjectInputs {
  /** The objects of a URL or key glob with their sizes, in key order; `field` names the spec field in errors. */
  match(url: string, field: string): Promise<Array<{ bucket: string; key: string; size: number }>>;
  /** Byte ranges `[start, end)` of an object, like `chunkRanges` for a local file. */
  chunkRanges(
    o: { bucket: string; key: string; size: number },
    chunkSize: number,
    align: 'newline' | 'none',
  ): Promise<Array<[number, number]>>;
}

/** The store a local run's outputs are committed to: the truth of completion on resume. */
export interface OutputStore {
  /** The folder outputs are committed below. */
  readonly root: string;
  /** Whether an output is committed. */
  exists(key: string): Promise<boolean>;
  /** Removes what attempts left in staging. */
  cleanStaging(): void;
  /**
   * Commits the output an attempt of a worker that died had finished but not committed (marked
   * finished in this boot); undefined when there is none. @default - absent: none is ever kept
   */
  adopt?(
    key: string,
    attemptId: string,
  ): Promise<'committed' | 'duplicate' | 'conflict' | 'missing' | undefined>;
}

/**
 * The Transport of a local run: how a ready task reaches a worker and how its end comes back.
 * Workers are processes that claim ready tasks from the job's ledger (the state file) and write
 * their completion or failure there themselves; the coordinator only says how many to run, when
 * there is new work (`wake`), and when to stop.
 */
export interface WorkerTransport extends Compute {
  /** Starts up to `n` workers now, held until `wake` (they load while the tasks are planned). */
  prestart(n: number): void;
  /** Tells the workers that tasks became ready (after a plan, a release or a reaped lease). */
  wake(): void;
  /** Stops the prestarted workers the run did not take. */
  discardSpare(): void;
  /** Why workers cannot run (they keep dying at start), once the transport gave up. */
  readonly failure: string | undefined;
  /** Whether a worker stopped because the disk is full. */
  readonly noSpace: boolean;
}

/** What the coordinator tells the transport about the run it serves. */
export interface WorkerTransportOptions {
  /** The job as JSON, for the workers. */
  readonly jobJson: string;
  /** The ledger (state file) they claim from. */
  readonly db: string;
  readonly logsDir: string;
  readonly storeRoot: string;
  readonly workersDir: string;
  /** Prefix of this run's worker ids. */
  readonly idPrefix: string;
  /** A worker started, stopped or was lost. */
  readonly onEvent: (e: WorkerEvent) => void;
  /** A worker found nothing to claim. */
  readonly onIdle: () => void;
  /** Every step runs a shell command (no module functions). */
  readonly commandsOnly: boolean;
}

/** The adapters a local run is built from; `src/transport/local.ts` makes the usual ones. */
export interface LocalAdapters {
  /** The store of a job's outputs (below `baseDir`, scoped to the job). */
  openStore(baseDir: string, job: string): OutputStore;
  /** The transport: worker processes claiming from the ledger. */
  startWorkers(opts: WorkerTransportOptions): WorkerTransport;
  /** The run's event log (one JSON line per event in `eventsFile`). */
  openLog(job: string, eventsFile: string): Logger;
}
