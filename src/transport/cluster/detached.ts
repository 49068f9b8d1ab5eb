/**
 * Detached cluster runs (issue 23): `corral run FILE --cluster NAME --detach` submits a job and
 * returns; the coordinator's duty is then taken by whichever cluster worker holds the job's lease
 * object in the bucket. No always-on machine is needed, and the bucket stays the truth:
 *
 * - `detached/JOB.json` (bucket root): a detached job waiting for or under a coordinator (its
 *   target and pool routes). One LIST of `detached/` tells a worker which jobs need one.
 * - `jobs/JOB/coordinator.lease`: who coordinates. Created with a conditional PutObject
 *   (`If-None-Match: *`), renewed every lease/3 with `If-Match` on its ETag, and taken over
 *   (`If-Match` on the stale ETag) by a worker that has seen the same ETag for a whole lease
 *   (its own clock: no clock of two hosts is compared). A holder that cannot renew for a lease
 *   stops coordinating, so two holders never coordinate at once for longer than one request.
 * - `jobs/JOB/cancel.json`: `corral cancel`; the coordinator ends at its next renewal.
 * - `jobs/JOB/detached-result.json`: how the detached run ended (status and counts).
 *
 * The coordinator itself is `runClusterJob` with a scratch state folder and a scratch job folder
 * (the job's inputs downloaded from the bucket, outputs downloaded as they commit, so a step that
 * globs earlier outputs plans as on the submitter's machine). It resumes from the bucket like any
 * coordinator started with an empty state folder (the `forwarded/` records): nothing committed
 * runs again, nothing sent is sent twice.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { createS3Client, resolveAwsSettings } from '../../aws/clients.js';
import type { ClusterTarget } from '../../aws/outputs.js';
import type { RunSummary } from '../../engine/coordinator.js';
import { sleep } from '../../engine/process-utils.js';
import { jobPaths } from '../../engine/state-dir.js';
import { openStateDb } from '../../ledger/sqlite-queue.js';
import { CANCEL_RECORD, DETACHED_PREFIX, jobPrefix } from '../../protocol/keys.js';
import type { TaskCounts } from '../../queue/queue.js';
import { UsageError } from '../../spec/errors.js';
import type { LoadedJob } from '../../spec/job.js';
import { S3Store } from '../../store/s3/s3-store.js';
import type { WorkerDuty } from '../../worker/cluster-main.js';
import { bucketState } from './cluster-common.js';
import { type ClusterRunOptions, runClusterJob } from './cluster-run.js';

export { DETACHED_PREFIX };
/** The lease object of a job's coordinator (below the job prefix). */
export const LEASE = 'coordinator.lease';
/** The cancel record of a job (below the job prefix). */
export const CANCEL = CANCEL_RECORD;
/** How a detached run ended (below the job prefix). */
export const RESULT = 'detached-result.json';
/**
 * A copy of the coordinating worker's ledger (below the job prefix), the file `report` and the
 * dashboard read: uploaded every 3 lease renewals and when the run ends; `corral attach`
 * downloads it into this machine's state folder.
 */
export const LEDGER_COPY = 'ledger.db';

/** How long a coordinator lease lasts without renewal. @default 30000 */
export const LEASE_MS = 30_000;
/** Between two looks of an idle worker at `detached/` (one LIST request). @default 10000 */
export const CHECK_MS = 10_000;

/** What `detached/JOB.json` holds. */
export interface DetachedRecord {
  readonly job: string;
  /** The cluster as the submitter resolved it (queues of its pools). */
  readonly target: ClusterTarget;
  /** `STEP=POOL` routes of the run. @default - each step's pool */
  readonly pools?: Readonly<Record<string, string>>;
  readonly requestedAt: string;
}

/** What the lease object holds (its ETag is what is compared, not this). */
interface LeaseBody {
  readonly owner: string;
  readonly renewedAt: string;
  readonly seq: number;
  /** The holder ended: any worker may take the lease over at once. */
  readonly released?: boolean;
}

/** What `cancel.json` holds. */
export interface CancelRecord {
  readonly at: string;
  /** Workers drop the job's queued tasks instead of running them. */
  readonly abandon: boolean;
}

/** What `detached-result.json` holds. */
export interface DetachedResult {
  readonly status: string;
  readonly counts?: TaskCounts;
  readonly error?: string;
  readonly finishedAt: string;
  /** The workers that held the coordinator's lease, in order. */
  readonly coordinator: string;
}

const isStatus = (err: unknown, ...codes: number[]) =>
  codes.includes((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? 0);

async function getJson<T>(
  s3: S3Client,
  bucket: string,
  key: string,
): Promise<{ body: T; etag: string } | undefined> {
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return { body: JSON.parse(await r.Body!.transformToString()) as T, etag: r.ETag ?? '' };
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
}

async function putJson(s3: S3Client, bucket: string, key: string, body: unknown): Promise<void> {
  await s3.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: JSON.stringify(body),
      ContentType: 'application/json',
    }),
  );
}

/**
 * Writes the lease object on a condition: `create` (If-None-Match: *) or on the ETag it must
 * still have (If-Match). Returns the new ETag, or undefined when the condition did not hold.
 */
async function putLease(
  s3: S3Client,
  bucket: string,
  job: string,
  body: LeaseBody,
  on: 'create' | { etag: string },
): Promise<string | undefined> {
  try {
    const r = await s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: `${jobPrefix(job)}${LEASE}`,
        Body: JSON.stringify(body),
        ContentType: 'application/json',
        ...(on === 'create' ? { IfNoneMatch: '*' } : { IfMatch: on.etag }),
      }),
    );
    return r.ETag ?? '';
  } catch (err) {
    // 412: another writer won; 409: a concurrent conditional write; 404: If-Match on a gone object
    if (isStatus(err, 412, 409, 404)) return undefined;
    throw err;
  }
}

/** The detached record of a job, if it waits for or runs under a coordinator. */
export async function detachedRecord(
  s3: S3Client,
  bucket: string,
  job: string,
): Promise<DetachedRecord | undefined> {
  return (await getJson<DetachedRecord>(s3, bucket, `${DETACHED_PREFIX}${job}.json`))?.body;
}

/** How the last detached run of a job ended, if one did. */
export async function detachedResult(
  s3: S3Client,
  bucket: string,
  job: string,
): Promise<DetachedResult | undefined> {
  return (await getJson<DetachedResult>(s3, bucket, `${jobPrefix(job)}${RESULT}`))?.body;
}

/** Removes a job's cancel record (a new run of it starts). */
export async function clearCancel(s3: S3Client, bucket: string, job: string): Promise<void> {
  await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${jobPrefix(job)}${CANCEL}` }));
}

/** What `submitDetached` did. */
export interface DetachedSubmission {
  readonly job: string;
  /** `detached`: submitted; `already-detached`: a detached run of it goes on (nothing sent); else the run ended while submitting. */
  readonly status: 'detached' | 'already-detached' | RunSummary['status'];
  readonly counts?: TaskCounts;
}

/**
 * `corral run FILE --cluster NAME --detach`: uploads the inputs and the job, sends the tasks that
 * can start (what a coordinator does before its loop, so the pools scale up on them), writes the
 * detached record and returns. A job with a detached run going on is not submitted again.
 */
export async function submitDetached(
  job: LoadedJob,
  target: ClusterTarget,
  opts: ClusterRunOptions,
): Promise<DetachedSubmission> {
  const name = job.spec.name;
  const settings = resolveAwsSettings({
    region: opts.region ?? target.region,
    endpointUrl: opts.endpointUrl,
  });
  const s3 = createS3Client(settings);
  try {
    if (await detachedRecord(s3, target.bucket, name).catch(() => undefined))
      return { job: name, status: 'already-detached' };
    await clearCancel(s3, target.bucket, name).catch(() => {});
    // one pass of the coordinator: upload, plan, send what can start; it stops after its first tick
    const ac = new AbortController();
    const summary = await runClusterJob(job, target, {
      ...opts,
      collect: false,
      signal: ac.signal,
      onProgress: () => ac.abort(),
    });
    if (summary.status !== 'interrupted')
      return { job: name, status: summary.status, counts: summary.counts };
    await s3.send(new DeleteObjectCommand({ Bucket: target.bucket, Key: `${jobPrefix(name)}${RESULT}` }));
    await putJson(s3, target.bucket, `${DETACHED_PREFIX}${name}.json`, {
      job: name,
      target,
      ...(opts.pools && Object.keys(opts.pools).length ? { pools: opts.pools } : {}),
      requestedAt: new Date().toISOString(),
    } satisfies DetachedRecord);
    return { job: name, status: 'detached', counts: summary.counts };
  } finally {
    s3.destroy();
  }
}

/** Progress of a job from the bucket: committed and failed tasks, and the planned total. */
export async function bucketProgress(
  s3: S3Client,
  bucket: string,
  job: string,
): Promise<{ done: number; failed: number; total?: number }> {
  const store = new S3Store({ client: s3, bucket, prefix: jobPrefix(job), stagingDir: '.' });
  const st = await bucketState(store);
  const manifest = await store.getText('enqueued.json');
  const total = manifest ? (JSON.parse(manifest) as { total: number }).total : undefined;
  // a HyperFlow process that writes several files has several markers: never more than the total
  const done = st.committed.size;
  return { done: total !== undefined ? Math.min(done, total) : done, failed: st.dead.size, total };
}

/**
 * Follows a detached run until no coordinator has it (its record is gone); returns how it ended.
 * Sends nothing: the coordinator in the cluster does.
 */
export async function followDetached(
  s3: S3Client,
  bucket: string,
  job: string,
  o: {
    tickMs?: number;
    signal?: AbortSignal;
    onProgress?: (p: { done: number; failed: number; total?: number }) => void | Promise<void>;
  },
): Promise<DetachedResult | 'interrupted'> {
  const tick = o.tickMs ?? 2000;
  for (;;) {
    if (o.signal?.aborted) return 'interrupted';
    if (!(await detachedRecord(s3, bucket, job))) break;
    await o.onProgress?.(await bucketProgress(s3, bucket, job));
    await sleep(tick, o.signal);
  }
  return (
    (await detachedResult(s3, bucket, job)) ?? {
      status: 'unknown',
      finishedAt: new Date().toISOString(),
      coordinator: '',
    }
  );
}

/** Options of the coordinator duty of a cluster worker. */
export interface CoordinatorDutyOptions {
  readonly bucket: string;
  /** @default - AWS_REGION */
  readonly region?: string;
  /** @default - CORRAL_ENDPOINT_URL, else AWS_ENDPOINT_URL */
  readonly endpointUrl?: string;
  /** A lease not renewed this long may be taken over. @default 30000 (LEASE_MS; env CORRAL_COORDINATOR_LEASE_MS) */
  readonly leaseMs?: number;
  /** Between looks at `detached/` while holding no lease. @default 10000 (CHECK_MS; env CORRAL_COORDINATOR_CHECK_MS) */
  readonly checkMs?: number;
  /** The coordinator's tick. @default 1000 */
  readonly tickMs?: number;
}

interface Held {
  readonly job: string;
  /** The coordinator's ledger (in its scratch state folder). */
  ledger?: string;
  renewals: number;
  etag: string;
  seq: number;
  /** When the lease was last written by this holder (this host's clock). */
  renewedAt: number;
  /** Why the coordinator was stopped early. */
  stop?: 'lost' | 'cancel' | 'drain';
  /** The coordinator returned: its end is being recorded; no renewal races the release. */
  ending?: boolean;
  readonly ac: AbortController;
  done?: Promise<void>;
}

/**
 * The coordinator duty of a cluster worker: while no lease is held, a look at `detached/` every
 * `checkMs` (one LIST, plus one GET per detached job); a job whose lease is absent, released or
 * unchanged for `leaseMs` is taken with a conditional write and coordinated in this process,
 * renewing the lease every `leaseMs / 3`. One job at a time per worker.
 */
export class CoordinatorDuty implements WorkerDuty {
  private held: Held | undefined;
  private owner = '';
  private dir = '';
  private log: (line: string) => void = () => {};
  /** The lease ETag last seen of each job, and since when (this host's clock). */
  private readonly seen = new Map<string, { etag: string; since: number }>();
  private readonly leaseMs: number;
  private readonly checkMs: number;

  constructor(private readonly o: CoordinatorDutyOptions) {
    this.leaseMs = o.leaseMs ?? (Number(process.env.CORRAL_COORDINATOR_LEASE_MS) || LEASE_MS);
    this.checkMs = o.checkMs ?? (Number(process.env.CORRAL_COORDINATOR_CHECK_MS) || CHECK_MS);
  }

  /** The job whose coordinator this worker runs now, if any (the worker stays up meanwhile). */
  get holding(): string | undefined {
    return this.held?.job;
  }

  /** Runs the duty until `signal` aborts; then stops the coordinator and releases its lease. */
  async run(
    signal: AbortSignal,
    worker: { id: string; dir: string; log: (line: string) => void },
  ): Promise<void> {
    this.owner = worker.id;
    this.dir = worker.dir;
    this.log = worker.log;
    const settings = resolveAwsSettings({ region: this.o.region, endpointUrl: this.o.endpointUrl });
    const s3 = createS3Client(settings);
    let failing = false;
    try {
      while (!signal.aborted) {
        try {
          if (this.held) await this.renew(s3);
          else await this.scan(s3);
          failing = false;
        } catch (err) {
          if (!failing) this.log(`coordinator duty: ${(err as Error).message}; trying again`);
          failing = true;
          const h = this.held;
          // cannot renew for a whole lease: another worker may take it over, so stop first
          if (h && !h.stop && Date.now() - h.renewedAt > this.leaseMs * 0.8) this.stopHeld('lost');
        }
        await sleep(this.held ? Math.max(50, Math.floor(this.leaseMs / 3)) : this.checkMs, signal);
      }
    } finally {
      const h = this.held;
      if (h) {
        if (!h.stop) this.stopHeld('drain');
        await h.done;
      }
      s3.destroy();
    }
  }

  private stopHeld(why: NonNullable<Held['stop']>): void {
    const h = this.held;
    if (!h || h.stop) return;
    h.stop = why;
    h.ac.abort();
  }

  /** Looks for a detached job without a live coordinator and takes its lease. */
  private async scan(s3: S3Client): Promise<void> {
    const { bucket } = this.o;
    const r = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: DETACHED_PREFIX, MaxKeys: 100 }),
    );
    const jobs = (r.Contents ?? []).flatMap((c) =>
      c.Key?.endsWith('.json') ? [c.Key.slice(DETACHED_PREFIX.length, -'.json'.length)] : [],
    );
    for (const k of [...this.seen.keys()]) if (!jobs.includes(k)) this.seen.delete(k);
    for (const job of jobs) {
      const lease = await getJson<LeaseBody>(s3, bucket, `${jobPrefix(job)}${LEASE}`);
      let etag: string | undefined;
      const body = (seq: number): LeaseBody => ({
        owner: this.owner,
        renewedAt: new Date().toISOString(),
        seq,
      });
      if (!lease) etag = await putLease(s3, bucket, job, body(1), 'create');
      else {
        const now = Date.now();
        const s = this.seen.get(job);
        if (!s || s.etag !== lease.etag) this.seen.set(job, { etag: lease.etag, since: now });
        const stale =
          lease.body.released === true || (s?.etag === lease.etag && now - s.since >= this.leaseMs);
        if (!stale) continue;
        etag = await putLease(s3, bucket, job, body(lease.body.seq + 1), { etag: lease.etag });
        if (etag !== undefined)
          this.log(
            `coordinator duty: took over job ${job} from ${lease.body.owner}${lease.body.released ? ' (released)' : ` (not renewed for ${this.leaseMs} ms)`}`,
          );
      }
      if (etag === undefined) continue; // another worker won
      const record = await detachedRecord(s3, bucket, job);
      if (!record) {
        // finished meanwhile: hand the lease back
        await putLease(
          s3,
          bucket,
          job,
          { ...body(lease ? lease.body.seq + 2 : 2), released: true },
          { etag },
        );
        continue;
      }
      this.seen.delete(job);
      const held: Held = {
        job,
        etag,
        seq: lease ? lease.body.seq + 1 : 1,
        renewedAt: Date.now(),
        renewals: 0,
        ac: new AbortController(),
      };
      this.held = held;
      this.log(`coordinator duty: coordinating detached job ${job}`);
      held.done = this.coordinate(s3, held, record).finally(() => {
        if (this.held === held) this.held = undefined;
      });
      return;
    }
  }

  /** Renews the held lease (If-Match) and looks for a cancel record. */
  private async renew(s3: S3Client): Promise<void> {
    const h = this.held;
    if (!h || h.stop || h.ending) return;
    const etag = await putLease(
      s3,
      this.o.bucket,
      h.job,
      { owner: this.owner, renewedAt: new Date().toISOString(), seq: h.seq + 1 },
      { etag: h.etag },
    );
    if (etag === undefined) {
      this.log(`coordinator duty: lost the lease of job ${h.job}; stopping its coordinator`);
      this.stopHeld('lost');
      return;
    }
    h.etag = etag;
    h.seq++;
    h.renewedAt = Date.now();
    if (++h.renewals % 3 === 0 && h.ledger) await uploadLedger(s3, this.o.bucket, h.job, h.ledger);
    if (await getJson<CancelRecord>(s3, this.o.bucket, `${jobPrefix(h.job)}${CANCEL}`)) {
      this.log(`coordinator duty: job ${h.job} cancelled; stopping its coordinator`);
      this.stopHeld('cancel');
    }
  }

  /** Runs the coordinator of a detached job in this process, then records how it ended. */
  private async coordinate(s3: S3Client, h: Held, record: DetachedRecord): Promise<void> {
    const { bucket } = this.o;
    const dir = path.join(this.dir, `${h.job}-${randomBytes(3).toString('hex')}`);
    const jobDir = path.join(dir, 'job');
    h.ledger = jobPaths(path.join(dir, 'state'), h.job).db;
    let result: Omit<DetachedResult, 'finishedAt' | 'coordinator'> | undefined;
    try {
      const job = await scratchJob(s3, bucket, h.job, jobDir);
      const summary = await runClusterJob(job, record.target, {
        stateDir: path.join(dir, 'state'),
        region: this.o.region,
        endpointUrl: this.o.endpointUrl,
        signal: h.ac.signal,
        tickMs: this.o.tickMs,
        pools: record.pools,
        // a workflow's outputs are downloaded as they commit (later steps plan from them); a map's are not needed here
        collect: !isPlainMap(job),
        log: (l) => this.log(`coordinator of ${h.job}: ${l}`),
      });
      if (summary.status !== 'interrupted') result = { status: summary.status, counts: summary.counts };
      else if (h.stop === 'cancel') result = { status: 'cancelled', counts: summary.counts };
    } catch (err) {
      this.log(`coordinator of ${h.job}: ${(err as Error).message}`);
      // bad input never becomes good: the run ends; anything else is tried again (this or another worker)
      if (err instanceof UsageError) result = { status: 'failed', error: (err as Error).message };
    } finally {
      h.ending = true;
      if (h.stop !== 'lost') await uploadLedger(s3, bucket, h.job, h.ledger);
      h.ledger = undefined;
      await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
    }
    if (h.stop === 'lost') return; // another worker holds it now
    try {
      if (result) {
        await putJson(s3, bucket, `${jobPrefix(h.job)}${RESULT}`, {
          ...result,
          finishedAt: new Date().toISOString(),
          coordinator: this.owner,
        } satisfies DetachedResult);
        await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${DETACHED_PREFIX}${h.job}.json` }));
        this.log(`coordinator duty: detached job ${h.job} ended (${result.status})`);
      }
      await putLease(
        s3,
        bucket,
        h.job,
        { owner: this.owner, renewedAt: new Date().toISOString(), seq: h.seq + 1, released: true },
        { etag: h.etag },
      );
    } catch (err) {
      this.log(`coordinator duty: ${(err as Error).message} (the lease expires on its own)`);
    }
  }
}

/**
 * Uploads a consistent copy of a coordinator's ledger (VACUUM INTO over a read-only connection,
 * so the running coordinator is not disturbed). A failure only skips this copy.
 */
async function uploadLedger(
  s3: S3Client,
  bucket: string,
  job: string,
  file: string | undefined,
): Promise<void> {
  if (!file || !existsSync(file)) return;
  const copy = `${file}.copy-${randomBytes(3).toString('hex')}`;
  try {
    const db = openStateDb(file, { readonly: true });
    try {
      db.exec(`VACUUM INTO '${copy.replaceAll("'", "''")}'`);
    } finally {
      db.close();
    }
    await s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: `${jobPrefix(job)}${LEDGER_COPY}`,
        Body: await fsp.readFile(copy),
      }),
    );
  } catch {
    // the next renewal tries again
  } finally {
    await fsp.rm(copy, { force: true }).catch(() => {});
  }
}

/**
 * Downloads the copy of a detached run's ledger into a state folder (`jobs/JOB/state.db`), where
 * `report` and the dashboard read it; false when the bucket has none.
 */
export async function downloadLedger(
  s3: S3Client,
  bucket: string,
  job: string,
  stateDir: string,
): Promise<boolean> {
  let body: Uint8Array;
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${jobPrefix(job)}${LEDGER_COPY}` }));
    body = await r.Body!.transformToByteArray();
  } catch (err) {
    if (isStatus(err, 404)) return false;
    throw err;
  }
  const paths = jobPaths(stateDir, job);
  await fsp.mkdir(paths.dir, { recursive: true });
  const tmp = `${paths.db}.part-${randomBytes(3).toString('hex')}`;
  await fsp.writeFile(tmp, body);
  for (const f of [`${paths.db}-wal`, `${paths.db}-shm`]) await fsp.rm(f, { force: true });
  await fsp.rename(tmp, paths.db);
  return true;
}

/** A job of one map step over files, lines or chunks (cluster-run.ts plans it without a ledger). */
function isPlainMap(job: LoadedJob): boolean {
  const [step, ...more] = job.steps;
  return job.format !== 'hyperflow' && !!step?.map && more.length === 0 && step.map.outputsOf === undefined;
}

/** The job's spec from the bucket, in a scratch job folder holding its uploaded inputs. */
async function scratchJob(s3: S3Client, bucket: string, job: string, jobDir: string): Promise<LoadedJob> {
  const store = new S3Store({
    client: s3,
    bucket,
    prefix: jobPrefix(job),
    stagingDir: path.join(jobDir, '..'),
  });
  const text = await store.getText('job.json');
  if (!text) throw new Error(`job ${job} has no spec in s3://${bucket}/${jobPrefix(job)}job.json`);
  const spec = JSON.parse(text) as LoadedJob;
  await fsp.mkdir(jobDir, { recursive: true });
  const prefix = `${jobPrefix(job)}inputs/`;
  for await (const rel of store.keysBelow('inputs/')) {
    const dest = path.join(jobDir, ...rel.split('/'));
    if (path.relative(jobDir, dest).startsWith('..')) continue;
    await fsp.mkdir(path.dirname(dest), { recursive: true });
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}${rel}` }));
    await pipeline(r.Body as NodeJS.ReadableStream, createWriteStream(dest));
  }
  // files named outside the job folder were uploaded below inputs/ too: read them from there
  return { ...spec, baseDir: jobDir, file: path.join(jobDir, 'job.yaml'), external: undefined };
}

/** What `cancelDetached` found and did. */
export interface CancelOutcome {
  readonly job: string;
  readonly done: number;
  readonly failed: number;
  /** Planned tasks neither committed nor failed (`total - done - failed`); undefined when unknown. */
  readonly left?: number;
  readonly total?: number;
  readonly abandon: boolean;
}

/**
 * `corral cancel JOB --cluster NAME`: writes the cancel record, then waits until the detached run
 * has no coordinator: its holder ends at its next renewal, or, when no live worker holds the
 * lease, this process takes it (the same conditional writes) and ends the run itself.
 */
export async function cancelDetached(
  s3: S3Client,
  bucket: string,
  job: string,
  o: { abandon: boolean; owner: string; leaseMs?: number; signal?: AbortSignal },
): Promise<CancelOutcome> {
  const leaseMs = o.leaseMs ?? (Number(process.env.CORRAL_COORDINATOR_LEASE_MS) || LEASE_MS);
  await putJson(s3, bucket, `${jobPrefix(job)}${CANCEL}`, {
    at: new Date().toISOString(),
    abandon: o.abandon,
  } satisfies CancelRecord);
  const deadline = Date.now() + 4 * leaseMs + 30_000;
  let seen: { etag: string; since: number } | undefined;
  while (await detachedRecord(s3, bucket, job)) {
    if (o.signal?.aborted) throw new Error('interrupted while waiting for the coordinator to stop');
    const lease = await getJson<LeaseBody>(s3, bucket, `${jobPrefix(job)}${LEASE}`);
    const now = Date.now();
    if (lease && seen?.etag !== lease.etag) seen = { etag: lease.etag, since: now };
    const free =
      !lease || lease.body.released === true || (seen !== undefined && now - seen.since >= leaseMs);
    if (free) {
      const seq = (lease?.body.seq ?? 0) + 1;
      const body = (n: number, released?: boolean): LeaseBody => ({
        owner: o.owner,
        renewedAt: new Date().toISOString(),
        seq: n,
        ...(released ? { released } : {}),
      });
      const etag = await putLease(s3, bucket, job, body(seq), lease ? { etag: lease.etag } : 'create');
      if (etag !== undefined) {
        const p = await bucketProgress(s3, bucket, job);
        await putJson(s3, bucket, `${jobPrefix(job)}${RESULT}`, {
          status: 'cancelled',
          finishedAt: new Date().toISOString(),
          coordinator: o.owner,
        } satisfies DetachedResult);
        await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${DETACHED_PREFIX}${job}.json` }));
        await putLease(s3, bucket, job, body(seq + 1, true), { etag });
        return outcomeOf(job, p, o.abandon);
      }
    }
    if (now > deadline)
      throw new Error(
        `the coordinator of job ${job} did not stop within ${Math.round((4 * leaseMs) / 1000 + 30)} s; its cancel record stays, so it stops when it next renews its lease`,
      );
    await sleep(Math.min(1000, Math.max(50, Math.floor(leaseMs / 3))), o.signal);
  }
  return outcomeOf(job, await bucketProgress(s3, bucket, job), o.abandon);
}

function outcomeOf(
  job: string,
  p: { done: number; failed: number; total?: number },
  abandon: boolean,
): CancelOutcome {
  return {
    job,
    done: p.done,
    failed: p.failed,
    total: p.total,
    left: p.total !== undefined ? Math.max(0, p.total - p.done - p.failed) : undefined,
    abandon,
  };
}
