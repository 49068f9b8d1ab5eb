/**
 * The `--cluster` coordinator. A map job: it uploads local inputs and the job spec, enqueues only
 * the tasks that are neither committed nor already enqueued, tracks completion from the bucket
 * (the truth: commit markers and failure markers), prints progress and downloads the committed
 * outputs into the job folder at the end. Its local state is only a log: a coordinator started
 * again with an empty state dir rebuilds its progress from the bucket. Workflows (steps,
 * HyperFlow) go to cluster-dag.ts, which keeps a DAG ledger beside the same bucket truth.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createS3Client, createSqsClient, resolveAwsSettings } from '../../aws/clients.js';
import type { ClusterTarget } from '../../aws/outputs.js';
import { preflightAws, usageErrorOf } from '../../aws/preflight.js';
import type { RunSummary } from '../../engine/coordinator.js';
import { expandTasks, isS3Url } from '../../engine/expand.js';
import { sleep } from '../../engine/process-utils.js';
import type { SqliteQueue } from '../../ledger/sqlite-queue.js';
import { jobPrefix } from '../../protocol/keys.js';
import { type DeadLetter, describeInput, type TaskCounts, type TaskPayload } from '../../queue/queue.js';
import { SqsQueue } from '../../queue/sqs/sqs-queue.js';
import { UsageError } from '../../spec/errors.js';
import { type LoadedJob, MAP_STEP } from '../../spec/job.js';
import { type FailureMarker, S3Store } from '../../store/s3/s3-store.js';
import {
  type BucketState,
  beginLedgerRun,
  bucketState,
  type ClusterRunOptions,
  type ClusterSession,
  completionKey,
  eachLimit,
  endLedgerRun,
  enqueueAll,
  MANIFEST,
  type Manifest,
  openLedger,
  publishJob,
  rateOf,
  recordCommitters,
  TRANSFERS_IN_FLIGHT,
  untilReachable,
  uploadInputs,
} from './cluster-common.js';
import { describeRoutes, queueOfStep, routeSteps } from './pool-routing.js';
import { s3Inputs } from './s3-inputs.js';

export type { ClusterRunOptions, Manifest } from './cluster-common.js';
export { MANIFEST } from './cluster-common.js';

/** Runs a job on a cluster until every task is committed, dead or skipped. */
export async function runClusterJob(
  job: LoadedJob,
  target: ClusterTarget,
  opts: ClusterRunOptions,
): Promise<RunSummary> {
  const started = Date.now();
  const log = opts.log ?? (() => {});
  const settings = resolveAwsSettings({
    region: opts.region ?? target.region,
    endpointUrl: opts.endpointUrl,
  });
  const s3 = createS3Client(settings);
  const sqs = createSqsClient(settings);
  try {
    // issue 20: each step's pool queue, decided before anything is sent (an unknown pool is exit 2)
    const routes = routeSteps(job, target, opts.pools);
    if (target.pools?.length) for (const line of describeRoutes(routes)) log(`job ${job.spec.name}: ${line}`);
    await preflightAws({
      s3,
      sqs,
      bucket: target.bucket,
      queueUrl: target.queueUrl,
      endpoint: settings.endpointUrl,
    });
    const store = new S3Store({
      client: s3,
      bucket: target.bucket,
      prefix: jobPrefix(job.spec.name),
      stagingDir: path.join(opts.stateDir, 'staging'),
    });
    const session: ClusterSession = { job, target, opts, s3, sqs, store, log, started, routes };
    if (isPlainMap(job)) return await runMap(session);
    const { runClusterDag } = await import('./cluster-dag.js');
    return await runClusterDag(session);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw usageErrorOf(err, { field: 'bucket', name: target.bucket, endpoint: settings.endpointUrl }) ?? err;
  } finally {
    s3.destroy();
    sqs.destroy();
  }
}

/** A job of one map step over files, lines or chunks (no workflow): the lean path, no ledger. */
function isPlainMap(job: LoadedJob): boolean {
  const [step, ...more] = job.steps;
  return (
    job.format !== 'hyperflow' &&
    step !== undefined &&
    more.length === 0 &&
    !!step.map &&
    step.map.outputsOf === undefined
  );
}

/**
 * A map job: every task is planned up front and its index is its key, so a manifest of how many
 * were enqueued is all a restarted coordinator needs besides the bucket's markers.
 */
async function runMap(s: ClusterSession): Promise<RunSummary> {
  const { job, target, opts, s3, store, started } = s;
  const name = job.spec.name;
  const step = job.steps[0]!;
  const pool = queueOfStep(s.routes, target, step.name);
  const queue = new SqsQueue({
    client: s.sqs,
    queueUrl: pool.queueUrl,
    deadLetterQueueUrl: pool.deadLetterQueueUrl,
    job: name,
    maxAttempts: step.retries.maxAttempts,
  });
  const completion = (p: TaskPayload) => completionKey(String(p.i), p);

  // Plan: every task, in order (the payloads are small; inputs are listed, not read).
  const tasks: TaskPayload[] = [];
  for await (const p of expandTasks(job, { s3: s3Inputs(s3) })) tasks.push(p);
  if (tasks.length === 0) throw new UsageError('tasks.map', 'the inputs give no task', 'add inputs');

  // Inputs and the spec go to the bucket. s3:// inputs are already in S3: the workers read them
  // from their own bucket.
  const files = new Set<string>();
  for (const p of tasks) if (p.p !== undefined && !isS3Url(p.p)) files.add(p.p);
  if (step.module !== undefined)
    files.add(path.relative(job.baseDir, path.resolve(job.baseDir, step.module)));
  await uploadInputs(s, files);
  await publishJob(s);

  // What the bucket says is done; what an earlier coordinator enqueued.
  const { committed, dead } = await bucketState(store);
  const manifestText = await store.getText(MANIFEST);
  const manifest: Manifest | undefined = manifestText ? (JSON.parse(manifestText) as Manifest) : undefined;
  const resumed = committed.size > 0 || manifest !== undefined;
  const already = manifest && manifest.total === tasks.length ? manifest.enqueued : 0;
  const missing = (from: number) =>
    tasks.slice(from).filter((p) => !committed.has(completion(p)) && !dead.has(String(p.i)));
  const toEnqueue = missing(already);
  // The ledger the dashboard, report and /metrics read: every task, marked as the bucket says.
  const ledger = openLedger(opts.stateDir, job);
  const have = new Set(ledger.queue.db.prepare('SELECT key FROM tasks').pluck().all() as string[]);
  ledger.queue.enqueueSync(
    tasks
      .filter((p) => !have.has(String(p.i)))
      .map((p) => ({ key: String(p.i), step: MAP_STEP, payload: p })),
    step.retries.maxAttempts,
  );
  beginLedgerRun(s, ledger.queue);
  let ended = 'failed';
  try {
    return await followMap(s, queue, tasks, ledger.queue, toEnqueue, {
      resumed,
      committed,
      dead,
      setEnded: (st) => {
        ended = st;
      },
    });
  } finally {
    endLedgerRun(ledger.queue, opts.stateDir, name, started, ended);
    await ledger.queue.close();
  }
}

/** Enqueues what is missing and follows the bucket until every task of a map job is committed or dead. */
async function followMap(
  s: ClusterSession,
  queue: SqsQueue,
  tasks: readonly TaskPayload[],
  ledger: SqliteQueue,
  toEnqueue: readonly TaskPayload[],
  o: {
    resumed: boolean;
    committed: Set<string>;
    dead: Map<string, FailureMarker>;
    setEnded: (status: string) => void;
  },
): Promise<RunSummary> {
  const { job, opts, store, log, started } = s;
  const { resumed, committed, dead } = o;
  const name = job.spec.name;
  const step = job.steps[0]!;
  const completion = (p: TaskPayload) => completionKey(String(p.i), p);
  const mark = ledgerRecorder(ledger, tasks);
  const record = async (c: Set<string>, d: Map<string, FailureMarker>) =>
    recordCommitters(store, ledger, mark(c, d));
  await record(committed, dead);
  await enqueue(queue, toEnqueue);
  await store.putText(
    MANIFEST,
    JSON.stringify({ enqueued: tasks.length, total: tasks.length } satisfies Manifest),
  );
  log(
    `job ${name}: ${tasks.length} task(s), ${committed.size} already committed, ${toEnqueue.length} enqueued${resumed ? ' (resumed from the bucket)' : ''}`,
  );

  // Progress from the bucket until every task is committed or dead.
  const tick = opts.tickMs ?? 1000;
  const stallMs = opts.stallMs ?? 30_000;
  const window: Array<[number, number]> = [];
  let counts = countsOf(tasks, committed, dead);
  let lastProgress = Date.now();
  let interrupted = false;
  let unreachableSince: number | undefined;
  while (counts.done + counts.dead < counts.total) {
    if (opts.signal?.aborted) {
      interrupted = true;
      break;
    }
    await sleep(tick, opts.signal);
    let st: BucketState;
    try {
      st = await bucketState(store);
      unreachableSince = undefined;
    } catch (err) {
      // A store outage: keep polling (workers retry too) for up to 5 minutes, then fail.
      if (unreachableSince === undefined)
        log(`job ${name}: cannot read the bucket (${(err as Error).message}); retrying`);
      unreachableSince ??= Date.now();
      if (Date.now() - unreachableSince > 300_000) throw err;
      continue;
    }
    const before = counts.done + counts.dead;
    counts = countsOf(tasks, st.committed, st.dead);
    await record(st.committed, st.dead);
    const q = await queue.counts().catch(() => undefined);
    if (q)
      Object.assign(counts, {
        pending: Math.min(q.pending, counts.pending),
        leased: Math.min(q.leased, counts.pending),
      });
    const now = Date.now();
    const finished = counts.done + counts.dead;
    if (finished > before) lastProgress = now;
    else if (q && q.pending + q.leased === 0 && now - lastProgress > stallMs) {
      // Messages lost (retention, purge): enqueue what is still missing.
      const again = tasks.filter((p) => !st.committed.has(completion(p)) && !st.dead.has(String(p.i)));
      await enqueue(queue, again);
      log(`job ${name}: queue empty with ${again.length} task(s) missing; enqueued them again`);
      lastProgress = now;
    }
    const rate = rateOf(window, now, finished);
    opts.onProgress?.({ ...counts, workers: 0, rate, elapsed: (now - started) / 1000 });
  }

  const final = await untilReachable(() => bucketState(store), log);
  await record(final.committed, final.dead);
  if (!interrupted && opts.collect !== false) {
    let n = 0;
    const outputs = tasks.flatMap((p) =>
      p.o !== undefined && final.committed.has(p.o) && !existsSync(path.resolve(job.baseDir, p.o))
        ? [p.o]
        : [],
    );
    await eachLimit(outputs, TRANSFERS_IN_FLIGHT, async (o) => {
      if (await untilReachable(() => store.download(o, path.resolve(job.baseDir, o)), log)) n++;
    });
    if (n) log(`downloaded ${n} output(s) into ${job.baseDir}`);
  }
  const deadLetters: DeadLetter[] = [...final.dead.values()].map((f) => ({
    key: f.key,
    step: MAP_STEP,
    index: Number(f.key),
    attempts: f.attempts,
    error: f.error,
    input: tasks[Number(f.key)] ? describeInput(tasks[Number(f.key)]!) : undefined,
  }));
  await queue.close();
  const status = interrupted ? 'interrupted' : counts.dead > 0 ? 'failed' : 'succeeded';
  o.setEnded(status);
  return {
    job: name,
    status,
    counts,
    deadLetters,
    failedPaths: [],
    skippedSteps: [],
    missingOutputs: [],
    outputs: step.outputs
      ? path.resolve(job.baseDir, step.outputs.slice(0, step.outputs.search(/\{|$/)).replace(/[^/]*$/, ''))
      : undefined,
    stateDir: opts.stateDir,
    seconds: (Date.now() - started) / 1000,
    resumed,
  };
}

/**
 * Marks the ledger's tasks of a map job as the bucket says: committed ones done, those with a
 * failure marker dead (each once).
 */
function ledgerRecorder(
  ledger: SqliteQueue,
  tasks: readonly TaskPayload[],
): (committed: Set<string>, dead: Map<string, FailureMarker>) => string[] {
  const db = ledger.db;
  const done = db.prepare(
    "UPDATE tasks SET state = 'done', owner = NULL, lease_expires = NULL, finished_at = ?, outcome = 'committed' WHERE key = ? AND state <> 'done'",
  );
  const failed = db.prepare(
    "UPDATE tasks SET state = 'dead', owner = NULL, lease_expires = NULL, finished_at = ?, last_error = ?, attempts = ? WHERE key = ? AND state NOT IN ('done', 'dead')",
  );
  const seen = new Set<string>();
  return (committed, dead) => {
    const now = Date.now();
    const fresh: string[] = [];
    db.transaction(() => {
      for (const p of tasks) {
        const key = String(p.i);
        if (seen.has(key)) continue;
        if (committed.has(completionKey(key, p))) {
          done.run(now, key);
          seen.add(key);
          fresh.push(completionKey(key, p));
        } else {
          const f = dead.get(key);
          if (f) {
            failed.run(now, f.error, f.attempts, key);
            seen.add(key);
          }
        }
      }
    })();
    return fresh;
  };
}

function enqueue(queue: SqsQueue, payloads: readonly TaskPayload[]): Promise<void> {
  return enqueueAll(
    queue,
    payloads.map((p) => ({ key: String(p.i), step: MAP_STEP, payload: p })),
  );
}

function countsOf(
  tasks: readonly TaskPayload[],
  committed: Set<string>,
  dead: Map<string, unknown>,
): TaskCounts {
  let done = 0;
  let failed = 0;
  for (const p of tasks) {
    if (committed.has(completionKey(String(p.i), p))) done++;
    else if (dead.has(String(p.i))) failed++;
  }
  const pending = tasks.length - done - failed;
  const c = { pending, leased: 0, blocked: 0, done, dead: failed, skipped: 0, total: tasks.length };
  return c;
}
