/**
 * The worker of the AWS runtime (`corral worker`): pulls tasks from the cluster's SQS queue,
 * stages their inputs from S3 into a host-wide cache, runs them with the WorkerAgent, commits
 * outputs to S3, ships task logs to the bucket, heartbeats, hands its leases back at once on a
 * spot notice, drains on SIGTERM, and exits after `idleExitMs` without work so the pool scales in.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createS3Client, createSqsClient, resolveAwsSettings } from '../aws/clients.js';
import { getSecretString } from '../aws/secrets.js';
import { isS3Url, parseS3Url } from '../engine/expand.js';
import { taskLogName } from '../engine/state-dir.js';
import { CANCEL_RECORD, doneKey, jobPrefix } from '../protocol/keys.js';
import {
  attemptIdOf,
  type Completion,
  type DeadLetter,
  type Failure,
  type Lease,
  type NewTask,
  type Queue,
  type TaskCounts,
  type TaskPayload,
} from '../queue/queue.js';
import { SqsQueue } from '../queue/sqs/sqs-queue.js';
import type { LoadedJob } from '../spec/job.js';
import { type BundleItem, inlineBytes, S3Store } from '../store/s3/s3-store.js';
import type { CommitResult, Store } from '../store/store.js';
import { WorkerAgent } from './agent.js';
import { type ClusterDatabase, type DatabaseAccess, prepareDatabaseAccess } from './database.js';
import { type DockerCommandOptions, dockerCommand, dockerExec } from './docker-command.js';
import { InputCache } from './input-cache.js';
import { ScaleInGuard } from './scale-in.js';
import { SpotWatcher } from './spot-watcher.js';
import { isTransient } from './transient.js';

/** Options of a cluster worker (from flags or the environment the bootstrap writes). */
export interface ClusterWorkerOptions {
  /** URL of the job queue (CORRAL_QUEUE_URL). */
  readonly queueUrl: string;
  /** URL of the dead-letter queue (CORRAL_DLQ_URL). @default - none */
  readonly deadLetterQueueUrl?: string;
  /** The cluster bucket (CORRAL_BUCKET). */
  readonly bucket: string;
  /** @default - AWS_REGION */
  readonly region?: string;
  /** @default - CORRAL_ENDPOINT_URL, else AWS_ENDPOINT_URL */
  readonly endpointUrl?: string;
  /** Folder of the input cache, staging and task logs. @default <tmp>/corral-worker */
  readonly cacheDir?: string;
  /** Size cap of the input cache. @default 10 GiB */
  readonly cacheBytes?: number;
  /** Exit after this long without a task (the pool's scaleToZeroAfter). @default 600000 */
  readonly idleExitMs?: number;
  /** Messages received per call. @default 10 */
  readonly prefetch?: number;
  /** Poll IMDSv2 for spot notices. @default true */
  readonly spot?: boolean;
  /** Between IMDS polls. @default 500 (SPOT_POLL_MS) */
  readonly spotIntervalMs?: number;
  /** IMDS base URL. @default - CORRAL_IMDS_ENDPOINT, else http://169.254.169.254 */
  readonly imdsEndpoint?: string;
  /** Run each command in this image with `docker run` (the pool's image). @default - on the host */
  readonly image?: string;
  /**
   * GPUs each container gets with an image (`docker run --gpus`, CORRAL_GPUS; `all` on a GPU pool).
   * @default - none
   */
  readonly gpus?: string;
  /**
   * The cluster database (CORRAL_DB_*): its secret is read once, into a 0600 pgpass file, and
   * every task gets PGHOST, PGPORT, PGDATABASE, PGUSER and PGPASSFILE (src/worker/database.ts).
   * @default - none
   */
  readonly database?: ClusterDatabase;
  /**
   * The host is an instance of the pool's Auto Scaling group (the pool bootstrap sets
   * CORRAL_AUTOSCALING=1): it is protected from scale-in while the worker holds work, and idle it
   * terminates itself through the group with a decrement while desired > min, else stays up idle.
   * @default false: idle, the worker exits
   */
  readonly autoScaling?: boolean;
  /** Worker id. @default <hostname>-<pid>-<random> */
  readonly id?: string;
  /**
   * A duty run beside the tasks: the coordinator of detached runs (issue 23). While it holds
   * something the worker does not exit idle and stays protected from scale-in.
   * @default - none
   */
  readonly duty?: WorkerDuty;
  /** Progress lines. @default - standard error */
  readonly log?: (line: string) => void;
}

/** A duty a cluster worker runs beside its tasks (the coordinator of detached runs, issue 23). */
export interface WorkerDuty {
  /** Runs until `signal` aborts; `dir` is a scratch folder of the worker's. */
  run(signal: AbortSignal, worker: { id: string; dir: string; log: (line: string) => void }): Promise<void>;
  /** What the duty holds now (a job name), if anything. */
  readonly holding: string | undefined;
}

/** How a worker ended. */
export interface ClusterWorkerResult {
  /** `rebalance`: a spot rebalance recommendation came; the held tasks were finished, no new one claimed. */
  readonly reason: 'idle' | 'spot' | 'rebalance' | 'drain' | 'abort';
  readonly ran: number;
  /** Milliseconds from seeing the spot notice to having handed every lease back. */
  readonly releaseMs?: number;
  /** Idle, the host terminated itself through its Auto Scaling group (autoScaling). */
  readonly terminated?: boolean;
}

/**
 * The Store a job's agent sees: the job's folder of the bucket, where the output of a bundle's
 * task is not committed alone: it stays staged until the bundle commits (ClusterJobQueue).
 */
class BundlingStore implements Store {
  /** Outputs of bundle tasks: their commit waits for the bundle's (never committed alone). */
  readonly deferred = new Set<string>();
  readonly location: string;
  constructor(readonly s3: S3Store) {
    this.location = s3.location;
  }
  stage(key: string, attemptId: string): Promise<string> {
    return this.s3.stage(key, attemptId);
  }
  async commit(key: string, attemptId: string): Promise<CommitResult> {
    if (!this.deferred.has(key)) return this.s3.commit(key, attemptId);
    return existsSync(this.s3.stagingPath(key, attemptId)) ? 'committed' : 'missing';
  }
  discard(key: string, attemptId: string): Promise<void> {
    return this.s3.discard(key, attemptId);
  }
  /** A bundle's task was looked for with its bundle (one HEAD of its marker): not again one by one. */
  async exists(key: string): Promise<boolean> {
    return !this.deferred.has(key) && this.s3.exists(key);
  }
  list(prefix?: string): AsyncIterable<string> {
    return this.s3.list(prefix);
  }
}

/** What a bundle's tasks ended with here, waiting for its last one (the bundle commits at once). */
interface BundleRun {
  readonly completions: Map<string, Completion>;
  readonly finals: Map<string, Failure>;
}

/**
 * The Queue a job's agent sees: the SQS queue plus what the AWS runtime adds around it (stage
 * inputs on claim; empty markers, failure markers and task logs on complete/fail; a bundle's
 * results committed as one marker once its last task is done).
 */
class ClusterJobQueue implements Queue {
  stopped = false;
  /** Bundles held, by id: what their tasks ended with so far. */
  private readonly bundles = new Map<string, BundleRun>();
  /**
   * Leases (task ids) that came in a bundle: one that ends after its bundle was handed back
   * commits nothing and records no failure (the bundle runs again elsewhere, whole).
   */
  private readonly bundled = new Set<number>();
  private readonly store: S3Store;
  constructor(
    private readonly sqs: SqsQueue,
    private readonly job: LoadedJob,
    private readonly outputs: BundlingStore,
    private readonly cache: InputCache,
    private readonly logsDir: string,
    /** The pool's image: a task's own executable (HyperFlow `argv`) runs in it. @default - on the host */
    private readonly docker?: DockerCommandOptions,
  ) {
    this.store = outputs.s3;
  }

  enqueue(tasks: readonly NewTask[]): Promise<void> {
    return this.sqs.enqueue(tasks);
  }

  async claim(owner: string, max: number, leaseMs: number): Promise<Lease[]> {
    if (this.stopped) return [];
    let leases: Lease[];
    try {
      leases = await this.sqs.claim(owner, max, leaseMs);
    } catch {
      await new Promise((r) => setTimeout(r, 500)); // queue unreachable: claim again later
      return [];
    }
    if (leases.length > 0 && (await this.abandoned())) {
      // `corral cancel --abandon`: the job's queued tasks are dropped, not run
      const now = Date.now();
      await this.sqs.complete(
        leases.map((lease) => ({ lease, outcome: 'ok', startedAt: now, finishedAt: now })),
      );
      await this.sqs.flushDeletes();
      return [];
    }
    leases = await this.skipCommittedBundles(leases);
    for (const l of leases) {
      const b = this.sqs.bundleOf(l);
      if (b && !this.bundles.has(b.id)) this.bundles.set(b.id, { completions: new Map(), finals: new Map() });
      if (b) this.bundled.add(l.taskId);
      if (b && l.payload.o !== undefined) this.outputs.deferred.add(l.payload.o);
      await this.stageInputs(l.payload);
    }
    const docker = this.docker;
    if (!docker) return leases;
    // the message keeps the original argv (a hand-back re-sends the received body, not this)
    return leases.map((l) =>
      l.payload.argv ? { ...l, payload: { ...l.payload, argv: dockerExec(l.payload.argv, docker) } } : l,
    );
  }

  /**
   * A bundle received before, or sent again, may have been committed by an earlier attempt: its
   * marker is looked for once (one HEAD for all its tasks) and, if there, the bundle is done here.
   */
  private async skipCommittedBundles(leases: Lease[]): Promise<Lease[]> {
    const ids = leases.map((l) => this.sqs.bundleOf(l));
    const committed = new Set<string>();
    for (const [i, b] of ids.entries()) {
      if (!b?.again || this.bundles.has(b.id) || committed.has(b.id)) continue;
      if (await this.store.bundleCommitted(b.id)) {
        committed.add(b.id);
        await this.sqs.settleBundle(leases[i]!);
      }
    }
    return committed.size ? leases.filter((_l, i) => !committed.has(ids[i]?.id ?? '')) : leases;
  }

  private abandonCheckedAt = 0;
  private abandonSeen = false;
  /**
   * Whether the job was cancelled with `--abandon` (its cancel record): read at most every 10 s
   * while it was not, and read again before any task is dropped.
   */
  private async abandoned(): Promise<boolean> {
    const now = Date.now();
    if (!this.abandonSeen && now - this.abandonCheckedAt < 10_000) return false;
    this.abandonCheckedAt = now;
    const text = await this.store.getText(CANCEL_RECORD).catch(() => undefined);
    try {
      this.abandonSeen = text !== undefined && (JSON.parse(text) as { abandon?: boolean }).abandon === true;
    } catch {
      this.abandonSeen = false;
    }
    return this.abandonSeen;
  }

  /** A workflow's tasks read outputs of earlier tasks; a plain map only uploaded inputs. */
  private get isWorkflow(): boolean {
    return (
      this.job.format === 'hyperflow' || this.job.steps.length > 1 || !!this.job.steps[0]?.map?.outputsOf
    );
  }

  /** Fetches what a task reads into the job folder (the input cache). */
  private async stageInputs(p: TaskPayload): Promise<void> {
    const range = p.s !== undefined && p.e !== undefined ? { start: p.s, end: p.e } : undefined;
    if (p.p !== undefined) {
      if (isS3Url(p.p)) {
        // an s3:// input is read from its own bucket
        const { bucket, key } = parseS3Url(p.p);
        await this.cache.fetch(bucket, key, range);
      } else await this.stageFile(p.p, range);
    }
    for (const f of [...(p.ins ?? []), ...(p.stage ?? [])]) await this.stageFile(f);
  }

  /**
   * Fetches one file of the job folder: a committed output of an earlier task (workflows), else
   * an input the coordinator uploaded below the job prefix. A file that is neither is left out:
   * the task then fails on it with its own message, in its log.
   */
  private async stageFile(rel: string, range?: { start: number; end: number }): Promise<void> {
    const bucket = this.store.bucket;
    const dest = path.join(this.job.baseDir, ...rel.split('/'));
    if (this.isWorkflow && !range && !existsSync(dest)) {
      const m = await this.store.marker(rel);
      if (m) {
        const inline = inlineBytes(m);
        if (inline) {
          // whole or absent: a worker that dies mid-write leaves no partial file to be taken for it
          await fsp.mkdir(path.dirname(dest), { recursive: true });
          const tmp = `${dest}.${process.pid}.corral-part`;
          await fsp.writeFile(tmp, inline);
          await fsp.rename(tmp, dest);
        } else await this.cache.fetch(bucket, m.object!, undefined, dest);
        return;
      }
    }
    try {
      await this.cache.fetch(bucket, `${jobPrefix(this.job.spec.name)}inputs/${rel}`, range);
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) throw err;
    }
  }

  heartbeat(owner: string, leaseMs: number): Promise<number> {
    return this.sqs.heartbeat(owner, leaseMs);
  }

  private async shipLog(taskKey: string): Promise<void> {
    const file = path.join(this.logsDir, taskLogName(taskKey));
    if (existsSync(file)) await this.store.putText(`logs/${taskLogName(taskKey)}`, await fsp.readFile(file));
  }

  /** Commits the files a process wrote in place (HyperFlow `outs`) as outputs of the job. */
  private async commitOuts(c: Completion): Promise<void> {
    const attemptId = attemptIdOf(c.lease.attempt, c.lease.owner);
    for (const f of c.lease.payload.outs ?? []) {
      const staged = await this.store.stage(f, attemptId);
      await fsp.copyFile(path.join(this.job.baseDir, ...f.split('/')), staged);
      await this.store.commit(f, attemptId);
    }
  }

  async complete(done: readonly Completion[]): Promise<void> {
    const alone: Completion[] = [];
    for (const c of done) {
      const b = this.sqs.bundleOf(c.lease);
      const run = b && this.bundles.get(b.id);
      if (!b || !run) {
        if (!this.bundled.has(c.lease.taskId)) alone.push(c);
        else if (c.lease.payload.o !== undefined)
          await this.store.discard(c.lease.payload.o, attemptIdOf(c.lease.attempt, c.lease.owner));
        continue;
      }
      run.completions.set(c.lease.key, c);
      await this.commitBundleIfDone(c.lease);
    }
    await this.completeAlone(alone);
  }

  /**
   * Commits a bundle once each of its tasks succeeded or failed its last attempt here: one
   * marker holds every success; then its message is deleted and its dead tasks recorded. Another
   * attempt of the bundle that committed first wins: this one's results are dropped.
   */
  private async commitBundleIfDone(lease: Lease): Promise<void> {
    const b = this.sqs.bundleOf(lease);
    const run = b && this.bundles.get(b.id);
    if (!b || !run) return;
    for (const k of b.open) if (!run.completions.has(k) && !run.finals.has(k)) return;
    this.bundles.delete(b.id);
    const items: BundleItem[] = [...run.completions.values()].map((c) => ({
      task: c.lease.key,
      key: c.lease.payload.o ?? doneKey(c.lease.key),
      attemptId: attemptIdOf(c.lease.attempt, c.lease.owner),
      output: c.lease.payload.o !== undefined,
    }));
    const won = (await this.store.commitBundle(b.id, items)) === 'committed';
    if (!won) {
      await this.sqs.settleBundle(lease);
      return;
    }
    for (const c of run.completions.values()) await this.shipLog(c.lease.key);
    await this.failHere([...run.finals.values()]);
    await this.sqs.complete([...run.completions.values()]);
  }

  private async completeAlone(done: readonly Completion[]): Promise<void> {
    for (const c of done) {
      await this.commitOuts(c);
      if (c.lease.payload.o === undefined)
        await this.store.commitEmpty(doneKey(c.lease.key), attemptIdOf(c.lease.attempt, c.lease.owner));
      await this.shipLog(c.lease.key);
    }
    await this.sqs.complete(done);
  }

  async fail(failures: readonly Failure[]): Promise<void> {
    const now: Failure[] = [];
    for (const f of failures) {
      const b = this.sqs.bundleOf(f.lease);
      const run = b && this.bundles.get(b.id);
      const last = f.lease.attempt >= f.lease.maxAttempts || f.final === true;
      // a bundle's task failing its last attempt leaves the bundle when the bundle commits
      if (run && last) {
        run.finals.set(f.lease.key, f);
        await this.commitBundleIfDone(f.lease);
      } else if (run || !this.bundled.has(f.lease.taskId)) now.push(f);
    }
    await this.failHere(now);
  }

  /** Fails attempts in the queue (retry, or dead letter) and records the dead ones in the bucket. */
  private async failHere(failures: readonly Failure[]): Promise<void> {
    if (failures.length === 0) return;
    await this.sqs.fail(failures);
    for (const f of failures) {
      await this.shipLog(f.lease.key);
      if (f.lease.attempt >= f.lease.maxAttempts || f.final === true) {
        await this.store.putFailure({
          key: f.lease.key,
          error: f.error,
          attempts: f.lease.attempt,
          at: new Date().toISOString(),
        });
      }
    }
  }

  /** Hands leases back: a bundle goes back whole, and what its tasks staged is dropped. */
  async release(leases: readonly Lease[]): Promise<void> {
    this.forgetBundles(leases);
    await this.sqs.release(leases);
  }

  /** Every lease held, handed back at once (a spot notice). */
  async releaseAll(owner: string): Promise<number> {
    this.forgetBundles(this.sqs.heldLeases(owner));
    return this.sqs.releaseAll(owner);
  }

  /**
   * A rebalance: nothing new is received; what was received ahead is handed back, but for the
   * rest of the bundles a task of which has started (they are finished and committed here).
   * Returns how many tasks went back.
   */
  async finishStarted(): Promise<number> {
    this.sqs.interrupt();
    const back = this.sqs.bufferedLeases().filter((l) => !this.sqs.bundleStarted(l));
    await this.release(back);
    return back.length;
  }

  private forgetBundles(leases: readonly Lease[]): void {
    for (const l of leases) {
      const b = this.sqs.bundleOf(l);
      const run = b && this.bundles.get(b.id);
      if (!b || !run) continue;
      this.bundles.delete(b.id);
      for (const c of run.completions.values()) {
        const o = c.lease.payload.o;
        if (o !== undefined)
          this.store.discard(o, attemptIdOf(c.lease.attempt, c.lease.owner)).catch(() => {});
      }
    }
  }

  reapExpired(): Promise<number> {
    return this.sqs.reapExpired();
  }

  counts(): Promise<TaskCounts> {
    return this.sqs.counts();
  }

  deadLetters(limit?: number): Promise<DeadLetter[]> {
    return this.sqs.deadLetters(limit);
  }

  close(): Promise<void> {
    return this.sqs.close();
  }
}

/** Reads a job's spec from the bucket and places it in the cache folder of its inputs. */
async function loadJob(
  bucketStore: S3Store,
  name: string,
  cache: InputCache,
  image?: string,
  gpus?: string,
  db?: DatabaseAccess,
): Promise<LoadedJob | undefined> {
  const text = await bucketStore.getText(`${jobPrefix(name)}job.json`);
  if (!text) return undefined;
  const job = JSON.parse(text) as LoadedJob;
  const baseDir = cache.pathOf(bucketStore.bucket, `${jobPrefix(name)}inputs`);
  await fsp.mkdir(baseDir, { recursive: true });
  const inImage = (st: LoadedJob['steps'][number]): DockerCommandOptions | undefined =>
    image
      ? {
          image,
          gpus,
          mounts: [cache.pathOf('', ''), ...dbMounts(db)],
          workdir: baseDir,
          env: Object.keys(st.env ?? {}),
        }
      : undefined;
  // the database's variables, under the step's own (tasks.env may point PGDATABASE elsewhere)
  const withDb = job.steps.map((st) => (db ? { ...st, env: { ...db.env, ...st.env } } : st));
  const steps = withDb.map((st) => {
    const docker = inImage(st);
    if (st.module !== undefined || !docker) return st;
    if (st.command) return { ...st, command: dockerCommand(st.command, docker) };
    if (st.exec) {
      const [executable, ...args] = dockerExec([st.exec.executable, ...st.exec.args], docker);
      return { ...st, exec: { ...st.exec, executable: executable!, args } };
    }
    return st;
  });
  for (const st of steps) {
    if (st.module !== undefined)
      await cache.fetch(bucketStore.bucket, `${jobPrefix(name)}inputs/${st.module.replace(/^\.\//, '')}`);
  }
  return { ...job, steps, baseDir, file: path.join(baseDir, 'job.yaml'), s3Dir: cache.pathOf('', '') };
}

/** The folder of the pgpass file, mounted into task containers at the same path. */
function dbMounts(db: DatabaseAccess | undefined): string[] {
  return db?.env.PGPASSFILE ? [db.dir] : [];
}

/** Runs a cluster worker until it is idle, drained, aborted or told of a spot interruption. */
export async function runClusterWorker(
  o: ClusterWorkerOptions,
  signal?: AbortSignal,
): Promise<ClusterWorkerResult> {
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const settings = resolveAwsSettings({ region: o.region, endpointUrl: o.endpointUrl });
  const sqsClient = createSqsClient(settings);
  const s3 = createS3Client(settings);
  const id = o.id ?? `${os.hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`;
  const root = o.cacheDir ?? path.join(os.tmpdir(), 'corral-worker');
  const cache = new InputCache({ client: s3, dir: path.join(root, 'inputs'), maxBytes: o.cacheBytes });
  const logsDir = path.join(root, 'logs', id);
  await fsp.mkdir(logsDir, { recursive: true });
  const stagingDir = path.join(root, 'staging');
  const bucketStore = new S3Store({ client: s3, bucket: o.bucket, stagingDir });
  /** The store of job `name`: its folder of the bucket. */
  const jobStore = (name: string) =>
    new S3Store({ client: s3, bucket: o.bucket, prefix: jobPrefix(name), stagingDir });
  const db = o.database
    ? await prepareDatabaseAccess(
        o.database,
        path.join(root, 'db'),
        (arn) =>
          getSecretString({
            secretId: arn,
            region: settings.region,
            endpointUrl: settings.endpointUrl,
            credentials: () => sqsClient.config.credentials(),
          }),
        log,
      )
    : undefined;
  const idleExitMs = o.idleExitMs ?? 600_000;
  const jobs = new Map<string, LoadedJob>();
  let reason: ClusterWorkerResult['reason'] | undefined;
  let current: { agent: WorkerAgent; queue: ClusterJobQueue; sqs: SqsQueue } | undefined;
  let releaseMs: number | undefined;
  let ran = 0;
  /** A spot rebalance recommendation came: no new task is claimed; the held ones finish. */
  let rebalancing = false;

  // A dead letter is recorded in its job's folder of the bucket, where the coordinator looks for
  // failures: whichever queue client received it, the one looking for the next job included.
  const recordDeadLetter = async (d: DeadLetter & { readonly job?: string }) => {
    if (d.job === undefined) return; // not a corral task: only moved to the dead-letter queue
    await jobStore(d.job).putFailure({
      key: d.key,
      error: d.error,
      attempts: d.attempts,
      at: new Date().toISOString(),
    });
  };
  const discovery = new SqsQueue({
    client: sqsClient,
    queueUrl: o.queueUrl,
    deadLetterQueueUrl: o.deadLetterQueueUrl,
    prefetch: 1,
    waitTimeSeconds: 2,
    onDeadLetter: recordDeadLetter,
  });

  const stop = (why: 'drain' | 'abort') => {
    reason ??= why;
    discovery.interrupt();
    current?.agent.stop(why);
  };
  signal?.addEventListener('abort', () => stop('drain'), { once: true });
  // a stop that came while the caches were being set up (the awaits above) is not missed
  if (signal?.aborted) stop('drain');

  const watcher =
    o.spot === false
      ? undefined
      : new SpotWatcher({
          endpoint: o.imdsEndpoint,
          intervalMs: o.spotIntervalMs,
          onError: () => {},
          onNotice: (n) => {
            if (n.kind === 'rebalance') {
              // an elevated risk, not an interruption: claim nothing new, finish what is held
              rebalancing = true;
              dutyStop.abort(); // the coordinator moves to a worker not at risk
              discovery.interrupt();
              const now = current;
              const ahead = now ? now.queue.finishStarted() : Promise.resolve(0);
              ahead.then(
                (n) =>
                  log(
                    `corral worker ${id}: spot rebalance recommendation; claiming no new task, finishing the held ones (${n} received ahead handed back)`,
                  ),
                (err) => log(`corral worker ${id}: hand-back failed: ${(err as Error).message}`),
              );
              return;
            }
            reason ??= 'spot';
            dutyStop.abort();
            const t0 = Date.now();
            discovery.interrupt();
            if (current) {
              current.queue.stopped = true;
              current.agent.stop('drain');
            }
            const handBack = async () => {
              const a = current ? await current.queue.releaseAll(id) : 0;
              const b = await discovery.releaseAll(id);
              releaseMs = Date.now() - t0;
              log(
                `corral worker ${id}: spot ${n.kind} notice; handed back ${a + b} lease(s) in ${releaseMs} ms; draining`,
              );
            };
            handBack().catch((err) =>
              log(`corral worker ${id}: hand-back failed: ${(err as Error).message}`),
            );
          },
        });
  watcher?.start();
  // issue 20: scale-in protection while busy, self-termination through the group when idle
  const guard = o.autoScaling
    ? new ScaleInGuard({
        settings,
        credentials: sqsClient.config.credentials,
        imdsEndpoint: o.imdsEndpoint,
        log: (l) => log(`corral worker ${id}: ${l}`),
      })
    : undefined;
  let terminated = false;
  // issue 23: the host stays protected while it runs tasks or holds a detached job's coordinator
  let agentBusy = false;
  let protectedNow = false;
  const protect = async () => {
    const want = agentBusy || o.duty?.holding !== undefined;
    if (want === protectedNow) return;
    protectedNow = want;
    await guard?.busy(want);
  };
  const dutyStop = new AbortController();
  const dutyRun = o.duty
    ?.run(dutyStop.signal, {
      id,
      dir: path.join(root, 'coordinator'),
      log: (l) => log(`corral worker ${id}: ${l}`),
    })
    .catch((err) => log(`corral worker ${id}: coordinator duty ended: ${(err as Error).message}`));
  signal?.addEventListener('abort', () => dutyStop.abort(), { once: true });
  log(`corral worker ${id}: polling ${o.queueUrl} (bucket ${o.bucket})`);

  let idleSince = Date.now();
  let outageSince: number | undefined;
  try {
    while (!reason) {
      if (rebalancing) {
        reason = 'rebalance';
        break;
      }
      try {
        const [first] = await discovery.claim(id, 1, 60_000).catch(async () => {
          await new Promise((r) => setTimeout(r, 500)); // queue unreachable: poll again later
          return [];
        });
        if (!first) {
          await protect();
          if (o.duty?.holding !== undefined) idleSince = Date.now();
          if (Date.now() - idleSince > idleExitMs) {
            if (guard && (await guard.leave()) === 'stay') {
              idleSince = Date.now();
              continue;
            }
            terminated = guard !== undefined;
            reason = 'idle';
            break;
          }
          continue;
        }
        const name = discovery.jobOf(first);
        await discovery.release([first]);
        if (!name) continue;
        let job = jobs.get(name);
        if (!job) {
          job = await loadJob(bucketStore, name, cache, o.image, o.gpus, db);
          if (!job) {
            log(
              `corral worker ${id}: job ${name} has no spec in s3://${o.bucket}/${jobPrefix(name)}job.json; leaving its task`,
            );
            continue;
          }
          jobs.set(name, job);
        }
        if (rebalancing) continue; // the recommendation came meanwhile: claim nothing
        const sqs = new SqsQueue({
          client: sqsClient,
          queueUrl: o.queueUrl,
          deadLetterQueueUrl: o.deadLetterQueueUrl,
          job: name,
          maxAttempts: job.steps[0]?.retries.maxAttempts,
          prefetch: o.prefetch,
          waitTimeSeconds: 1,
          onDeadLetter: recordDeadLetter,
        });
        const store = new BundlingStore(jobStore(name));
        const queue = new ClusterJobQueue(
          sqs,
          job,
          store,
          cache,
          logsDir,
          o.image
            ? {
                image: o.image,
                gpus: o.gpus,
                mounts: [cache.pathOf('', ''), ...dbMounts(db)],
                workdir: job.baseDir,
                env: Object.keys(db?.env ?? {}),
              }
            : undefined,
        );
        const agent = new WorkerAgent({
          id,
          job,
          queue,
          store,
          logsDir,
          idleExitMs: Math.min(idleExitMs, 3000),
          maxBatch: 10,
          // the coordinator sends only tasks without a commit marker, and marks (lk) any task sent
          // again, as does a hand-back: a HEAD per task saved
          lookBeforeFirstAttempt: false,
        });
        current = { agent, queue, sqs };
        log(`corral worker ${id}: running tasks of job ${name}`);
        try {
          agentBusy = true;
          await protect();
          await agent.run();
        } finally {
          agentBusy = false;
          await protect();
          ran += agent.ran;
          current = undefined;
          await sqs.close().catch(() => {});
        }
        idleSince = Date.now();
        outageSince = undefined;
      } catch (err) {
        // the queue or the bucket is unreachable: pause and poll again (leases expire meanwhile)
        if (!isTransient(err)) throw err;
        if (outageSince === undefined)
          log(`corral worker ${id}: queue or bucket unreachable (${(err as Error).message}); retrying`);
        outageSince ??= Date.now();
        if (Date.now() - outageSince > 600_000) throw err;
        await new Promise((r) => setTimeout(r, 1000));
        idleSince = Date.now();
      }
    }
  } finally {
    // a worker that stops hands its coordinator's lease back (another takes it over at once)
    dutyStop.abort();
    await dutyRun;
    watcher?.stop();
    await discovery.close();
    sqsClient.destroy();
    s3.destroy();
  }
  log(`corral worker ${id}: exiting (${reason}) after ${ran} task(s)`);
  return { reason: reason ?? 'idle', ran, releaseMs, ...(terminated ? { terminated } : {}) };
}
