import { Annotations, CfnOutput } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { Construct } from 'constructs';
import type { ClusterAccess } from './cluster-access.js';
import type { Network } from './network.js';

/** Properties of one VPC peering. */
export interface PeeringProps {
  /** Cluster network. */
  readonly network: Network;
  /** Cluster access; the peer block is allowed in on `ports`. */
  readonly access: ClusterAccess;
  /** Id of the peer VPC. */
  readonly peerVpcId: string;
  /** IPv4 block of the peer VPC. */
  readonly peerCidr: string;
  /**
   * Region of the peer VPC.
   * @default - the stack region
   */
  readonly peerRegion?: string;
  /**
   * Account owning the peer VPC.
   * @default - the stack account
   */
  readonly peerAccountId?: string;
  /**
   * Role in the peer account that accepts the connection.
   * @default - none
   */
  readonly peerRoleArn?: string;
  /**
   * Peer route tables that get a route back to the cluster (only if owned: same account and region).
   * @default []
   */
  readonly peerRouteTableIds?: readonly string[];
  /**
   * TCP ports the peer may reach on cluster members.
   * @default [80, 443]
   */
  readonly ports?: readonly number[];
}

/**
 * A VPC peering connection with routes both ways (the peer's side only where its route tables
 * are in this account and region) and security group rules for the peer block.
 */
export class Peering extends Construct {
  /** The peering connection. */
  readonly connection: ec2.CfnVPCPeeringConnection;
  /** True when routes were added to the peer's route tables. */
  readonly routesBack: boolean;

  constructor(scope: Construct, id: string, props: PeeringProps) {
    super(scope, id);
    const vpc = props.network.vpc;
    const here = vpc.stack;
    this.connection = new ec2.CfnVPCPeeringConnection(this, 'Connection', {
      vpcId: vpc.vpcId,
      peerVpcId: props.peerVpcId,
      peerRegion: props.peerRegion,
      peerOwnerId: props.peerAccountId,
      peerRoleArn: props.peerRoleArn,
    });
    props.network.routeTableIds.forEach((routeTableId, i) => {
      new ec2.CfnRoute(this, `ToPeer${i}`, {
        routeTableId,
        destinationCidrBlock: props.peerCidr,
        vpcPeeringConnectionId: this.connection.ref,
      });
    });
    const sameRegion = !props.peerRegion || props.peerRegion === here.region;
    const sameAccount = !props.peerAccountId || props.peerAccountId === here.account;
    this.routesBack = sameRegion && sameAccount;
    if (this.routesBack) {
      (props.peerRouteTableIds ?? []).forEach((routeTableId, i) => {
        new ec2.CfnRoute(this, `FromPeer${i}`, {
          routeTableId,
          destinationCidrBlock: props.network.cidr,
          vpcPeeringConnectionId: this.connection.ref,
        });
      });
    }
    if (!this.routesBack && (props.peerRouteTableIds ?? []).length > 0) {
      throw new Error(
        `Peering ${id}: peerRouteTableIds are in another region or account, where this stack cannot add routes`,
      );
    }
    if ((props.peerRouteTableIds ?? []).length === 0) {
      Annotations.of(this).addWarningV2(
        'corral:peering-one-way',
        `peer ${props.peerVpcId}: no route back is created; traffic flows once the peer VPC's route tables send ${props.network.cidr} to the peering connection (output ${id}Connection)`,
      );
    }
    new CfnOutput(here, `${id}Connection`, {
      value: this.connection.ref,
      description: `VPC peering connection to ${props.peerVpcId}`,
    });
    props.access.allowFromCidr(props.peerCidr, props.ports ?? [80, 443], `from peer ${props.peerVpcId}`);
  }
}
