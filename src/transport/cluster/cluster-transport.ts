/**
 * The cluster transport of the one coordinator (src/engine/drive.ts), for every job shape: a map
 * job is a one-step workflow. The workflow's bookkeeping is the same as on one machine — a
 * DagState over the job's sqlite ledger, here below `<state dir>/cluster/NAME` — but a ready task
 * is not run here: it is leased to the owner `sqs` and sent to its pool's queue, and it is done
 * when the bucket says so (its commit marker, or its failure marker for a dead letter). Completing
 * it in the ledger releases its dependents, which are sent in turn: a task starts as soon as its
 * inputs are committed. Outputs are downloaded into the job folder as they are committed, so a
 * later step's glob sees them and the results end up where a local run puts them. The bucket
 * stays the truth: a coordinator started again with an empty state folder plans the job again,
 * takes in what the bucket has committed, and does not send again what an earlier coordinator sent
 * (the `forwarded/` records), so nothing committed runs again.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { outputsDir, type RunSummary } from '../../engine/coordinator.js';
import { type DagEvents, DagState } from '../../engine/dag.js';
import { drive, outcomeOf } from '../../engine/drive.js';
import { expandFileMap, isS3Url } from '../../engine/expand.js';
import { sleep } from '../../engine/process-utils.js';
import type { Lease, NewTask, TaskCounts, TaskPayload } from '../../queue/queue.js';
import { type NewBundle, SqsQueue } from '../../queue/sqs/sqs-queue.js';
import { UsageError } from '../../spec/errors.js';
import type { LoadedJob } from '../../spec/job.js';
import {
  type BucketState,
  beginLedgerRun,
  bucketState,
  type ClusterSession,
  completionKey,
  eachLimit,
  endLedgerRun,
  enqueueAll,
  type Manifest,
  openLedger,
  publishJob,
  recordCommitters,
  TRANSFERS_IN_FLIGHT,
  untilReachable,
  uploadInputs,
} from './cluster-common.js';
import { queueOfStep } from './pool-routing.js';
import { s3Inputs } from './s3-inputs.js';

/** The ledger's owner of every task that is in the cluster's queue. */
const SQS_OWNER = 'sqs';
/** Ledger leases of sent tasks never expire: the bucket, not a clock, says when they are done. */
const FOREVER_MS = 100 * 365 * 24 * 3600 * 1000;
/** Bucket folder (below the job prefix) of the records of which task keys were sent to SQS. */
const FORWARDED = 'forwarded/';
/** Between two reads of the queues' depth and of a sample of commit markers (see observe). */
const SLOW_POLL_MS = 5000;
/** More staged files than this per task are not listed (the task reads the bucket itself then). */
const MAX_STAGE = 5000;

/**
 * A record of what was sent (`forwarded/`): task keys sent alone (a list, as before bundles), or
 * `{ bundles }`: the bundles' ids and their tasks' keys.
 */
type ForwardedRecord = string[] | { readonly bundles: Readonly<Record<string, readonly string[]>> };

/** Most tasks in one message (bundle). */
const MAX_BUNDLE = 50;

/**
 * Tasks per message for `n` tasks of a step waiting to be sent: CORRAL_TASKS_PER_MESSAGE, else
 * one message per task up to 127 tasks, then n/64 (so ≥ 64 messages keep that many workers busy),
 * at most 50.
 */
export function tasksPerMessage(n: number, env: NodeJS.ProcessEnv = process.env): number {
  const set = Number(env.CORRAL_TASKS_PER_MESSAGE);
  if (Number.isInteger(set) && set >= 1) return Math.min(MAX_BUNDLE, set);
  return Math.max(1, Math.min(MAX_BUNDLE, Math.floor(n / 64)));
}

/** A message's body is at most 256 KiB: a bundle holds at most this much of its tasks' JSON. */
const MAX_BUNDLE_BYTES = 192 * 1024;

/** Splits tasks into bundles of `size`, each at most MAX_BUNDLE_BYTES of JSON. */
export function bundlesOf<T>(tasks: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const t of tasks) {
    const b = JSON.stringify(t).length;
    if (cur.length > 0 && (cur.length >= size || bytes + b > MAX_BUNDLE_BYTES)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(t);
    bytes += b;
  }
  if (cur.length) out.push(cur);
  return out;
}

function bundleId(): string {
  return `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
}

/**
 * The steps whose tasks may go in bundles: no other task reads what they write (no step needs,
 * reduces or maps over them), not HyperFlow processes, not steps that claim in batches.
 */
function bundledSteps(job: LoadedJob): Set<string> {
  if (job.hyperflow) return new Set();
  const read = new Set(job.steps.flatMap((st) => [...st.needs, st.reduce, st.map?.outputsOf]));
  return new Set(job.steps.filter((st) => !read.has(st.name) && st.batch === undefined).map((st) => st.name));
}

interface OpenRow {
  id: number;
  key: string;
  step: string;
  state: 'pending' | 'leased' | 'blocked';
  attempts: number;
  max_attempts: number;
  payload: string;
  owner: string | null;
}

/** A ledger row as what `send` takes. */
function toSend(r: OpenRow): Pick<Lease, 'key' | 'step' | 'payload' | 'maxAttempts'> {
  return {
    key: r.key,
    step: r.step,
    payload: JSON.parse(r.payload) as TaskPayload,
    maxAttempts: r.max_attempts,
  };
}

/** Runs a job on a cluster until every task is committed, dead or skipped. */
export async function runOnCluster(s: ClusterSession): Promise<RunSummary> {
  const { job, target, opts, store, log, started } = s;
  const name = job.spec.name;

  const local = localInputs(job);
  const ledger = openLedger(opts.stateDir, job);
  beginLedgerRun(s, ledger.queue);
  let ended = 'failed';
  const dag = new DagState(ledger.queue, job, { s3: s3Inputs(s.s3) });
  const db = ledger.queue.db;
  const queues = new Map<string, SqsQueue>();
  /** The queue of a step's pool (pool-routing.ts), per max attempts. */
  const queueFor = (step: string, maxAttempts: number) => {
    const pool = queueOfStep(s.routes, target, step);
    const key = `${pool.queueUrl} ${maxAttempts}`;
    let q = queues.get(key);
    if (!q) {
      q = new SqsQueue({
        client: s.sqs,
        queueUrl: pool.queueUrl,
        deadLetterQueueUrl: pool.deadLetterQueueUrl,
        job: name,
        maxAttempts,
      });
      queues.set(key, q);
    }
    return q;
  };
  const logDag = (ev: DagEvents) => {
    for (const e of ev.expanded) log(`job ${name}: planned ${e.tasks} task(s) of step ${e.step}`);
    for (const e of ev.released) log(`job ${name}: step ${e.step} released (${e.needs} finished)`);
    for (const e of ev.skipped) log(`job ${name}: step ${e.step} skipped (${e.reason})`);
  };

  try {
    await uploadInputs(s, new Set([...local.upload, ...(await firstInputs(s))]));
    await publishJob(s);

    const openRows = db.prepare(
      "SELECT id, key, step, state, attempts, max_attempts, payload, owner FROM tasks WHERE state IN ('pending', 'leased', 'blocked')",
    );
    const markDead = db.prepare(
      `UPDATE tasks SET state = 'dead', owner = NULL, lease_expires = NULL, finished_at = ?, last_error = ?, attempts = ?
       WHERE id = ? AND state IN ('pending', 'leased', 'blocked')`,
    );
    const collect = opts.collect !== false;
    /** Downloads what `finished` tasks wrote into the job folder; returns how many files. */
    const download = async (finished: readonly TaskPayload[], overwrite: boolean) => {
      if (!collect) return 0;
      let n = 0;
      const files = finished.flatMap((p) => [...(p.o !== undefined ? [p.o] : []), ...(p.outs ?? [])]);
      await eachLimit(files, TRANSFERS_IN_FLIGHT, async (f) => {
        const dest = path.resolve(job.baseDir, f);
        if (!overwrite && existsSync(dest)) return;
        if (await untilReachable(() => store.download(f, dest), log)) n++;
      });
      return n;
    };

    /** Completion keys of tasks finished since the committers were last sampled (the last 64). */
    const committers: string[] = [];
    const sampleCommitters = async () => {
      await recordCommitters(store, ledger.queue, committers.splice(0));
    };
    /** Takes in what the bucket has: committed tasks are done, dead ones dead; returns how many. */
    const absorb = async (st: BucketState, overwrite: boolean) => {
      const done: number[] = [];
      const dead: Array<{ id: number; error: string; attempts: number }> = [];
      const finished: TaskPayload[] = [];
      const doneKeys: string[] = [];
      for (const r of openRows.all() as OpenRow[]) {
        const p = JSON.parse(r.payload) as TaskPayload;
        if (st.committed.has(completionKey(r.key, p))) {
          done.push(r.id);
          doneKeys.push(r.key);
          finished.push(p);
        } else {
          const f = st.dead.get(r.key);
          if (f) dead.push({ id: r.id, error: f.error, attempts: f.attempts });
        }
      }
      // outputs first: a step that globs what its needed steps wrote is planned from the job folder
      const downloaded = await download(finished, overwrite);
      if (downloaded) log(`job ${name}: downloaded ${downloaded} output(s) into ${job.baseDir}`);
      dag.markFound(done);
      // which workers commit: learned from a sample of these, at most every SLOW_POLL_MS
      for (const [i, p] of finished.entries()) committers.push(completionKey(doneKeys[i]!, p));
      if (committers.length > 64) committers.splice(0, committers.length - 64);
      const now = Date.now();
      db.transaction(() => {
        for (const d of dead) markDead.run(now, d.error, d.attempts, d.id);
      })();
      return done.length + dead.length;
    };

    // What an earlier coordinator sent (and in which bundles); what the bucket already has.
    const forwarded = new Set<string>();
    /** The bundle each bundled task was sent in (a task is only ever in one). */
    const bundleOfTask = new Map<string, string>();
    const remember = (r: ForwardedRecord) => {
      if (Array.isArray(r)) {
        for (const key of r) forwarded.add(key);
        return;
      }
      for (const [id, keys] of Object.entries(r.bundles)) {
        for (const key of keys) {
          forwarded.add(key);
          bundleOfTask.set(key, id);
        }
      }
    };
    for await (const k of store.keysBelow(FORWARDED)) {
      const text = await store.getText(`${FORWARDED}${k}`);
      if (text) remember(JSON.parse(text) as ForwardedRecord);
    }
    let st = await bucketState(store);
    const resumed = ledger.existed || st.committed.size > 0 || st.dead.size > 0 || forwarded.size > 0;
    // Plan and take in the bucket until neither changes (a found task can release a step).
    for (let changed = true; changed; ) {
      const ev = await dag.advance();
      logDag(ev);
      changed = ev.expanded.length + ev.released.length + ev.skipped.length > 0;
      changed = (await absorb(st, false)) > 0 || changed;
    }
    // Sent by a coordinator whose ledger is gone: in the queue already (or lost: see the stall check).
    const inQueue = (openRows.all() as OpenRow[]).filter(
      (r) => r.owner !== SQS_OWNER && forwarded.has(r.key),
    );
    if (inQueue.length) {
      const take = db.prepare(
        "UPDATE tasks SET state = 'leased', owner = ?, lease_expires = ?, attempts = attempts + 1 WHERE id = ? AND state = 'pending'",
      );
      db.transaction(() => {
        // pending → leased has no count trigger (migration 0003): counted here
        for (const r of inQueue)
          if (take.run(SQS_OWNER, Date.now() + FOREVER_MS, r.id).changes > 0)
            ledger.queue.moveCounts(r.step, 'pending', 'leased');
      })();
    }
    // Leased in this ledger but never recorded as sent (the last coordinator stopped in between).
    const unsent = (openRows.all() as OpenRow[]).filter(
      (r) => r.state === 'leased' && r.owner === SQS_OWNER && !forwarded.has(r.key),
    );

    const stageCache = new Map<string, readonly string[]>();
    /** What a task of a step with `needs` may read besides its inputs: what the steps before it wrote. */
    const stageOf = (r: { step: string; payload: TaskPayload }): readonly string[] => {
      const st = job.steps.find((x) => x.name === r.step);
      let fromNeeds = stageCache.get(r.step);
      if (fromNeeds === undefined) {
        const files: string[] = [];
        for (const need of st?.needs.length ? ancestors(job, r.step) : []) {
          const rows = db
            .prepare("SELECT payload FROM tasks WHERE step = ? AND state = 'done' ORDER BY id")
            .all(need) as { payload: string }[];
          for (const row of rows) {
            const p = JSON.parse(row.payload) as TaskPayload;
            if (p.o !== undefined) files.push(p.o);
            files.push(...(p.outs ?? []));
          }
        }
        fromNeeds = files.length > MAX_STAGE ? [] : files;
        if (files.length > MAX_STAGE)
          log(`job ${name}: step ${r.step} needs ${files.length} files; not staged (more than ${MAX_STAGE})`);
        stageCache.set(r.step, fromNeeds);
      }
      const named = (r.payload.argv ?? []).filter((a) => local.named.has(a));
      return [...fromNeeds, ...named];
    };
    const record = async (r: ForwardedRecord) => {
      await store.putText(
        `${FORWARDED}${Date.now()}-${randomBytes(3).toString('hex')}.json`,
        JSON.stringify(r),
      );
      remember(r);
    };
    const bundling = bundledSteps(job);
    /**
     * Sends tasks to their pools' queues. `again`: they may have been sent before (by this
     * coordinator or one before it), so each is marked for its worker to look for a committed
     * result before running it (`lk`); a resumed job marks everything it sends. Tasks of a step
     * whose outputs no task reads go in bundles (several per message, one commit marker) when
     * there are enough of them; a task sent in a bundle is only ever sent again in that bundle.
     */
    const send = async (
      leases: ReadonlyArray<Pick<Lease, 'key' | 'step' | 'payload' | 'maxAttempts'>>,
      again: boolean,
    ) => {
      if (leases.length === 0) return;
      const mark = again || resumed;
      /** A task sent alone, marked to be looked for first when it may have been sent before. */
      const alone = (t: NewTask): NewTask => (mark ? { ...t, payload: { ...t.payload, lk: 1 } } : t);
      const push = <K, V>(m: Map<K, V[]>, k: K, ...v: V[]) => {
        const list = m.get(k);
        if (list) list.push(...v);
        else m.set(k, v);
      };
      const byQueue = new Map<SqsQueue, NewTask[]>();
      /** Bundles to send again (the same id, the tasks of it still open), and new bundles' tasks by queue and step. */
      const resend = new Map<string, { q: SqsQueue; tasks: NewTask[] }>();
      const fresh = new Map<string, { q: SqsQueue; tasks: NewTask[] }>();
      for (const l of leases) {
        const stage = stageOf(l);
        const payload: TaskPayload = {
          ...l.payload,
          ...(stage.length ? { stage } : {}),
        };
        const q = queueFor(l.step, l.maxAttempts);
        const task = { key: l.key, step: l.step, payload };
        const sentIn = bundleOfTask.get(l.key);
        const group = sentIn ? resend : bundling.has(l.step) && !stage.length ? fresh : undefined;
        if (group) {
          const id = sentIn ?? `${q.queueUrl} ${l.step}`;
          const g = group.get(id) ?? { q, tasks: [] };
          g.tasks.push(task);
          group.set(id, g);
          continue;
        }
        push(byQueue, q, alone(task));
      }
      for (const [id, g] of resend) await g.q.enqueueBundles([{ id, tasks: g.tasks }], true);
      const bundles: Array<{ q: SqsQueue; bundle: NewBundle }> = [];
      const waiting = ledger.queue.countsSync().pending;
      for (const g of fresh.values()) {
        const size = tasksPerMessage(g.tasks.length + waiting);
        if (size === 1) {
          push(byQueue, g.q, ...g.tasks.map(alone));
          continue;
        }
        for (const tasks of bundlesOf(g.tasks, size))
          bundles.push({ q: g.q, bundle: { id: bundleId(), tasks } });
      }
      if (bundles.length) {
        // recorded before sending: a bundle sent is always known, so its tasks are never sent in another
        await record({
          bundles: Object.fromEntries(bundles.map((b) => [b.bundle.id, b.bundle.tasks.map((t) => t.key)])),
        });
        const perQueue = new Map<SqsQueue, NewBundle[]>();
        for (const b of bundles) push(perQueue, b.q, b.bundle);
        for (const [q, list] of perQueue) await q.enqueueBundles(list, mark);
      }
      for (const [q, tasks] of byQueue) await enqueueAll(q, tasks);
      // recorded after sending: a crash in between sends them again (harmless: commits are once)
      const sentAlone = [...byQueue.values()].flat().map((t) => t.key);
      if (sentAlone.length) await record(sentAlone);
    };
    await send(unsent.map(toSend), true);
    /** Sent tasks not yet received by a worker, as last known (meta `queued`: see observe below). */
    let lastQueued = 0;
    const forward = async () => {
      let n = 0;
      for (;;) {
        // claimed and counted as queued at once: a reader never sees them running before a worker has them
        const leases = db.transaction(() => {
          const l = ledger.queue.claimSync(SQS_OWNER, 1000, FOREVER_MS);
          if (l.length) {
            lastQueued += l.length;
            ledger.queue.setMeta('queued', String(lastQueued));
          }
          return l;
        })();
        if (leases.length === 0) return n;
        await send(leases, false);
        n += leases.length;
      }
    };

    const stallMs = opts.stallMs ?? 30_000;
    /** What every pool queue of the job holds (one step per pool asks); undefined when one cannot be read. */
    const queueDepth = async () => {
      const perPool = new Map([...s.routes].map(([step, p]) => [p.queueUrl, step]));
      if (perPool.size === 0) perPool.set(target.queueUrl, job.steps[0]?.name ?? '');
      const all = await Promise.all(
        [...perPool.values()].map((step) =>
          queueFor(step, job.spec.retries.maxAttempts)
            .counts()
            .catch(() => undefined),
        ),
      );
      return all.every((c) => c !== undefined)
        ? { pending: all.reduce((n, c) => n + c.pending, 0), leased: all.reduce((n, c) => n + c.leased, 0) }
        : undefined;
    };
    let q: { pending: number; leased: number } | undefined;
    let lastSlowPoll = 0;
    let lastProgress = Date.now();
    let lastTotal = -1;
    let unreachableSince: number | undefined;
    /** Writes the manifest of how many tasks there are when that changed (`corral status` reads it). */
    const manifest = async (total: number) => {
      if (total === lastTotal) return;
      await store.putText('enqueued.json', JSON.stringify({ enqueued: total, total } satisfies Manifest));
      lastTotal = total;
    };
    const sent = await forward();
    const first = ledger.queue.countsSync();
    await manifest(first.total);
    log(
      `job ${name}: ${first.total} task(s) planned so far, ${first.done} already committed, ${sent + unsent.length} enqueued${resumed ? ' (resumed from the bucket)' : ''}`,
    );
    const { interrupted } = await drive(
      ledger.queue,
      dag,
      {
        collect: async () => {
          try {
            st = await bucketState(store);
            unreachableSince = undefined;
          } catch (err) {
            // A store outage: keep polling (workers retry too) for up to 5 minutes, then fail.
            if (unreachableSince === undefined)
              log(`job ${name}: cannot read the bucket (${(err as Error).message}); retrying`);
            unreachableSince ??= Date.now();
            if (Date.now() - unreachableSince > 300_000) throw err;
            return undefined;
          }
          return absorb(st, true);
        },
        // ready tasks are claimed by the owner `sqs` and sent to their pool's queue
        dispatch: async () => {
          await forward();
        },
        wait: (ms) => sleep(ms, opts.signal),
        observe: async (counts, progressed) => {
          await manifest(counts.total);
          const now = Date.now();
          if (progressed) lastProgress = now;
          // the queues' depth (a display, and the stall check) and the committers are read at
          // most every SLOW_POLL_MS: a request every few seconds, not a few per second (tasks are
          // sent only on progress, which resets the stall clock, so a depth that old is good enough)
          const deciding = !progressed && counts.leased > 0 && now - lastProgress > stallMs;
          if (now - lastSlowPoll >= SLOW_POLL_MS) {
            lastSlowPoll = now;
            q = await queueDepth();
            await sampleCommitters();
          }
          if (deciding && q && q.pending + q.leased === 0) {
            // Messages lost (retention, purge, a crash before sending): send what is still missing.
            const again = (openRows.all() as OpenRow[]).filter((r) => r.state === 'leased');
            await send(again.map(toSend), true);
            log(`job ${name}: queue empty with ${again.length} task(s) missing; enqueued them again`);
            lastProgress = now;
          }
          // the ledger's leased tasks are in a queue: waiting there, or running on a worker (the
          // dashboard, report and /metrics read how many wait from meta `queued`)
          const queued = q ? Math.min(q.pending, counts.leased) : 0;
          if (queued !== lastQueued) ledger.queue.setMeta('queued', String(queued));
          lastQueued = queued;
          const shown: TaskCounts = q
            ? {
                ...counts,
                pending: counts.pending + queued,
                leased: Math.min(q.leased, counts.leased),
              }
            : counts;
          return { counts: shown, workers: 0 };
        },
      },
      {
        tickMs: opts.tickMs ?? 1000,
        started,
        signal: opts.signal,
        onProgress: opts.onProgress,
        onDag: logDag,
        onUnreachable: (n) => log(`job ${name}: ${n} blocked task(s) can no longer run; skipped`),
        rateWindowS: 10,
      },
    );
    await sampleCommitters();
    await manifest(ledger.queue.countsSync().total);

    const end = await outcomeOf(ledger.queue, dag, interrupted, collect);
    ended = end.status;
    return {
      job: name,
      ...end,
      outputs: outputsDir(job),
      stateDir: opts.stateDir,
      seconds: (Date.now() - started) / 1000,
      resumed,
    };
  } finally {
    for (const q of queues.values()) await q.close();
    endLedgerRun(ledger.queue, opts.stateDir, name, started, ended);
    await ledger.queue.close();
  }
}

/**
 * Every step a step comes after (through `needs`, `reduce` and `outputsOf`, transitively): on one
 * machine its tasks could read any file those wrote, so on a cluster those files are staged.
 */
function ancestors(job: LoadedJob, step: string): string[] {
  const seen = new Set<string>();
  const visit = (name: string) => {
    const st = job.steps.find((x) => x.name === name);
    for (const up of [...(st?.needs ?? []), st?.reduce, st?.map?.outputsOf]) {
      if (up === undefined || seen.has(up)) continue;
      seen.add(up);
      visit(up);
    }
  };
  visit(step);
  return [...seen];
}

/**
 * The local files a workflow's workers need: inputs of the steps that wait for nothing, modules,
 * a HyperFlow workflow's own inputs (signals no process writes) and the files its command lines
 * name (scripts, tables) — uploaded once; `named` are staged beside each task that names them.
 */
function localInputs(job: LoadedJob): { upload: Set<string>; named: Set<string> } {
  const upload = new Set<string>();
  const named = new Set<string>();
  const exists = (rel: string) => {
    if (isS3Url(rel) || rel.startsWith('-') || path.isAbsolute(rel)) return false;
    const abs = path.resolve(job.baseDir, rel);
    return !path.relative(job.baseDir, abs).startsWith('..') && existsSync(abs) && !isDir(abs);
  };
  for (const st of job.steps) {
    if (st.module !== undefined) upload.add(path.relative(job.baseDir, path.resolve(job.baseDir, st.module)));
  }
  for (const rel of Object.keys(job.external ?? {})) upload.add(rel);
  if (job.hyperflow) {
    const produced = new Set(job.hyperflow.flatMap((t) => t.payload.outs ?? []));
    for (const t of job.hyperflow) {
      for (const f of t.payload.ins ?? []) if (!produced.has(f) && exists(f)) upload.add(f);
      for (const a of t.payload.argv ?? []) {
        if (!produced.has(a) && exists(a)) {
          upload.add(a);
          named.add(a);
        }
      }
    }
  }
  return { upload, named };
}

function isDir(abs: string): boolean {
  try {
    return statSync(abs).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Local inputs of the file maps that wait for no step (uploaded up front). Such a map that gives no
 * task is bad input, as on one machine (nothing is sent).
 */
async function firstInputs(s: ClusterSession): Promise<string[]> {
  const out: string[] = [];
  for (const [i, st] of s.job.steps.entries()) {
    if (!st.map || st.map.outputsOf !== undefined || st.needs.length > 0) continue;
    let tasks = 0;
    for await (const p of expandFileMap(s.job, st, { s3: s3Inputs(s.s3) })) {
      tasks++;
      if (p.p !== undefined && !isS3Url(p.p)) out.push(p.p);
    }
    if (tasks === 0)
      throw new UsageError(
        `${s.job.spec.tasks ? 'tasks' : `steps[${i}]`}.map`,
        'the inputs give no task (empty file or no lines)',
        'add inputs',
      );
  }
  return out;
}
