/**
 * Target 10 (issue 24, item 1): all AWS requests per task of a cluster job, counted at the peer
 * (fauxqs on 127.0.0.1 with the request-counting hook of test/cluster-peer.ts, which also serves
 * CloudWatch Logs). A coordinator (runClusterJob) and two workers (runClusterWorker), in this
 * process, run an N-task map job of small shell tasks, each writing a small output
 * (`outputs: out/{index}.txt`, a few bytes, ≤ 64 KiB); every call of every service is counted:
 * SQS (enqueue, receive, heartbeat, delete, queue-depth polls, idle long polls), S3 (inputs,
 * outputs, commit markers, task logs, the coordinator's listings and downloads) and CloudWatch.
 *
 * Dollar cost per million tasks, at AWS list prices (us-east-1, 2026, no free tier):
 *   SQS standard queue: $0.40 per million requests (each 64 KiB chunk of a request is one);
 *   S3 Standard: PUT, COPY, POST, LIST $0.005 per 1,000; GET, HEAD and others $0.0004 per 1,000;
 *     DELETE free;
 *   CloudWatch: PutMetricData $0.01 per 1,000; CloudWatch Logs requests are not charged per
 *     request (ingestion is, per GB: not counted here).
 *
 *   node --import tsx bench/aws-requests.ts [--tasks 10000]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadJobFile } from '../src/spec/job.js';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import { createCluster, startPeer } from '../test/cluster-peer.js';
import type { Bench, Row } from './lib.js';

const BUDGET = 0.35;

/** US dollars per request, by the peer's action name (`sqs:X`, `s3:METHOD`, `logs:X`, `cloudwatch:X`). */
export function pricePerRequest(action: string): number {
  const [service, op] = action.split(':') as [string, string];
  if (service === 'sqs') return 0.4e-6;
  if (service === 's3') {
    if (op === 'DELETE') return 0;
    if (op === 'PUT' || op === 'POST' || op === 'LIST') return 0.005e-3;
    return 0.0004e-3; // GET, HEAD
  }
  if (service === 'cloudwatch') return op === 'PutMetricData' ? 0.01e-3 : 0;
  return 0; // CloudWatch Logs: charged per GB ingested, not per request
}

/** Counts of one run. */
export interface AwsCount {
  readonly tasks: number;
  readonly total: number;
  readonly byService: Record<string, number>;
  readonly byAction: Record<string, number>;
  readonly perTask: number;
  /** US dollars of requests per million tasks, at the list prices above. */
  readonly dollarsPerMillion: number;
  readonly seconds: number;
}

/** The job a count runs: a map over N lines of one command. */
export interface CountedJob {
  /** The task's command. @default 'echo {input}' */
  readonly command?: string;
  /** The step's outputs, or none. @default 'out/{index}.txt' */
  readonly outputs?: string | null;
  /** Whether the coordinator downloads outputs into the job folder. @default true */
  readonly collect?: boolean;
  /** The job's name (queues and bucket are named after it). @default `awsreq${tasks}` */
  readonly name?: string;
}

/**
 * Runs an N-task map job on the peer (a coordinator and two workers, in this process) and counts
 * every request to it, by service and by call. By default the tasks write small outputs.
 */
export async function countAwsRequests(
  tasks: number,
  dir: string,
  log: (l: string) => void = () => {},
  job: CountedJob = {},
): Promise<AwsCount> {
  const peer = await startPeer();
  try {
    mkdirSync(dir, { recursive: true });
    const name = job.name ?? `awsreq${tasks}`;
    const outputs = job.outputs === undefined ? 'out/{index}.txt' : job.outputs;
    writeFileSync(
      path.join(dir, 'items.txt'),
      `${Array.from({ length: tasks }, (_, i) => `item-${i}`).join('\n')}\n`,
    );
    writeFileSync(
      path.join(dir, 'job.yaml'),
      `name: ${name}\ntasks:\n  map: { lines: items.txt }\n  command: ${JSON.stringify(job.command ?? 'echo {input}')}\n${outputs ? `outputs: ${outputs}\n` : ''}lease: 60s\n`,
    );
    const target = await createCluster(peer, name);
    peer.requests.clear();
    const t0 = Date.now();
    const run = runClusterJob(loadJobFile(path.join(dir, 'job.yaml')), target, {
      stateDir: path.join(dir, '.corral'),
      endpointUrl: peer.endpoint,
      ...(job.collect === false ? { collect: false } : {}),
      log,
    });
    const workers = ['a', 'b'].map((id) =>
      runClusterWorker({
        ...target,
        id,
        endpointUrl: peer.endpoint,
        cacheDir: path.join(dir, `w-${id}`),
        idleExitMs: 1500,
        spot: false,
        log: () => {},
      }),
    );
    const [summary] = await Promise.all([run, ...workers]);
    if (summary.status !== 'succeeded') throw new Error(`job ${summary.status}`);
    const byAction = Object.fromEntries([...peer.requests].sort((a, b) => b[1] - a[1]));
    const byService: Record<string, number> = {};
    let total = 0;
    let dollars = 0;
    for (const [k, v] of peer.requests) {
      const service = k.split(':')[0]!;
      byService[service] = (byService[service] ?? 0) + v;
      total += v;
      dollars += v * pricePerRequest(k);
    }
    return {
      tasks,
      total,
      byService,
      byAction,
      perTask: total / tasks,
      dollarsPerMillion: (dollars / tasks) * 1e6,
      seconds: (Date.now() - t0) / 1000,
    };
  } finally {
    await peer.stop();
  }
}

export const run: Bench = async (ctx) => {
  const tasks = ctx.size === 'full' ? 10_000 : 100;
  const c = await countAwsRequests(tasks, path.join(ctx.tmp, 'aws-requests'), ctx.log);
  const services = Object.entries(c.byService)
    .map(([k, v]) => `${k.toUpperCase()} ${(v / tasks).toFixed(3)}`)
    .join(' + ');
  const row: Row = {
    id: '10',
    what: `all AWS requests per task, ${tasks.toLocaleString('en-US')}-task job of small tasks (outputs ≤ 64 KiB) on fauxqs`,
    corral: `${c.perTask.toFixed(3)} requests/task (${services}); $${c.dollarsPerMillion.toFixed(2)} per million tasks at list prices`,
    peer: `budget ${BUDGET} requests/task ($${(BUDGET * 0.4).toFixed(2)} per million tasks were they all SQS requests)`,
    ratio: `${(c.perTask / BUDGET).toFixed(2)}× of the budget`,
    target: `≤${BUDGET} requests/task`,
    status: c.perTask <= BUDGET ? 'met' : 'missed',
    command: `node --import tsx bench/aws-requests.ts --tasks ${tasks}`,
    note: `by call: ${Object.entries(c.byAction)
      .map(([k, v]) => `${k} ${v}`)
      .join(
        ', ',
      )}; prices: SQS $0.40/M requests, S3 PUT/LIST $5/M, GET/HEAD $0.40/M, DELETE free, CloudWatch PutMetricData $10/M`,
  };
  return [row];
};

/**
 * The command line of a request-counting bench (`--tasks N`, default 10,000): runs `count` in a
 * scratch folder, removed after, logging to stderr.
 */
export async function fromCommandLine(
  name: string,
  count: (tasks: number, dir: string, log: (l: string) => void) => Promise<void>,
): Promise<void> {
  const i = process.argv.indexOf('--tasks');
  const tasks = i > 0 ? Number(process.argv[i + 1]) : 10_000;
  if (!Number.isInteger(tasks) || tasks < 1) throw new Error('--tasks is a positive integer');
  const dir = mkdtempSync(path.join(os.tmpdir(), `corral-${name}-`));
  try {
    await count(tasks, dir, (l) => process.stderr.write(`${l}\n`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await fromCommandLine('aws-requests', async (tasks, dir, log) => {
    const c = await countAwsRequests(tasks, dir, log);
    process.stdout.write(
      `${c.tasks} tasks in ${c.seconds.toFixed(1)} s: ${c.total} AWS requests = ${c.perTask.toFixed(3)} requests/task (budget ${BUDGET}); $${c.dollarsPerMillion.toFixed(2)} per million tasks\n`,
    );
    for (const [k, v] of Object.entries(c.byService))
      process.stdout.write(`  ${k.padEnd(12)} ${v} (${(v / tasks).toFixed(3)}/task)\n`);
    for (const [k, v] of Object.entries(c.byAction)) process.stdout.write(`  ${k.padEnd(36)} ${v}\n`);
  });
}
