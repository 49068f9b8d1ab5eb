/**
 * The local AWS peer of the AWS runtime tests: fauxqs (SQS + S3) on 127.0.0.1 with a random port,
 * plus a fake IMDSv2 server. fauxqs 1.9.2 ignores `If-None-Match: *` on PutObject (real S3
 * honours it since 2024), so the peer adds it with a pre-handler: a PUT with that header on a key
 * that exists gets 412 PreconditionFailed, exactly like S3. fauxqs stores objects synchronously,
 * so the check and the write cannot interleave with another request. `If-Match: ETAG` on PutObject
 * (S3 honours it since 2024; the coordinator lease of detached runs renews with it) is added the
 * same way: 412 when the object's ETag differs, 404 when there is no object.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { CreateQueueCommand, GetQueueAttributesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { type BuildAppOptions, buildApp } from 'fauxqs';

type Stores = NonNullable<BuildAppOptions['stores']>;

/**
 * fauxqs's in-memory stores, made here and handed to buildApp so that tests can read a bucket at
 * memory speed (thousands of objects after a chaos run). Their classes are not in the package's
 * exports, so they are loaded by path next to its entry point.
 */
async function fauxqsStores(): Promise<Stores> {
  const entry = import.meta.resolve('fauxqs');
  const load = async <K extends keyof Stores>(file: string, name: string): Promise<Stores[K]> => {
    const mod = (await import(new URL(file, entry).href)) as Record<string, new () => Stores[K]>;
    return new mod[name]!();
  };
  return {
    sqsStore: await load<'sqsStore'>('./sqs/sqsStore.js', 'SqsStore'),
    snsStore: await load<'snsStore'>('./sns/snsStore.js', 'SnsStore'),
    s3Store: await load<'s3Store'>('./s3/s3Store.js', 'S3Store'),
  };
}

/** Dummy credentials for the peer (never real ones). */
export const PEER_ENV = {
  AWS_ACCESS_KEY_ID: 'corral-test',
  AWS_SECRET_ACCESS_KEY: 'corral-test-secret',
  AWS_REGION: 'us-east-1',
  AWS_EC2_METADATA_DISABLED: 'true',
} as const;

for (const [k, v] of Object.entries(PEER_ENV)) process.env[k] = v;
delete process.env.AWS_PROFILE;

/** A running peer. */
export interface Peer {
  readonly endpoint: string;
  /**
   * Counts of requests by action: `sqs:` or `logs:` and the `X-Amz-Target` action, or `s3:` and
   * the HTTP method (`s3:LIST` for a GET of a bucket).
   */
  readonly requests: Map<string, number>;
  /**
   * Conditional writes (PUT with `If-None-Match: *`) by object path (`/bucket/key`): how many
   * were accepted (200) and refused because the object existed (412).
   */
  readonly conditionalPuts: Map<string, { accepted: number; refused: number }>;
  readonly sqs: SQSClient;
  readonly s3: S3Client;
  /** Creates a queue with a DLQ and redrive after `maxReceiveCount`; returns both URLs. */
  createQueues(
    name: string,
    opts?: { visibility?: number; maxReceiveCount?: number },
  ): Promise<{ queueUrl: string; dlqUrl: string }>;
  createBucket(name: string): Promise<void>;
  /**
   * Creates a CloudWatch Logs group, with tags (the peer serves CreateLogStream, PutLogEvents,
   * FilterLogEvents, DescribeLogGroups in pages of 2, ListTagsForResource and DeleteLogGroup).
   */
  createLogGroup(name: string, tags?: Record<string, string>): void;
  /** Names of the log groups the peer holds. */
  logGroupNames(): string[];
  /** Events of a log group by stream. */
  logStreams(group: string): Map<string, { timestamp: number; message: string }[]> | undefined;
  /** Keys of a bucket below a prefix (relative to it), read from the peer's memory. */
  objectKeys(bucket: string, prefix: string): string[];
  /** An object's bytes, read from the peer's memory; undefined when there is none. */
  readObject(bucket: string, key: string): Buffer | undefined;
  stop(): Promise<void>;
}

/** Starts fauxqs on 127.0.0.1:0 with conditional PUTs. */
export async function startPeer(): Promise<Peer> {
  const stores = await fauxqsStores();
  const app = buildApp({ logger: false, host: 'localhost', stores });
  const existing = new Set<string>();
  const bucketTags = new Map<string, string>();
  const requests = new Map<string, number>();
  const conditionalPuts = new Map<string, { accepted: number; refused: number }>();
  app.addHook('onResponse', async (req, reply) => {
    if (req.method !== 'PUT' || req.headers['if-none-match'] !== '*') return;
    const key = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const c = conditionalPuts.get(key) ?? { accepted: 0, refused: 0 };
    if (reply.statusCode === 200) c.accepted++;
    else if (reply.statusCode === 412) c.refused++;
    conditionalPuts.set(key, c);
  });
  // CloudWatch Logs (JSON 1.1 protocol), which fauxqs has not: answered before fauxqs sees the request.
  const logGroups = new Map<string, Map<string, { timestamp: number; message: string; eventId: string }[]>>();
  const logGroupTags = new Map<string, Record<string, string>>();
  const logGroupArn = (name: string) => `arn:aws:logs:${PEER_ENV.AWS_REGION}:123456789012:log-group:${name}`;
  let eventIds = 0;
  app.addHook('onRequest', async (req, reply) => {
    const target = req.headers['x-amz-target'];
    if (typeof target !== 'string' || !target.startsWith('Logs_20140328.')) return;
    const chunks: Buffer[] = [];
    for await (const c of req.raw) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
    const fail = (type: string, message: string) => {
      reply.code(400).header('content-type', 'application/x-amz-json-1.1').header('x-amzn-errortype', type);
      reply.send(JSON.stringify({ __type: type, message }));
      return reply;
    };
    const action = target.slice('Logs_20140328.'.length);
    const ok = (out: unknown) => {
      reply.code(200).header('content-type', 'application/x-amz-json-1.1').send(JSON.stringify(out));
      return reply;
    };
    if (action === 'DescribeLogGroups') {
      // pages of 2 (AWS pages too), so that a caller must follow nextToken
      const names = [...logGroups.keys()].sort();
      const start = body.nextToken ? Number(body.nextToken) : 0;
      const page = names.slice(start, start + 2);
      return ok({
        logGroups: page.map((n) => ({
          logGroupName: n,
          arn: `${logGroupArn(n)}:*`,
          logGroupArn: logGroupArn(n),
        })),
        ...(start + 2 < names.length ? { nextToken: String(start + 2) } : {}),
      });
    }
    if (action === 'ListTagsForResource') {
      const arn = String(body.resourceArn);
      const name = arn.startsWith(logGroupArn('')) ? arn.slice(logGroupArn('').length) : undefined;
      if (name === undefined || name.endsWith(':*') || !logGroups.has(name))
        return fail('ResourceNotFoundException', `The specified resource ${arn} does not exist.`);
      return ok({ tags: logGroupTags.get(name) ?? {} });
    }
    const group = logGroups.get(String(body.logGroupName));
    if (!group) return fail('ResourceNotFoundException', 'The specified log group does not exist.');
    let out: unknown = {};
    if (action === 'DeleteLogGroup') {
      logGroups.delete(String(body.logGroupName));
      logGroupTags.delete(String(body.logGroupName));
    } else if (action === 'CreateLogStream') {
      const name = String(body.logStreamName);
      if (group.has(name))
        return fail('ResourceAlreadyExistsException', 'The specified log stream already exists');
      group.set(name, []);
    } else if (action === 'PutLogEvents') {
      const stream = group.get(String(body.logStreamName));
      if (!stream) return fail('ResourceNotFoundException', 'The specified log stream does not exist.');
      for (const e of body.logEvents as { timestamp: number; message: string }[]) {
        if (typeof e.message !== 'string' || e.message.length === 0)
          return fail('InvalidParameterException', 'empty message');
        stream.push({ timestamp: e.timestamp, message: e.message, eventId: String(++eventIds) });
      }
    } else if (action === 'FilterLogEvents') {
      const prefix = String(body.logStreamNamePrefix ?? '');
      const since = Number(body.startTime ?? 0);
      const events = [];
      for (const [name, stream] of group) {
        if (!name.startsWith(prefix)) continue;
        for (const e of stream) if (e.timestamp >= since) events.push({ logStreamName: name, ...e });
      }
      out = { events, searchedLogStreams: [] };
    } else {
      return fail('InvalidAction', `${action} is not served by the test peer`);
    }
    reply.code(200).header('content-type', 'application/x-amz-json-1.1').send(JSON.stringify(out));
    return reply;
  });
  app.addHook('onRequest', async (req) => {
    const target = req.headers['x-amz-target'];
    let action: string;
    if (typeof target === 'string')
      action = `${target.startsWith('Logs_') ? 'logs' : 'sqs'}:${target.split('.').pop()}`;
    else {
      // a GET of a bucket (no object key) is a listing, priced as a PUT by S3
      const isObject = new URL(req.url, 'http://x').pathname.split('/').filter(Boolean).length >= 2;
      action = `s3:${req.method === 'GET' && !isObject ? 'LIST' : req.method}`;
    }
    requests.set(action, (requests.get(action) ?? 0) + 1);
  });
  app.addHook('preHandler', async (req, reply) => {
    if (req.headers['x-amz-target'] !== undefined) return;
    const url = new URL(req.url, 'http://x');
    const objectKey = decodeURIComponent(url.pathname);
    const isObject = objectKey.split('/').filter(Boolean).length >= 2;
    // Bucket tagging (fauxqs 1.9.2 has none): PUT/GET/DELETE ?tagging on a bucket, kept in memory.
    if (!isObject && url.searchParams.has('tagging')) {
      const bucket = objectKey.replace(/^\/|\/$/g, '');
      if (req.method === 'PUT') bucketTags.set(bucket, String(req.body ?? ''));
      if (req.method === 'DELETE') bucketTags.delete(bucket);
      const tags = bucketTags.get(bucket);
      if (req.method === 'GET' && tags === undefined) {
        reply
          .code(404)
          .header('content-type', 'application/xml')
          .send(
            `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchTagSet</Code><Message>The TagSet does not exist</Message><BucketName>${bucket}</BucketName></Error>`,
          );
        return reply;
      }
      reply.code(req.method === 'PUT' || req.method === 'DELETE' ? 204 : 200);
      reply.header('content-type', 'application/xml').send(req.method === 'GET' ? tags : '');
      return reply;
    }
    if (!isObject) return;
    if (req.method === 'DELETE' && !url.searchParams.has('uploadId')) existing.delete(objectKey);
    if (req.method !== 'PUT' && req.method !== 'POST') return;
    if (url.searchParams.has('partNumber')) return;
    if (req.method === 'POST' && !url.searchParams.has('uploadId')) return;
    const ifMatch = req.headers['if-match'];
    if (typeof ifMatch === 'string' && req.method === 'PUT' && !url.searchParams.has('uploadId')) {
      const [bucket = '', ...rest] = objectKey.split('/').filter(Boolean);
      let etag: string | undefined;
      try {
        etag = stores.s3Store.getObject(bucket, rest.join('/')).etag;
      } catch {
        etag = undefined;
      }
      if (etag !== ifMatch) {
        const [code, text] =
          etag === undefined
            ? [404, '<Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>']
            : [
                412,
                '<Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message>',
              ];
        reply
          .code(code)
          .header('content-type', 'application/xml')
          .send(`<?xml version="1.0" encoding="UTF-8"?><Error>${text}</Error>`);
        return reply;
      }
    }
    if (req.headers['if-none-match'] === '*' && existing.has(objectKey)) {
      reply
        .code(412)
        .header('content-type', 'application/xml')
        .send(
          '<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>',
        );
      return reply;
    }
    if (req.method === 'PUT' && !url.searchParams.has('uploadId')) existing.add(objectKey);
    if (req.method === 'POST') existing.add(objectKey);
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as AddressInfo).port;
  const endpoint = `http://127.0.0.1:${port}`;
  const cfg = {
    endpoint,
    region: PEER_ENV.AWS_REGION,
    credentials: { accessKeyId: 'corral-test', secretAccessKey: 'corral-test-secret' },
  };
  const sqs = new SQSClient(cfg);
  const s3 = new S3Client({ ...cfg, forcePathStyle: true });
  return {
    endpoint,
    requests,
    conditionalPuts,
    sqs,
    s3,
    async createQueues(name, opts = {}) {
      const dlq = await sqs.send(new CreateQueueCommand({ QueueName: `${name}-dlq` }));
      const attrs = await sqs.send(
        new GetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, AttributeNames: ['QueueArn'] }),
      );
      const q = await sqs.send(
        new CreateQueueCommand({
          QueueName: name,
          Attributes: {
            VisibilityTimeout: String(opts.visibility ?? 30),
            RedrivePolicy: JSON.stringify({
              deadLetterTargetArn: attrs.Attributes!.QueueArn,
              maxReceiveCount: String(opts.maxReceiveCount ?? 5),
            }),
          },
        }),
      );
      return { queueUrl: q.QueueUrl!, dlqUrl: dlq.QueueUrl! };
    },
    async createBucket(name) {
      await s3.send(new CreateBucketCommand({ Bucket: name }));
    },
    createLogGroup(name, tags) {
      if (!logGroups.has(name)) logGroups.set(name, new Map());
      if (tags) logGroupTags.set(name, { ...tags });
    },
    logGroupNames() {
      return [...logGroups.keys()].sort();
    },
    logStreams(group) {
      return logGroups.get(group);
    },
    objectKeys(bucket, prefix) {
      const r = stores.s3Store.listObjects(bucket, { prefix, maxKeys: Number.MAX_SAFE_INTEGER });
      return r.objects.map((o) => o.key.slice(prefix.length));
    },
    readObject(bucket, key) {
      try {
        return stores.s3Store.getObject(bucket, key).body;
      } catch {
        return undefined;
      }
    },
    async stop() {
      sqs.destroy();
      s3.destroy();
      await app.close();
    },
  };
}

/** A fake IMDSv2 on 127.0.0.1: a token, then the two spot paths (404 until a notice is set). */
export interface FakeImds {
  readonly endpoint: string;
  /** Sets the interruption notice; returns nothing, `servedAt` tells when it was first served. */
  notice(): void;
  /** Sets a spot rebalance recommendation (served at /latest/meta-data/events/recommendations/rebalance). */
  rebalance(): void;
  /** Time the notice was first served to a client with a valid token. */
  servedAt: number | undefined;
  /** Requests without a valid token (IMDSv1 style), which must never happen. */
  tokenless: number;
  stop(): Promise<void>;
}

export async function startFakeImds(opts: { instanceId?: string } = {}): Promise<FakeImds> {
  const token = `tok-${Math.random().toString(36).slice(2)}`;
  let action: string | undefined;
  let rebalance: string | undefined;
  const state: FakeImds = {
    endpoint: '',
    notice() {
      action = JSON.stringify({ action: 'terminate', time: new Date(Date.now() + 120_000).toISOString() });
    },
    rebalance() {
      rebalance = JSON.stringify({ noticeTime: new Date().toISOString() });
    },
    servedAt: undefined,
    tokenless: 0,
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
  const server = http.createServer((req, res) => {
    if (req.method === 'PUT' && req.url === '/latest/api/token') {
      if (!req.headers['x-aws-ec2-metadata-token-ttl-seconds']) {
        res.writeHead(400).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end(token);
      return;
    }
    if (req.headers['x-aws-ec2-metadata-token'] !== token) {
      state.tokenless++;
      res.writeHead(401).end();
      return;
    }
    if (req.method === 'GET' && req.url === '/latest/meta-data/instance-id' && opts.instanceId) {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(opts.instanceId);
      return;
    }
    if (req.method === 'GET' && req.url === '/latest/meta-data/spot/instance-action' && action) {
      state.servedAt ??= Date.now();
      res.writeHead(200, { 'content-type': 'application/json' }).end(action);
      return;
    }
    if (
      req.method === 'GET' &&
      req.url === '/latest/meta-data/events/recommendations/rebalance' &&
      rebalance
    ) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(rebalance);
      return;
    }
    res.writeHead(404).end();
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(state, { endpoint: `http://127.0.0.1:${port}` });
}

/**
 * The text of a committed output, read from the peer's memory through its commit marker: inside
 * the marker (a small output), in the attempt object it names, or empty (a task without output).
 */
export function committedText(peer: Peer, bucket: string, markerKey: string): string {
  const raw = peer.readObject(bucket, markerKey);
  if (!raw) throw new Error(`no commit marker s3://${bucket}/${markerKey}`);
  const m = JSON.parse(raw.toString('utf8')) as { object: string | null; data?: string };
  if (m.data !== undefined) return Buffer.from(m.data, 'base64').toString('utf8');
  if (m.object === null) return '';
  const body = peer.readObject(bucket, m.object);
  if (!body) throw new Error(`the marker ${markerKey} names ${m.object}, which does not exist`);
  return body.toString('utf8');
}

/** One committed result of a job, as the bucket holds it. */
export interface CommittedResult {
  /** Its completion key (the output's key, or `.tasks/KEY`). */
  readonly key: string;
  readonly text: string;
  /** The marker holding it: `committed/KEY`, or `bundles/ID` for a task sent in a bundle. */
  readonly marker: string;
  /** Conditional PUTs of that marker accepted and refused (late duplicates), at the peer. */
  readonly accepted: number;
  readonly refused: number;
}

/**
 * Every committed result of a job (below `jobs/JOB/`), read from the peer's memory: one per task's
 * own commit marker and one per task named in a bundle's marker. A task committed twice (in two
 * markers) is listed twice.
 */
export function committedResults(peer: Peer, bucket: string, job: string): CommittedResult[] {
  const prefix = `jobs/${job}/`;
  const puts = (key: string) => peer.conditionalPuts.get(`/${bucket}/${key}`) ?? { accepted: 0, refused: 0 };
  const out: CommittedResult[] = [];
  for (const k of peer.objectKeys(bucket, `${prefix}committed/`)) {
    const marker = `${prefix}committed/${k}`;
    out.push({ key: k, text: committedText(peer, bucket, marker), marker, ...puts(marker) });
  }
  for (const id of peer.objectKeys(bucket, `${prefix}bundles/`)) {
    const marker = `${prefix}bundles/${id}`;
    const m = JSON.parse(peer.readObject(bucket, marker)!.toString('utf8')) as {
      tasks: Record<string, { key: string; object: string | null; data?: string }>;
    };
    for (const e of Object.values(m.tasks)) {
      const text =
        e.data !== undefined
          ? Buffer.from(e.data, 'base64').toString('utf8')
          : e.object === null
            ? ''
            : (peer.readObject(bucket, e.object)?.toString('utf8') ?? `(missing ${e.object})`);
      out.push({ key: e.key, text, marker, ...puts(marker) });
    }
  }
  return out;
}

/** A cluster on the peer: its queue and dead-letter queue, and its bucket `NAME-bucket`. */
export interface PeerCluster {
  readonly name: string;
  readonly queueUrl: string;
  readonly deadLetterQueueUrl: string;
  readonly bucket: string;
  readonly region: string;
}

/** Creates a cluster's queues and bucket on the peer; its target as the coordinator and workers take it. */
export async function createCluster(
  peer: Peer,
  name: string,
  opts?: { visibility?: number; maxReceiveCount?: number },
): Promise<PeerCluster> {
  const { queueUrl, dlqUrl } = await peer.createQueues(name, opts);
  await peer.createBucket(`${name}-bucket`);
  return { name, queueUrl, deadLetterQueueUrl: dlqUrl, bucket: `${name}-bucket`, region: 'us-east-1' };
}

/** The CLI flags that point `corral run --cluster` and `corral worker` at a cluster on the peer. */
export function clusterFlags(peer: Peer, c: PeerCluster): string[] {
  return [
    '--queue-url',
    c.queueUrl,
    '--dlq-url',
    c.deadLetterQueueUrl,
    '--bucket',
    c.bucket,
    '--endpoint-url',
    peer.endpoint,
  ];
}
