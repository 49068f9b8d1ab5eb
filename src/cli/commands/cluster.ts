/**
 * The `--cluster NAME` variants of `corral run`, `corral status` and `corral logs`. The shared
 * command files only add the options (`addClusterOptions`) and an early
 * `if (flags.cluster) return …OnCluster(…)`; everything else lives here.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { jobPaths, resolveStateDir } from '../../engine/state-dir.js';
import type { TaskCounts } from '../../queue/queue.js';
import { UsageError } from '../../spec/errors.js';
import { formatSeconds, printJson } from '../output.js';

/** Flags of the `--cluster` variants. */
export interface ClusterFlags {
  cluster?: string;
  outputs?: string;
  queueUrl?: string;
  dlqUrl?: string;
  bucket?: string;
  region?: string;
  endpointUrl?: string;
  stateDir?: string;
  json?: boolean;
  quiet?: boolean;
  /** Serve the dashboard while the run goes on (`run` only). */
  ui?: boolean;
  uiHost?: string;
  uiPort?: number;
  token?: string;
  /** HyperFlow `{{var}}` values (`run` only). */
  var?: string[];
  /** HyperFlow working directory (`run` only). */
  workdir?: string;
  /** `STEP=POOL` routes (`run` only). */
  pool?: string[];
  /** Submit and return; a cluster worker coordinates (`run` only, issue 23). */
  detach?: boolean;
}

/** Adds `--cluster` and the flags that locate a cluster's queue and bucket. */
export function addClusterOptions(cmd: Command): Command {
  return cmd
    .option('--cluster <NAME>', 'run on (or read from) this cluster instead of this machine')
    .option(
      '--outputs <FILE>',
      "the cluster's stack outputs as JSON (corral up --json); default <state dir>/clusters/NAME.json if it exists, else the outputs of stack corral-NAME from CloudFormation",
    )
    .option('--queue-url <URL>', 'cluster job queue (instead of --outputs; with --bucket)')
    .option('--dlq-url <URL>', 'cluster dead-letter queue')
    .option('--bucket <NAME>', 'cluster bucket (instead of --outputs; with --queue-url)')
    .option('--region <REGION>', 'AWS region of the cluster (env AWS_REGION)')
    .option(
      '--endpoint-url <URL>',
      'endpoint of every AWS client (env CORRAL_ENDPOINT_URL, AWS_ENDPOINT_URL)',
    );
}

async function targetOf(flags: ClusterFlags) {
  const { resolveClusterTarget } = await import('../../aws/outputs.js');
  const stateDir = resolveStateDir(flags.stateDir === '.corral' ? undefined : flags.stateDir);
  return { stateDir, target: await resolveClusterTarget(flags.cluster!, flags, stateDir) };
}

/** `corral run FILE --cluster NAME`: the job's tasks run on the cluster's workers. */
export async function runOnCluster(file: string, flags: ClusterFlags): Promise<void> {
  const { loadJob, parseVars } = await import('../../workflow/load-job.js');
  const { runClusterJob } = await import('../../transport/cluster/cluster-run.js');
  const job = loadJob(file, { vars: parseVars(flags.var ?? []), workdir: flags.workdir, forCluster: true });
  const { parsePoolFlags } = await import('../../transport/cluster/pool-routing.js');
  const pools = parsePoolFlags(flags.pool);
  const { stateDir, target } = await targetOf(flags);
  const ac = new AbortController();
  const onSignal = () => ac.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const say = (l: string) => {
    if (!flags.quiet && !flags.json) process.stderr.write(`corral: ${l}\n`);
  };
  const clusterDir = path.join(stateDir, 'cluster', target.name);
  // issue 23: submit detached, or follow a detached run of this job first (never a second coordinator)
  const { detachOrFollow } = await import('./detach.js');
  const opts = { stateDir: clusterDir, endpointUrl: flags.endpointUrl, region: flags.region, pools };
  if ((await detachOrFollow(job, target, opts, flags, ac.signal, say)) === 'done') {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    return;
  }
  say(`running job ${job.spec.name} from ${file} on cluster ${target.name}`);
  const ui = flags.ui
    ? await (await import('../../observe/dashboard-server.js')).startDashboard({
        stateDir: clusterDir,
        job: job.spec.name,
        host: flags.uiHost ?? '127.0.0.1',
        port: flags.uiPort ?? 0,
        token: flags.token ?? process.env.CORRAL_DASHBOARD_TOKEN,
        flags: { host: '--ui-host', port: '--ui-port', token: '--token' },
      })
    : undefined;
  if (ui)
    process.stderr.write(
      `corral: dashboard at ${ui.url}${flags.token || process.env.CORRAL_DASHBOARD_TOKEN ? '?token=<your token>' : ''}\n`,
    );
  const tick = Number(process.env.CORRAL_CLUSTER_TICK_MS) || undefined;
  let last = '';
  let summary: Awaited<ReturnType<typeof runClusterJob>>;
  try {
    summary = await runClusterJob(job, target, {
      stateDir: clusterDir,
      endpointUrl: flags.endpointUrl,
      region: flags.region,
      signal: ac.signal,
      tickMs: tick,
      log: say,
      pools,
      onProgress: (p) => {
        const line = `${p.done}/${p.total} done, ${p.leased} running, ${p.pending} pending, ${p.dead} failed`;
        if (line !== last) say(line);
        last = line;
      },
    });
  } finally {
    await ui?.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (flags.json) printJson(summary);
  else {
    const c = summary.counts;
    process.stdout.write(
      `job ${summary.job} ${summary.status} on cluster ${target.name}: ${c.done}/${c.total} tasks done, ${c.dead} failed${c.skipped ? `, ${c.skipped} skipped` : ''} in ${formatSeconds(summary.seconds)}${summary.resumed ? ' (resumed)' : ''}\n`,
    );
    for (const d of summary.deadLetters.slice(0, 20))
      process.stdout.write(
        `  task ${d.key}${d.input ? ` (${d.input})` : ''}: ${d.error} after ${d.attempts} attempt(s); log: corral logs ${summary.job} ${d.key} --cluster ${target.name}\n`,
      );
    const spread = summary.failedPaths.filter((fp) => fp.includes('→'));
    if (spread.length > 0) {
      process.stdout.write('failed paths through the workflow:\n');
      for (const fp of spread) process.stdout.write(`  ${fp}\n`);
    }
    for (const f of summary.missingOutputs) process.stdout.write(`  missing workflow output: ${f}\n`);
    if (summary.status === 'interrupted')
      process.stdout.write('interrupted: the tasks stay queued; run the same command again to follow them\n');
  }
  process.exitCode = summary.status === 'succeeded' ? 0 : summary.status === 'interrupted' ? 130 : 1;
}

/**
 * Where this machine keeps what it tracks of the runs on cluster `name` (`<state dir>/cluster/NAME`):
 * job ledgers laid out as a local state folder, read by `dashboard`, `report` and `/metrics`.
 */
export function clusterStateDir(stateDirFlag: string | undefined, name: string): string {
  if (!/^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$/.test(name))
    throw new UsageError(
      '--cluster',
      `"${name}" is not a cluster name (1–32 lowercase letters, digits or dashes)`,
      'pass the name given to corral up, e.g. --cluster demo',
    );
  return path.join(resolveStateDir(stateDirFlag), 'cluster', name);
}

/** What `corral status --cluster NAME [JOB]` reports. */
export interface ClusterStatus {
  readonly cluster: string;
  readonly queue: { pending: number; leased: number; dead: number };
  readonly jobs: Array<{
    job: string;
    total?: number;
    done: number;
    failed: number;
    /** Workers that committed at least one result of the job (ids from the commit markers). */
    workers: string[];
    /** Per-step counts of a workflow, from this machine's ledger of its last `run --cluster`. */
    steps?: Record<string, TaskCounts>;
  }>;
}

/** `corral status --cluster NAME [JOB]`: queue depth, and per job done/failed and the workers seen. */
export async function statusOnCluster(name: string | undefined, flags: ClusterFlags): Promise<void> {
  const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
  const { createS3Client, createSqsClient, resolveAwsSettings } = await import('../../aws/clients.js');
  const { preflightAws, usageErrorOf } = await import('../../aws/preflight.js');
  const { SqsQueue } = await import('../../queue/sqs/sqs-queue.js');
  const { S3Store } = await import('../../store/s3/s3-store.js');
  const { stateDir, target } = await targetOf(flags);
  const settings = resolveAwsSettings({
    region: flags.region ?? target.region,
    endpointUrl: flags.endpointUrl,
  });
  const s3 = createS3Client(settings);
  const sqs = createSqsClient(settings);
  try {
    await preflightAws({
      s3,
      sqs,
      bucket: target.bucket,
      queueUrl: target.queueUrl,
      endpoint: settings.endpointUrl,
    });
    const queue = new SqsQueue({
      client: sqs,
      queueUrl: target.queueUrl,
      deadLetterQueueUrl: target.deadLetterQueueUrl,
    });
    const q = await queue.counts();
    await queue.close();
    let names: string[];
    if (name !== undefined) names = [name];
    else {
      names = [];
      let token: string | undefined;
      for (let page = 0; page < 1000; page++) {
        const r = await s3.send(
          new ListObjectsV2Command({
            Bucket: target.bucket,
            Prefix: 'jobs/',
            Delimiter: '/',
            ContinuationToken: token,
          }),
        );
        for (const p of r.CommonPrefixes ?? []) if (p.Prefix) names.push(p.Prefix.slice(5, -1));
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
        if (!token) break;
      }
    }
    const status: ClusterStatus = {
      cluster: target.name,
      queue: { pending: q.pending, leased: q.leased, dead: q.dead },
      jobs: [],
    };
    for (const job of names) {
      const store = new S3Store({
        client: s3,
        bucket: target.bucket,
        prefix: `jobs/${job}/`,
        stagingDir: path.join(stateDir, 'staging'),
      });
      const manifest = await store.getText('enqueued.json');
      if (name !== undefined && manifest === undefined && (await store.getText('job.json')) === undefined)
        throw new UsageError(
          'JOB',
          `cluster ${target.name} has no job "${job}"`,
          'run corral status --cluster NAME to list its jobs',
        );
      const workers = new Set<string>();
      let done = 0;
      for await (const k of store.list()) {
        done++;
        const m = await store.marker(k);
        const owner = m?.attempt.replace(/^\d+-/, '');
        if (owner) workers.add(owner);
      }
      const failed = (await store.failures()).length;
      const total = manifest ? (JSON.parse(manifest) as { total: number }).total : undefined;
      const steps = await ledgerSteps(jobPaths(path.join(stateDir, 'cluster', target.name), job).db);
      // a workflow's markers include outputs of processes that write several: count tasks instead
      if (steps) done = Object.values(steps).reduce((a, c) => a + c.done, 0);
      status.jobs.push({
        job,
        total,
        done,
        failed,
        workers: [...workers].sort(),
        ...(steps ? { steps } : {}),
      });
    }
    if (flags.json) {
      printJson(status);
      return;
    }
    const out = process.stdout;
    out.write(
      `cluster ${target.name}: queue ${q.pending} pending, ${q.leased} leased, ${q.dead} in the dead-letter queue\n`,
    );
    if (status.jobs.length === 0) out.write(`no jobs in s3://${target.bucket}/jobs/\n`);
    for (const j of status.jobs) {
      out.write(
        `job ${j.job}: ${j.done}/${j.total ?? '?'} done, ${j.failed} failed; workers seen: ${j.workers.length}${j.workers.length ? ` (${j.workers.join(', ')})` : ''}\n`,
      );
      for (const [step, c] of Object.entries(j.steps ?? {}))
        out.write(
          `  step ${step}: ${c.done}/${c.total} done, ${c.pending + c.leased} queued or running, ${c.blocked} waiting, ${c.dead} failed, ${c.skipped} skipped\n`,
        );
    }
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw usageErrorOf(err, { field: 'bucket', name: target.bucket, endpoint: settings.endpointUrl }) ?? err;
  } finally {
    s3.destroy();
    sqs.destroy();
  }
}

/** Per-step counts from a workflow's ledger (the coordinator's view at its last poll), if there is one. */
async function ledgerSteps(file: string): Promise<Record<string, TaskCounts> | undefined> {
  if (!existsSync(file)) return undefined;
  const { openStateDb } = await import('../../ledger/sqlite-queue.js');
  const db = openStateDb(file, { readonly: true });
  try {
    const rows = db.prepare('SELECT step, state, count(*) AS n FROM tasks GROUP BY step, state').all() as {
      step: string;
      state: keyof TaskCounts;
      n: number;
    }[];
    const steps: Record<string, TaskCounts> = {};
    for (const r of rows) {
      const c = steps[r.step] ?? {
        pending: 0,
        leased: 0,
        blocked: 0,
        done: 0,
        dead: 0,
        skipped: 0,
        total: 0,
      };
      steps[r.step] = c;
      c[r.state] += r.n;
      c.total += r.n;
    }
    return steps;
  } finally {
    db.close();
  }
}

/** `corral logs JOB [TASK] --cluster NAME`: task logs shipped to the bucket (`jobs/JOB/logs/`). */
export async function logsOnCluster(
  job: string,
  task: string | undefined,
  flags: ClusterFlags,
): Promise<void> {
  const { createS3Client, resolveAwsSettings } = await import('../../aws/clients.js');
  const { usageErrorOf } = await import('../../aws/preflight.js');
  const { S3Store } = await import('../../store/s3/s3-store.js');
  const { taskLogName } = await import('../../engine/state-dir.js');
  const { stateDir, target } = await targetOf(flags);
  const settings = resolveAwsSettings({
    region: flags.region ?? target.region,
    endpointUrl: flags.endpointUrl,
  });
  const s3 = createS3Client(settings);
  try {
    const store = new S3Store({
      client: s3,
      bucket: target.bucket,
      prefix: `jobs/${job}/`,
      stagingDir: path.join(stateDir, 'staging'),
    });
    if (task === undefined) {
      let n = 0;
      for await (const k of store.keysBelow('logs/')) {
        process.stdout.write(`${k}\n`);
        n++;
      }
      if (n === 0)
        process.stdout.write(`job ${job} has no task logs in s3://${target.bucket}/jobs/${job}/logs/\n`);
      return;
    }
    const text = await store.getText(`logs/${taskLogName(task)}`);
    if (text === undefined) {
      const failure = (await store.failures()).find((f) => f.key === task);
      const committed = await store.exists(`.tasks/${task}`);
      process.stdout.write(
        `task ${task} of job ${job} has no log in the bucket${failure ? ` (failed: ${failure.error})` : committed ? ' (done, no output on stderr)' : ''}\n`,
      );
      return;
    }
    process.stdout.write(text);
  } catch (err) {
    throw usageErrorOf(err, { field: 'bucket', name: target.bucket, endpoint: settings.endpointUrl }) ?? err;
  } finally {
    s3.destroy();
  }
}
