/**
 * Autoscaling that never kills a busy worker (issue 20), against local peers: fauxqs (SQS + S3),
 * a fake IMDSv2 and, for the Auto Scaling API, the query peer (aws-query-peer.ts). Workers are
 * real: `runClusterWorker` running real task processes, or `corral worker` processes.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { runClusterJob } from '../src/engine/cluster-run.js';
import { loadJobFile } from '../src/spec/job.js';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import { type FakeImds, type Peer, startFakeImds, startPeer } from './cluster-peer.js';
import { tempDir, waitFor, writeFiles } from './helpers.js';

let peer: Peer;
let imds: FakeImds;
before(async () => {
  peer = await startPeer();
  imds = await startFakeImds();
});
after(async () => {
  await imds.stop();
  await peer.stop();
});

test('a spot rebalance recommendation stops claiming but finishes the held tasks; nothing is handed back nor run twice (issue 20, item 4)', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  mkdirSync(marks);
  const files: Record<string, string> = {
    'job.yaml': `name: rebal
tasks:
  map: { glob: "in/*.txt" }
  command: 'touch "${marks}/{input.stem}.$W.$$"; sleep 1; tr a-z A-Z < {input}'
outputs: out/{input.stem}.txt
lease: 20s
`,
  };
  for (let i = 0; i < 6; i++) files[`in/t${i}.txt`] = `task ${i}\n`;
  writeFiles(dir, files);
  const { queueUrl, dlqUrl } = await peer.createQueues('rebal');
  await peer.createBucket('rebal-bucket');
  const target = {
    name: 'rebal',
    queueUrl,
    deadLetterQueueUrl: dlqUrl,
    bucket: 'rebal-bucket',
    region: 'us-east-1',
  };
  const run = runClusterJob(loadJobFile(path.join(dir, 'job.yaml')), target, {
    stateDir: path.join(dir, '.corral'),
    endpointUrl: peer.endpoint,
    tickMs: 200,
  });
  await waitFor(() => (peer.requests.get('sqs:SendMessageBatch') ?? 0) > 0, 60_000);
  const lines: string[] = [];
  const common = { ...target, endpointUrl: peer.endpoint, idleExitMs: 5000, spotIntervalMs: 100 };
  process.env.W = 'w1';
  const first = runClusterWorker({
    ...common,
    id: 'w1',
    prefetch: 2,
    cacheDir: path.join(dir, 'w1'),
    imdsEndpoint: imds.endpoint,
    log: (l) => lines.push(l),
  });
  // the recommendation while w1 runs its first task
  await waitFor(() => readdirSync(marks).length > 0, 60_000);
  imds.rebalance();
  const r1 = await first;
  assert.equal(r1.reason, 'rebalance', lines.join('\n'));
  assert.match(lines.join('\n'), /spot rebalance recommendation; claiming no new task/);
  const ranOnW1 = readdirSync(marks).filter((f) => f.split('.')[1] === 'w1');
  assert.ok(ranOnW1.length >= 1 && ranOnW1.length < 6, `w1 ran ${ranOnW1.length} task(s)`);
  assert.equal(r1.ran, ranOnW1.length, 'every task w1 started, it finished');
  // the rest runs on another worker; no task ran twice (nothing held was handed back)
  process.env.W = 'w2';
  const r2 = await runClusterWorker({
    ...common,
    id: 'w2',
    spot: false,
    cacheDir: path.join(dir, 'w2'),
    log: () => {},
  });
  delete process.env.W;
  const summary = await run;
  assert.equal(summary.status, 'succeeded');
  assert.equal(r1.ran + r2.ran, 6);
  const stems = readdirSync(marks).map((f) => f.split('.')[0]);
  assert.equal(new Set(stems).size, 6);
  assert.equal(stems.length, 6, `each task ran once: ${stems.sort().join(' ')}`);
  for (let i = 0; i < 6; i++)
    assert.equal(readFileSync(path.join(dir, 'out', `t${i}.txt`), 'utf8'), `TASK ${i}\n`);
  assert.equal(imds.tokenless, 0, 'IMDSv2 only');
});
