import { createHash } from 'node:crypto';
import path from 'node:path';
import {
  Aspects,
  AssetHashType,
  CfnOutput,
  CfnResource,
  type IAspect,
  Stack,
  type StackProps,
  TagManager,
  Tags,
  Validations,
} from 'aws-cdk-lib';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as cxapi from 'aws-cdk-lib/cx-api';
import type { Construct, IConstruct } from 'constructs';
import {
  type ClusterSpec,
  type DataBucketRef,
  isEcrImage,
  parseDataBucket,
  partitionOf,
  readSpecFile,
  sourceFileOf,
  stackNameOf,
} from '../spec/cluster.js';
import { ClusterAccess } from './cluster-access.js';
import { ClusterBucket } from './cluster-bucket.js';
import { Database, databaseIdentifierOf } from './database.js';
import { type DataBucketGrant, InstanceRole } from './instance-role.js';
import { JobQueue } from './job-queue.js';
import { LOG_GROUP_REMOVAL, Monitoring } from './monitoring.js';
import { Network } from './network.js';
import { Peering } from './peering.js';
import { StaticInstances } from './static-instances.js';
import { type ArtifactLocation, type DatabaseEndpoint, databaseEnvOf } from './user-data.js';
import { buildWorkerArtifact, type WorkerArtifact } from './worker-artifact.js';
import { WorkerPool } from './worker-pool.js';

/** Tag key every resource of a cluster carries, for `corral gc`. */
export const CLUSTER_TAG = 'corral:cluster';

/** Properties of a cluster stack. */
export interface ClusterStackProps extends StackProps {
  /** The validated cluster spec. */
  readonly spec: ClusterSpec;
  /**
   * Folder that relative paths in the spec (publicKeyFile, script) are resolved from.
   * @default - the folder of the spec file, or the working directory
   */
  readonly baseDir?: string;
  /**
   * The corral hosts install (a file asset: `corral up` uploads it to the CDK assets bucket).
   * @default - buildWorkerArtifact(): the corral that synthesizes the stack
   */
  readonly workerArtifact?: WorkerArtifact;
  /**
   * Image ids of named instances, by instance name, kept from the deployed stack (its
   * `<Name>ImageId` outputs): an instance without `ami` keeps the image it was created with
   * instead of following the latest Amazon Linux, which would replace it and its disk.
   * @default - none: each named instance resolves the latest image (first `up`, or `up --update-images`)
   */
  readonly pinnedImages?: Readonly<Record<string, string>>;
}

/** The stack output holding the image id a named instance runs. */
export function imageOutputKeyOf(instance: string): string {
  return `${pascal(instance)}ImageId`;
}

/** The name of the ECS cluster of a capacity: ecs pool (fixed, so its Container Insights log group can be made first). */
export function ecsClusterNameOf(cluster: string, pool: string): string {
  return `corral-${cluster}-${pool}`;
}

/** The log group Container Insights writes an ECS cluster's performance events to. */
export function containerInsightsLogGroupNameOf(ecsCluster: string): string {
  return `/aws/ecs/containerinsights/${ecsCluster}/performance`;
}

/** The log group of a cluster (named, so that `corral up` can read what failing hosts shipped). */
export function logGroupNameOf(cluster: string): string {
  return `/corral/${cluster}`;
}

// cloudformation: hosts report ready with cfn-signal.
const BASE_ENDPOINTS = ['sqs', 'logs', 'cloudformation', 'ssm', 'ssmmessages', 'ec2messages'];
// the ECS agent of capacity: ecs hosts registers them and reports (Container Insights)
const ECS_ENDPOINTS = ['ecs', 'ecs-agent', 'ecs-telemetry'];
// docker login (the token) and docker pull (manifests; the layers come through the S3 gateway)
const ECR_ENDPOINTS = ['ecr.api', 'ecr.dkr'];

/** The stack output listing each pool's queue, in the spec's order (the first pool is the default). */
export const POOL_QUEUES_OUTPUT = 'PoolQueues';

/**
 * The interface endpoints a spec gets: as written, or the default for its NAT, pools and images.
 * With no NAT gateway: the base set, `ecs`, `ecs-agent` and `ecs-telemetry` for capacity: ecs
 * pools, `ecr.api` and `ecr.dkr` when a pool or a private named instance has an ECR image (a
 * public instance reaches ECR through the internet gateway; the spec refuses any other image
 * without a NAT), `secretsmanager` with a database. With a NAT gateway: none.
 */
export function interfaceEndpointsOf(spec: ClusterSpec): string[] {
  if (spec.network.interfaceEndpoints) return [...new Set(spec.network.interfaceEndpoints)];
  if (spec.network.natGateways > 0) return [];
  const names = [...BASE_ENDPOINTS];
  if (spec.pools.some((p) => p.capacity === 'ecs')) names.push(...ECS_ENDPOINTS);
  const images = [
    ...spec.pools.map((p) => p.image),
    ...spec.instances.filter((i) => i.subnet === 'private').map((i) => i.image),
  ];
  if (images.some((i) => i !== undefined && isEcrImage(i))) names.push(...ECR_ENDPOINTS);
  if (spec.database) names.push('secretsmanager');
  return names;
}

function pascal(name: string): string {
  return name
    .split(/[^a-zA-Z0-9]/)
    .filter(Boolean)
    .map((w) => w[0]!.toUpperCase() + w.slice(1))
    .join('');
}

/**
 * The whole cluster from one spec: network, security group and key pair, bucket, job queue,
 * named instances, worker pools, optional database and peerings, monitoring; tagged with
 * `corral:cluster=<name>` and the spec's tags. Outputs are what the AWS runtime reads.
 */
export class ClusterStack extends Stack {
  /** The spec the stack was built from. */
  readonly spec: ClusterSpec;
  readonly network: Network;
  readonly access: ClusterAccess;
  readonly jobQueue: JobQueue;
  readonly clusterBucket: ClusterBucket;
  readonly logGroup: logs.LogGroup;
  readonly staticInstances?: StaticInstances;
  readonly pools = new Map<string, WorkerPool>();
  /** The queue of each pool: the first pool's is the job queue. */
  readonly poolQueues = new Map<string, JobQueue>();
  readonly database?: Database;
  readonly peerings: Peering[] = [];
  readonly monitoring: Monitoring;
  /** The worker artifact hosts install (a file asset). */
  readonly workerArtifact: s3assets.Asset;
  /** What the worker artifact is: corral's version, sha256, size, native platform. */
  readonly workerArtifactInfo: WorkerArtifact;
  /** Topic of alarms and pool scaling notifications (email-subscribed when monitoring.alarmEmail is set). */
  readonly notifications: sns.Topic;

  constructor(scope: Construct, id: string, props: ClusterStackProps) {
    const spec = props.spec;
    super(scope, id, {
      stackName: stackNameOf(spec.name),
      description: `corral cluster ${spec.name}`,
      ...props,
      env: props.env ?? { account: spec.account, region: spec.region },
    });
    this.spec = spec;
    // Physical names must not collide between clusters in one account: the launch templates that
    // `requireImdsv2` adds to named instances get unique names (the default names them after the
    // construct id only, so two clusters with a `master` instance clash on the second up).
    this.node.setContext(cxapi.EC2_UNIQUE_IMDSV2_LAUNCH_TEMPLATE_NAME, true);
    Validations.of(this).acknowledge({
      id: 'CloudFormation-Validate::W3010',
      reason: 'corral pins the availability zones written in the spec, so synthesis needs no account lookup',
    });
    const specFile = sourceFileOf(spec);
    const baseDir = props.baseDir ?? (specFile ? path.dirname(path.resolve(specFile)) : process.cwd());

    this.logGroup = new logs.LogGroup(this, 'Logs', {
      logGroupName: logGroupNameOf(spec.name),
      retention: spec.monitoring.logRetentionDays as logs.RetentionDays,
      removalPolicy: LOG_GROUP_REMOVAL,
    });
    this.network = new Network(this, 'Network', {
      cidr: spec.network.cidr,
      azs: spec.network.azs,
      publicSubnets: spec.network.publicSubnets,
      privateSubnets: spec.network.privateSubnets,
      natGateways: spec.network.natGateways,
      flowLogGroup: spec.network.flowLogs ? this.logGroup : undefined,
    });
    const keyPair = spec.access.keyPair;
    const publicKey = keyPair?.publicKeyFile
      ? readSpecFile(baseDir, keyPair.publicKeyFile, 'access.keyPair.publicKeyFile').trim()
      : undefined;
    this.access = new ClusterAccess(this, 'Access', {
      vpc: this.network.vpc,
      adminCidr: spec.access.adminCidr,
      keyPairName: keyPair?.name,
      publicKeyMaterial: publicKey,
      // A new key replaces the key pair, and CloudFormation creates the replacement before it
      // deletes the old one: the name carries the key's fingerprint so the two never clash.
      importedKeyPairName: publicKey ? `corral-${spec.name}-${sha256(publicKey).slice(0, 8)}` : undefined,
    });
    const sg = this.access.securityGroup;
    this.network.addInterfaceEndpoints(interfaceEndpointsOf(spec), sg, spec.network.endpointAzs);

    this.jobQueue = new JobQueue(this, 'JobQueue', {
      visibilityTimeoutMs: spec.queue.visibilityTimeout,
      retentionMs: spec.queue.retention,
      maxReceiveCount: spec.queue.maxReceiveCount,
    });
    const b = spec.bucket;
    this.clusterBucket = new ClusterBucket(this, 'Storage', {
      bucketName: b.name,
      versioned: b.versioned,
      removalPolicy: b.removalPolicy,
      autoDeleteObjects: b.autoDeleteObjects,
      accessLogs: b.accessLogs,
      expireAfterDays: b.lifecycle.expireAfterDays,
      infrequentAccessAfterDays: b.lifecycle.infrequentAccessAfterDays,
      abortIncompleteUploadsAfterDays: b.lifecycle.abortIncompleteUploadsAfterDays,
      noncurrentVersionsExpireAfterDays: b.lifecycle.noncurrentVersionsExpireAfterDays,
    });
    const bucket = this.clusterBucket.bucket;
    this.notifications = new sns.Topic(this, 'Notifications', {
      enforceSSL: true,
      displayName: `corral ${spec.name}`,
    });
    // issue 20: each pool has its own queue (the first pool the job queue) and its workers read
    // only that one; the coordinator sends each task to the queue of its step's pool.
    for (const [i, p] of spec.pools.entries()) {
      this.poolQueues.set(
        p.name,
        i === 0
          ? this.jobQueue
          : new JobQueue(this, `JobQueue-${p.name}`, {
              visibilityTimeoutMs: spec.queue.visibilityTimeout,
              retentionMs: spec.queue.retention,
              maxReceiveCount: spec.queue.maxReceiveCount,
            }),
      );
    }
    const poolQueuesJson = this.toJsonString(
      [...this.poolQueues].map(([pool, q]) => ({
        pool,
        queueUrl: q.queue.queueUrl,
        deadLetterQueueUrl: q.deadLetterQueue.queueUrl,
      })),
    );
    const queues = [...new Set([this.jobQueue, ...this.poolQueues.values()])].flatMap((q) => [
      q.queue,
      q.deadLetterQueue,
    ]);
    const built = props.workerArtifact ?? buildWorkerArtifact();
    this.workerArtifactInfo = built;
    this.workerArtifact = new s3assets.Asset(this, 'WorkerArtifact', {
      path: built.file,
      assetHash: built.sha256,
      assetHashType: AssetHashType.CUSTOM,
    });
    const artifact: ArtifactLocation = {
      bucket: this.workerArtifact.s3BucketName,
      key: this.workerArtifact.s3ObjectKey,
      sha256: built.sha256,
    };
    const readObjectArns = [
      this.formatArn({
        service: 's3',
        region: '',
        account: '',
        resource: this.workerArtifact.s3BucketName,
        resourceName: this.workerArtifact.s3ObjectKey,
      }),
    ];
    const dataBuckets: DataBucketGrant[] = spec.dataBuckets.map((d) => {
      const r = parseDataBucket(d) as DataBucketRef; // the schema refused every entry that is not one
      return { ...r, partition: r.partition ?? partitionOf(spec.region) };
    });

    if (spec.database) {
      const d = spec.database;
      this.database = new Database(this, 'Database', {
        network: this.network,
        clientSecurityGroup: sg,
        engineVersion: d.engineVersion,
        instanceClass: d.instanceClass,
        allocatedStorage: d.allocatedStorage,
        multiAz: d.multiAz,
        port: d.port,
        backupRetentionDays: d.backupRetentionDays,
        removalPolicy: d.removalPolicy,
        deletionProtection: d.deletionProtection,
        databaseName: d.databaseName,
        instanceIdentifier: databaseIdentifierOf(spec.name),
        logRetentionDays: spec.monitoring.logRetentionDays,
      });
    }

    // What tasks are told of the database: its endpoint and its secret's ARN, never the password.
    const dbSecret = this.database?.instance.secret;
    const database: DatabaseEndpoint | undefined =
      this.database && dbSecret
        ? {
            host: this.database.instance.dbInstanceEndpointAddress,
            port: this.database.instance.dbInstanceEndpointPort,
            name: spec.database!.databaseName,
            secretArn: dbSecret.secretArn,
          }
        : undefined;
    // Hosts may read that one secret (GetSecretValue only), nothing else of Secrets Manager.
    const readDbSecret = (role: iam.IRole) => {
      if (dbSecret)
        role.addToPrincipalPolicy(
          new iam.PolicyStatement({
            actions: ['secretsmanager:GetSecretValue'],
            resources: [dbSecret.secretArn],
          }),
        );
    };

    if (spec.instances.length > 0) {
      const role = new InstanceRole(this, 'InstancesRole', {
        bucket,
        queues,
        dataBuckets,
        logGroup: this.logGroup,
        readObjectArns,
        images: spec.instances.map((i) => i.image),
        description: `corral ${spec.name}: named instances`,
      });
      readDbSecret(role.role);
      this.staticInstances = new StaticInstances(this, 'Instances', {
        clusterName: spec.name,
        network: this.network,
        securityGroup: sg,
        role: role.role,
        keyPair: this.access.keyPair,
        coordinatorEnv: {
          CORRAL_CLUSTER: spec.name,
          AWS_REGION: spec.region,
          CORRAL_QUEUE_URL: this.jobQueue.queue.queueUrl,
          CORRAL_DEAD_LETTER_QUEUE_URL: this.jobQueue.deadLetterQueue.queueUrl,
          CORRAL_BUCKET: bucket.bucketName,
          CORRAL_LOG_GROUP: this.logGroup.logGroupName,
          ...(database ? databaseEnvOf(database) : {}),
        },
        coordinatorOutputs: {
          QueueUrl: this.jobQueue.queue.queueUrl,
          DeadLetterQueueUrl: this.jobQueue.deadLetterQueue.queueUrl,
          BucketName: bucket.bucketName,
          Region: spec.region,
          LogGroupName: this.logGroup.logGroupName,
          ClusterName: spec.name,
        },
        ...(this.poolQueues.size > 0
          ? {
              coordinatorPoolQueues: [...this.poolQueues].map(([pool, q]) => ({
                pool,
                queueUrl: q.queue.queueUrl,
                deadLetterQueueUrl: q.deadLetterQueue.queueUrl,
              })),
            }
          : {}),
        artifact,
        instances: spec.instances.map((i, n) => ({
          name: i.name,
          type: i.type,
          az: i.az,
          subnet: i.subnet,
          elasticIp: i.elasticIp,
          role: i.role,
          image: i.image,
          ami: i.ami ?? props.pinnedImages?.[i.name],
          volumeSize: i.volumeSize,
          script:
            i.script !== undefined ? readSpecFile(baseDir, i.script, `instances[${n}].script`) : i.userData,
        })),
      });
    }

    for (const p of spec.pools) {
      const role = new InstanceRole(this, `PoolRole-${p.name}`, {
        bucket,
        queues,
        dataBuckets,
        logGroup: this.logGroup,
        readObjectArns,
        images: [p.image],
        description: `corral ${spec.name}: pool ${p.name}`,
      });
      readDbSecret(role.role);
      this.pools.set(
        p.name,
        new WorkerPool(this, `Pool-${p.name}`, {
          clusterName: spec.name,
          poolName: p.name,
          network: this.network,
          securityGroup: sg,
          role: role.role,
          queue: this.poolQueues.get(p.name)!.queue,
          deadLetterQueue: this.poolQueues.get(p.name)!.deadLetterQueue,
          bucketName: bucket.bucketName,
          logGroup: this.logGroup,
          instanceTypes: p.instanceTypes,
          artifact,
          gpu: p.gpu,
          minCapacity: p.min,
          maxCapacity: p.max,
          desiredCapacity: p.desired,
          onDemandBase: p.spot.onDemandBase,
          onDemandAbovePercent: p.spot.onDemandAbovePercent,
          spotAllocationStrategy: p.spot.allocationStrategy,
          capacity: p.capacity,
          image: p.image,
          backlogPerInstance: p.scaling.backlogPerInstance,
          scaleToZeroAfterMs: p.scaling.scaleToZeroAfter,
          subnet: p.subnet,
          volumeSize: p.volumeSize,
          keyPair: this.access.keyPair,
          notificationTopic: this.notifications,
          database,
        }),
      );
    }

    spec.peering.forEach((peer, i) => {
      this.peerings.push(
        new Peering(this, `Peering${i}`, {
          network: this.network,
          access: this.access,
          peerVpcId: peer.vpcId,
          peerCidr: peer.cidr,
          peerRegion: peer.region,
          peerAccountId: peer.accountId,
          peerRoleArn: peer.peerRoleArn,
          peerRouteTableIds: peer.routeTableIds,
          ports: peer.ports,
        }),
      );
    });

    this.monitoring = new Monitoring(this, 'Monitoring', {
      clusterName: spec.name,
      queue: this.jobQueue.queue,
      deadLetterQueue: this.jobQueue.deadLetterQueue,
      logGroup: this.logGroup,
      instances: this.staticInstances?.instances,
      pools: new Map([...this.pools].map(([name, pool]) => [name, pool.autoScalingGroup])),
      queueAgeAlarmMs: spec.monitoring.queueAgeAlarm,
      topic: this.notifications,
      alarmEmail: spec.monitoring.alarmEmail,
      dashboard: spec.monitoring.dashboard,
    });

    new CfnOutput(this, 'QueueUrl', { value: this.jobQueue.queue.queueUrl });
    new CfnOutput(this, 'DeadLetterQueueUrl', { value: this.jobQueue.deadLetterQueue.queueUrl });
    new CfnOutput(this, 'BucketName', { value: bucket.bucketName });
    if (this.poolQueues.size > 0) {
      new CfnOutput(this, POOL_QUEUES_OUTPUT, {
        value: poolQueuesJson,
        description: 'queue of each pool, the first the default (JSON)',
      });
    }
    new CfnOutput(this, 'Region', { value: this.region });
    new CfnOutput(this, 'LogGroupName', { value: this.logGroup.logGroupName });
    new CfnOutput(this, 'ClusterName', { value: spec.name });
    for (const [name, image] of this.staticInstances?.imageIds ?? []) {
      new CfnOutput(this, imageOutputKeyOf(name), {
        value: image,
        description: `Image of ${name}, kept on the next up (up --update-images moves it to the latest)`,
      });
    }
    for (const [name, eip] of this.staticInstances?.elasticIps ?? []) {
      new CfnOutput(this, `${pascal(name)}PublicIp`, {
        value: eip.ref,
        description: `Elastic IP of ${name}`,
      });
    }
    for (const [name, pool] of this.pools) {
      new CfnOutput(this, `Pool${pascal(name)}GroupName`, {
        value: pool.autoScalingGroup.autoScalingGroupName,
        description: `Auto Scaling group of pool ${name}`,
      });
    }
    if (this.database) {
      new CfnOutput(this, 'DatabaseEndpoint', { value: this.database.instance.dbInstanceEndpointAddress });
      new CfnOutput(this, 'DatabasePort', { value: this.database.instance.dbInstanceEndpointPort });
      new CfnOutput(this, 'DatabaseName', { value: spec.database!.databaseName });
      new CfnOutput(this, 'DatabaseSecretArn', { value: this.database.instance.secret!.secretArn });
    }

    this.addServiceLogGroups(spec);

    const tags = { ...spec.tags, [CLUSTER_TAG]: spec.name };
    for (const [k, v] of Object.entries(tags)) Tags.of(this).add(k, v);
    Aspects.of(this).add(new TagUntaggable(tags));
  }

  /**
   * The log groups AWS services would otherwise create on the cluster's behalf, without retention
   * or tags, and leave after `down`: made here, before what writes to them, with the spec's
   * retention, the cluster's tags, and destroyed with the stack. Container Insights of each
   * capacity: ecs pool writes `/aws/ecs/containerinsights/CLUSTER/performance` (the ECS cluster
   * gets a fixed name, `corral-NAME-POOL`, so the group can come first); each Lambda function the
   * CDK adds (the bucket's auto-delete provider) logs to its own group through its LoggingConfig
   * instead of the `/aws/lambda/FUNCTION` Lambda would create. The database's exported logs are
   * made by the Database construct.
   */
  private addServiceLogGroups(spec: ClusterSpec): void {
    const retention = spec.monitoring.logRetentionDays as logs.RetentionDays;
    for (const [name, pool] of this.pools) {
      if (!pool.ecsCluster) continue;
      const cfn = pool.ecsCluster.node.defaultChild as ecs.CfnCluster;
      const clusterName = ecsClusterNameOf(spec.name, name);
      cfn.clusterName = clusterName;
      const group = new logs.LogGroup(this, `ContainerInsightsLogs-${name}`, {
        logGroupName: containerInsightsLogGroupNameOf(clusterName),
        retention,
        removalPolicy: LOG_GROUP_REMOVAL,
      });
      cfn.node.addDependency(group);
    }
    const functions = this.node
      .findAll()
      .filter(
        (c): c is CfnResource =>
          CfnResource.isCfnResource(c) && c.cfnResourceType === 'AWS::Lambda::Function',
      );
    for (const fn of functions) {
      const id = this.getLogicalId(fn);
      const group = new logs.LogGroup(this, `FunctionLogs-${id}`, {
        logGroupName: `/aws/lambda/${this.stackName}-${id}`,
        retention,
        removalPolicy: LOG_GROUP_REMOVAL,
      });
      // The function depends on its group: it is deleted first, so nothing it logs late recreates the group.
      fn.addPropertyOverride('LoggingConfig.LogGroup', group.logGroupName);
      fn.node.addDependency(group);
    }
  }

  /** The AZs come from the spec, so synthesis never looks them up in an account. */
  override get availabilityZones(): string[] {
    // Called before the constructor body has run when the base class needs the zones early.
    const azs = (this as { spec?: ClusterSpec }).spec?.network.azs;
    return azs ? [...azs] : super.availabilityZones;
  }
}

/** Types that accept Tags but that aws-cdk-lib creates as plain CfnResources (custom resource providers). */
const TAGGABLE_RAW_TYPES = new Set(['AWS::IAM::Role', 'AWS::Lambda::Function']);

/** Tags the raw resources `Tags.of` cannot reach, such as the auto-delete-objects provider's role and function. */
class TagUntaggable implements IAspect {
  constructor(private readonly tags: Readonly<Record<string, string>>) {}

  visit(node: IConstruct): void {
    if (
      CfnResource.isCfnResource(node) &&
      TAGGABLE_RAW_TYPES.has(node.cfnResourceType) &&
      !TagManager.isTaggable(node)
    ) {
      node.addPropertyOverride(
        'Tags',
        Object.entries(this.tags).map(([Key, Value]) => ({ Key, Value })),
      );
    }
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
