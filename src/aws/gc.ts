/**
 * `corral gc`: finds resources tagged `corral:cluster=<name>` whose cluster stack `corral-<name>`
 * no longer exists (a failed `down`, a retained bucket, a stack deleted by hand) and deletes them
 * on request. Instances are found with one DescribeInstances filtered on the tag key and the
 * live states (pending, running, stopping, stopped), buckets with ListBuckets +
 * GetBucketTagging, queues with ListQueues + ListQueueTags, log groups (the cluster's, and those it
 * makes for AWS services: Lambda, RDS exports, Container Insights) with DescribeLogGroups +
 * ListTagsForResource; whether a stack exists is a function
 * the caller passes (CloudFormation DescribeStacks in the CLI), so the search runs against any peer.
 */
import type { CloudWatchLogsClient, DescribeLogGroupsCommandOutput } from '@aws-sdk/client-cloudwatch-logs';
import type { DescribeInstancesCommandOutput, EC2Client } from '@aws-sdk/client-ec2';
import {
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetBucketTaggingCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  type ListObjectVersionsCommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import {
  DeleteQueueCommand,
  ListQueuesCommand,
  ListQueueTagsCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';

/** The tag every cluster resource carries (`CLUSTER_TAG` of src/infra/cluster-stack.ts, without loading the CDK). */
export const CLUSTER_TAG_KEY = 'corral:cluster';
/** The tag of a bucket or log group the user asked to keep (`RETAIN_TAG` of src/infra/cluster-bucket.ts). */
export const RETAIN_TAG_KEY = 'corral:retain';

/** Kinds of resources gc collects. */
export type OrphanKind = 'instance' | 'bucket' | 'queue' | 'log-group';

/** A resource left behind by a cluster whose stack is gone. */
export interface Orphan {
  readonly kind: OrphanKind;
  /** Instance id, bucket name, queue URL or log group name. */
  readonly id: string;
  /** Value of the `corral:cluster` tag. */
  readonly cluster: string;
  /** An instance's state when it was listed (pending, running, stopping, stopped). */
  readonly state?: string;
  /** A bucket or log group tagged `corral:retain` (`removalPolicy: retain`): deleted only when named. */
  readonly retained?: true;
}

/** Instance states gc collects: every state that still costs money or can come back. */
export const LIVE_INSTANCE_STATES = ['pending', 'running', 'stopping', 'stopped'];

/** Options of the orphan search. */
export interface FindOrphansOptions {
  readonly s3: S3Client;
  readonly sqs: SQSClient;
  /** EC2 in the same region: instances are searched too. @default - instances are not searched */
  readonly ec2?: EC2Client;
  /** CloudWatch Logs in the same region: log groups are searched too. @default - log groups are not searched */
  readonly logs?: CloudWatchLogsClient;
  /** Whether the stack of a cluster exists (`corral-<name>`). */
  readonly stackExists: (cluster: string) => Promise<boolean>;
  /** Only resources of this cluster. @default - every cluster */
  readonly cluster?: string;
  /** Called for a resource whose tags could not be read (other region, no permission); id `*` for a whole kind. */
  readonly onSkip?: (kind: OrphanKind, id: string, why: string) => void;
}

const MAX_PAGES = 1000;

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** Tagged instances in a live state (one DescribeInstances filtered by tag and state, paged). */
async function taggedInstances(
  ec2: EC2Client,
  cluster: string | undefined,
  onSkip: FindOrphansOptions['onSkip'],
): Promise<Orphan[]> {
  const { DescribeInstancesCommand } = await import('@aws-sdk/client-ec2');
  const out: Orphan[] = [];
  const Filters = [
    { Name: 'tag-key', Values: [CLUSTER_TAG_KEY] },
    { Name: 'instance-state-name', Values: LIVE_INSTANCE_STATES },
    ...(cluster !== undefined ? [{ Name: `tag:${CLUSTER_TAG_KEY}`, Values: [cluster] }] : []),
  ];
  let token: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    let r: DescribeInstancesCommandOutput;
    try {
      r = await ec2.send(new DescribeInstancesCommand({ Filters, MaxResults: 1000, NextToken: token }));
    } catch (err) {
      // no permission or no EC2 at this endpoint: say so, and collect the other kinds
      if (statusOf(err) === undefined) throw err;
      onSkip?.('instance', '*', `DescribeInstances: ${(err as Error).name} (HTTP ${statusOf(err)})`);
      return out;
    }
    for (const res of r.Reservations ?? [])
      for (const i of res.Instances ?? []) {
        const v = i.Tags?.find((t) => t.Key === CLUSTER_TAG_KEY)?.Value;
        if (i.InstanceId && v)
          out.push({ kind: 'instance', id: i.InstanceId, cluster: v, state: i.State?.Name });
      }
    token = r.NextToken;
    if (!token) break;
  }
  return out;
}

/** Tagged log groups (DescribeLogGroups, paged, then the tags of each). */
async function taggedLogGroups(
  logs: CloudWatchLogsClient,
  onSkip: FindOrphansOptions['onSkip'],
): Promise<Orphan[]> {
  const { DescribeLogGroupsCommand, ListTagsForResourceCommand } = await import(
    '@aws-sdk/client-cloudwatch-logs'
  );
  const out: Orphan[] = [];
  let token: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    let r: DescribeLogGroupsCommandOutput;
    try {
      r = await logs.send(new DescribeLogGroupsCommand({ nextToken: token }));
    } catch (err) {
      if (statusOf(err) === undefined) throw err;
      onSkip?.('log-group', '*', `DescribeLogGroups: ${(err as Error).name} (HTTP ${statusOf(err)})`);
      return out;
    }
    for (const g of r.logGroups ?? []) {
      if (!g.logGroupName) continue;
      // logGroupArn is the ARN without the `:*` that `arn` ends with, as ListTagsForResource takes it
      const arn = g.logGroupArn ?? g.arn?.replace(/:\*$/, '');
      if (!arn) continue;
      try {
        const t = await logs.send(new ListTagsForResourceCommand({ resourceArn: arn }));
        const v = t.tags?.[CLUSTER_TAG_KEY];
        if (v)
          out.push({
            kind: 'log-group',
            id: g.logGroupName,
            cluster: v,
            ...(t.tags?.[RETAIN_TAG_KEY] === 'true' ? { retained: true as const } : {}),
          });
      } catch (err) {
        onSkip?.(
          'log-group',
          g.logGroupName,
          `${(err as Error).name}${statusOf(err) ? ` (HTTP ${statusOf(err)})` : ''}`,
        );
      }
    }
    token = r.nextToken;
    if (!token) break;
  }
  return out;
}

/** Tagged resources whose cluster stack is gone: instances first, then buckets, queues and log groups. */
export async function findOrphans(o: FindOrphansOptions): Promise<Orphan[]> {
  const tagged: Orphan[] = o.ec2 ? await taggedInstances(o.ec2, o.cluster, o.onSkip) : [];
  const buckets = await o.s3.send(new ListBucketsCommand({}));
  for (const b of buckets.Buckets ?? []) {
    if (!b.Name) continue;
    try {
      const t = await o.s3.send(new GetBucketTaggingCommand({ Bucket: b.Name }));
      const v = t.TagSet?.find((x) => x.Key === CLUSTER_TAG_KEY)?.Value;
      const retained = t.TagSet?.some((x) => x.Key === RETAIN_TAG_KEY && x.Value === 'true');
      if (v)
        tagged.push({
          kind: 'bucket',
          id: b.Name,
          cluster: v,
          ...(retained ? { retained: true as const } : {}),
        });
    } catch (err) {
      const name = (err as Error).name;
      if (name === 'NoSuchTagSet' || name === 'NoSuchTagSetError') continue;
      o.onSkip?.('bucket', b.Name, `${name}${statusOf(err) ? ` (HTTP ${statusOf(err)})` : ''}`);
    }
  }
  let token: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const r = await o.sqs.send(new ListQueuesCommand({ MaxResults: 1000, NextToken: token }));
    for (const url of r.QueueUrls ?? []) {
      try {
        const t = await o.sqs.send(new ListQueueTagsCommand({ QueueUrl: url }));
        const v = t.Tags?.[CLUSTER_TAG_KEY];
        if (v) tagged.push({ kind: 'queue', id: url, cluster: v });
      } catch (err) {
        o.onSkip?.('queue', url, (err as Error).name);
      }
    }
    token = r.NextToken;
    if (!token) break;
  }
  if (o.logs) tagged.push(...(await taggedLogGroups(o.logs, o.onSkip)));
  const gone = new Map<string, boolean>();
  const out: Orphan[] = [];
  for (const t of tagged) {
    if (o.cluster !== undefined && t.cluster !== o.cluster) continue;
    if (!gone.has(t.cluster)) gone.set(t.cluster, !(await o.stackExists(t.cluster)));
    if (gone.get(t.cluster)) out.push(t);
  }
  return out;
}

/** Terminates an instance; empties (every version) and deletes a bucket; deletes a queue or a log group. */
export async function deleteOrphan(
  o: { s3: S3Client; sqs: SQSClient; ec2?: EC2Client; logs?: CloudWatchLogsClient },
  orphan: Orphan,
): Promise<void> {
  if (orphan.kind === 'log-group') {
    if (!o.logs) throw new Error(`no CloudWatch Logs client to delete ${orphan.id}`);
    const { DeleteLogGroupCommand } = await import('@aws-sdk/client-cloudwatch-logs');
    await o.logs.send(new DeleteLogGroupCommand({ logGroupName: orphan.id }));
    return;
  }
  if (orphan.kind === 'instance') {
    if (!o.ec2) throw new Error(`no EC2 client to terminate ${orphan.id}`);
    const { TerminateInstancesCommand } = await import('@aws-sdk/client-ec2');
    await o.ec2.send(new TerminateInstancesCommand({ InstanceIds: [orphan.id] }));
    return;
  }
  if (orphan.kind === 'queue') {
    await o.sqs.send(new DeleteQueueCommand({ QueueUrl: orphan.id }));
    return;
  }
  const Bucket = orphan.id;
  for (let page = 0; page < MAX_PAGES; page++) {
    const r = await o.s3.send(new ListObjectsV2Command({ Bucket, MaxKeys: 1000 }));
    const keys = (r.Contents ?? []).flatMap((c) => (c.Key ? [{ Key: c.Key }] : []));
    if (keys.length === 0) break;
    await o.s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys, Quiet: true } }));
  }
  // A versioned bucket keeps old versions and delete markers; peers without versioning refuse the call.
  for (let page = 0; page < MAX_PAGES; page++) {
    let r: ListObjectVersionsCommandOutput;
    try {
      r = await o.s3.send(new ListObjectVersionsCommand({ Bucket, MaxKeys: 1000 }));
    } catch {
      break;
    }
    const objs = [...(r.Versions ?? []), ...(r.DeleteMarkers ?? [])].flatMap((v) =>
      v.Key ? [{ Key: v.Key, VersionId: v.VersionId }] : [],
    );
    if (objs.length === 0) break;
    await o.s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: objs, Quiet: true } }));
  }
  await o.s3.send(new DeleteBucketCommand({ Bucket }));
}
