/**
 * `corral gc`: finds resources tagged `corral:cluster=<name>` whose cluster stack `corral-<name>`
 * no longer exists (a failed `down`, a retained bucket, a stack deleted by hand) and deletes them
 * on request. Buckets are found with ListBuckets + GetBucketTagging, queues with ListQueues +
 * ListQueueTags; whether a stack exists is a function the caller passes (CloudFormation
 * DescribeStacks in the CLI), so the search runs against any S3/SQS peer.
 */
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

/** A resource left behind by a cluster whose stack is gone. */
export interface Orphan {
  readonly kind: 'bucket' | 'queue';
  /** Bucket name or queue URL. */
  readonly id: string;
  /** Value of the `corral:cluster` tag. */
  readonly cluster: string;
}

/** Options of the orphan search. */
export interface FindOrphansOptions {
  readonly s3: S3Client;
  readonly sqs: SQSClient;
  /** Whether the stack of a cluster exists (`corral-<name>`). */
  readonly stackExists: (cluster: string) => Promise<boolean>;
  /** Only resources of this cluster. @default - every cluster */
  readonly cluster?: string;
  /** Called for a resource whose tags could not be read (other region, no permission). */
  readonly onSkip?: (kind: 'bucket' | 'queue', id: string, why: string) => void;
}

const MAX_PAGES = 1000;

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** Tagged resources whose cluster stack is gone, buckets first. */
export async function findOrphans(o: FindOrphansOptions): Promise<Orphan[]> {
  const tagged: Orphan[] = [];
  const buckets = await o.s3.send(new ListBucketsCommand({}));
  for (const b of buckets.Buckets ?? []) {
    if (!b.Name) continue;
    try {
      const t = await o.s3.send(new GetBucketTaggingCommand({ Bucket: b.Name }));
      const v = t.TagSet?.find((x) => x.Key === CLUSTER_TAG_KEY)?.Value;
      if (v) tagged.push({ kind: 'bucket', id: b.Name, cluster: v });
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
  const gone = new Map<string, boolean>();
  const out: Orphan[] = [];
  for (const t of tagged) {
    if (o.cluster !== undefined && t.cluster !== o.cluster) continue;
    if (!gone.has(t.cluster)) gone.set(t.cluster, !(await o.stackExists(t.cluster)));
    if (gone.get(t.cluster)) out.push(t);
  }
  return out;
}

/** Empties (every version) and deletes a bucket; deletes a queue. */
export async function deleteOrphan(o: { s3: S3Client; sqs: SQSClient }, orphan: Orphan): Promise<void> {
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
