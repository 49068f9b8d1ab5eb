import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { SqsQueue } from '../src/queue/sqs/sqs-queue.js';
import { loadJobFile } from '../src/spec/job.js';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
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

test('a cluster run: coordinator + 2 workers (one gets a spot notice mid-task) commit every output once', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/a.txt': 'alpha\n',
    'in/b.txt': 'beta\n',
    'in/c.txt': 'gamma\n',
    'in/d.txt': 'delta\n',
    'job.yaml': `name: cl1
tasks:
  map: { glob: "in/*.txt" }
  command: 'sleep 0.3; tr a-z A-Z < {input}'
outputs: out/{input.stem}.txt
lease: 5s
`,
  });
  const { queueUrl, dlqUrl } = await peer.createQueues('cl1');
  await peer.createBucket('cl1-bucket');
  const target = {
    name: 'cl1',
    queueUrl,
    deadLetterQueueUrl: dlqUrl,
    bucket: 'cl1-bucket',
    region: 'us-east-1',
  };
  const job = loadJobFile(path.join(dir, 'job.yaml'));
  const run = runClusterJob(job, target, {
    stateDir: path.join(dir, '.corral'),
    endpointUrl: peer.endpoint,
    tickMs: 200,
  });
  // Workers start once the tasks are in the queue: a worker that exits after 1.5 s idle must not
  // give up while the coordinator is still uploading inputs on a loaded machine (it hung CI so).
  await waitFor(() => (peer.requests.get('sqs:SendMessageBatch') ?? 0) > 0, 60_000);
  const common = {
    ...target,
    endpointUrl: peer.endpoint,
    // long enough that the steady worker cannot idle out while the spotty one hands its tasks
    // back on a loaded machine (the job would then wait for workers that never come)
    idleExitMs: 5000,
    prefetch: 1,
    spotIntervalMs: 100,
    log: () => {},
  };
  const spotty = runClusterWorker({
    ...common,
    id: 'spot',
    cacheDir: path.join(dir, 'w1'),
    imdsEndpoint: imds.endpoint,
  });
  setTimeout(() => imds.notice(), 400);
  const steady = runClusterWorker({ ...common, id: 'steady', cacheDir: path.join(dir, 'w2'), spot: false });
  const [summary, r1, r2] = await Promise.all([run, spotty, steady]);
  assert.equal(summary.status, 'succeeded');
  assert.equal(summary.counts.done, 4);
  assert.equal(r1.reason, 'spot');
  assert.ok(
    r1.releaseMs !== undefined && r1.releaseMs < 1000,
    `leases back in ${r1.releaseMs} ms (must be < 1000)`,
  );
  assert.equal(r2.reason, 'idle');
  for (const [stem, text] of [
    ['a', 'ALPHA'],
    ['b', 'BETA'],
    ['c', 'GAMMA'],
    ['d', 'DELTA'],
  ]) {
    assert.equal(readFileSync(path.join(dir, 'out', `${stem}.txt`), 'utf8'), `${text}\n`);
  }
  assert.equal(imds.tokenless, 0, 'IMDSv2 only');
});

test("a task past its last attempt is recorded as failed in its job's folder, even when a worker still looking for a job receives it", async (t) => {
  const dir = tempDir(t);
  const { queueUrl, dlqUrl } = await peer.createQueues('cl-dead');
  await peer.createBucket('cl-dead-bucket');
  // a task with one attempt, whose lease expired: its message comes back once more
  const producer = new SqsQueue({ client: peer.sqs, queueUrl, job: 'gone', maxAttempts: 1 });
  await producer.enqueue([{ key: '7', step: 'map', payload: { i: 7 } }]);
  const first = await peer.sqs.send(
    new ReceiveMessageCommand({ QueueUrl: queueUrl, VisibilityTimeout: 0, WaitTimeSeconds: 1 }),
  );
  assert.equal(first.Messages?.length, 1);
  // the worker's first receive is the one that looks for a job: it finds the task past its attempts
  const r = await runClusterWorker({
    queueUrl,
    deadLetterQueueUrl: dlqUrl,
    bucket: 'cl-dead-bucket',
    region: 'us-east-1',
    endpointUrl: peer.endpoint,
    id: 'w-dead',
    cacheDir: path.join(dir, 'w'),
    idleExitMs: 1500,
    spot: false,
    log: () => {},
  });
  assert.equal(r.reason, 'idle');
  const marker = peer.readObject('cl-dead-bucket', 'jobs/gone/failed/7');
  assert.ok(marker, `no failure marker; keys: ${peer.objectKeys('cl-dead-bucket', '').join(', ')}`);
  const f = JSON.parse(marker.toString('utf8')) as { key: string; attempts: number; error: string };
  assert.deepEqual([f.key, f.attempts], ['7', 1]);
  assert.match(f.error, /lease expired/);
  const dlq = await peer.sqs.send(new ReceiveMessageCommand({ QueueUrl: dlqUrl, WaitTimeSeconds: 1 }));
  assert.equal(dlq.Messages?.length, 1, 'the message was moved to the dead-letter queue');
});
