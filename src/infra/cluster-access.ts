import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { Construct } from 'constructs';

/** Properties of the cluster security group and key pair. */
export interface ClusterAccessProps {
  /** VPC of the cluster. */
  readonly vpc: ec2.IVpc;
  /**
   * The only block that may reach port 22; never 0.0.0.0/0.
   * @default - no SSH rule (use SSM Session Manager)
   */
  readonly adminCidr?: string;
  /**
   * Name of an existing EC2 key pair.
   * @default - none
   */
  readonly keyPairName?: string;
  /**
   * OpenSSH public key text imported as a new key pair (exclusive with keyPairName).
   * @default - none
   */
  readonly publicKeyMaterial?: string;
  /**
   * Name of the imported key pair.
   * @default - generated
   */
  readonly importedKeyPairName?: string;
}

/** Refuses a block that opens a port to the whole internet. */
export function assertNotOpenToInternet(cidr: string, what: string): void {
  if (cidr.trim() === '0.0.0.0/0' || cidr.trim() === '::/0') {
    throw new Error(`${what}: ${cidr} would open the cluster to the whole internet`);
  }
}

/**
 * The cluster security group: SSH only from `adminCidr`, HTTP and HTTPS only between members,
 * nothing else inbound; all outbound allowed (replies, S3, SQS). Plus the SSH key pair.
 */
export class ClusterAccess extends Construct {
  /** Security group shared by every instance, pool and interface endpoint of the cluster. */
  readonly securityGroup: ec2.SecurityGroup;
  /** SSH key pair, when one is configured. */
  readonly keyPair?: ec2.IKeyPair;

  constructor(scope: Construct, id: string, props: ClusterAccessProps) {
    super(scope, id);
    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'corral cluster members: SSH from admin only, HTTP/HTTPS between members',
      allowAllOutbound: true,
    });
    if (props.adminCidr) {
      assertNotOpenToInternet(props.adminCidr, 'adminCidr');
      this.securityGroup.addIngressRule(
        ec2.Peer.ipv4(props.adminCidr),
        ec2.Port.tcp(22),
        'SSH from the admin block',
      );
    }
    this.securityGroup.addIngressRule(this.securityGroup, ec2.Port.tcp(80), 'HTTP between cluster members');
    this.securityGroup.addIngressRule(this.securityGroup, ec2.Port.tcp(443), 'HTTPS between cluster members');
    if (props.keyPairName && props.publicKeyMaterial) {
      throw new Error('ClusterAccess: keyPairName and publicKeyMaterial are exclusive');
    }
    if (props.keyPairName) {
      this.keyPair = ec2.KeyPair.fromKeyPairName(this, 'KeyPair', props.keyPairName);
    } else if (props.publicKeyMaterial) {
      this.keyPair = new ec2.KeyPair(this, 'KeyPair', {
        publicKeyMaterial: props.publicKeyMaterial.trim(),
        keyPairName: props.importedKeyPairName,
      });
    }
  }

  /** Allows TCP ports from a peer block (e.g. a peered VPC), refusing the whole internet. */
  allowFromCidr(cidr: string, ports: readonly number[], description: string): void {
    assertNotOpenToInternet(cidr, description);
    for (const port of ports) {
      this.securityGroup.addIngressRule(
        ec2.Peer.ipv4(cidr),
        ec2.Port.tcp(port),
        `${description} port ${port}`,
      );
    }
  }
}
