import { Duration, Lazy, Stack } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { machineImageFor } from './machine-image.js';
import type { Network } from './network.js';
import { type ArtifactLocation, type DatabaseEndpoint, workerUserData } from './user-data.js';

/** Spot allocation strategies of a mixed-instances policy. */
export type SpotStrategy = 'price-capacity-optimized' | 'capacity-optimized' | 'lowest-price';

/** Properties of a worker pool. */
export interface WorkerPoolProps {
  /** Cluster name. */
  readonly clusterName: string;
  /** Pool name. */
  readonly poolName: string;
  /** Cluster network. */
  readonly network: Network;
  /** Cluster security group. */
  readonly securityGroup: ec2.ISecurityGroup;
  /**
   * The pool's instance role: the corral worker on the host uses it. With capacity: ecs the pool
   * adds what the ECS agent needs to register the host in the pool's ECS cluster.
   */
  readonly role: iam.IRole;
  /** Job queue whose backlog drives scaling. */
  readonly queue: sqs.IQueue;
  /**
   * The job queue's dead-letter queue (workers record the dead letters they find).
   * @default - none
   */
  readonly deadLetterQueue?: sqs.IQueue;
  /** Cluster bucket name (for the worker configuration). */
  readonly bucketName: string;
  /** Cluster log group. */
  readonly logGroup: logs.ILogGroup;
  /** Instance types in order of preference (one architecture). */
  readonly instanceTypes: readonly string[];
  /** The corral hosts install: the worker artifact, pinned by its sha256. */
  readonly artifact: ArtifactLocation;
  /**
   * How long CloudFormation waits for a host to report ready (cfn-signal) at creation and during
   * a rolling update before it fails the deployment.
   * @default Duration.minutes(15)
   */
  readonly readyTimeout?: Duration;
  /**
   * Use the GPU (NVIDIA) AMI; with an image, each task's container gets all the host's GPUs
   * (`docker run --gpus all`).
   * @default false
   */
  readonly gpu?: boolean;
  /**
   * Minimum instances.
   * @default 0
   */
  readonly minCapacity?: number;
  /**
   * Maximum instances.
   * @default 4
   */
  readonly maxCapacity?: number;
  /**
   * Instances at creation.
   * @default - minCapacity
   */
  readonly desiredCapacity?: number;
  /**
   * On-demand instances before any spot.
   * @default 0
   */
  readonly onDemandBase?: number;
  /**
   * Percent on-demand above the base.
   * @default 0
   */
  readonly onDemandAbovePercent?: number;
  /**
   * Spot allocation strategy.
   * @default 'price-capacity-optimized'
   */
  readonly spotAllocationStrategy?: SpotStrategy;
  /**
   * Where the hosts come from. Either way the corral worker runs on each host under systemd, from
   * the pinned artifact, and the group scales on backlog per instance. `asg`: Amazon Linux 2023
   * (the ECS GPU AMI for a GPU pool). `ecs`: the ECS-optimized AMI, and each host joins an ECS
   * cluster of the pool (Container Insights), where it is listed; no ECS service, task or
   * capacity provider (a capacity provider with nothing placed would scale the group in against
   * the backlog policy). Requires an image.
   * @default 'asg'
   */
  readonly capacity?: 'asg' | 'ecs';
  /**
   * Image each task runs in: the worker on the host runs `docker run IMAGE` per task (CORRAL_IMAGE).
   * The bootstrap pulls it before the host reports ready (ECR images with the instance role, which
   * gets pull rights on the repository). Containers are on docker's bridge network and the
   * launch template's IMDS hop limit is 1, so a task has no AWS credentials: the worker moves its
   * inputs and outputs. Required with capacity: ecs.
   * @default - tasks run on the host
   */
  readonly image?: string;
  /**
   * Target tasks (waiting plus in flight in the pool's queue) per in-service instance.
   * @default 10
   */
  readonly backlogPerInstance?: number;
  /**
   * Idle time in milliseconds after which a worker exits.
   * @default 900000 (15 minutes)
   */
  readonly scaleToZeroAfterMs?: number;
  /**
   * Subnet kind of the instances.
   * @default 'private'
   */
  readonly subnet?: 'public' | 'private';
  /**
   * Root volume size in GiB.
   * @default 30
   */
  readonly volumeSize?: number;
  /**
   * SSH key pair.
   * @default - none
   */
  readonly keyPair?: ec2.IKeyPair;
  /**
   * Topic receiving launch, terminate and error notifications of the group.
   * @default - no notifications
   */
  readonly notificationTopic?: sns.ITopic;
  /**
   * The cluster database, told to the tasks (its endpoint and its secret's ARN; the role must be
   * allowed to read the secret).
   * @default - none
   */
  readonly database?: DatabaseEndpoint;
}

const SPOT_STRATEGIES: Record<SpotStrategy, autoscaling.SpotAllocationStrategy> = {
  'price-capacity-optimized': autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
  'capacity-optimized': autoscaling.SpotAllocationStrategy.CAPACITY_OPTIMIZED,
  'lowest-price': autoscaling.SpotAllocationStrategy.LOWEST_PRICE,
};

/**
 * What a worker asks Auto Scaling about its own host before it protects or terminates it (which
 * group it is in, the group's sizes): these support no resource-level permissions, so `*`.
 */
export const SCALE_IN_DESCRIBE_ACTIONS: readonly string[] = [
  'autoscaling:DescribeAutoScalingInstances',
  'autoscaling:DescribeAutoScalingGroups',
];

/**
 * The work of a pool's queue: messages waiting (m1, visible) plus messages in flight (m3, leased
 * by a worker: prefetched or running). A missing point repeats the last one (`FILL(…, REPEAT)`):
 * a gap in the SQS metrics never reads as "no work".
 */
export const WORK_EXPRESSION = '(FILL(m1, REPEAT) + FILL(m3, REPEAT))';

/**
 * The metric math of the target tracking: work per in-service instance (m2, the group metric
 * GroupInServiceInstances, missing read as 0). With no instance in service it is the work itself,
 * never a division by zero.
 */
export const BACKLOG_EXPRESSION = `IF(FILL(m2, 0) > 0, ${WORK_EXPRESSION} / FILL(m2, 0), ${WORK_EXPRESSION})`;

/**
 * The metric math of the scale-out-from-zero alarm: 1 when there is work and the group's desired
 * capacity (m4, GroupDesiredCapacity; a gap repeats the last point) is 0, else 0. Target tracking
 * computes the new capacity from the current one and so cannot leave zero; this alarm's step
 * policy adds one instance, which ends the alarm, and target tracking takes over from there.
 */
export const FROM_ZERO_EXPRESSION = `IF(FILL(m4, REPEAT) == 0 AND ${WORK_EXPRESSION} > 0, 1, 0)`;

/**
 * An auto-scaled pool of workers: a launch template (IMDSv2 required, encrypted root volume),
 * an Auto Scaling group with a mixed-instances policy (spot + on-demand) and capacity rebalance,
 * and target tracking on backlog per instance. Every host runs the corral worker under systemd
 * ({@link workerUserData}); with an image, the worker runs each task in it with `docker run`.
 * With capacity: ecs the hosts boot the ECS-optimized AMI and join an ECS cluster of the pool
 * (visible there, with Container Insights), and nothing else of ECS is used: no service, task
 * definition or capacity provider.
 */
export class WorkerPool extends Construct {
  /** The Auto Scaling group. */
  readonly autoScalingGroup: autoscaling.AutoScalingGroup;
  /** The launch template. */
  readonly launchTemplate: ec2.LaunchTemplate;
  /** The ECS cluster the hosts join, with capacity: ecs. */
  readonly ecsCluster?: ecs.Cluster;

  constructor(scope: Construct, id: string, props: WorkerPoolProps) {
    super(scope, id);
    const capacity = props.capacity ?? 'asg';
    const gpu = props.gpu ?? false;
    const stack = Stack.of(this);
    if (capacity === 'ecs') {
      if (!props.image) throw new Error(`pool ${props.poolName}: capacity ecs needs an image`);
      this.ecsCluster = new ecs.Cluster(this, 'EcsCluster', {
        vpc: props.network.vpc,
        containerInsightsV2: ecs.ContainerInsights.ENABLED,
      });
      // What the ECS agent needs to register the host and keep it listed (as aws-cdk-lib grants
      // for a cluster's Auto Scaling group): its own cluster, no task rights.
      const clusterArn = this.ecsCluster.clusterArn;
      props.role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ['ecs:DeregisterContainerInstance', 'ecs:RegisterContainerInstance', 'ecs:Submit*'],
          resources: [clusterArn],
        }),
      );
      props.role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ['ecs:Poll', 'ecs:StartTelemetrySession'],
          resources: ['*'],
          conditions: { ArnEquals: { 'ecs:cluster': clusterArn } },
        }),
      );
      props.role.addToPrincipalPolicy(
        new iam.PolicyStatement({ actions: ['ecs:DiscoverPollEndpoint'], resources: ['*'] }),
      );
    }
    const machineImage = machineImageFor({
      instanceTypes: props.instanceTypes,
      gpu,
      ecs: capacity === 'ecs',
    });
    const minCapacity = props.minCapacity ?? 0;
    const desiredCapacity = props.desiredCapacity ?? minCapacity;
    const readyTimeout = props.readyTimeout ?? Duration.minutes(15);
    // The group's logical id, known once the group exists (the launch template comes first).
    const groupLogicalId = Lazy.string({
      produce: () =>
        stack.getLogicalId(this.autoScalingGroup.node.defaultChild as autoscaling.CfnAutoScalingGroup),
    });
    const userData = ec2.UserData.custom(
      workerUserData({
        clusterName: props.clusterName,
        poolName: props.poolName,
        region: stack.region,
        queueUrl: props.queue.queueUrl,
        deadLetterQueueUrl: props.deadLetterQueue?.queueUrl,
        bucketName: props.bucketName,
        logGroupName: props.logGroup.logGroupName,
        idleExitSeconds: Math.round((props.scaleToZeroAfterMs ?? 900_000) / 1000),
        ecsClusterName: this.ecsCluster?.clusterName,
        image: props.image,
        gpus: gpu && props.image ? 'all' : undefined,
        artifact: props.artifact,
        signal: { stackName: stack.stackName, resource: groupLogicalId },
        database: props.database,
      }),
    );
    this.launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      machineImage,
      userData,
      role: props.role,
      securityGroup: props.securityGroup,
      keyPair: props.keyPair,
      requireImdsv2: true,
      // With an image, tasks run in containers on docker's bridge network, one hop further than
      // the host: a hop limit of 1 keeps IMDSv2 (and the instance role) from them; the worker and
      // the ECS agent run on the host's network.
      httpPutResponseHopLimit: props.image ? 1 : 2,
      // A public subnet maps no public address on launch (network.ts): a public pool's hosts get
      // theirs here, or they could reach nothing outside the VPC endpoints.
      associatePublicIpAddress: props.subnet === 'public' ? true : undefined,
      detailedMonitoring: true,
      // a backstop: a host that powers itself off is terminated (the group then starts no
      // replacement for a stopped instance); idle workers leave through the group (worker.ts)
      instanceInitiatedShutdownBehavior: ec2.InstanceInitiatedShutdownBehavior.TERMINATE,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(props.volumeSize ?? 30, {
            encrypted: true,
            volumeType: ec2.EbsDeviceVolumeType.GP3,
          }),
        },
      ],
    });
    this.autoScalingGroup = new autoscaling.AutoScalingGroup(this, 'Group', {
      vpc: props.network.vpc,
      vpcSubnets: props.network.subnets(props.subnet ?? 'private'),
      mixedInstancesPolicy: {
        launchTemplate: this.launchTemplate,
        launchTemplateOverrides: props.instanceTypes.map((t) => ({ instanceType: new ec2.InstanceType(t) })),
        instancesDistribution: {
          onDemandBaseCapacity: props.onDemandBase ?? 0,
          onDemandPercentageAboveBaseCapacity: props.onDemandAbovePercent ?? 0,
          onDemandAllocationStrategy: autoscaling.OnDemandAllocationStrategy.PRIORITIZED,
          spotAllocationStrategy: SPOT_STRATEGIES[props.spotAllocationStrategy ?? 'price-capacity-optimized'],
        },
      },
      minCapacity,
      maxCapacity: props.maxCapacity ?? 4,
      desiredCapacity,
      capacityRebalance: true,
      // Hosts signal once `corral worker --check` passed: a deployment whose hosts cannot start
      // fails (and rolls back) instead of leaving a pool of machines that run nothing; a new
      // artifact (a newer corral) rolls the running hosts, one batch at a time.
      signals:
        desiredCapacity > 0
          ? autoscaling.Signals.waitForCount(desiredCapacity, { timeout: readyTimeout })
          : undefined,
      updatePolicy: autoscaling.UpdatePolicy.rollingUpdate({
        maxBatchSize: Math.max(1, Math.ceil((props.maxCapacity ?? 4) / 4)),
        minInstancesInService: 0,
        waitOnResourceSignals: true,
        pauseTime: readyTimeout,
        minSuccessPercentage: 100,
      }),
      groupMetrics: [autoscaling.GroupMetrics.all()],
      healthChecks: autoscaling.HealthChecks.ec2({ gracePeriod: Duration.minutes(5) }),
      notifications: props.notificationTopic ? [{ topic: props.notificationTopic }] : undefined,
    });

    // The worker protects its host from scale-in while busy and, idle, terminates it through the
    // group (cluster-main.ts, scale-in.ts): those two actions on this group only; the two
    // describes (which group a host is in, its sizes) support no resource-level permissions.
    // A policy of its own: the role's default policy must exist before the launch template (and
    // so before the group), and this one names the group.
    new iam.Policy(this, 'ScaleIn', {
      roles: [props.role],
      statements: [
        new iam.PolicyStatement({
          actions: ['autoscaling:SetInstanceProtection', 'autoscaling:TerminateInstanceInAutoScalingGroup'],
          resources: [this.autoScalingGroup.autoScalingGroupArn],
        }),
        new iam.PolicyStatement({
          actions: [...SCALE_IN_DESCRIBE_ACTIONS],
          resources: ['*'],
        }),
      ],
    });
    // Every pool, capacity: ecs too, scales on the work of its own queue per instance.
    const groupName = this.autoScalingGroup.autoScalingGroupName;
    const work = [
      queueMetric('m1', 'ApproximateNumberOfMessagesVisible', props.queue),
      queueMetric('m3', 'ApproximateNumberOfMessagesNotVisible', props.queue),
    ];
    new autoscaling.CfnScalingPolicy(this, 'BacklogPerInstance', {
      autoScalingGroupName: groupName,
      policyType: 'TargetTrackingScaling',
      targetTrackingConfiguration: {
        targetValue: props.backlogPerInstance ?? 10,
        customizedMetricSpecification: {
          metrics: [
            ...work,
            groupMetric('m2', 'GroupInServiceInstances', groupName),
            { id: 'e1', expression: BACKLOG_EXPRESSION, label: 'BacklogPerInstance', returnData: true },
          ],
        },
      },
    });
    // Scale-out from zero: work and no instance adds one; target tracking goes on from there.
    const fromZero = new autoscaling.CfnScalingPolicy(this, 'ScaleOutFromZero', {
      autoScalingGroupName: groupName,
      policyType: 'StepScaling',
      adjustmentType: 'ChangeInCapacity',
      metricAggregationType: 'Maximum',
      stepAdjustments: [{ metricIntervalLowerBound: 0, scalingAdjustment: 1 }],
    });
    new cloudwatch.CfnAlarm(this, 'WorkWithNoInstance', {
      alarmDescription: `corral ${props.clusterName}: pool ${props.poolName} has work and a desired capacity of 0`,
      comparisonOperator: 'GreaterThanOrEqualToThreshold',
      threshold: 1,
      evaluationPeriods: 1,
      datapointsToAlarm: 1,
      treatMissingData: 'notBreaching',
      alarmActions: [fromZero.ref],
      metrics: [
        ...[...work, groupMetric('m4', 'GroupDesiredCapacity', groupName)].map(
          ({ id, metricStat }): cloudwatch.CfnAlarm.MetricDataQueryProperty => ({
            id,
            returnData: false,
            metricStat: { ...metricStat, period: 60 },
          }),
        ),
        { id: 'e1', expression: FROM_ZERO_EXPRESSION, label: 'WorkWithNoInstance', returnData: true },
      ],
    });
  }
}

function groupMetric(id: string, metricName: string, groupName: string) {
  return {
    id,
    returnData: false,
    metricStat: {
      stat: 'Average',
      metric: {
        namespace: 'AWS/AutoScaling',
        metricName,
        dimensions: [{ name: 'AutoScalingGroupName', value: groupName }],
      },
    },
  };
}

function queueMetric(id: string, metricName: string, queue: sqs.IQueue) {
  return {
    id,
    returnData: false,
    metricStat: {
      stat: 'Sum',
      metric: {
        namespace: 'AWS/SQS',
        metricName,
        dimensions: [{ name: 'QueueName', value: queue.queueName }],
      },
    },
  };
}
