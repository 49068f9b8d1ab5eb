/**
 * `map` over objects already in S3 (cluster runs): `glob: s3://bucket/prefix/*.txt` gives one task
 * per matching object, `chunks: s3://bucket/key` byte ranges of an object; neither is uploaded, the
 * worker fetches from the object's own bucket. Coordinator + worker in process against fauxqs.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import type { RunSummary } from '../src/engine/coordinator.js';
import { UsageError } from '../src/spec/errors.js';
import { loadJobFile } from '../src/spec/job.js';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import { type Peer, startPeer } from './cluster-peer.js';
import { runCli, tempDir, waitFor, writeFiles } from './helpers.js';

const DATA = 'data-bucket';
const BIG = `${Array.from({ length: 40 }, (_, i) => `line ${i} ${'x'.repeat(i % 7)}`).join('\n')}\n`;

let peer: Peer;
before(async () => {
  peer = await startPeer();
  await peer.createBucket(DATA);
  const put = (Key: string, Body: string) => peer.s3.send(new PutObjectCommand({ Bucket: DATA, Key, Body }));
  await put('data/a.txt', 'alpha\n');
  await put('data/b.txt', 'beta\n');
  await put('data/c.txt', 'gamma\n');
  await put('data/skip.csv', 'not me\n');
  await put('data/deeper/d.txt', 'not matched by *\n');
  await put('big/lines.txt', BIG);
});
after(async () => {
  await peer.stop();
});

/** Runs the job in `dir` on a fresh queue + bucket with one in-process worker. */
async function runOnCluster(dir: string, name: string): Promise<{ summary: RunSummary; bucket: string }> {
  const { queueUrl, dlqUrl } = await peer.createQueues(name);
  const bucket = `${name}-bucket`;
  await peer.createBucket(bucket);
  const target = { name, queueUrl, deadLetterQueueUrl: dlqUrl, bucket, region: 'us-east-1' };
  const sent = peer.requests.get('sqs:SendMessageBatch') ?? 0;
  const run = runClusterJob(loadJobFile(path.join(dir, 'job.yaml')), target, {
    stateDir: path.join(dir, '.corral'),
    endpointUrl: peer.endpoint,
    tickMs: 200,
  });
  let failed = false;
  run.catch(() => {
    failed = true;
  });
  // Start the worker once the tasks are in the queue (as test/cluster-run.test.ts does).
  await waitFor(() => failed || (peer.requests.get('sqs:SendMessageBatch') ?? 0) > sent, 60_000);
  // It runs until the job ends (an idle timeout could end it early on a loaded machine).
  const stop = new AbortController();
  const worker = runClusterWorker(
    {
      ...target,
      endpointUrl: peer.endpoint,
      idleExitMs: 120_000,
      spot: false,
      id: `${name}-w`,
      cacheDir: path.join(dir, 'w'),
      log: () => {},
    },
    stop.signal,
  );
  try {
    return { summary: await run, bucket };
  } finally {
    stop.abort();
    await worker;
  }
}

test('glob over s3:// objects: one task per matching key, nothing uploaded, {input.stem} from the key', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'job.yaml': `name: s3glob
tasks:
  map: { glob: "s3://${DATA}/data/*.txt" }
  command: 'printf "%s:" {input.name}; tr a-z A-Z < {input}'
outputs: out/{input.stem}.txt
lease: 5s
`,
  });
  const { summary, bucket } = await runOnCluster(dir, 's3glob');
  assert.equal(summary.status, 'succeeded');
  assert.equal(summary.counts.total, 3);
  assert.equal(summary.counts.done, 3);
  for (const [stem, text] of [
    ['a', 'ALPHA'],
    ['b', 'BETA'],
    ['c', 'GAMMA'],
  ])
    assert.equal(readFileSync(path.join(dir, 'out', `${stem}.txt`), 'utf8'), `${stem}.txt:${text}\n`);
  const listed = await peer.s3.send(
    new ListObjectsV2Command({ Bucket: bucket, Prefix: 'jobs/s3glob/inputs/' }),
  );
  assert.equal(listed.KeyCount ?? listed.Contents?.length ?? 0, 0, 'no input uploaded');
});

for (const align of ['none', 'newline'] as const) {
  test(`chunks of an s3:// object, align ${align}: the chunks concatenate to the object`, async (t) => {
    const dir = tempDir(t);
    const name = `s3chunks-${align}`;
    writeFiles(dir, {
      'job.yaml': `name: ${name}
tasks:
  map: { chunks: "s3://${DATA}/big/lines.txt", chunkSize: 50, align: ${align} }
  command: cat
  stdin: input
outputs: out/{index}.txt
lease: 5s
`,
    });
    const { summary } = await runOnCluster(dir, name);
    assert.equal(summary.status, 'succeeded');
    const n = summary.counts.total;
    assert.ok(n >= Math.floor(BIG.length / 50) - 1, `${n} chunks`);
    const parts = Array.from({ length: n }, (_, i) =>
      readFileSync(path.join(dir, 'out', `${i}.txt`), 'utf8'),
    );
    assert.equal(parts.join(''), BIG);
    if (align === 'newline') for (const p of parts) assert.ok(p.endsWith('\n'), JSON.stringify(p));
    else
      assert.ok(
        parts.some((p) => !p.endsWith('\n')),
        'align none cuts inside lines',
      );
  });
}

test('an s3:// glob that matches no object is a UsageError naming the field', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'job.yaml': `name: s3none
tasks:
  map: { glob: "s3://${DATA}/data/*.parquet" }
  command: 'true'
`,
  });
  const { queueUrl } = await peer.createQueues('s3none');
  await peer.createBucket('s3none-bucket');
  await assert.rejects(
    runClusterJob(
      loadJobFile(path.join(dir, 'job.yaml')),
      { name: 's3none', queueUrl, bucket: 's3none-bucket', region: 'us-east-1' },
      { stateDir: path.join(dir, '.corral'), endpointUrl: peer.endpoint },
    ),
    (err: unknown) =>
      err instanceof UsageError && err.field === 'tasks.map.glob' && /matches no object/.test(err.problem),
  );
});

test('a local run (no --cluster) of an s3:// map exits 2 naming the field and the fix', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'job.yaml': `name: s3local
tasks:
  map: { glob: "s3://${DATA}/data/*.txt" }
  command: 'true'
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /tasks\.map\.glob/);
  assert.match(r.stderr, /run it with --cluster NAME/);
});
