import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { HeadBucketCommand, PutBucketTaggingCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { ListQueuesCommand, TagQueueCommand } from '@aws-sdk/client-sqs';
import { CLUSTER_TAG_KEY, findOrphans } from '../src/aws/gc.js';
import { CLUSTER_TAG } from '../src/infra/cluster-stack.js';
import { PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { runCli, tempDir } from './helpers.js';

let peer: Peer;
const queues: Record<string, string> = {};
before(async () => {
  peer = await startPeer();
  for (const [bucket, cluster] of [
    ['gc-old-bucket', 'old'],
    ['gc-live-bucket', 'live'],
    ['gc-plain-bucket', undefined],
  ] as const) {
    await peer.createBucket(bucket);
    await peer.s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'jobs/j/job.json', Body: '{}' }));
    if (cluster)
      await peer.s3.send(
        new PutBucketTaggingCommand({
          Bucket: bucket,
          Tagging: { TagSet: [{ Key: CLUSTER_TAG_KEY, Value: cluster }] },
        }),
      );
  }
  for (const cluster of ['old', 'live']) {
    const q = await peer.createQueues(`gc-${cluster}`);
    queues[cluster] = q.queueUrl;
    await peer.sqs.send(new TagQueueCommand({ QueueUrl: q.queueUrl, Tags: { [CLUSTER_TAG_KEY]: cluster } }));
  }
});
after(async () => {
  await peer.stop();
});

test('gc finds tagged buckets and queues whose stack is gone', async () => {
  assert.equal(CLUSTER_TAG_KEY, CLUSTER_TAG);
  const asked: string[] = [];
  const orphans = await findOrphans({
    s3: peer.s3,
    sqs: peer.sqs,
    stackExists: async (c) => {
      asked.push(c);
      return c === 'live';
    },
  });
  assert.deepEqual(orphans, [
    { kind: 'bucket', id: 'gc-old-bucket', cluster: 'old' },
    { kind: 'queue', id: queues.old, cluster: 'old' },
  ]);
  assert.deepEqual(asked.sort(), ['live', 'old'], 'one stack check per cluster');
});

test('corral gc lists without deleting; --yes deletes (bucket emptied first)', async (t) => {
  const cwd = tempDir(t);
  const common = ['--endpoint-url', peer.endpoint, '--assume-stacks-gone'];
  const list = await runCli(['gc', ...common, '--json'], { cwd, env: PEER_ENV });
  assert.equal(list.code, 0, list.stderr);
  const listed = JSON.parse(list.stdout) as { orphans: Array<{ id: string }>; deleted: string[] };
  assert.deepEqual(
    listed.orphans.map((o) => o.id).sort(),
    ['gc-live-bucket', 'gc-old-bucket', queues.live, queues.old].sort(),
  );
  assert.deepEqual(listed.deleted, []);
  await peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-old-bucket' }));

  const del = await runCli(['gc', ...common, '--cluster', 'old', '--yes'], { cwd, env: PEER_ENV });
  assert.equal(del.code, 0, del.stderr);
  assert.match(del.stdout, /deleted bucket gc-old-bucket \(cluster old\)/);
  assert.match(del.stdout, /deleted queue .*gc-old \(cluster old\)/);
  await assert.rejects(peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-old-bucket' })));
  await peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-live-bucket' }));
  await peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-plain-bucket' }));
  const left = (await peer.sqs.send(new ListQueuesCommand({}))).QueueUrls ?? [];
  assert.ok(!left.includes(queues.old!) && left.includes(queues.live!), String(left));

  const none = await runCli(['gc', ...common, '--cluster', 'old'], { cwd, env: PEER_ENV });
  assert.equal(none.stdout, 'no orphaned corral resources\n');
});
