/**
 * Target 4: SQS requests per task of a cluster job, counted at the peer (fauxqs on 127.0.0.1 with
 * the request-counting hook of test/cluster-peer.ts). A coordinator (runClusterJob) and two
 * workers (runClusterWorker), in this process, run an N-task map job of `true` commands; every
 * SQS call is counted: enqueue, receive, heartbeat, delete, job discovery, the coordinator's
 * queue-depth polls and the workers' idle long polls before they exit.
 *
 *   node --import tsx bench/sqs-requests.ts [--tasks 10000]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadJobFile } from '../src/spec/job.js';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import { startPeer } from '../test/cluster-peer.js';
import type { Bench, Row } from './lib.js';

const BUDGET = 0.35;

/** Counts of one run. */
export interface SqsCount {
  readonly tasks: number;
  readonly sqs: number;
  readonly s3: number;
  readonly perTask: number;
  readonly byAction: Record<string, number>;
  readonly seconds: number;
}

/** Runs an N-task job on the peer and counts its requests. */
export async function countRequests(
  tasks: number,
  dir: string,
  log: (l: string) => void = () => {},
): Promise<SqsCount> {
  const peer = await startPeer();
  try {
    mkdirSync(dir, { recursive: true });
    const name = `sqsreq${tasks}`;
    scratchJob(dir, name, tasks);
    const { queueUrl, dlqUrl } = await peer.createQueues(name);
    await peer.createBucket(`${name}-bucket`);
    const target = {
      name,
      queueUrl,
      deadLetterQueueUrl: dlqUrl,
      bucket: `${name}-bucket`,
      region: 'us-east-1',
    };
    peer.requests.clear();
    const t0 = Date.now();
    const run = runClusterJob(loadJobFile(path.join(dir, 'job.yaml')), target, {
      stateDir: path.join(dir, '.corral'),
      endpointUrl: peer.endpoint,
      collect: false,
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
    let sqs = 0;
    let s3 = 0;
    for (const [k, v] of peer.requests) {
      if (k.startsWith('sqs:')) sqs += v;
      else s3 += v;
    }
    return { tasks, sqs, s3, perTask: sqs / tasks, byAction, seconds: (Date.now() - t0) / 1000 };
  } finally {
    await peer.stop();
  }
}

function scratchJob(dir: string, name: string, tasks: number): void {
  writeFileSync(
    path.join(dir, 'items.txt'),
    `${Array.from({ length: tasks }, (_, i) => `item-${i}`).join('\n')}\n`,
  );
  writeFileSync(
    path.join(dir, 'job.yaml'),
    `name: ${name}\ntasks:\n  map: { lines: items.txt }\n  command: 'true'\nlease: 60s\n`,
  );
}

export const run: Bench = async (ctx) => {
  const tasks = ctx.size === 'full' ? 10_000 : 500;
  const c = await countRequests(tasks, path.join(ctx.tmp, 'sqs-requests'), ctx.log);
  const row: Row = {
    id: '4',
    what: `SQS requests per task, ${tasks.toLocaleString('en-US')}-task job on fauxqs`,
    corral: `${c.perTask.toFixed(3)} requests/task (${c.sqs} SQS calls; ${c.s3} S3 calls)`,
    peer: `budget ${BUDGET} requests/task`,
    ratio: `${(c.perTask / BUDGET).toFixed(2)}× of the budget`,
    target: `≤${BUDGET} requests/task`,
    status: c.perTask <= BUDGET ? 'met' : 'missed',
    command: `node --import tsx bench/sqs-requests.ts --tasks ${tasks}`,
    note: Object.entries(c.byAction)
      .filter(([k]) => k.startsWith('sqs:'))
      .map(([k, v]) => `${k.slice(4)} ${v}`)
      .join(', '),
  };
  return [row];
};

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--tasks');
  const tasks = i > 0 ? Number(process.argv[i + 1]) : 10_000;
  if (!Number.isInteger(tasks) || tasks < 1) throw new Error('--tasks is a positive integer');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const os = await import('node:os');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-sqs-requests-'));
  try {
    const c = await countRequests(tasks, dir, (l) => process.stderr.write(`${l}\n`));
    process.stdout.write(
      `${c.tasks} tasks in ${c.seconds.toFixed(1)} s: ${c.sqs} SQS requests = ${c.perTask.toFixed(3)} requests/task (budget ${BUDGET}); ${c.s3} S3 requests\n`,
    );
    for (const [k, v] of Object.entries(c.byAction)) process.stdout.write(`  ${k.padEnd(36)} ${v}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
