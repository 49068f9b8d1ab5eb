/**
 * `corral gc` against local peers on 127.0.0.1: fauxqs (S3 + SQS) behind the query peer
 * (EC2 + CloudFormation, aws-query-peer.ts), so one --endpoint-url serves every client, as on AWS.
 * Clusters: `old` (stack deleted), `gone` (never had a stack here), `live` (stack exists).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { HeadBucketCommand, PutBucketTaggingCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { ListQueuesCommand, TagQueueCommand } from '@aws-sdk/client-sqs';
import { createCloudFormationClient, createEc2Client, resolveAwsSettings } from '../src/aws/clients.js';
import { CLUSTER_TAG_KEY, findOrphans, type Orphan, RETAIN_TAG_KEY } from '../src/aws/gc.js';
import { describeClusterStack } from '../src/aws/stacks.js';
import { RETAIN_TAG } from '../src/infra/cluster-bucket.js';
import { CLUSTER_TAG } from '../src/infra/cluster-stack.js';
import { type InstanceStateName, type QueryPeer, startQueryPeer } from './aws-query-peer.js';
import { PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { runCli, tempDir } from './helpers.js';

let peer: Peer;
let query: QueryPeer;
const queues: Record<string, string> = {};
/** Instance ids by label. */
const inst: Record<string, string> = {};

before(async () => {
  peer = await startPeer();
  // pageSize 2: DescribeInstances answers in pages, so gc must follow NextToken
  query = await startQueryPeer({ upstream: peer.endpoint, pageSize: 2 });
  query.putStack('corral-old');
  query.deleteStack('corral-old');
  query.putStack('corral-live', { outputs: { QueueUrl: 'x', BucketName: 'gc-live-bucket' } });
  query.putStack('corral-other-thing');
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
  const add = (label: string, state: InstanceStateName, tags: Record<string, string>) => {
    inst[label] = query.addInstance({ state, tags });
  };
  add('oldRunning', 'running', { [CLUSTER_TAG_KEY]: 'old', Name: 'corral-old-worker' });
  add('oldPending', 'pending', { [CLUSTER_TAG_KEY]: 'old' });
  add('oldStopping', 'stopping', { [CLUSTER_TAG_KEY]: 'old' });
  add('oldStopped', 'stopped', { [CLUSTER_TAG_KEY]: 'old' });
  add('oldShuttingDown', 'shutting-down', { [CLUSTER_TAG_KEY]: 'old' });
  add('oldTerminated', 'terminated', { [CLUSTER_TAG_KEY]: 'old' });
  add('goneRunning', 'running', { [CLUSTER_TAG_KEY]: 'gone' });
  add('liveRunning', 'running', { [CLUSTER_TAG_KEY]: 'live' });
  add('liveStopped', 'stopped', { [CLUSTER_TAG_KEY]: 'live' });
  add('untagged', 'running', { Name: 'not-corral' });
});
after(async () => {
  await query.stop();
  await peer.stop();
});

const stateOf = (label: string) => query.instances.get(inst[label]!)!.state;

test('findOrphans: tagged instances (live states only), buckets and queues whose stack is gone', async () => {
  assert.equal(CLUSTER_TAG_KEY, CLUSTER_TAG);
  assert.equal(RETAIN_TAG_KEY, RETAIN_TAG);
  const settings = resolveAwsSettings({ endpointUrl: query.endpoint });
  const ec2 = await createEc2Client(settings);
  const cfn = await createCloudFormationClient(settings);
  try {
    const asked: string[] = [];
    const orphans = await findOrphans({
      s3: peer.s3,
      sqs: peer.sqs,
      ec2,
      stackExists: async (c) => {
        asked.push(c);
        return (await describeClusterStack(cfn, c)) !== undefined;
      },
    });
    const byId = (o: Orphan) => o.id;
    assert.deepEqual(
      orphans.filter((o) => o.kind === 'instance').sort((a, b) => byId(a).localeCompare(byId(b))),
      [
        { kind: 'instance', id: inst.oldRunning, cluster: 'old', state: 'running' },
        { kind: 'instance', id: inst.oldPending, cluster: 'old', state: 'pending' },
        { kind: 'instance', id: inst.oldStopping, cluster: 'old', state: 'stopping' },
        { kind: 'instance', id: inst.oldStopped, cluster: 'old', state: 'stopped' },
        { kind: 'instance', id: inst.goneRunning, cluster: 'gone', state: 'running' },
      ].sort((a, b) => byId(a as Orphan).localeCompare(byId(b as Orphan))),
    );
    assert.deepEqual(
      orphans.filter((o) => o.kind !== 'instance'),
      [
        { kind: 'bucket', id: 'gc-old-bucket', cluster: 'old' },
        { kind: 'queue', id: queues.old, cluster: 'old' },
      ],
    );
    assert.deepEqual(
      orphans.map((o) => o.kind),
      [...orphans.map((o) => o.kind)].sort(
        (a, b) => ['instance', 'bucket', 'queue'].indexOf(a) - ['instance', 'bucket', 'queue'].indexOf(b),
      ),
      'instances first',
    );
    assert.deepEqual(asked.sort(), ['gone', 'live', 'old'], 'one stack check per cluster');
    // the search is one filtered DescribeInstances, paged: 7 tagged live-state instances, 2 a page
    const describes = query.callsOf('DescribeInstances');
    assert.equal(describes.length, 4);
    assert.equal(describes[0]!.params['Filter.1.Name'], 'tag-key');
    assert.equal(describes[0]!.params['Filter.1.Value.1'], CLUSTER_TAG_KEY);
    assert.equal(describes[0]!.params['Filter.2.Name'], 'instance-state-name');
    assert.deepEqual(
      Object.entries(describes[0]!.params)
        .filter(([k]) => k.startsWith('Filter.2.Value.'))
        .map(([, v]) => v),
      ['pending', 'running', 'stopping', 'stopped'],
    );
    assert.ok(describes[1]!.params.NextToken, 'the second page asks with the NextToken');
    assert.equal(query.callsOf('TerminateInstances').length, 0, 'finding terminates nothing');
  } finally {
    ec2.destroy();
    cfn.destroy();
  }
});

test('corral gc lists without changing anything; --yes terminates instances and deletes buckets and queues of gone stacks only', async (t) => {
  const cwd = tempDir(t);
  const common = ['--endpoint-url', query.endpoint];
  query.calls.length = 0;

  const list = await runCli(['gc', ...common, '--json'], { cwd, env: PEER_ENV });
  assert.equal(list.code, 0, list.stderr);
  const listed = JSON.parse(list.stdout) as { orphans: Orphan[]; deleted: string[] };
  assert.deepEqual(
    listed.orphans.map((o) => o.id).sort(),
    [
      inst.oldRunning,
      inst.oldPending,
      inst.oldStopping,
      inst.oldStopped,
      inst.goneRunning,
      'gc-old-bucket',
      queues.old,
    ].sort(),
  );
  const running = listed.orphans.find((o) => o.id === inst.oldRunning);
  assert.deepEqual(running, { kind: 'instance', id: inst.oldRunning, cluster: 'old', state: 'running' });
  assert.deepEqual(listed.deleted, []);

  const text = await runCli(['gc', ...common], { cwd, env: PEER_ENV });
  assert.equal(text.code, 0, text.stderr);
  assert.match(
    text.stdout,
    new RegExp(`^orphan instance ${inst.oldStopped} \\(cluster old, stopped\\)$`, 'm'),
  );
  assert.match(text.stdout, /^orphan bucket gc-old-bucket \(cluster old\)$/m);
  assert.match(text.stdout, /run again with --yes/);
  assert.doesNotMatch(text.stdout, new RegExp(`${inst.liveRunning}|gc-live-bucket`));
  assert.equal(query.callsOf('TerminateInstances').length, 0, 'nothing terminated without --yes');
  assert.equal(stateOf('oldRunning'), 'running');
  assert.equal(stateOf('oldStopped'), 'stopped');
  await peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-old-bucket' }));
  const stacksAsked = query.callsOf('DescribeStacks').map((c) => c.params.StackName);
  assert.ok(stacksAsked.includes('corral-old') && stacksAsked.includes('corral-live'), String(stacksAsked));

  // --cluster old --yes: only old's resources; gone's instance and everything of live stay
  const del = await runCli(['gc', ...common, '--cluster', 'old', '--yes'], { cwd, env: PEER_ENV });
  assert.equal(del.code, 0, del.stderr);
  for (const l of ['oldRunning', 'oldPending', 'oldStopping', 'oldStopped'])
    assert.match(del.stdout, new RegExp(`^terminated instance ${inst[l]} \\(cluster old, `, 'm'));
  assert.match(del.stdout, /deleted bucket gc-old-bucket \(cluster old\)/);
  assert.match(del.stdout, /deleted queue .*gc-old \(cluster old\)/);
  for (const l of ['oldRunning', 'oldPending', 'oldStopping', 'oldStopped'])
    assert.equal(stateOf(l), 'terminated');
  assert.equal(stateOf('goneRunning'), 'running');
  assert.equal(stateOf('liveRunning'), 'running');
  assert.equal(stateOf('liveStopped'), 'stopped');
  assert.equal(stateOf('untagged'), 'running');
  const terminated = query.callsOf('TerminateInstances').map((c) => c.params['InstanceId.1']);
  assert.deepEqual(
    terminated.sort(),
    [inst.oldRunning, inst.oldPending, inst.oldStopping, inst.oldStopped].sort(),
    'one TerminateInstances per orphan, none for the terminated/shutting-down ones',
  );
  await assert.rejects(peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-old-bucket' })));
  await peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-live-bucket' }));
  await peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-plain-bucket' }));
  const left = (await peer.sqs.send(new ListQueuesCommand({}))).QueueUrls ?? [];
  assert.ok(!left.includes(queues.old!) && left.includes(queues.live!), String(left));

  // every cluster, --json: the instance of the cluster that never had a stack here
  const all = await runCli(['gc', ...common, '--yes', '--json'], { cwd, env: PEER_ENV });
  assert.equal(all.code, 0, all.stderr);
  const allOut = JSON.parse(all.stdout) as { orphans: Orphan[]; deleted: string[] };
  assert.deepEqual(allOut.orphans, [
    { kind: 'instance', id: inst.goneRunning, cluster: 'gone', state: 'running' },
  ]);
  assert.deepEqual(allOut.deleted, [inst.goneRunning]);
  assert.equal(stateOf('goneRunning'), 'terminated');
  assert.equal(stateOf('liveRunning'), 'running', 'an instance of a live stack is never terminated');
  assert.equal(stateOf('liveStopped'), 'stopped');

  const none = await runCli(['gc', ...common], { cwd, env: PEER_ENV });
  assert.equal(none.stdout, 'no orphaned corral resources\n');
});

test('corral gc keeps a bucket its cluster retained (corral:retain) unless it is named with --retained', async (t) => {
  const cwd = tempDir(t);
  const common = ['--endpoint-url', query.endpoint, '--cluster', 'kept'];
  await peer.createBucket('gc-kept-bucket');
  await peer.s3.send(new PutObjectCommand({ Bucket: 'gc-kept-bucket', Key: 'jobs/j/out/a.txt', Body: 'a' }));
  await peer.s3.send(
    new PutBucketTaggingCommand({
      Bucket: 'gc-kept-bucket',
      Tagging: {
        TagSet: [
          { Key: CLUSTER_TAG_KEY, Value: 'kept' },
          { Key: RETAIN_TAG_KEY, Value: 'true' },
        ],
      },
    }),
  );
  // --yes alone: listed as kept, not deleted
  const yes = await runCli(['gc', ...common, '--yes', '--json'], { cwd, env: PEER_ENV });
  assert.equal(yes.code, 0, yes.stderr);
  assert.deepEqual(JSON.parse(yes.stdout), {
    orphans: [{ kind: 'bucket', id: 'gc-kept-bucket', cluster: 'kept', retained: true }],
    deleted: [],
  });
  await peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-kept-bucket' }));
  const text = await runCli(['gc', ...common], { cwd, env: PEER_ENV });
  assert.equal(
    text.stdout,
    'kept bucket gc-kept-bucket (cluster kept, retained on purpose; delete it with --yes --retained gc-kept-bucket)\n',
  );
  // a name that is not a retained orphan: exit 2, nothing deleted
  const wrong = await runCli(['gc', ...common, '--yes', '--retained', 'gc-live-bucket'], {
    cwd,
    env: PEER_ENV,
  });
  assert.equal(wrong.code, 2, wrong.stderr);
  assert.match(wrong.stderr, /^corral: error: --retained: gc-live-bucket is not a retained bucket/m);
  await peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-kept-bucket' }));
  // named: deleted
  const named = await runCli(['gc', ...common, '--yes', '--retained', 'gc-kept-bucket'], {
    cwd,
    env: PEER_ENV,
  });
  assert.equal(named.code, 0, named.stderr);
  assert.match(named.stdout, /^deleted bucket gc-kept-bucket \(cluster kept\)$/m);
  await assert.rejects(peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-kept-bucket' })));
});

test('corral gc finds the log groups of a gone cluster (its own, Lambda, RDS exports, Container Insights) by their tags, keeps a retained one unless named, and deletes them with --yes', async (t) => {
  const cwd = tempDir(t);
  const common = ['--endpoint-url', query.endpoint, '--cluster', 'lg'];
  const tag = { [CLUSTER_TAG_KEY]: 'lg', team: 'research' };
  // the names the stack gives them (src/infra: the cluster's, and the groups it makes for AWS services)
  const groups = [
    '/corral/lg',
    '/aws/lambda/corral-lg-CustomS3AutoDeleteObjectsCustomResourceProviderHandler9D90184F',
    '/aws/ecs/containerinsights/corral-lg-ecs/performance',
  ];
  for (const g of groups) peer.createLogGroup(g, tag);
  peer.createLogGroup('/aws/rds/instance/corral-lg/postgresql', { ...tag, [RETAIN_TAG_KEY]: 'true' });
  peer.createLogGroup('/corral/live', { [CLUSTER_TAG_KEY]: 'live' });
  peer.createLogGroup('/aws/lambda/someone-else');

  const list = await runCli(['gc', ...common, '--json'], { cwd, env: PEER_ENV });
  assert.equal(list.code, 0, list.stderr);
  assert.deepEqual(JSON.parse(list.stdout), {
    orphans: [
      ...[...groups].sort().map((id) => ({ kind: 'log-group', id, cluster: 'lg' })),
      { kind: 'log-group', id: '/aws/rds/instance/corral-lg/postgresql', cluster: 'lg', retained: true },
    ].sort((a, b) => a.id.localeCompare(b.id)),
    deleted: [],
  });
  const text = await runCli(['gc', ...common], { cwd, env: PEER_ENV });
  assert.match(text.stdout, /^orphan log-group \/corral\/lg \(cluster lg\)$/m);
  assert.match(
    text.stdout,
    /^kept log-group \/aws\/rds\/instance\/corral-lg\/postgresql \(cluster lg, retained on purpose; delete it with --yes --retained \/aws\/rds\/instance\/corral-lg\/postgresql\)$/m,
  );
  assert.deepEqual(peer.logGroupNames().length, 6, 'nothing deleted without --yes');

  const yes = await runCli(['gc', ...common, '--yes'], { cwd, env: PEER_ENV });
  assert.equal(yes.code, 0, yes.stderr);
  for (const g of groups) assert.ok(yes.stdout.includes(`deleted log-group ${g} (cluster lg)`), yes.stdout);
  assert.deepEqual(peer.logGroupNames(), [
    '/aws/lambda/someone-else',
    '/aws/rds/instance/corral-lg/postgresql',
    '/corral/live',
  ]);
  const named = await runCli(
    ['gc', ...common, '--yes', '--retained', '/aws/rds/instance/corral-lg/postgresql'],
    {
      cwd,
      env: PEER_ENV,
    },
  );
  assert.equal(named.code, 0, named.stderr);
  assert.deepEqual(peer.logGroupNames(), ['/aws/lambda/someone-else', '/corral/live']);
});

test('corral gc at an endpoint without EC2 or CloudFormation: says so and exits 2, deleting nothing', async (t) => {
  // fauxqs alone answers neither DescribeInstances nor DescribeStacks
  const cwd = tempDir(t);
  await peer.createBucket('gc-unsure-bucket');
  await peer.s3.send(
    new PutBucketTaggingCommand({
      Bucket: 'gc-unsure-bucket',
      Tagging: { TagSet: [{ Key: CLUSTER_TAG_KEY, Value: 'unsure' }] },
    }),
  );
  const r = await runCli(['gc', '--endpoint-url', peer.endpoint, '--yes'], { cwd, env: PEER_ENV });
  assert.match(r.stderr, /^corral gc: skipped every instance: DescribeInstances: \w+ \(HTTP 4\d\d\)$/m);
  assert.equal(r.code, 2, r.stderr);
  assert.match(
    r.stderr,
    /^corral: error: --endpoint-url: CloudFormation at http:\/\/127\.0\.0\.1:\d+ answered DescribeStacks of corral-[a-z]+ with \w+ \(HTTP 4\d\d\) \(fix: .*\)$/m,
  );
  await peer.s3.send(new HeadBucketCommand({ Bucket: 'gc-unsure-bucket' }));
});
