/**
 * The setting of a bootstrap rehearsal (test/bootstrap.test.ts, bench/bootstrap.ts): a cluster
 * stack synthesized with the worker artifact of this corral, the peer's counterparts of its
 * resources (queues, buckets, the log group, the CDK assets bucket holding the artifact where the
 * template says), a fake IMDSv2, and the user data of its hosts with every Ref and Fn::Sub
 * resolved to them.
 */
import { readFileSync } from 'node:fs';
import { Upload } from '@aws-sdk/lib-storage';
import { App } from 'aws-cdk-lib';
import { ClusterStack } from '../src/infra/cluster-stack.js';
import { buildWorkerArtifact, type WorkerArtifact } from '../src/infra/worker-artifact.js';
import { type ClusterSpecInput, defineCluster } from '../src/spec/cluster.js';
import { type FakeImds, PEER_ENV, type Peer, startFakeImds, startPeer } from './cluster-peer.js';
import { resolveIntrinsics } from './sandbox.js';

export const ACCOUNT = '123456789012';
export const REGION = 'us-east-1';
export const INSTANCE_ID = 'i-0123456789abcdef0';
export const ASSETS_BUCKET = `cdk-hnb659fds-assets-${ACCOUNT}-${REGION}`;
export const STACK = 'corral-rehearsal';
export const LOG_GROUP = '/corral/rehearsal';

type Resources = Record<string, { Type: string; Properties?: Record<string, unknown> }>;

/** A running rehearsal setting. */
export interface Rehearsal {
  readonly peer: Peer;
  readonly imds: FakeImds;
  readonly artifact: WorkerArtifact;
  /** The artifact's key in the assets bucket (the template's). */
  readonly artifactKey: string;
  /** The synthesized resources. */
  readonly resources: Resources;
  /** Values of Refs (logical ids and pseudo parameters) on the peer. */
  readonly refs: ReadonlyMap<string, string>;
  /** The environment of a host: the peer's endpoint and IMDS, dummy credentials. */
  readonly hostEnv: NodeJS.ProcessEnv;
  /** The resolved user data of the first resource of a type that has some. */
  userDataOf(type: 'AWS::EC2::LaunchTemplate' | 'AWS::EC2::Instance'): string;
  logicalIdOf(type: string): string;
  /** Puts an object in parts, as the CDK's asset publishing does for a large file. */
  upload(bucket: string, key: string, body: Buffer): Promise<void>;
  stop(): Promise<void>;
}

/** The default rehearsal cluster: one pool of one host, one coordinator. */
export const REHEARSAL_SPEC: ClusterSpecInput = {
  name: 'rehearsal',
  region: REGION,
  account: ACCOUNT,
  network: { azs: ['us-east-1a'] },
  access: { adminCidr: '203.0.113.7/32' },
  instances: [{ name: 'coord', type: 't3.small', az: 'us-east-1a', role: 'coordinator' }],
  pools: [
    { name: 'cpu', instanceTypes: ['c7i.large'], min: 1, max: 2, scaling: { scaleToZeroAfter: '10m' } },
  ],
};

export async function startRehearsal(specInput: ClusterSpecInput = REHEARSAL_SPEC): Promise<Rehearsal> {
  const peer = await startPeer();
  const imds = await startFakeImds({ instanceId: INSTANCE_ID });
  try {
    return await setUp(specInput, peer, imds);
  } catch (err) {
    // a setting that cannot be made must not leave its servers holding the test process open
    await imds.stop();
    await peer.stop();
    throw err;
  }
}

async function setUp(specInput: ClusterSpecInput, peer: Peer, imds: FakeImds): Promise<Rehearsal> {
  const artifact = buildWorkerArtifact();
  const spec = defineCluster(specInput);
  const app = new App({ analyticsReporting: false });
  const stack = new ClusterStack(app, STACK, { spec, workerArtifact: artifact });
  // Without aws-cdk-lib's CloudFormation schema validation, as `corral plan` synthesizes
  // (src/infra/plan.ts): its WASM engine takes ~10 s of CPU to start, and without the
  // @aws-cdk/core:validateAgainstDefaultRules flag (which corral does not set) it only downgrades
  // what it finds to warnings, so it can fail nothing here.
  const validation = process.env.CDK_VALIDATION;
  process.env.CDK_VALIDATION = 'false';
  let assembly: ReturnType<App['synth']>;
  try {
    assembly = app.synth();
  } finally {
    if (validation === undefined) delete process.env.CDK_VALIDATION;
    else process.env.CDK_VALIDATION = validation;
  }
  const resources = assembly.getStackByName(stack.stackName).template.Resources as Resources;

  const refs = new Map<string, string>([
    ['AWS::StackName', STACK],
    ['AWS::Region', REGION],
    ['AWS::AccountId', ACCOUNT],
    ['AWS::Partition', 'aws'],
    ['AWS::URLSuffix', 'amazonaws.com'],
  ]);
  const queues = Object.entries(resources).filter(([, r]) => r.Type === 'AWS::SQS::Queue');
  const main = queues.find(([, r]) => r.Properties?.RedrivePolicy)!;
  const dlq = queues.find(([, r]) => !r.Properties?.RedrivePolicy)!;
  const { queueUrl, dlqUrl } = await peer.createQueues(spec.name);
  refs.set(main[0], queueUrl);
  refs.set(dlq[0], dlqUrl);
  for (const [id, r] of Object.entries(resources)) {
    if (r.Type === 'AWS::S3::Bucket') {
      const name = id.toLowerCase().slice(0, 63);
      await peer.createBucket(name);
      refs.set(id, name);
    }
    if (r.Type === 'AWS::Logs::LogGroup') {
      const name = String(r.Properties!.LogGroupName);
      peer.createLogGroup(name);
      refs.set(id, name);
    }
  }
  const userDataOf = (type: string): string => {
    // (an instance with IMDSv2 required has a launch template of its own, without user data)
    const raw = Object.values(resources)
      .filter((x) => x.Type === type)
      .map((r) =>
        type === 'AWS::EC2::LaunchTemplate'
          ? (r.Properties!.LaunchTemplateData as Record<string, unknown>).UserData
          : r.Properties!.UserData,
      )
      .find((u) => u !== undefined);
    return resolveIntrinsics(raw, (name) => {
      const v = refs.get(name);
      if (v === undefined) throw new Error(`the rehearsal has no value for ${name}`);
      return v;
    });
  };
  const upload = async (bucket: string, key: string, body: Buffer) => {
    await new Upload({
      client: peer.s3,
      params: { Bucket: bucket, Key: key, Body: body },
      partSize: 5 * 2 ** 20,
    }).done();
  };
  // Where the CDK's asset publishing puts the artifact: the key the template names.
  const fetch = /s3:\/\/[^/]+\/([^' ]+)/.exec(userDataOf('AWS::EC2::LaunchTemplate'));
  if (!fetch) throw new Error('the pool user data fetches no artifact from S3');
  const artifactKey = fetch[1]!;
  await peer.createBucket(ASSETS_BUCKET);
  await upload(ASSETS_BUCKET, artifactKey, readFileSync(artifact.file));
  return {
    peer,
    imds,
    artifact,
    artifactKey,
    resources,
    refs,
    hostEnv: {
      ...PEER_ENV,
      AWS_ENDPOINT_URL: peer.endpoint,
      CORRAL_IMDS_ENDPOINT: imds.endpoint,
      CORRAL_SPOT_INTERVAL_MS: '60000',
    },
    userDataOf,
    logicalIdOf: (type) => Object.entries(resources).find(([, r]) => r.Type === type)![0],
    upload,
    async stop() {
      await imds.stop();
      await peer.stop();
    },
  };
}
