/**
 * A local peer of the AWS services corral calls besides S3, SQS and CloudWatch Logs, on
 * 127.0.0.1 with a random port:
 *
 * - **EC2** (EC2 Query API, version 2016-11-15): `DescribeInstances` (filters `tag-key`,
 *   `tag:KEY`, `instance-state-name`, `instance-id`; `InstanceId.N`; `MaxResults`/`NextToken`
 *   paging) and `TerminateInstances`, with XML bodies and errors as EC2 returns them
 *   (`<Response><Errors>…`).
 * - **CloudFormation** (AWS Query, version 2010-05-15): `DescribeStacks` (one stack by name or id,
 *   or every stack), with `Outputs`, and the `ValidationError` "Stack with id X does not exist"
 *   for a stack that is not there (or deleted, when asked by name), as CloudFormation does.
 *
 * - **Secrets Manager** (JSON 1.1): `GetSecretValue` of a secret put with `putSecret`, and
 *   `ResourceNotFoundException` otherwise. The peer checks each request's SigV4 signature with
 *   the SDK's own signer (`@smithy/signature-v4`) and the peer's credentials (`PEER_ENV`), so a
 *   request signed wrong is refused (403 `InvalidSignatureException`), as AWS refuses it.
 * - **EC2 Auto Scaling** (AWS Query, version 2011-01-01): `DescribeAutoScalingInstances`,
 *   `DescribeAutoScalingGroups`, `SetInstanceProtection` and `TerminateInstanceInAutoScalingGroup`
 *   on the groups added with `addGroup`; a termination with `ShouldDecrementDesiredCapacity=true`
 *   below the group's minimum is the `ValidationError` Auto Scaling answers, and one without a
 *   decrement starts a replacement (a new instance in the group), as the group would.
 *
 * Requests are told apart by the service in the SigV4 credential scope (`…/ec2/aws4_request`);
 * every other request (S3, SQS) is forwarded unchanged to `upstream` (fauxqs, see
 * cluster-peer.ts), so one endpoint serves every client, as `--endpoint-url` requires. Requests
 * without a SigV4 signature are refused. The peer keeps every EC2/CloudFormation call it served
 * in `calls`, so tests can assert what was (and was not) asked.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignatureV4 } from '@smithy/signature-v4';

/** EC2 instance states, with the codes EC2 reports. */
export const INSTANCE_STATE_CODES = {
  pending: 0,
  running: 16,
  'shutting-down': 32,
  terminated: 48,
  stopping: 64,
  stopped: 80,
} as const;
export type InstanceStateName = keyof typeof INSTANCE_STATE_CODES;

/** One instance the peer knows. */
export interface PeerInstance {
  readonly id: string;
  state: InstanceStateName;
  readonly tags: Record<string, string>;
}

/** One stack the peer knows. */
export interface PeerStack {
  readonly name: string;
  readonly id: string;
  status: string;
  outputs: Record<string, string>;
}

/** One Auto Scaling group the peer knows. */
export interface PeerGroup {
  readonly name: string;
  min: number;
  max: number;
  desired: number;
  /** Instances in service, with their scale-in protection. */
  readonly instances: Map<string, { protected: boolean }>;
}

/** One EC2, CloudFormation, Secrets Manager or Auto Scaling request the peer answered. */
export interface QueryCall {
  readonly service: 'ec2' | 'cloudformation' | 'secretsmanager' | 'autoscaling';
  readonly action: string;
  readonly params: Readonly<Record<string, string>>;
  /** When it was answered (ms since the epoch). */
  readonly at: number;
}

/** A running query peer. */
export interface QueryPeer {
  /** `http://127.0.0.1:PORT`: pass it as `--endpoint-url`. */
  readonly endpoint: string;
  readonly instances: Map<string, PeerInstance>;
  readonly stacks: Map<string, PeerStack>;
  readonly groups: Map<string, PeerGroup>;
  readonly calls: QueryCall[];
  /** Adds an Auto Scaling group of `instances` (ids of `addInstance`); desired is their count. */
  addGroup(name: string, o: { min: number; max: number; instances: readonly string[] }): PeerGroup;
  /** Adds an instance; returns its id (`i-` + 17 hex digits). */
  addInstance(i: { state?: InstanceStateName; tags?: Record<string, string> }): string;
  /** Creates or replaces a stack (status `CREATE_COMPLETE` unless given). */
  putStack(name: string, o?: { status?: string; outputs?: Record<string, string> }): PeerStack;
  /** Marks a stack deleted (`DELETE_COMPLETE`): by name it then "does not exist". */
  deleteStack(name: string): void;
  /** Puts a secret GetSecretValue serves (its SecretString); returns its ARN. */
  putSecret(name: string, value: string): string;
  /** Calls of one action. */
  callsOf(action: string): QueryCall[];
  stop(): Promise<void>;
}

/** Options of the peer. */
export interface QueryPeerOptions {
  /** Where requests of other services go (fauxqs). @default - they get 501 */
  readonly upstream?: string;
  /** Most instances per DescribeInstances page, whatever MaxResults says (to exercise paging). @default 1000 */
  readonly pageSize?: number;
  /** Account id in ARNs. @default '123456789012' */
  readonly account?: string;
  /** Credentials Secrets Manager requests must be signed with. @default - PEER_ENV of cluster-peer.ts */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string };
}

/** The hash SignatureV4 takes (node:crypto; a secret makes it an HMAC). */
class NodeSha256 {
  private readonly h;
  constructor(secret?: string | Uint8Array) {
    this.h = secret !== undefined ? createHmac('sha256', secret) : createHash('sha256');
  }
  update(data: string | Uint8Array): void {
    this.h.update(data);
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.h.digest());
  }
  reset(): void {}
}

/**
 * Whether a request's Authorization header is the one the SDK's signer computes for it, with the
 * headers it says it signed, the time it says it signed at, and `credentials`.
 */
async function signatureValid(
  req: http.IncomingMessage,
  body: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
): Promise<boolean> {
  const auth = String(req.headers.authorization ?? '');
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(
      auth,
    );
  if (!m || m[1] !== credentials.accessKeyId) return false;
  const amzDate = String(req.headers['x-amz-date'] ?? '');
  const when = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!when || amzDate.slice(0, 8) !== m[2]) return false;
  const signingDate = new Date(
    Date.UTC(+when[1]!, +when[2]! - 1, +when[3]!, +when[4]!, +when[5]!, +when[6]!),
  );
  if (Math.abs(Date.now() - signingDate.getTime()) > 15 * 60_000) return false; // as AWS: 15 min skew
  const headers: Record<string, string> = {};
  for (const name of m[5]!.split(';')) {
    if (name === 'x-amz-date') continue; // the signer adds it
    const v = req.headers[name];
    if (v === undefined) return false;
    headers[name] = String(v);
  }
  const url = new URL(req.url ?? '/', `http://${req.headers.host}`);
  const signer = new SignatureV4({
    service: m[4]!,
    region: m[3]!,
    credentials,
    sha256: NodeSha256,
    applyChecksum: false,
  });
  const signed = await signer.sign(
    {
      method: req.method ?? 'POST',
      protocol: 'http:',
      hostname: url.hostname,
      port: Number(url.port),
      path: url.pathname,
      query: {},
      headers,
      body,
    },
    { signingDate },
  );
  return signed.headers.authorization === auth;
}

const EC2_NS = 'http://ec2.amazonaws.com/doc/2016-11-15/';
const CFN_NS = 'http://cloudformation.amazonaws.com/doc/2010-05-15/';
const AS_NS = 'http://autoscaling.amazonaws.com/doc/2011-01-01/';
const VERSIONS = { ec2: '2016-11-15', cloudformation: '2010-05-15', autoscaling: '2011-01-01' } as const;

function esc(v: string): string {
  return v.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function requestId(): string {
  const h = randomBytes(16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** `Name.N` members of a query-serialized list, in order. */
function listOf(params: Record<string, string>, prefix: string): string[] {
  const out: string[] = [];
  for (let n = 1; n <= 10_000 && params[`${prefix}.${n}`] !== undefined; n++)
    out.push(params[`${prefix}.${n}`]!);
  return out;
}

class QueryError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Starts the peer on 127.0.0.1:0. */
export async function startQueryPeer(o: QueryPeerOptions = {}): Promise<QueryPeer> {
  const account = o.account ?? '123456789012';
  const instances = new Map<string, PeerInstance>();
  const stacks = new Map<string, PeerStack>();
  const groups = new Map<string, PeerGroup>();
  const calls: QueryCall[] = [];
  const upstream = o.upstream ? new URL(o.upstream) : undefined;
  const secrets = new Map<string, { arn: string; name: string; value: string }>();
  const credentials = o.credentials ?? { accessKeyId: 'corral-test', secretAccessKey: 'corral-test-secret' };

  async function secretsManager(req: http.IncomingMessage, body: string, res: http.ServerResponse) {
    const target = String(req.headers['x-amz-target'] ?? '');
    const action = target.replace(/^secretsmanager\./, '');
    let params: Record<string, unknown> = {};
    try {
      params = JSON.parse(body || '{}') as Record<string, unknown>;
    } catch {}
    calls.push({
      service: 'secretsmanager',
      action,
      params: { SecretId: String(params.SecretId ?? '') },
      at: Date.now(),
    });
    const send = (status: number, out: unknown) =>
      res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1' }).end(JSON.stringify(out));
    if (!(await signatureValid(req, body, credentials)))
      return send(403, {
        __type: 'InvalidSignatureException',
        message: 'The request signature we calculated does not match the signature you provided.',
      });
    if (action !== 'GetSecretValue')
      return send(400, { __type: 'InvalidAction', message: `${action} is not served by the test peer` });
    const id = String(params.SecretId ?? '');
    const s = secrets.get(id) ?? [...secrets.values()].find((x) => x.name === id);
    if (!s)
      return send(400, {
        __type: 'ResourceNotFoundException',
        message: "Secrets Manager can't find the specified secret.",
      });
    return send(200, {
      ARN: s.arn,
      Name: s.name,
      SecretString: s.value,
      VersionId: requestId(),
      VersionStages: ['AWSCURRENT'],
      CreatedDate: 1735689600,
    });
  }

  function describeInstances(p: Record<string, string>): string {
    const ids = listOf(p, 'InstanceId');
    const filters: Array<{ name: string; values: string[] }> = [];
    for (let n = 1; n <= 50 && p[`Filter.${n}.Name`] !== undefined; n++)
      filters.push({ name: p[`Filter.${n}.Name`]!, values: listOf(p, `Filter.${n}.Value`) });
    for (const f of filters) {
      if (!['tag-key', 'instance-state-name', 'instance-id'].includes(f.name) && !f.name.startsWith('tag:'))
        throw new QueryError(400, 'InvalidParameterValue', `The filter '${f.name}' is invalid`);
    }
    for (const id of ids)
      if (!instances.has(id))
        throw new QueryError(400, 'InvalidInstanceID.NotFound', `The instance ID '${id}' does not exist`);
    const match = (i: PeerInstance) =>
      (ids.length === 0 || ids.includes(i.id)) &&
      filters.every((f) => {
        if (f.name === 'tag-key') return f.values.some((v) => v in i.tags);
        if (f.name === 'instance-state-name') return f.values.includes(i.state);
        if (f.name === 'instance-id') return f.values.includes(i.id);
        const key = f.name.slice(4);
        return key in i.tags && f.values.includes(i.tags[key]!);
      });
    const all = [...instances.values()].filter(match);
    // EC2 may return fewer than MaxResults with a NextToken; pageSize makes the peer do so
    const max = Math.min(p.MaxResults !== undefined ? Number(p.MaxResults) : 1000, o.pageSize ?? 1000);
    const asked = Number(p.MaxResults);
    if (p.MaxResults !== undefined && (ids.length > 0 || !(asked >= 5 && asked <= 1000)))
      throw new QueryError(
        400,
        'InvalidParameterValue',
        ids.length > 0
          ? 'The parameter instancesSet cannot be used with the parameter maxResults'
          : `Value ( ${p.MaxResults} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.`,
      );
    const start = p.NextToken ? Number(Buffer.from(p.NextToken, 'base64url').toString()) : 0;
    const page = all.slice(start, start + max);
    const next =
      start + max < all.length ? Buffer.from(String(start + max)).toString('base64url') : undefined;
    // one reservation per instance, as instances launched one at a time (an Auto Scaling group) get
    const reservations = page
      .map(
        (i) =>
          `<item><reservationId>r-${i.id.slice(2)}</reservationId><ownerId>${account}</ownerId><groupSet/>` +
          `<instancesSet><item><instanceId>${i.id}</instanceId><imageId>ami-0123456789abcdef0</imageId>` +
          `<instanceState><code>${INSTANCE_STATE_CODES[i.state]}</code><name>${i.state}</name></instanceState>` +
          '<instanceType>c6i.large</instanceType>' +
          `<tagSet>${Object.entries(i.tags)
            .map(([k, v]) => `<item><key>${esc(k)}</key><value>${esc(v)}</value></item>`)
            .join('')}</tagSet></item></instancesSet></item>`,
      )
      .join('');
    return (
      `<?xml version="1.0" encoding="UTF-8"?>\n<DescribeInstancesResponse xmlns="${EC2_NS}">` +
      `<requestId>${requestId()}</requestId><reservationSet>${reservations}</reservationSet>` +
      `${next ? `<nextToken>${next}</nextToken>` : ''}</DescribeInstancesResponse>`
    );
  }

  function terminateInstances(p: Record<string, string>): string {
    const ids = listOf(p, 'InstanceId');
    if (ids.length === 0)
      throw new QueryError(400, 'MissingParameter', 'The request must contain the parameter InstanceId');
    const unknown = ids.filter((id) => !instances.has(id));
    if (unknown.length)
      throw new QueryError(
        400,
        'InvalidInstanceID.NotFound',
        `The instance IDs '${unknown.join(', ')}' do not exist`,
      );
    const items = ids.map((id) => {
      const i = instances.get(id)!;
      const prev = i.state;
      if (i.state !== 'terminated') i.state = 'terminated';
      const cur: InstanceStateName = prev === 'terminated' ? 'terminated' : 'shutting-down';
      return (
        `<item><instanceId>${id}</instanceId>` +
        `<currentState><code>${INSTANCE_STATE_CODES[cur]}</code><name>${cur}</name></currentState>` +
        `<previousState><code>${INSTANCE_STATE_CODES[prev]}</code><name>${prev}</name></previousState></item>`
      );
    });
    return (
      `<?xml version="1.0" encoding="UTF-8"?>\n<TerminateInstancesResponse xmlns="${EC2_NS}">` +
      `<requestId>${requestId()}</requestId><instancesSet>${items.join('')}</instancesSet></TerminateInstancesResponse>`
    );
  }

  function describeStacks(p: Record<string, string>): string {
    let found: PeerStack[];
    if (p.StackName !== undefined) {
      const byId = [...stacks.values()].find((s) => s.id === p.StackName);
      const byName = stacks.get(p.StackName);
      const s = byId ?? (byName && byName.status !== 'DELETE_COMPLETE' ? byName : undefined);
      if (!s) throw new QueryError(400, 'ValidationError', `Stack with id ${p.StackName} does not exist`);
      found = [s];
    } else found = [...stacks.values()].filter((s) => s.status !== 'DELETE_COMPLETE');
    const members = found
      .map(
        (s) =>
          `<member><StackId>${esc(s.id)}</StackId><StackName>${esc(s.name)}</StackName>` +
          `<Description>corral cluster ${esc(s.name.replace(/^corral-/, ''))}</Description>` +
          '<CreationTime>2025-01-01T00:00:00.000Z</CreationTime>' +
          `<StackStatus>${s.status}</StackStatus><DisableRollback>false</DisableRollback>` +
          `<Outputs>${Object.entries(s.outputs)
            .map(
              ([k, v]) =>
                `<member><OutputKey>${esc(k)}</OutputKey><OutputValue>${esc(v)}</OutputValue></member>`,
            )
            .join('')}</Outputs></member>`,
      )
      .join('');
    return (
      `<?xml version="1.0" encoding="UTF-8"?>\n<DescribeStacksResponse xmlns="${CFN_NS}">` +
      `<DescribeStacksResult><Stacks>${members}</Stacks></DescribeStacksResult>` +
      `<ResponseMetadata><RequestId>${requestId()}</RequestId></ResponseMetadata></DescribeStacksResponse>`
    );
  }

  const groupOfInstance = (id: string) => [...groups.values()].find((g) => g.instances.has(id));
  const asResponse = (action: string, result: string) =>
    `<${action}Response xmlns="${AS_NS}"><${action}Result>${result}</${action}Result>` +
    `<ResponseMetadata><RequestId>${requestId()}</RequestId></ResponseMetadata></${action}Response>`;

  function autoScaling(action: string, p: Record<string, string>): string {
    if (action === 'DescribeAutoScalingInstances') {
      const members = listOf(p, 'InstanceIds.member')
        .map((id) => ({ id, g: groupOfInstance(id) }))
        .filter((x) => x.g)
        .map(
          ({ id, g }) =>
            `<member><InstanceId>${id}</InstanceId><AutoScalingGroupName>${esc(g!.name)}</AutoScalingGroupName>` +
            `<LifecycleState>InService</LifecycleState><HealthStatus>HEALTHY</HealthStatus>` +
            `<ProtectedFromScaleIn>${g!.instances.get(id)!.protected}</ProtectedFromScaleIn></member>`,
        );
      return asResponse(action, `<AutoScalingInstances>${members.join('')}</AutoScalingInstances>`);
    }
    if (action === 'DescribeAutoScalingGroups') {
      const names = listOf(p, 'AutoScalingGroupNames.member');
      const found = [...groups.values()].filter((g) => names.length === 0 || names.includes(g.name));
      const members = found.map(
        (g) =>
          `<member><AutoScalingGroupName>${esc(g.name)}</AutoScalingGroupName><MinSize>${g.min}</MinSize>` +
          `<MaxSize>${g.max}</MaxSize><DesiredCapacity>${g.desired}</DesiredCapacity><Instances>${[
            ...g.instances,
          ]
            .map(
              ([id, i]) =>
                `<member><InstanceId>${id}</InstanceId><LifecycleState>InService</LifecycleState><ProtectedFromScaleIn>${i.protected}</ProtectedFromScaleIn></member>`,
            )
            .join('')}</Instances></member>`,
      );
      return asResponse(action, `<AutoScalingGroups>${members.join('')}</AutoScalingGroups>`);
    }
    if (action === 'SetInstanceProtection') {
      const g = groups.get(p.AutoScalingGroupName ?? '');
      if (!g)
        throw new QueryError(
          400,
          'ValidationError',
          `AutoScalingGroup name not found - ${p.AutoScalingGroupName}`,
        );
      if (p.ProtectedFromScaleIn !== 'true' && p.ProtectedFromScaleIn !== 'false')
        throw new QueryError(400, 'ValidationError', 'ProtectedFromScaleIn is required');
      for (const id of listOf(p, 'InstanceIds.member')) {
        const i = g.instances.get(id);
        if (!i)
          throw new QueryError(
            400,
            'ValidationError',
            `The instance ${id} is not part of Auto Scaling group ${g.name}.`,
          );
        i.protected = p.ProtectedFromScaleIn === 'true';
      }
      return asResponse(action, '');
    }
    if (action === 'TerminateInstanceInAutoScalingGroup') {
      const id = p.InstanceId ?? '';
      const g = groupOfInstance(id);
      if (!g)
        throw new QueryError(
          400,
          'ValidationError',
          `Instance Id not found - No managed instance found for instance ID: ${id}`,
        );
      const decrement = p.ShouldDecrementDesiredCapacity === 'true';
      if (decrement && g.desired <= g.min)
        throw new QueryError(
          400,
          'ValidationError',
          `Currently, desiredSize equals minSize (${g.min}). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.`,
        );
      g.instances.delete(id);
      const inst = instances.get(id);
      if (inst) inst.state = 'shutting-down';
      if (decrement) g.desired--;
      else g.instances.set(`i-${randomBytes(9).toString('hex').slice(0, 17)}`, { protected: false });
      return asResponse(
        action,
        `<Activity><ActivityId>${requestId()}</ActivityId><AutoScalingGroupName>${esc(g.name)}</AutoScalingGroupName>` +
          `<Description>Terminating EC2 instance: ${id}</Description><StatusCode>InProgress</StatusCode></Activity>`,
      );
    }
    throw new QueryError(400, 'InvalidAction', `The action ${action} is not valid for this web service.`);
  }

  function answer(service: keyof typeof VERSIONS, body: string, res: http.ServerResponse): void {
    const params = Object.fromEntries(new URLSearchParams(body));
    const action = params.Action ?? '';
    calls.push({ service, action, params, at: Date.now() });
    const version = VERSIONS[service];
    try {
      if (params.Version !== version)
        throw new QueryError(400, 'InvalidParameterValue', `Unsupported Version ${params.Version}`);
      let xml: string;
      if (service === 'ec2' && action === 'DescribeInstances') xml = describeInstances(params);
      else if (service === 'ec2' && action === 'TerminateInstances') xml = terminateInstances(params);
      else if (service === 'cloudformation' && action === 'DescribeStacks') xml = describeStacks(params);
      else if (service === 'autoscaling') xml = autoScaling(action, params);
      else
        throw new QueryError(400, 'InvalidAction', `The action ${action} is not valid for this web service.`);
      res.writeHead(200, { 'content-type': 'text/xml;charset=UTF-8' }).end(xml);
    } catch (err) {
      if (!(err instanceof QueryError)) throw err;
      const xml =
        service === 'ec2'
          ? `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${err.code}</Code><Message>${esc(err.message)}</Message></Error></Errors><RequestID>${requestId()}</RequestID></Response>`
          : `<ErrorResponse xmlns="${service === 'autoscaling' ? AS_NS : CFN_NS}"><Error><Type>Sender</Type><Code>${err.code}</Code><Message>${esc(err.message)}</Message></Error><RequestId>${requestId()}</RequestId></ErrorResponse>`;
      res.writeHead(err.status, { 'content-type': 'text/xml;charset=UTF-8' }).end(xml);
    }
  }

  function forward(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (!upstream) {
      res.writeHead(501, { 'content-type': 'text/plain' }).end('no upstream for this service\n');
      return;
    }
    const up = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    req.pipe(up);
  }

  const server = http.createServer((req, res) => {
    const auth = String(req.headers.authorization ?? '');
    const scope = /Credential=[^/,]+\/\d{8}\/[^/]+\/([^/]+)\/aws4_request/.exec(auth);
    const service = scope?.[1];
    if (service === 'secretsmanager') {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        secretsManager(req, Buffer.concat(chunks).toString('utf8'), res).catch(() => {
          if (!res.headersSent) res.writeHead(500).end();
        });
      });
      return;
    }
    if (service !== 'ec2' && service !== 'cloudformation' && service !== 'autoscaling') {
      forward(req, res);
      return;
    }
    if (!auth.startsWith('AWS4-HMAC-SHA256 ') || !/SignedHeaders=.*host/.test(auth)) {
      res.writeHead(403).end();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      if (req.method !== 'POST') {
        res.writeHead(405).end();
        return;
      }
      answer(service, Buffer.concat(chunks).toString('utf8'), res);
    });
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    instances,
    stacks,
    groups,
    calls,
    addGroup(name, { min, max, instances: ids }) {
      const g: PeerGroup = {
        name,
        min,
        max,
        desired: ids.length,
        instances: new Map(ids.map((id) => [id, { protected: false }])),
      };
      groups.set(name, g);
      return g;
    },
    addInstance({ state = 'running', tags = {} }) {
      const id = `i-${randomBytes(9).toString('hex').slice(0, 17)}`;
      instances.set(id, { id, state, tags: { ...tags } });
      return id;
    },
    putStack(name, { status = 'CREATE_COMPLETE', outputs = {} } = {}) {
      const s: PeerStack = {
        name,
        id: `arn:aws:cloudformation:us-east-1:${account}:stack/${name}/${requestId()}`,
        status,
        outputs: { ...outputs },
      };
      stacks.set(name, s);
      return s;
    },
    deleteStack(name) {
      const s = stacks.get(name);
      if (s) s.status = 'DELETE_COMPLETE';
    },
    putSecret(name, value) {
      const arn = `arn:aws:secretsmanager:us-east-1:${account}:secret:${name}-${randomBytes(3).toString('hex')}`;
      secrets.set(arn, { arn, name, value });
      return arn;
    },
    callsOf(action) {
      return calls.filter((c) => c.action === action);
    },
    stop: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
