/**
 * What the cluster side of a run (cluster-run.ts composes it, cluster-transport.ts moves its tasks)
 * uses: the session (clients, bucket store), uploading local inputs, reading the bucket's truth
 * (commit and failure markers) and riding out a store outage.
 */
import { createReadStream, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { SQSClient } from '@aws-sdk/client-sqs';
import { Upload } from '@aws-sdk/lib-storage';
import type { ClusterTarget } from '../../aws/outputs.js';
import { fingerprint, type Progress } from '../../engine/coordinator.js';
import { sleep } from '../../engine/process-utils.js';
import { jobPaths } from '../../engine/state-dir.js';
import { SqliteQueue } from '../../ledger/sqlite-queue.js';
import { doneKey } from '../../protocol/keys.js';
import type { NewTask, TaskPayload } from '../../queue/queue.js';
import type { SqsQueue } from '../../queue/sqs/sqs-queue.js';
import type { LoadedJob } from '../../spec/job.js';
import type { FailureMarker, S3Store } from '../../store/s3/s3-store.js';
import { isTransient } from '../../worker/transient.js';
import type { StepPools } from './pool-routing.js';

/** Options of a cluster run. */
export interface ClusterRunOptions {
  /** State folder (local log and downloaded results). */
  readonly stateDir: string;
  /** @default - AWS_REGION or the cluster's Region output */
  readonly region?: string;
  /** @default - CORRAL_ENDPOINT_URL, else AWS_ENDPOINT_URL */
  readonly endpointUrl?: string;
  /** Download committed outputs into the job folder at the end. @default true */
  readonly collect?: boolean;
  /** Called each tick with the progress. */
  readonly onProgress?: (p: Progress) => void;
  /** Aborting ends the run as `interrupted` (tasks stay queued for the workers). */
  readonly signal?: AbortSignal;
  /** Between progress checks. @default 1000 */
  readonly tickMs?: number;
  /** Re-enqueue missing tasks when the queue has been empty this long without progress. @default 30000 */
  readonly stallMs?: number;
  /** Progress lines. @default - none */
  readonly log?: (line: string) => void;
  /**
   * The pool of a step or a HyperFlow process, by its name (a step's own `pool` wins).
   * @default - each step's `pool`, else the job's, else the cluster's first pool
   */
  readonly pools?: Readonly<Record<string, string>>;
}

/** Bucket name (relative to the job prefix) of the manifest of enqueued tasks. */
export const MANIFEST = 'enqueued.json';

export interface Manifest {
  /** Tasks of index below this were enqueued. */
  readonly enqueued: number;
  readonly total: number;
}

/** One coordinator run against a cluster: its job, clients and the job's store in the bucket. */
export interface ClusterSession {
  readonly job: LoadedJob;
  readonly target: ClusterTarget;
  readonly opts: ClusterRunOptions;
  readonly s3: S3Client;
  readonly sqs: SQSClient;
  readonly store: S3Store;
  readonly log: (line: string) => void;
  /** When the run started (ms since the epoch). */
  readonly started: number;
  /** The pool queue of each step (pool-routing.ts). */
  readonly routes: StepPools;
}

/** The store key whose commit marks a task done: its output, else its empty done-marker. */
export function completionKey(key: string, p: TaskPayload): string {
  return p.o ?? doneKey(key);
}

/** What the bucket says: committed completion keys and dead tasks (by task key). */
export interface BucketState {
  readonly committed: Set<string>;
  readonly dead: Map<string, FailureMarker>;
}

/** Reads the commit and failure markers of a job. */
export async function bucketState(store: S3Store): Promise<BucketState> {
  const committed = new Set<string>();
  for await (const k of store.list()) committed.add(k);
  const dead = new Map<string, FailureMarker>();
  for (const f of await store.failures()) dead.set(f.key, f);
  return { committed, dead };
}

/** Runs `fn`, retrying every second while the bucket is unreachable, for up to 5 minutes. */
export async function untilReachable<T>(fn: () => Promise<T>, log: (line: string) => void): Promise<T> {
  const since = Date.now();
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransient(err) || Date.now() - since > 300_000) throw err;
      log(`cannot reach the bucket (${(err as Error).message}); retrying`);
      await sleep(1000);
    }
  }
}

/** Files moved to or from the bucket at once: each is a round trip or more, mostly waiting. */
export const TRANSFERS_IN_FLIGHT = 16;

/**
 * Runs `fn` on each of `items`, at most `limit` at a time. The first error stops it from starting
 * more; it is thrown once the running ones have ended.
 */
export async function eachLimit<T>(
  items: Iterable<T>,
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const it = items[Symbol.iterator]();
  let failed = false;
  const lane = async () => {
    for (let n = it.next(); !n.done && !failed; n = it.next()) {
      try {
        await fn(n.value);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const lanes = await Promise.allSettled(Array.from({ length: limit }, lane));
  const err = lanes.find((l) => l.status === 'rejected');
  if (err) throw err.reason;
}

/**
 * Uploads local files (relative to the job folder) below the job's `inputs/` prefix, where the
 * workers stage them from; a file already there with the same size is kept. Returns how many
 * were uploaded.
 */
export async function uploadInputs(s: ClusterSession, files: Iterable<string>): Promise<number> {
  let uploaded = 0;
  await eachLimit(files, TRANSFERS_IN_FLIGHT, async (rel) => {
    const abs = s.job.external?.[rel] ?? path.resolve(s.job.baseDir, rel);
    const key = s.store.keyOf(`inputs/${rel.split(path.sep).join('/')}`);
    const size = statSync(abs).size;
    try {
      const h = await s.s3.send(new HeadObjectCommand({ Bucket: s.target.bucket, Key: key }));
      if (h.ContentLength === size) return;
    } catch {
      // not there yet
    }
    await new Upload({
      client: s.s3,
      params: { Bucket: s.target.bucket, Key: key, Body: createReadStream(abs) },
      queueSize: 4,
    }).done();
    uploaded++;
  });
  if (uploaded)
    s.log(`uploaded ${uploaded} input file(s) to s3://${s.target.bucket}/${s.store.keyOf('inputs/')}`);
  return uploaded;
}

/** Writes the job's spec where the workers read it (paths relative to their input folder). */
export async function publishJob(s: ClusterSession): Promise<void> {
  await s.store.putText('job.json', JSON.stringify({ ...s.job, baseDir: '.', file: 'job.yaml' }));
}

/** Sends tasks to SQS in slices of 1,000. */
export async function enqueueAll(queue: SqsQueue, tasks: readonly NewTask[]): Promise<void> {
  for (let i = 0; i < tasks.length; i += 1000) await queue.enqueue(tasks.slice(i, i + 1000));
}

/**
 * Opens a job's ledger below the cluster's state folder (`<state dir>/cluster/NAME`), at the path
 * and with the tables of a local run's state file (`jobs/JOB/state.db`), so `corral dashboard`,
 * `corral report` and `/metrics` read a cluster run as they read a local one. A ledger of a
 * changed spec is started again (the bucket is the truth; the ledger is rebuilt from it).
 */
export function openLedger(stateDir: string, job: LoadedJob): { queue: SqliteQueue; existed: boolean } {
  const paths = jobPaths(stateDir, job.spec.name);
  mkdirSync(paths.dir, { recursive: true });
  const file = paths.db;
  const fp = fingerprint(job);
  let existed = existsSync(file);
  let queue = new SqliteQueue(file, { maxAttempts: job.spec.retries.maxAttempts });
  const old = queue.getMeta('fingerprint');
  if (old !== undefined && old !== fp) {
    queue.db.close();
    for (const f of [file, `${file}-wal`, `${file}-shm`]) rmSync(f, { force: true });
    queue = new SqliteQueue(file, { maxAttempts: job.spec.retries.maxAttempts });
    existed = false;
  }
  queue.setMeta('fingerprint', fp);
  queue.setMeta('spec', JSON.stringify(job));
  return { queue, existed: existed && old !== undefined };
}

/**
 * Marks a run as started in its ledger: meta `cluster` (name, region), `status` running and `started_at`, and the lock file
 * naming this process, which is how a reader knows a coordinator follows the job now.
 */
export function beginLedgerRun(s: ClusterSession, queue: SqliteQueue): void {
  const { stateDir } = s.opts;
  const job = s.job.spec.name;
  // what the report prices: the cluster (its pools' instance types are not known here)
  queue.setMeta('cluster', JSON.stringify({ name: s.target.name, region: s.opts.region ?? s.target.region }));
  queue.setMeta('status', 'running');
  const started = s.started;
  queue.setMeta('started_at', String(started));
  queue.db.prepare("DELETE FROM meta WHERE k = 'finished_at'").run();
  writeFileSync(jobPaths(stateDir, job).lock, String(process.pid));
}

/** Records how a run ended in its ledger (meta `status`, `finished_at`, `runs`) and removes the lock file. */
export function endLedgerRun(
  queue: SqliteQueue,
  stateDir: string,
  job: string,
  started: number,
  status: string,
): void {
  const finished = Date.now();
  queue.setMeta('status', status);
  queue.setMeta('finished_at', String(finished));
  let runs: unknown = [];
  try {
    runs = JSON.parse(queue.getMeta('runs') ?? '[]');
  } catch {
    runs = [];
  }
  queue.setMeta('runs', JSON.stringify([...(Array.isArray(runs) ? runs : []), [started, finished]]));
  rmSync(jobPaths(stateDir, job).lock, { force: true });
}

/** Commit markers read per tick to learn which workers commit (see {@link recordCommitters}). */
export const COMMITTERS_READ = 8;

/**
 * Records in the ledger's workers table the cluster workers that committed these completion keys
 * (the owner named in each commit marker): `started_at` is when this machine first saw one of its
 * commits, `heartbeat_at` the last. At most {@link COMMITTERS_READ} markers are read per call, a
 * sample of the keys, so knowing the workers costs a bounded number of S3 reads per tick, not one
 * per task (a worker that commits often is seen within a few ticks). Their hosts and instance
 * hours are not known here.
 */
export async function recordCommitters(
  store: S3Store,
  queue: SqliteQueue,
  keys: readonly string[],
): Promise<void> {
  const owners = new Set<string>();
  const sample =
    keys.length <= COMMITTERS_READ
      ? keys
      : Array.from({ length: COMMITTERS_READ }, () => keys[Math.floor(Math.random() * keys.length)]!);
  await eachLimit([...new Set(sample)], TRANSFERS_IN_FLIGHT, async (k) => {
    const m = await store.marker(k).catch(() => undefined);
    const owner = m?.attempt.replace(/^\d+-/, '');
    if (owner) owners.add(owner);
  });
  for (const o of owners) queue.workerBeat(o, 0, o, [], 'seen');
}
