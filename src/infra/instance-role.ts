import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { DETACHED_PREFIX } from '../protocol/keys.js';
import { ecrImageOf } from './user-data.js';

/** A bucket, or the objects below one key prefix of it, that a role may read. */
export interface DataBucketGrant {
  /** Bucket name. */
  readonly bucket: string;
  /**
   * Key prefix, a folder without the trailing slash (`raw/2024` grants `raw/2024/…`).
   * @default - the whole bucket
   */
  readonly prefix?: string;
  /**
   * AWS partition of the bucket ARN.
   * @default 'aws'
   */
  readonly partition?: string;
}

/** Properties of an instance role. */
export interface InstanceRoleProps {
  /** The cluster bucket: read and write objects. */
  readonly bucket: s3.IBucket;
  /** Queues the role claims from and sends to. */
  readonly queues: readonly sqs.IQueue[];
  /** The cluster log group: write events. */
  readonly logGroup: logs.ILogGroup;
  /**
   * Other buckets or prefixes the role may read (s3:GetObject, s3:ListBucket), e.g. `s3://` job inputs.
   * @default - none
   */
  readonly dataBuckets?: readonly DataBucketGrant[];
  /**
   * Container images the hosts pull (a pool's image, the named instances' images). For each one
   * in Amazon ECR the role may pull from its repository (ecr:BatchGetImage,
   * ecr:GetDownloadUrlForLayer, ecr:BatchCheckLayerAvailability on the repository ARN) and get a
   * registry token (ecr:GetAuthorizationToken, which supports no resource); other images need no
   * rights.
   * @default - none
   */
  readonly images?: readonly (string | undefined)[];
  /**
   * Description of the role.
   * @default - none
   */
  readonly description?: string;
  /**
   * Objects the hosts read besides the cluster's (the worker artifact in the CDK assets bucket),
   * as object ARNs.
   * @default - none
   */
  readonly readObjectArns?: readonly string[];
}

/** Actions that AWS does not scope by resource: Session Manager and custom metrics. */
export const UNSCOPED_ACTIONS: readonly string[] = [
  'ssm:UpdateInstanceInformation',
  'ssmmessages:CreateControlChannel',
  'ssmmessages:CreateDataChannel',
  'ssmmessages:OpenControlChannel',
  'ssmmessages:OpenDataChannel',
  'ec2messages:AcknowledgeMessage',
  'ec2messages:DeleteMessage',
  'ec2messages:FailMessage',
  'ec2messages:GetEndpoint',
  'ec2messages:GetMessages',
  'ec2messages:SendReply',
];

/** Objects a host may delete: uploads of attempts, below any job's prefix. */
export const ATTEMPT_OBJECTS = 'jobs/*/attempts/*';

/** Objects a host may delete: the record of a detached run its coordinator ended (issue 23). */
export const DETACHED_OBJECTS = `${DETACHED_PREFIX}*`;

/** The ECR action that supports no resource: the registry token `docker login` takes. */
export const ECR_LOGIN_ACTION = 'ecr:GetAuthorizationToken';

/** What pulling an image from an ECR repository takes, on the repository ARN. */
export const ECR_PULL_ACTIONS: readonly string[] = [
  'ecr:BatchGetImage',
  'ecr:GetDownloadUrlForLayer',
  'ecr:BatchCheckLayerAvailability',
];

/**
 * An EC2 instance role scoped by ARN to the cluster's bucket, queues and log group, with
 * SSM Session Manager (no open ports, no keys on hosts), and pull rights on the ECR repositories
 * of its hosts' images (policy `Images`). Only the EC2 service assumes it: no container is given
 * it (tasks run on docker's bridge network, out of reach of IMDS). The actions AWS cannot scope
 * (and {@link ECR_LOGIN_ACTION} when an image is in ECR) are in a separate `SessionManager`
 * policy so that the cdk-nag wildcard finding can be accepted for it alone.
 */
export class InstanceRole extends Construct {
  /** The role. */
  readonly role: iam.Role;

  constructor(scope: Construct, id: string, props: InstanceRoleProps) {
    super(scope, id);
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: props.description,
    });
    const b = props.bucket;
    const data = new iam.Policy(this, 'ClusterData', {
      statements: [
        new iam.PolicyStatement({
          actions: ['s3:ListBucket', 's3:GetBucketLocation'],
          resources: [b.bucketArn],
        }),
        new iam.PolicyStatement({
          actions: ['s3:GetObject', 's3:PutObject', 's3:AbortMultipartUpload'],
          resources: [b.arnForObjects('*')],
        }),
        // A worker deletes only an attempt's upload whose commit lost the race: never an output
        // or a commit marker (the S3 store's layout: jobs/JOB/attempts/KEY/ATTEMPT); and, as the
        // coordinator of a detached run, that run's record once it ended (detached/JOB.json).
        new iam.PolicyStatement({
          actions: ['s3:DeleteObject'],
          resources: [b.arnForObjects(ATTEMPT_OBJECTS), b.arnForObjects(DETACHED_OBJECTS)],
        }),
        new iam.PolicyStatement({
          actions: [
            'sqs:ReceiveMessage',
            'sqs:DeleteMessage',
            'sqs:ChangeMessageVisibility',
            'sqs:SendMessage',
            'sqs:GetQueueAttributes',
            'sqs:GetQueueUrl',
          ],
          resources: props.queues.map((q) => q.queueArn),
        }),
        new iam.PolicyStatement({
          actions: ['logs:CreateLogStream', 'logs:PutLogEvents', 'logs:DescribeLogStreams'],
          resources: [props.logGroup.logGroupArn],
        }),
        ...(props.readObjectArns?.length
          ? [new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [...props.readObjectArns] })]
          : []),
      ],
    });
    data.attachToRole(this.role);
    const reads = dataBucketStatements(props.dataBuckets ?? []);
    if (reads.length > 0) new iam.Policy(this, 'DataBuckets', { statements: reads }).attachToRole(this.role);
    const repositories = ecrRepositoryArns(props.images ?? []);
    if (repositories.length > 0) {
      new iam.Policy(this, 'Images', {
        statements: [new iam.PolicyStatement({ actions: [...ECR_PULL_ACTIONS], resources: repositories })],
      }).attachToRole(this.role);
    }
    const unscoped = new iam.Policy(this, 'SessionManager', {
      statements: [
        new iam.PolicyStatement({
          actions: [...UNSCOPED_ACTIONS, ...(repositories.length > 0 ? [ECR_LOGIN_ACTION] : [])],
          resources: ['*'],
        }),
      ],
    });
    unscoped.attachToRole(this.role);
  }
}

/** The ARNs of the ECR repositories of these images, sorted, once each (other images have none). */
export function ecrRepositoryArns(images: readonly (string | undefined)[]): string[] {
  const arns = images.flatMap((i) => {
    const ecr = i === undefined ? undefined : ecrImageOf(i);
    return ecr ? [ecr.repositoryArn] : [];
  });
  return [...new Set(arns)].sort();
}

/**
 * Read-only statements for data buckets: per bucket, s3:ListBucket on the bucket ARN (limited
 * with `s3:prefix` to the granted folders unless the whole bucket is granted) and s3:GetObject on
 * `bucket/*` or each `bucket/prefix/*`. Never a `*` resource.
 */
export function dataBucketStatements(grants: readonly DataBucketGrant[]): iam.PolicyStatement[] {
  const byBucket = new Map<string, { arn: string; prefixes: Set<string> | 'all' }>();
  for (const g of grants) {
    const arn = `arn:${g.partition ?? 'aws'}:s3:::${g.bucket}`;
    const cur = byBucket.get(arn) ?? { arn, prefixes: new Set<string>() };
    if (g.prefix === undefined || g.prefix === '') cur.prefixes = 'all';
    else if (cur.prefixes !== 'all') cur.prefixes.add(g.prefix);
    byBucket.set(arn, cur);
  }
  const out: iam.PolicyStatement[] = [];
  for (const { arn, prefixes } of byBucket.values()) {
    const folders = prefixes === 'all' ? undefined : [...prefixes].sort();
    out.push(
      new iam.PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [arn],
        ...(folders ? { conditions: { StringLike: { 's3:prefix': folders.map((p) => `${p}/*`) } } } : {}),
      }),
      new iam.PolicyStatement({
        actions: ['s3:GetObject'],
        resources: folders ? folders.map((p) => `${arn}/${p}/*`) : [`${arn}/*`],
      }),
    );
  }
  return out;
}
