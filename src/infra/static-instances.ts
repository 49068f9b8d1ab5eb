import { Duration, Lazy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { machineImageFor } from './machine-image.js';
import type { Network } from './network.js';
import { type ArtifactLocation, instanceUserData } from './user-data.js';

/** One named instance. */
export interface StaticInstanceSpec {
  /** Name, unique in the cluster. */
  readonly name: string;
  /** EC2 instance type. */
  readonly type: string;
  /** Availability zone. */
  readonly az: string;
  /** Subnet kind. */
  readonly subnet: 'public' | 'private';
  /**
   * Associate an Elastic IP.
   * @default false
   */
  readonly elasticIp?: boolean;
  /**
   * Role in the cluster.
   * @default 'custom'
   */
  readonly role?: 'coordinator' | 'custom';
  /**
   * Startup script text.
   * @default - none
   */
  readonly script?: string;
  /**
   * Container image started at boot.
   * @default - none
   */
  readonly image?: string;
  /**
   * AMI id.
   * @default - latest Amazon Linux 2023
   */
  readonly ami?: string;
  /**
   * Root volume size in GiB.
   * @default 20
   */
  readonly volumeSize?: number;
}

/** Properties of the named instances. */
export interface StaticInstancesProps {
  /** Cluster name. */
  readonly clusterName: string;
  /** Cluster network. */
  readonly network: Network;
  /** Cluster security group. */
  readonly securityGroup: ec2.ISecurityGroup;
  /** Role shared by the named instances. */
  readonly role: iam.IRole;
  /** The instances. */
  readonly instances: readonly StaticInstanceSpec[];
  /**
   * SSH key pair.
   * @default - none
   */
  readonly keyPair?: ec2.IKeyPair;
  /**
   * Environment written to /etc/corral/coordinator.env on the coordinator.
   * @default {}
   */
  readonly coordinatorEnv?: Readonly<Record<string, string>>;
  /**
   * The cluster's stack outputs, written on the coordinator for `corral run --cluster`.
   * @default {}
   */
  readonly coordinatorOutputs?: Readonly<Record<string, string>>;
  /**
   * The queue of each pool, written on the coordinator beside its outputs.
   * @default - none (one queue)
   */
  readonly coordinatorPoolQueues?: ReadonlyArray<{
    readonly pool: string;
    readonly queueUrl: string;
    readonly deadLetterQueueUrl: string;
  }>;
  /**
   * The corral the coordinator installs (required when an instance has role coordinator).
   * @default - none
   */
  readonly artifact?: ArtifactLocation;
  /**
   * How long CloudFormation waits for the coordinator to report ready (cfn-signal).
   * @default Duration.minutes(15)
   */
  readonly readyTimeout?: Duration;
}

/** Named, long-lived EC2 instances, each with its startup script and optionally an Elastic IP. */
export class StaticInstances extends Construct {
  /** Instances by name. */
  readonly instances = new Map<string, ec2.Instance>();
  /** Elastic IPs by instance name. */
  readonly elasticIps = new Map<string, ec2.CfnEIP>();
  /** Image id each instance runs, by name (resolved from the public parameter at deploy time when no `ami`). */
  readonly imageIds = new Map<string, string>();

  constructor(scope: Construct, id: string, props: StaticInstancesProps) {
    super(scope, id);
    for (const spec of props.instances) {
      const machineImage = spec.ami
        ? ec2.MachineImage.genericLinux({ [props.network.vpc.stack.region]: spec.ami })
        : machineImageFor({ instanceTypes: [spec.type] });
      this.imageIds.set(spec.name, machineImage.getImage(this).imageId);
      const coordinator = (spec.role ?? 'custom') === 'coordinator';
      let instance: ec2.Instance | undefined;
      const logicalId = Lazy.string({
        produce: () => Stack.of(this).getLogicalId(instance!.instance),
      });
      const userData = ec2.UserData.custom(
        instanceUserData({
          name: spec.name,
          clusterName: props.clusterName,
          role: spec.role ?? 'custom',
          env: props.coordinatorEnv,
          script: spec.script,
          image: spec.image,
          artifact: coordinator ? props.artifact : undefined,
          outputs: coordinator ? props.coordinatorOutputs : undefined,
          poolQueues: coordinator ? props.coordinatorPoolQueues : undefined,
          signal: coordinator ? { stackName: Stack.of(this).stackName, resource: logicalId } : undefined,
        }),
      );
      instance = new ec2.Instance(this, spec.name, {
        vpc: props.network.vpc,
        vpcSubnets: props.network.subnets(spec.subnet, spec.az),
        availabilityZone: spec.az,
        instanceType: new ec2.InstanceType(spec.type),
        machineImage,
        securityGroup: props.securityGroup,
        role: props.role,
        userData,
        keyPair: props.keyPair,
        requireImdsv2: true,
        detailedMonitoring: true,
        associatePublicIpAddress: spec.subnet === 'public' && !spec.elasticIp ? true : undefined,
        blockDevices: [
          {
            deviceName: '/dev/xvda',
            volume: ec2.BlockDeviceVolume.ebs(spec.volumeSize ?? 20, {
              encrypted: true,
              volumeType: ec2.EbsDeviceVolumeType.GP3,
            }),
          },
        ],
      });
      if (coordinator) {
        // The coordinator reports ready once corral is installed and reaches the cluster.
        instance.instance.cfnOptions.creationPolicy = {
          resourceSignal: {
            count: 1,
            timeout: `PT${(props.readyTimeout ?? Duration.minutes(15)).toMinutes()}M`,
          },
        };
      }
      this.instances.set(spec.name, instance);
      if (spec.elasticIp) {
        // An address of the VPC domain needs the internet gateway attached first.
        const eip = new ec2.CfnEIP(this, `${spec.name}-Eip`, { domain: 'vpc' });
        eip.node.addDependency(props.network.internetAttached);
        const association = new ec2.CfnEIPAssociation(this, `${spec.name}-EipAssociation`, {
          allocationId: eip.attrAllocationId,
          instanceId: instance.instanceId,
        });
        association.node.addDependency(props.network.internetAttached);
        this.elasticIps.set(spec.name, eip);
      }
    }
  }
}
