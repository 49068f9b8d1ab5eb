/**
 * Target 4: SQS requests per task of a cluster job, counted at the peer (fauxqs on 127.0.0.1 with
 * the request-counting hook of test/cluster-peer.ts). A coordinator (runClusterJob) and two
 * workers (runClusterWorker), in this process, run an N-task map job of `true` commands; every
 * SQS call is counted: enqueue, receive, heartbeat, delete, job discovery, the coordinator's
 * queue-depth polls and the workers' idle long polls before they exit.
 *
 *   node --import tsx bench/sqs-requests.ts [--tasks 10000]
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { countAwsRequests, fromCommandLine } from './aws-requests.js';
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

/** Runs an N-task job of `true` commands (no outputs) on the peer and counts its requests. */
export async function countRequests(
  tasks: number,
  dir: string,
  log: (l: string) => void = () => {},
): Promise<SqsCount> {
  const c = await countAwsRequests(tasks, dir, log, {
    name: `sqsreq${tasks}`,
    command: 'true',
    outputs: null,
    collect: false,
  });
  const sqs = c.byService.sqs ?? 0;
  return { tasks, sqs, s3: c.total - sqs, perTask: sqs / tasks, byAction: c.byAction, seconds: c.seconds };
}

export const run: Bench = async (ctx) => {
  const tasks = ctx.size === 'full' ? 10_000 : 100;
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
  await fromCommandLine('sqs-requests', async (tasks, dir, log) => {
    const c = await countRequests(tasks, dir, log);
    process.stdout.write(
      `${c.tasks} tasks in ${c.seconds.toFixed(1)} s: ${c.sqs} SQS requests = ${c.perTask.toFixed(3)} requests/task (budget ${BUDGET}); ${c.s3} S3 requests\n`,
    );
    for (const [k, v] of Object.entries(c.byAction)) process.stdout.write(`  ${k.padEnd(36)} ${v}\n`);
  });
}
