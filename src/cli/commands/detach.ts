/**
 * Detached cluster runs on the command line (issue 23): `run --cluster --detach`, a `run
 * --cluster` that follows a detached run of its job, `corral attach` and `corral cancel`. The
 * bucket side is src/transport/cluster/detached.ts.
 */
import os from 'node:os';
import path from 'node:path';
import type { ClusterTarget, ClusterTargetFlags } from '../../aws/outputs.js';
import { resolveStateDir } from '../../engine/state-dir.js';
import { UsageError } from '../../spec/errors.js';
import type { LoadedJob } from '../../spec/job.js';
import type { ClusterRunOptions } from '../../transport/cluster/cluster-common.js';
import { printJson } from '../output.js';

/** The flags these commands read (those of `addClusterOptions` and a few of their own). */
export interface DetachFlags extends ClusterTargetFlags {
  cluster?: string;
  stateDir?: string;
  json?: boolean;
  quiet?: boolean;
  /** `run --detach`: submit and return. */
  detach?: boolean;
}

/** A follower's progress line. */
function progressLine(p: { done: number; failed: number; total?: number }): string {
  return `${p.done}/${p.total ?? '?'} done, ${p.failed} failed (detached run; a cluster worker coordinates)`;
}

/**
 * Before `corral run FILE --cluster NAME` coordinates: with `--detach` it submits and returns
 * `done`; when a detached run of the job goes on, it follows it until it ends (sending nothing),
 * then returns `run` so that the run resumes from the bucket (all committed: it only downloads
 * the outputs), or `done` when it was cancelled or interrupted.
 */
export async function detachOrFollow(
  job: LoadedJob,
  target: ClusterTarget,
  opts: Pick<ClusterRunOptions, 'stateDir' | 'endpointUrl' | 'region' | 'pools'>,
  flags: DetachFlags,
  signal: AbortSignal,
  say: (line: string) => void,
): Promise<'done' | 'run'> {
  const d = await import('../../transport/cluster/detached.js');
  const name = job.spec.name;
  if (flags.detach) {
    const tick = Number(process.env.CORRAL_CLUSTER_TICK_MS) || undefined;
    const r = await d.submitDetached(job, target, { ...opts, tickMs: tick, log: say });
    if (flags.json) printJson({ ...r, cluster: target.name });
    else if (r.status === 'already-detached')
      process.stdout.write(
        `job ${name} already runs detached on cluster ${target.name}: follow it with corral attach ${name} --cluster ${target.name}\n`,
      );
    else if (r.status === 'detached')
      process.stdout.write(
        `job ${name} detached on cluster ${target.name}: ${r.counts?.total ?? 0} task(s) planned so far; a cluster worker coordinates the rest\n` +
          `  follow it: corral attach ${name} --cluster ${target.name}; stop it: corral cancel ${name} --cluster ${target.name}\n`,
      );
    else process.stdout.write(`job ${name} ${r.status} on cluster ${target.name} while it was submitted\n`);
    process.exitCode = r.status === 'failed' ? 1 : 0;
    return 'done';
  }
  const { createS3Client, resolveAwsSettings } = await import('../../aws/clients.js');
  const s3 = createS3Client(
    resolveAwsSettings({ region: opts.region ?? target.region, endpointUrl: opts.endpointUrl }),
  );
  try {
    if (!(await d.detachedRecord(s3, target.bucket, name).catch(() => undefined))) {
      // a new run in this terminal: an old cancel record must not make workers drop its tasks
      await d.clearCancel(s3, target.bucket, name).catch(() => {});
      return 'run';
    }
    say(`job ${name} runs detached on cluster ${target.name}; following it (this process sends nothing)`);
    let last = '';
    const r = await d.followDetached(s3, target.bucket, name, {
      tickMs: Number(process.env.CORRAL_CLUSTER_TICK_MS) || undefined,
      signal,
      onProgress: (p) => {
        const line = progressLine(p);
        if (line !== last) say(line);
        last = line;
      },
    });
    if (r === 'interrupted') {
      process.stdout.write(`stopped following job ${name}; it goes on on cluster ${target.name}\n`);
      process.exitCode = 130;
      return 'done';
    }
    if (r.status === 'cancelled') {
      process.stdout.write(
        `job ${name} was cancelled on cluster ${target.name}; run the same command again to resume it\n`,
      );
      process.exitCode = 1;
      return 'done';
    }
    say(`detached run of job ${name} ended (${r.status}); collecting its results`);
    return 'run';
  } finally {
    s3.destroy();
  }
}

/** `corral attach JOB --cluster NAME`: follows a detached run, then downloads its outputs. */
export async function attachOnCluster(job: string, flags: DetachFlags & { into?: string }): Promise<void> {
  const d = await import('../../transport/cluster/detached.js');
  const { createS3Client, resolveAwsSettings } = await import('../../aws/clients.js');
  const { S3Store } = await import('../../store/s3/s3-store.js');
  const { eachLimit, TRANSFERS_IN_FLIGHT } = await import('../../transport/cluster/cluster-common.js');
  const { target } = await targetOf(flags);
  const s3 = createS3Client(
    resolveAwsSettings({ region: flags.region ?? target.region, endpointUrl: flags.endpointUrl }),
  );
  const ac = new AbortController();
  const onSignal = () => ac.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const say = (l: string) => {
    if (!flags.quiet && !flags.json) process.stderr.write(`corral: ${l}\n`);
  };
  try {
    const store = new S3Store({
      client: s3,
      bucket: target.bucket,
      prefix: `jobs/${job}/`,
      stagingDir: os.tmpdir(),
    });
    const running = await d.detachedRecord(s3, target.bucket, job);
    if (!running && (await store.getText('job.json')) === undefined)
      throw new UsageError(
        'JOB',
        `cluster ${target.name} has no job "${job}"`,
        'run corral status --cluster NAME to list its jobs',
      );
    // the coordinating worker's ledger, where report and the dashboard --cluster of this machine read it
    const clusterDir = path.join(resolveStateDir(flags.stateDir), 'cluster', target.name);
    const ledger = () => d.downloadLedger(s3, target.bucket, job, clusterDir).catch(() => false);
    let last = '';
    let copied = 0;
    const r = running
      ? await d.followDetached(s3, target.bucket, job, {
          tickMs: Number(process.env.CORRAL_CLUSTER_TICK_MS) || undefined,
          signal: ac.signal,
          onProgress: async (p) => {
            const line = progressLine(p);
            if (line !== last) say(line);
            last = line;
            if (++copied % 10 === 1) await ledger();
          },
        })
      : await d.detachedResult(s3, target.bucket, job);
    await ledger();
    if (r === 'interrupted') {
      process.stdout.write(`stopped following job ${job}; it goes on on cluster ${target.name}\n`);
      process.exitCode = 130;
      return;
    }
    // the outputs: every committed key but the markers of tasks without output
    const into = path.resolve(flags.into ?? '.');
    const outs: string[] = [];
    for await (const k of store.list()) if (!k.startsWith('.tasks/')) outs.push(k);
    let n = 0;
    await eachLimit(outs, TRANSFERS_IN_FLIGHT, async (k) => {
      if (await store.download(k, path.join(into, ...k.split('/')))) n++;
    });
    const p = await d.bucketProgress(s3, target.bucket, job);
    const status = r?.status ?? 'unknown';
    if (flags.json) printJson({ job, cluster: target.name, status, ...p, downloaded: n, into });
    else
      process.stdout.write(
        `job ${job} ${status} on cluster ${target.name}: ${p.done}/${p.total ?? '?'} done, ${p.failed} failed; ${n} output(s) downloaded into ${into}\n`,
      );
    process.exitCode = status === 'succeeded' ? 0 : 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    s3.destroy();
  }
}

/** `corral cancel JOB --cluster NAME [--abandon]`: stops a detached run and says what is left. */
export async function cancelOnCluster(
  job: string,
  flags: DetachFlags & { abandon?: boolean },
): Promise<void> {
  const d = await import('../../transport/cluster/detached.js');
  const { createS3Client, resolveAwsSettings } = await import('../../aws/clients.js');
  const { usageErrorOf } = await import('../../aws/preflight.js');
  const { target } = await targetOf(flags);
  const settings = resolveAwsSettings({
    region: flags.region ?? target.region,
    endpointUrl: flags.endpointUrl,
  });
  const s3 = createS3Client(settings);
  try {
    if (!(await d.detachedRecord(s3, target.bucket, job))) {
      const { S3Store } = await import('../../store/s3/s3-store.js');
      const store = new S3Store({
        client: s3,
        bucket: target.bucket,
        prefix: `jobs/${job}/`,
        stagingDir: os.tmpdir(),
      });
      if ((await store.getText('job.json')) === undefined)
        throw new UsageError(
          'JOB',
          `cluster ${target.name} has no job "${job}"`,
          `run corral status --cluster ${target.name} to list its jobs`,
        );
      throw new UsageError(
        'JOB',
        `job "${job}" has no detached run going on on cluster ${target.name}`,
        `corral status --cluster ${target.name} ${job} shows where it is; a run in a terminal stops with Ctrl-C`,
      );
    }
    const r = await d.cancelDetached(s3, target.bucket, job, {
      abandon: flags.abandon === true,
      owner: `cancel-${os.hostname()}-${process.pid}`,
    });
    if (flags.json) printJson({ ...r, cluster: target.name });
    else
      process.stdout.write(
        `job ${job} cancelled on cluster ${target.name}: ${r.done}/${r.total ?? '?'} done, ${r.failed} failed, ${r.left ?? '?'} left` +
          (r.abandon
            ? '; queued tasks are dropped by the workers (running ones finish)'
            : '; tasks already sent finish, nothing new is sent') +
          `\n  resume it: corral run FILE --cluster ${target.name} [--detach]\n`,
      );
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw usageErrorOf(err, { field: 'bucket', name: target.bucket, endpoint: settings.endpointUrl }) ?? err;
  } finally {
    s3.destroy();
  }
}

async function targetOf(flags: DetachFlags): Promise<{ target: ClusterTarget }> {
  const { resolveClusterTarget } = await import('../../aws/outputs.js');
  const { resolveStateDir } = await import('../../engine/state-dir.js');
  const stateDir = resolveStateDir(flags.stateDir === '.corral' ? undefined : flags.stateDir);
  return { target: await resolveClusterTarget(flags.cluster!, flags, stateDir) };
}
