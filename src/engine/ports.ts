/**
 * What the engine needs from the world, as interfaces it owns. The adapters live outside the
 * engine (src/transport, src/store, src/compute, src/observe); the composition root
 * (src/transport/local.ts, src/transport/cluster) builds them and hands them in. The engine names
 * none of them (test/layers.test.ts).
 */
import type { Compute, WorkerEvent } from '../compute/compute.js';
import type { Logger } from '../vendor/pino.js';

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
