import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { access } from 'node:fs/promises';
import path from 'node:path';
import { SqliteQueue, type WorkerRow } from '../ledger/sqlite-queue.js';
import { attemptIdOf, type TaskPayload } from '../queue/queue.js';
import { CommandFailed, isNoSpace, UsageError } from '../spec/errors.js';
import type { LoadedJob } from '../spec/job.js';
import type { Logger } from '../vendor/pino.js';
import { type DagEvents, DagState, INSERT_BATCH } from './dag.js';
import { drive, type Outcome, outcomeOf, type Progress } from './drive.js';
import { countLinesUpTo, expandFileMap } from './expand.js';
import type { LocalAdapters, OutputStore, WorkerTransport } from './ports.js';
import { pidAlive } from './process-utils.js';
import {
  assertWritableStateDir,
  createJobDirs,
  type JobPaths,
  jobPaths,
  noSpaceFailure,
  unreadableState,
} from './state-dir.js';
import { TaskEventLog } from './task-events.js';

export type { Progress } from './drive.js';

/** How a run ended. */
export interface RunSummary extends Omit<Outcome, 'unplanned'> {
  readonly job: string;
  /**
   * Steps this run could not plan once the steps they need had run (a glob that matched
   * nothing), with the reason, and the steps waiting on them; the next run plans them again.
   */
  readonly unplanned?: string[];
  /** Where committed outputs are, when the job has outputs. */
  readonly outputs?: string;
  readonly stateDir: string;
  readonly seconds: number;
  /** True when this run continued an earlier one. */
  readonly resumed: boolean;
  /**
   * What this run gave another go, when it continued a run that left failures: dead tasks
   * (their attempts again), skipped tasks, and steps skipped whole. Absent when there were none.
   */
  readonly retried?: { readonly dead: number; readonly skipped: number; readonly steps: number };
  /**
   * What a re-run found of the inputs of its glob maps: files that appeared since the last run,
   * planned as new tasks (`added`) or not (`waiting`: other steps read that step; `--fresh` plans
   * them), and inputs that changed since their outputs were made (`changed`), of which `redone`
   * run again (`redoChanged`). Absent on a first or `--fresh` run.
   */
  readonly inputs?: {
    readonly added: number;
    readonly waiting: number;
    readonly changed: number;
    readonly redone: number;
  };
}

/** Options of a run. */
export interface RunOptions {
  /** State folder. @default ./.corral */
  readonly stateDir: string;
  /**
   * Forget the job's earlier state and plan its tasks again: committed outputs still count as
   * done, unless one of their inputs is newer than them (then the task runs again and replaces it).
   * @default false
   */
  readonly fresh?: boolean;
  /**
   * On a re-run, run again the tasks whose input file changed (size or mtime) since their output
   * was made, replacing each output atomically (a failing redo leaves the old one). Glob maps
   * that no other step reads; without it, a re-run only counts them (`RunSummary.inputs`).
   * @default false
   */
  readonly redoChanged?: boolean;
  /** Overrides the spec's concurrency. @default - the spec's */
  readonly concurrency?: number;
  /** Called a few times a second while the job runs. */
  readonly onProgress?: (p: Progress) => void;
  /** Aborting stops the workers, hands their tasks back and ends the run as `interrupted`. */
  readonly signal?: AbortSignal;
  /** Milliseconds between progress checks. @default 200 */
  readonly tickMs?: number;
}

/**
 * Scratch files of forkers that died with their worker (see src/worker/forker.c), of attempts (a
 * script, an inputs list: src/worker/agent.ts), and task log parts that a worker could not append
 * to their log (src/worker/run-command.ts).
 */
function removeForkerScratch(logsDir: string): void {
  let names: string[];
  try {
    names = readdirSync(logsDir);
  } catch {
    return;
  }
  for (const n of names)
    if (
      (n.startsWith('.forker-') && n.endsWith('.part')) ||
      n.endsWith('.log.part') ||
      n.startsWith('.task-')
    )
      rmSync(path.join(logsDir, n), { force: true });
}

/** Rows of a small plan that workers may start on while the rest is written. */
const EARLY_ROWS = 128;

/**
 * Adds this run to meta `runs` ([start, end] pairs, ms) when it started an attempt: the report's
 * wall time is that of the runs that did work, so a re-run that did nothing does not rewrite it.
 */
function recordRun(queue: SqliteQueue, started: number, finished: number): void {
  const worked = queue.db.prepare('SELECT 1 FROM attempts WHERE started_at >= ? LIMIT 1').get(started);
  if (!worked) return;
  let runs: [number, number][] = [];
  try {
    const parsed = JSON.parse(queue.getMeta('runs') ?? '[]') as unknown;
    if (Array.isArray(parsed)) runs = parsed as [number, number][];
  } catch {
    // an unreadable record starts again
  }
  queue.setMeta('runs', JSON.stringify([...runs, [started, finished]]));
}

/** The folder of the job a state was made for (its stored spec's baseDir), if it says. */
function ownerFolderOf(spec: string | undefined): string | undefined {
  if (spec === undefined) return undefined;
  try {
    const dir = (JSON.parse(spec) as { baseDir?: unknown }).baseDir;
    return typeof dir === 'string' ? dir : undefined;
  } catch {
    return undefined;
  }
}

/** A digest of what defines a job's tasks; a changed spec cannot resume old state. */
export function fingerprint(job: LoadedJob): string {
  return createHash('sha256')
    .update(
      JSON.stringify({
        // what decides the tasks and their results; retries, timeouts and env may change between runs
        steps: job.steps.map(({ name, needs, map, reduce, outputs, command, module, exec, stdin }) => ({
          name,
          needs,
          map,
          reduce,
          outputs,
          command,
          module,
          exec,
          stdin,
        })),
        base: job.baseDir,
        hyperflow: job.hyperflow,
      }),
    )
    .digest('hex')
    .slice(0, 16);
}

/**
 * Checks what must be true before anything is created: inputs and modules exist, the state dir is
 * writable. Returns how many tasks can run at once (counting up to `upTo`) before any step
 * finishes, so that workers can start while the tasks are planned, and whether the first tasks'
 * plan is small (up to INSERT_BATCH), so that they may start on its first rows.
 */
async function preflight(
  job: LoadedJob,
  stateDir: string,
  upTo: number,
): Promise<{ ready: number; small: boolean }> {
  assertWritableStateDir(stateDir);
  let first = 0;
  for (const [i, st] of job.steps.entries()) {
    const field = job.spec.tasks ? 'tasks' : `steps[${i}]`;
    if (st.module !== undefined) {
      const m = path.resolve(job.baseDir, st.module);
      try {
        await access(m);
      } catch {
        throw new UsageError(
          `${field}.module`,
          `${m} does not exist`,
          'fix the path (relative to the job file)',
        );
      }
    }
    // a file map that waits for no step must find its inputs now (a glob that matches, a file that exists)
    if (st.map && st.map.outputsOf === undefined && st.needs.length === 0) {
      const it = expandFileMap(job, st);
      try {
        let next = await it.next();
        if (next.done)
          throw new UsageError(
            `${field}.map`,
            'the inputs give no task (empty file or no lines)',
            'add inputs',
          );
        // a lines map is counted by its line breaks (faster than reading it line by line);
        // the others go on through their inputs, up to the size of a small plan
        if (st.map.lines !== undefined) first += await countLinesUpTo(job, st.map.lines, INSERT_BATCH);
        else
          while (!next.done && first <= INSERT_BATCH) {
            first++;
            next = await it.next();
          }
      } finally {
        await it.return(undefined);
      }
    } else if (!st.map && !st.reduce && st.needs.length === 0 && job.format !== 'hyperflow') first++;
  }
  return { ready: Math.min(first, upTo), small: first <= INSERT_BATCH };
}

/**
 * Refuses a state file that sqlite cannot read (garbage, a file cut short at its first pages)
 * before anything is touched; damage deeper in the file is found when it is read.
 */
function assertReadableState(paths: JobPaths, name: string): void {
  if (!existsSync(paths.db)) return;
  let q: SqliteQueue | undefined;
  try {
    q = new SqliteQueue(paths.db, { readonly: true });
    q.getMeta('fingerprint');
    q.countsSync();
  } catch (err) {
    throw unreadableState(err, paths, name) ?? err;
  } finally {
    if (q?.db.open) q.db.close();
  }
}

function acquireLock(paths: JobPaths, name: string): void {
  if (existsSync(paths.lock)) {
    const pid = Number(readFileSync(paths.lock, 'utf8').trim());
    if (pid && pid !== process.pid && pidAlive(pid)) {
      throw new UsageError(
        'JOB',
        `job ${name} is already running (coordinator pid ${pid})`,
        'wait for it, or stop it first',
      );
    }
  }
  writeFileSync(paths.lock, String(process.pid));
}

/**
 * Runs a job to its end on this machine: expands its tasks into the sqlite queue (once),
 * reconciles with the store, starts local workers, watches leases and progress, and drains.
 * Safe to call again after any interruption: completed tasks never run again.
 */
export async function runJob(job: LoadedJob, opts: RunOptions, adapters: LocalAdapters): Promise<RunSummary> {
  const started = Date.now();
  const name = job.spec.name;
  const concurrency = opts.concurrency ?? job.concurrency;
  const paths = jobPaths(opts.stateDir, name);
  if (!opts.fresh) assertReadableState(paths, name);
  const { ready, small } = await preflight(job, opts.stateDir, concurrency);
  const existed = existsSync(paths.db);
  // the outermost folder this run creates (the state dir itself on a first run): bad input found
  // before any task ran removes it, so that nothing is left behind
  let created: string | undefined;
  for (let d = paths.dir; !existsSync(d) && path.dirname(d) !== d; d = path.dirname(d)) created = d;
  if (existsSync(paths.dir)) acquireLock(paths, name);
  if (opts.fresh && existed) {
    for (const f of [paths.db, `${paths.db}-wal`, `${paths.db}-shm`]) rmSync(f, { force: true });
  }
  const resumed = existed && !opts.fresh;
  let queue: SqliteQueue;
  const sidecars = [`${paths.db}-wal`, `${paths.db}-shm`].filter((f) => !existsSync(f));
  try {
    createJobDirs(paths);
    acquireLock(paths, name);
    queue = new SqliteQueue(paths.db, { maxAttempts: job.spec.retries.maxAttempts });
  } catch (err) {
    // nothing ran: a state file that cannot be read (or written) is left as it was
    rmSync(paths.lock, { force: true });
    for (const f of sidecars) rmSync(f, { force: true });
    if (!existed) rmSync(created ?? paths.dir, { recursive: true, force: true });
    if (isNoSpace(err)) throw noSpaceFailure(name, paths.dir, (err as Error).message);
    throw unreadableState(err, paths, name) ?? err;
  }
  const log = adapters.openLog(name, paths.events);
  const store = adapters.openStore(job.baseDir, name);
  let compute: WorkerTransport | undefined;
  /** Whether this run started its workers (from then on, a failure keeps the state). */
  let running = false;
  try {
    const fp = fingerprint(job);
    const old = queue.getMeta('fingerprint');
    const owner = ownerFolderOf(queue.getMeta('spec'));
    if (old !== undefined && owner !== undefined && owner !== job.baseDir) {
      // another folder's job of the same name (every `corral init` names its job my-job): its
      // state is not this job's to resume, nor to wipe with --fresh
      throw new UsageError(
        'FILE',
        `the state of job ${name} in ${path.relative(process.cwd(), opts.stateDir) || opts.stateDir} belongs to the job in ${owner}, not ${job.baseDir}`,
        `give this job its own name, or its own state folder (--state-dir ${path.join(path.relative(process.cwd(), job.baseDir) || '.', '.corral')}); nothing was changed`,
      );
    }
    if (old !== undefined && old !== fp) {
      throw new UsageError(
        'FILE',
        `the spec of job ${name} changed since its state was created`,
        `run with --fresh to plan its tasks again (committed outputs are kept and not redone), or rename the job`,
      );
    }
    queue.setMeta('fingerprint', fp);
    queue.setMeta('spec', JSON.stringify(job));
    writeFileSync(paths.jobJson, JSON.stringify(job));
    const dag = new DagState(queue, job, { stamp: true }, opts.signal);
    const logDag = (ev: DagEvents) => {
      for (const e of ev.expanded)
        log.info(
          { event: 'planned', step: e.step, tasks: e.tasks },
          `planned ${e.tasks} task(s) of step ${e.step}`,
        );
      for (const e of ev.released)
        log.info({ event: 'released', step: e.step, needs: e.needs }, `step ${e.step}: ${e.needs} finished`);
      for (const e of ev.skipped)
        log.warn({ event: 'skipped', ...e }, `step ${e.step} skipped (${e.reason})`);
      for (const e of ev.unplanned)
        log.error({ event: 'unplanned', ...e }, `step ${e.step} cannot be planned: ${e.reason}`);
    };
    const retried = resumed ? retryFailures(dag, log) : undefined;
    const orphans = resumed ? await reconcile(queue, dag, store, log) : [];
    const inputs = resumed ? await lookAtInputs(dag, opts.redoChanged === true, log) : undefined;
    queue.setMeta('started_at', String(started));
    log.info(
      { event: resumed ? 'resumed' : 'started', pid: process.pid },
      resumed ? 'job resumed' : 'job started',
    );
    const taskEvents = new TaskEventLog(queue.db, log);

    // A worker that found nothing left to claim wakes the loop below, so the end of the run (or
    // a step barrier to release) is seen at once rather than at the next tick.
    let poked = false;
    let poke: (() => void) | undefined;
    const nap = (ms: number) =>
      new Promise<void>((resolve) => {
        if (poked || opts.signal?.aborted) {
          poked = false;
          resolve();
          return;
        }
        const t = setTimeout(done, ms);
        function done() {
          clearTimeout(t);
          poke = undefined;
          poked = false;
          opts.signal?.removeEventListener('abort', done);
          resolve();
        }
        poke = done;
        opts.signal?.addEventListener('abort', done, { once: true });
      });
    const runId = randomBytes(3).toString('hex');
    compute = adapters.startWorkers({
      jobJson: paths.jobJson,
      db: paths.db,
      logsDir: paths.logs,
      storeRoot: store.root,
      workersDir: paths.workers,
      idPrefix: `w${runId}`,
      onEvent: (e) => {
        if (e.type === 'lost') {
          // its death is charged to the task it was running, the first whose output is not in
          // the store; what it held behind that goes back uncounted. An output its attempt had
          // finished but not committed yet (module tasks wait for a group commit in the worker's
          // process) is committed now, so that task does not run again.
          const reason = `worker ${e.worker} died (${e.signal ?? `exit ${e.code}`})`;
          const committed = async (p: TaskPayload, attempt: number) => {
            if (p.o === undefined) return false;
            if (await store.exists(p.o)) return true;
            const c = await store.adopt?.(p.o, attemptIdOf(attempt, e.worker)).catch(() => undefined);
            return c === 'committed' || c === 'duplicate';
          };
          queue.expireOwner(e.worker, reason, committed).then(
            (n) => {
              if (n > 0) compute?.wake();
              log.warn(
                { event: 'worker-lost', ...e, leases: n },
                `worker ${e.worker} lost; ${n} task(s) back to the queue`,
              );
            },
            // the run ended meanwhile (the state file is closed); its leases expire on resume
            (err: Error) =>
              log.warn({ event: 'worker-lost', ...e, err: err.message }, `worker ${e.worker} lost`),
          );
        } else log.info({ event: `worker-${e.type}`, ...e });
      },
      onIdle: () => {
        poked = true;
        poke?.();
      },
      commandsOnly: job.steps.every((st) => st.module === undefined),
    });
    // The workers start (Node, imports, the state file) while the tasks are planned, and claim
    // once the plan is written: claiming during a long plan only slowed both down.
    running = true;
    const before = queue.countsSync();
    const early = Math.min(concurrency, resumed ? before.pending + before.leased + before.blocked : ready);
    compute.prestart(early);
    // a small plan's first rows are committed first, and the workers start on them meanwhile
    const w = compute;
    const planned = await dag.advance(
      small && !resumed ? { rows: EARLY_ROWS, onCommitted: () => w.wake() } : undefined,
    );
    logDag(planned);
    // no process has run since a HyperFlow plan: what is there is from before it
    if (job.format === 'hyperflow' && planned.expanded.length > 0)
      reconcileOuts(queue, dag, job.baseDir, log);
    compute.wake();

    const planCounts = queue.countsSync();
    const remaining = planCounts.pending + planCounts.leased + planCounts.blocked;
    const workers = Math.max(early, Math.min(concurrency, remaining));
    if (!opts.signal?.aborted) await compute.scaleTo(workers);
    compute.discardSpare();

    const { interrupted } = await drive(
      queue,
      dag,
      {
        // workers claim from the ledger and write their ends there themselves: the coordinator
        // reaps leases of workers gone silent and wakes the others when tasks become ready
        collect: async () => {
          const now = Date.now();
          releaseOrphans(queue, orphans, now, log);
          return queue.reapExpired(now);
        },
        dispatch: async (news) => {
          if (news) w.wake();
        },
        wait: nap,
        observe: async (c) => {
          taskEvents.pass();
          return { counts: c, workers: w.running() };
        },
        check: () => {
          if (w.failure !== undefined) throw new CommandFailed(`cannot run workers: ${w.failure}`);
        },
      },
      {
        tickMs: opts.tickMs ?? 200,
        started,
        signal: opts.signal,
        onProgress: opts.onProgress,
        onDag: logDag,
        onUnreachable: (n) =>
          log.warn({ event: 'unreachable', tasks: n }, `${n} blocked task(s) can no longer run; skipped`),
      },
    );
    if (interrupted) await compute.abort();
    else await compute.drain();
    // no worker of this job runs now: what killed workers staged can go
    store.cleanStaging();
    removeForkerScratch(paths.logs);
    taskEvents.pass();
    const { status, counts, deadLetters, failedPaths, skippedSteps, missingOutputs, unplanned } =
      await outcomeOf(queue, dag, interrupted);
    queue.setMeta('status', status);
    const finishedAt = Date.now();
    queue.setMeta('finished_at', String(finishedAt));
    recordRun(queue, started, finishedAt);
    log.info({ event: 'finished', status, ...counts }, `job ${status}`);
    return {
      job: name,
      status,
      counts,
      deadLetters,
      failedPaths,
      skippedSteps,
      missingOutputs,
      unplanned,
      outputs: outputsDir(job),
      stateDir: paths.dir,
      seconds: (Date.now() - started) / 1000,
      resumed,
      ...(retried ? { retried } : {}),
      ...(inputs ? { inputs } : {}),
    };
  } catch (err) {
    if (compute) {
      await compute.abort();
      // no worker of this job runs now: what its attempts staged or began to log can go
      store.cleanStaging();
      removeForkerScratch(paths.logs);
    }
    // bad input found before any task ran leaves nothing behind; after that, the state is kept
    if (!existed && err instanceof UsageError && !workStarted(queue)) {
      await queue.close();
      rmSync(created ?? paths.dir, { recursive: true, force: true });
    }
    if (isNoSpace(err) || compute?.noSpace) throw noSpaceFailure(name, paths.dir, noSpaceCause(err));
    const unreadable = unreadableState(err, paths, name);
    if (unreadable) throw running ? new CommandFailed(unreadable.message) : unreadable;
    throw err;
  } finally {
    await queue.close();
    rmSync(paths.lock, { force: true });
  }
}

function noSpaceCause(err: unknown): string {
  return isNoSpace(err)
    ? (err as Error).message.split('\n')[0]!
    : 'a worker could not write the state file or a task log';
}

/** Whether any task of the job has started (a state file that cannot be read counts as yes). */
function workStarted(queue: SqliteQueue): boolean {
  try {
    const c = queue.countsSync();
    return c.leased + c.done + c.dead > 0;
  } catch {
    return true;
  }
}

/** A re-run of a job that left failures retries them (see DagState.retryFailed); logged. */
function retryFailures(dag: DagState, log: Logger): RunSummary['retried'] {
  const r = dag.retryFailed();
  if (r.dead + r.skipped + r.steps === 0) return undefined;
  log.info(
    { event: 'retried', ...r },
    `retrying ${r.dead} failed and ${r.skipped} skipped task(s), ${r.steps} skipped step(s) of the last run`,
  );
  return r;
}

/**
 * A re-run looks at its glob maps' inputs again: plans the files that appeared, counts those
 * that changed since their outputs were made, and with `redo` runs those again (logged).
 */
async function lookAtInputs(dag: DagState, redo: boolean, log: Logger): Promise<RunSummary['inputs']> {
  const n = await dag.planNewInputs();
  const c = await dag.changedInputs(redo);
  const waiting = n.waiting.reduce((k, w) => k + w.inputs, 0);
  if (n.added > 0) log.info({ event: 'planned-new', tasks: n.added }, `planned ${n.added} new input(s)`);
  if (waiting > 0)
    log.warn(
      { event: 'new-inputs-waiting', steps: n.waiting },
      `${waiting} new input(s) not planned: other steps read their step (run with --fresh)`,
    );
  if (c.changed > 0)
    log.info(
      { event: 'inputs-changed', changed: c.changed, redone: c.redone, steps: c.steps },
      `${c.changed} input(s) changed since their outputs were made; ${c.redone} redone`,
    );
  return { added: n.added, waiting, changed: c.changed, redone: c.redone };
}

/**
 * Makes the state agree with the store, which is the truth: tasks whose output is committed are
 * done, and leases of workers from an earlier, dead coordinator are handed back, uncharged (the
 * coordinator's death is not their tasks' fault). Returns those workers still alive: they are
 * handing their leases back themselves, or `releaseOrphans` does once they are gone.
 */
async function reconcile(
  queue: SqliteQueue,
  dag: DagState,
  store: OutputStore,
  log: Logger,
): Promise<WorkerRow[]> {
  const orphans = queue.workers().filter((w) => w.state === 'running');
  releaseOrphans(queue, orphans, Date.now(), log);
  const rows = queue.db
    .prepare("SELECT id, payload FROM tasks WHERE state IN ('pending', 'leased', 'blocked')")
    .all() as { id: number; payload: string }[];
  const found: number[] = [];
  for (const r of rows) {
    const p = JSON.parse(r.payload) as TaskPayload;
    // a redo (--redo-changed) replaces its output: the old one is not its result
    if (p.o !== undefined && p.r !== 1 && (await store.exists(p.o))) found.push(r.id);
  }
  if (found.length) {
    dag.markFound(found);
    log.info(
      { event: 'reconciled', found: found.length },
      `${found.length} task(s) already had their output`,
    );
  }
  return orphans;
}

/**
 * Hands back, uncharged, the leases of workers of an earlier coordinator: all of them once the
 * worker is gone, and those that expired meanwhile (the reaper would charge them). `orphans`
 * keeps the workers still alive.
 */
function releaseOrphans(queue: SqliteQueue, orphans: WorkerRow[], now: number, log: Logger): void {
  for (let i = orphans.length - 1; i >= 0; i--) {
    const w = orphans[i]!;
    const gone = !pidAlive(w.pid);
    const n = queue.releaseOwner(w.id, gone ? undefined : now);
    if (gone) {
      queue.workerBeat(w.id, w.pid, w.host, [], 'lost');
      orphans.splice(i, 1);
    }
    if (n) log.info({ event: 'released', worker: w.id, leases: n }, `handed back ${n} lease(s) of ${w.id}`);
  }
}

/**
 * A HyperFlow process writes its outputs (`outs`) in place: in a new plan (a first run, or
 * `--fresh` after the state was lost), a process whose outputs are all there, as files, is done
 * without running, as a map task whose output is committed. Not on resume of a planned
 * workflow: a process killed mid-run may have left partial outputs there.
 */
function reconcileOuts(queue: SqliteQueue, dag: DagState, baseDir: string, log: Logger): void {
  const rows = queue.db
    .prepare("SELECT id, payload FROM tasks WHERE state IN ('pending', 'blocked')")
    .all() as { id: number; payload: string }[];
  const isFile = (f: string) => {
    try {
      return statSync(path.resolve(baseDir, f)).isFile();
    } catch {
      return false;
    }
  };
  const found = rows
    .filter((r) => {
      const outs = (JSON.parse(r.payload) as TaskPayload).outs;
      return outs !== undefined && outs.length > 0 && outs.every(isFile);
    })
    .map((r) => r.id);
  if (found.length) {
    dag.markFound(found);
    log.info(
      { event: 'reconciled', found: found.length },
      `${found.length} process(es) already had their outputs`,
    );
  }
}

/** The folder holding a job's outputs: the part of the (last) outputs pattern before its first placeholder. */
export function outputsDir(job: LoadedJob): string | undefined {
  if (job.format === 'hyperflow') return job.baseDir;
  const pattern = [...job.steps].reverse().find((s) => s.outputs)?.outputs;
  if (!pattern) return undefined;
  const fixed = pattern.slice(0, pattern.search(/\{|$/));
  const dir = fixed.endsWith('/') ? fixed : path.posix.dirname(fixed);
  return path.resolve(job.baseDir, dir);
}
