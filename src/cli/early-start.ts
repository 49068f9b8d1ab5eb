/**
 * What `corral run FILE` does before the rest of the command line loads: it starts the job's
 * worker processes, so that their Node start-up (~100-200 ms each) overlaps the CLI's own loading
 * of its modules and of the job, instead of following them. The command line is read here with a
 * glance, not parsed: `corral run` takes the workers only if commander then parses the same file
 * and concurrency, and stops them otherwise. Nothing here decides what runs.
 */
import os from 'node:os';
import {
  discardPrestarted,
  type PrestartedWorker,
  prestartWorkers,
  processesFor,
} from '../compute/local/local-compute.js';
import { peekJob } from '../spec/peek.js';

/**
 * Options of `corral run` (and of `corral` itself) that take a value, so the value is not taken
 * for the FILE. test/local-compute.test.ts checks this against what commander is given.
 */
export const VALUED = new Set([
  '--state-dir',
  '--var',
  '--workdir',
  '--ui-port',
  '--ui-host',
  '--token',
  '--log-format',
  '--log-level',
  // the cluster's (without --cluster they do nothing, but still take a value)
  '--outputs',
  '--queue-url',
  '--pool',
  '--dlq-url',
  '--bucket',
  '--region',
  '--endpoint-url',
]);

interface Early {
  readonly file: string;
  readonly concurrency: number | undefined;
  readonly workers: PrestartedWorker[];
}

let early: Early | undefined;

/**
 * Worker processes started for the job in `file` before it is loaded: as many as it will likely
 * run at once, up to the cores (more would only compete with the CLI for them).
 */
export function prestartFor(file: string, concurrency: number | undefined): PrestartedWorker[] {
  const peek = peekJob(file);
  if (!peek) return [];
  const cores = Math.max(1, os.availableParallelism());
  const workers = Math.min(concurrency ?? peek.concurrency ?? cores, cores);
  return prestartWorkers(processesFor(workers, !peek.modules), !peek.modules);
}

/** Prestarts the workers of a local `corral run FILE` found in `argv` (as `process.argv`). */
export function startEarly(argv: readonly string[]): void {
  const args = argv.slice(2);
  if (args[0] !== 'run') return;
  let file: string | undefined;
  let concurrency: number | undefined;
  for (let i = 1; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--' || a === '-h' || a === '--help' || a === '--cluster' || a.startsWith('--cluster=')) return; // on a cluster, or help: no local workers
    if (a === '--dry-run') return; // nothing runs
    if (a === '-c' || a === '--concurrency') concurrency = Number(args[++i]);
    else if (a.startsWith('--concurrency=')) concurrency = Number(a.slice('--concurrency='.length));
    else if (VALUED.has(a)) i++;
    else if (!a.startsWith('-')) file ??= a;
  }
  if (
    file === undefined ||
    (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency > 0))
  )
    return;
  try {
    early = { file, concurrency, workers: prestartFor(file, concurrency) };
  } catch {
    // could not start them now: `corral run` starts its workers itself
  }
}

/**
 * The workers `startEarly` started, if it read the same FILE and concurrency that commander
 * parsed; otherwise they are stopped and `undefined` is returned.
 */
export function takeEarly(file: string, concurrency: number | undefined): PrestartedWorker[] | undefined {
  const e = early;
  early = undefined;
  if (!e) return undefined;
  if (e.file === file && e.concurrency === concurrency) return e.workers;
  discardPrestarted(e.workers);
  return undefined;
}

/** Stops the prestarted workers no run took (the command line failed before it ran the job). */
export function discardEarly(): void {
  const e = early;
  early = undefined;
  if (e) discardPrestarted(e.workers);
}
