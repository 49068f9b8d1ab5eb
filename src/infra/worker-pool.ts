import { Duration, Lazy, Stack } from 'aws-cdk-lib';
import * as applicationautoscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import type * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { machineImageFor } from './machine-image.js';
import type { Network } from './network.js';
import { type ArtifactLocation, workerUserData } from './user-data.js';

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
  /** The pool's instance role (also its ECS task role with capacity: ecs). */
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
   * Use the GPU (NVIDIA) AMI.
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
   * Placement of work: asg (corral worker on the host) or ecs (ECS cluster + capacity provider).
   * @default 'asg'
   */
  readonly capacity?: 'asg' | 'ecs';
  /**
   * Worker container image (required with capacity: ecs).
   * @default - none
   */
  readonly image?: string;
  /**
   * Target visible messages per in-service instance (or task).
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
}

const SPOT_STRATEGIES: Record<SpotStrategy, autoscaling.SpotAllocationStrategy> = {
  'price-capacity-optimized': autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
  'capacity-optimized': autoscaling.SpotAllocationStrategy.CAPACITY_OPTIMIZED,
  'lowest-price': autoscaling.SpotAllocationStrategy.LOWEST_PRICE,
};

/** The metric math of backlog per instance: visible messages divided by in-service capacity (≥ 1). */
export const BACKLOG_EXPRESSION = 'IF(m2 > 0, m1 / m2, m1)';

/**
 * An auto-scaled pool of workers: a launch template (IMDSv2 required, encrypted root volume),
 * an Auto Scaling group with a mixed-instances policy (spot + on-demand) and capacity rebalance,
 * and target tracking on backlog per instance. With capacity: ecs, an ECS cluster, a capacity
 * provider and a service running `image`, scaled on backlog per task.
 */
export class WorkerPool extends Construct {
  /** The Auto Scaling group. */
  readonly autoScalingGroup: autoscaling.AutoScalingGroup;
  /** The launch template. */
  readonly launchTemplate: ec2.LaunchTemplate;
  /** The ECS cluster, with capacity: ecs. */
  readonly ecsCluster?: ecs.Cluster;
  /** The ECS service, with capacity: ecs. */
  readonly ecsService?: ecs.Ec2Service;

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
        artifact: props.artifact,
        signal: { stackName: stack.stackName, resource: groupLogicalId },
      }),
    );
    this.launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      machineImage,
      userData,
      role: props.role,
      securityGroup: props.securityGroup,
      keyPair: props.keyPair,
      requireImdsv2: true,
      httpPutResponseHopLimit: 2,
      detailedMonitoring: true,
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

    if (this.ecsCluster) {
      const provider = new ecs.AsgCapacityProvider(this, 'CapacityProvider', {
        autoScalingGroup: this.autoScalingGroup,
        enableManagedScaling: true,
        enableManagedTerminationProtection: false,
        enableManagedDraining: true,
      });
      this.ecsCluster.addAsgCapacityProvider(provider);
      const task = new ecs.Ec2TaskDefinition(this, 'Task', {
        taskRole: props.role,
        networkMode: ecs.NetworkMode.HOST,
      });
      task.addContainer('worker', {
        image: ecs.ContainerImage.fromRegistry(props.image!),
        memoryReservationMiB: 512,
        gpuCount: gpu ? 1 : undefined,
        logging: ecs.LogDrivers.awsLogs({ streamPrefix: props.poolName, logGroup: props.logGroup }),
        environment: {
          CORRAL_CLUSTER: props.clusterName,
          CORRAL_POOL: props.poolName,
          CORRAL_QUEUE_URL: props.queue.queueUrl,
          CORRAL_BUCKET: props.bucketName,
          CORRAL_LOG_GROUP: props.logGroup.logGroupName,
        },
      });
      const service = new ecs.Ec2Service(this, 'Service', {
        cluster: this.ecsCluster,
        taskDefinition: task,
        desiredCount: props.desiredCapacity ?? minCapacity,
        capacityProviderStrategies: [{ capacityProvider: provider.capacityProviderName, weight: 1 }],
        minHealthyPercent: 0,
        maxHealthyPercent: 100,
        circuitBreaker: { enable: true },
      });
      this.ecsService = service;
      const target = service.autoScaleTaskCount({ minCapacity, maxCapacity: props.maxCapacity ?? 4 });
      const scalable = target.node.findChild('Target') as applicationautoscaling.ScalableTarget;
      new applicationautoscaling.CfnScalingPolicy(this, 'BacklogPerTask', {
        policyName: `${props.clusterName}-${props.poolName}-backlog`,
        policyType: 'TargetTrackingScaling',
        scalingTargetId: scalable.scalableTargetId,
        targetTrackingScalingPolicyConfiguration: {
          targetValue: props.backlogPerInstance ?? 10,
          customizedMetricSpecification: {
            metrics: [
              queueMetric(props.queue),
              {
                id: 'm2',
                returnData: false,
                metricStat: {
                  stat: 'Average',
                  metric: {
                    namespace: 'ECS/ContainerInsights',
                    metricName: 'RunningTaskCount',
                    dimensions: [
                      { name: 'ClusterName', value: this.ecsCluster.clusterName },
                      { name: 'ServiceName', value: service.serviceName },
                    ],
                  },
                },
              },
              { id: 'e1', expression: BACKLOG_EXPRESSION, label: 'BacklogPerTask', returnData: true },
            ],
          },
        },
      });
    } else {
      new autoscaling.CfnScalingPolicy(this, 'BacklogPerInstance', {
        autoScalingGroupName: this.autoScalingGroup.autoScalingGroupName,
        policyType: 'TargetTrackingScaling',
        targetTrackingConfiguration: {
          targetValue: props.backlogPerInstance ?? 10,
          customizedMetricSpecification: {
            metrics: [
              queueMetric(props.queue),
              {
                id: 'm2',
                returnData: false,
                metricStat: {
                  stat: 'Average',
                  metric: {
                    namespace: 'AWS/AutoScaling',
                    metricName: 'GroupInServiceInstances',
                    dimensions: [
                      { name: 'AutoScalingGroupName', value: this.autoScalingGroup.autoScalingGroupName },
                    ],
                  },
                },
              },
              { id: 'e1', expression: BACKLOG_EXPRESSION, label: 'BacklogPerInstance', returnData: true },
            ],
          },
        },
      });
    }
  }
}

function queueMetric(queue: sqs.IQueue) {
  return {
    id: 'm1',
    returnData: false,
    metricStat: {
      stat: 'Sum',
      metric: {
        namespace: 'AWS/SQS',
        metricName: 'ApproximateNumberOfMessagesVisible',
        dimensions: [{ name: 'QueueName', value: queue.queueName }],
      },
    },
  };
}
