import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { Construct, DependencyGroup } from 'constructs';

/** Properties of the cluster network. */
export interface NetworkProps {
  /** IPv4 block of the VPC. */
  readonly cidr: string;
  /** Availability zones, by name; one public and one private subnet each. */
  readonly azs: readonly string[];
  /** Public subnet blocks, one per AZ in the order of `azs`. */
  readonly publicSubnets: readonly string[];
  /** Private subnet blocks, one per AZ in the order of `azs`. */
  readonly privateSubnets: readonly string[];
  /**
   * NAT gateways; with 0 the private subnets are isolated and reach S3 through a gateway endpoint.
   * @default 0
   */
  readonly natGateways?: number;
  /**
   * Log group receiving the flow logs of rejected traffic.
   * @default - no flow logs
   */
  readonly flowLogGroup?: logs.ILogGroup;
}

const PUBLIC = 'public';
const PRIVATE = 'private';

/**
 * Hands the VPC the subnet blocks written (or derived) in the spec, instead of letting the
 * CDK split the VPC block itself: the CDK asks for subnets group by group, AZ by AZ.
 */
class ExplicitSubnets implements ec2.IIpAddresses {
  constructor(
    private readonly cidr: string,
    private readonly azs: readonly string[],
    private readonly blocks: Readonly<Record<string, readonly string[]>>,
  ) {}

  allocateVpcCidr(): ec2.VpcIpamOptions {
    return { cidrBlock: this.cidr };
  }

  allocateSubnetsCidr(input: ec2.AllocateCidrRequest): ec2.SubnetIpamOptions {
    return {
      allocatedSubnets: input.requestedSubnets.map((s) => {
        const i = this.azs.indexOf(s.availabilityZone);
        const cidr = this.blocks[s.configuration.name]?.[i];
        if (cidr === undefined)
          throw new Error(`no block for subnet ${s.configuration.name} in ${s.availabilityZone}`);
        return { cidr };
      }),
    };
  }
}

/**
 * The cluster VPC: one public and one private subnet per AZ, an S3 gateway endpoint, optional
 * NAT gateways, flow logs, and interface endpoints added once the cluster security group exists.
 */
export class Network extends Construct {
  /** The VPC. */
  readonly vpc: ec2.Vpc;
  /** Subnet type of the private subnets: isolated without NAT, with egress with NAT. */
  readonly privateSubnetType: ec2.SubnetType;
  /** IPv4 block of the VPC, as written in the spec. */
  readonly cidr: string;
  /**
   * The internet gateway, attached: what an Elastic IP waits for (the VPC's own
   * `internetConnectivityEstablished` holds the gateway but not its attachment).
   */
  readonly internetAttached = new DependencyGroup();

  constructor(scope: Construct, id: string, props: NetworkProps) {
    super(scope, id);
    const natGateways = props.natGateways ?? 0;
    this.cidr = props.cidr;
    this.privateSubnetType =
      natGateways > 0 ? ec2.SubnetType.PRIVATE_WITH_EGRESS : ec2.SubnetType.PRIVATE_ISOLATED;
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      ipAddresses: new ExplicitSubnets(props.cidr, props.azs, {
        [PUBLIC]: props.publicSubnets,
        [PRIVATE]: props.privateSubnets,
      }),
      availabilityZones: [...props.azs],
      natGateways,
      restrictDefaultSecurityGroup: false,
      subnetConfiguration: [
        { name: PUBLIC, subnetType: ec2.SubnetType.PUBLIC, mapPublicIpOnLaunch: false },
        { name: PRIVATE, subnetType: this.privateSubnetType },
      ],
      gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
    });
    this.internetAttached.add(this.vpc.internetConnectivityEstablished);
    const attachment = this.vpc.node.tryFindChild('VPCGW');
    if (attachment) this.internetAttached.add(attachment);
    if (props.flowLogGroup) {
      this.vpc.addFlowLog('FlowLog', {
        destination: ec2.FlowLogDestination.toCloudWatchLogs(props.flowLogGroup),
        trafficType: ec2.FlowLogTrafficType.REJECT,
      });
    }
  }

  /**
   * Adds interface endpoints (e.g. `sqs`, `logs`, `ssm`) in the private subnet of every AZ (or of
   * the first only), reachable on 443 by members of `securityGroup` (the endpoints join that group).
   */
  addInterfaceEndpoints(
    names: readonly string[],
    securityGroup: ec2.ISecurityGroup,
    azs: 'all' | 'first' = 'all',
  ): void {
    for (const name of names) {
      this.vpc.addInterfaceEndpoint(`Endpoint-${name}`, {
        service: new ec2.InterfaceVpcEndpointAwsService(name),
        privateDnsEnabled: true,
        securityGroups: [securityGroup],
        open: false,
        subnets: {
          subnetType: this.privateSubnetType,
          availabilityZones: azs === 'all' ? this.vpc.availabilityZones : [this.vpc.availabilityZones[0]!],
        },
      });
    }
  }

  /** Subnet selection of one kind, optionally in one AZ. */
  subnets(kind: 'public' | 'private', az?: string): ec2.SubnetSelection {
    return {
      subnetType: kind === 'public' ? ec2.SubnetType.PUBLIC : this.privateSubnetType,
      ...(az ? { availabilityZones: [az] } : {}),
    };
  }

  /** Route table ids of every subnet, public and private. */
  get routeTableIds(): string[] {
    const subnets = [...this.vpc.publicSubnets, ...this.vpc.privateSubnets, ...this.vpc.isolatedSubnets];
    return subnets.map((s) => s.routeTable.routeTableId);
  }
}
