/**
 * The composition of a run on this machine: the engine's coordinator with the local adapters
 * (worker processes claiming from the job's ledger, the output store in the job's folder, the
 * events file). `corral run FILE` and the library's `runJob` start here.
 */
import { LocalCompute, type PrestartedWorker } from '../compute/local/local-compute.js';
import { type RunOptions, type RunSummary, runJob as runWith } from '../engine/coordinator.js';
import type { LocalAdapters } from '../engine/ports.js';
import { eventStream, logLevel } from '../observe/log.js';
import type { LoadedJob } from '../spec/job.js';
import { FsStore } from '../store/fs/fs-store.js';
import { pino } from '../vendor/pino.js';

/** Options of a run on this machine. */
export interface LocalRunOptions extends RunOptions {
  /** Worker processes the CLI started before loading the job (taken over, or stopped). @default none */
  readonly prestarted?: PrestartedWorker[];
}

/** The adapters of a run on this machine. */
export function localAdapters(prestarted?: PrestartedWorker[]): LocalAdapters {
  return {
    openStore: (baseDir, job) => new FsStore(baseDir, { scope: job }),
    startWorkers: (o) => new LocalCompute({ ...o, prestarted }),
    openLog: (job, eventsFile) => pino({ base: { job }, level: logLevel() }, eventStream(eventsFile)),
  };
}

/**
 * Runs a job to its end on this machine: expands its tasks into the sqlite queue (once),
 * reconciles with the store, starts local workers, watches leases and progress, and drains.
 * Safe to call again after any interruption: completed tasks never run again.
 */
export function runJob(job: LoadedJob, opts: LocalRunOptions): Promise<RunSummary> {
  return runWith(job, opts, localAdapters(opts.prestarted));
}
