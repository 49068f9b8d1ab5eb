import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as rds from 'aws-cdk-lib/aws-rds';
import { Construct } from 'constructs';
import type { Network } from './network.js';

/** Properties of the cluster database. */
export interface DatabaseProps {
  /** Cluster network; the database goes in the private subnets. */
  readonly network: Network;
  /** The only security group allowed to connect (the cluster's). */
  readonly clientSecurityGroup: ec2.ISecurityGroup;
  /**
   * PostgreSQL major version.
   * @default '16'
   */
  readonly engineVersion?: '14' | '15' | '16' | '17';
  /**
   * Instance class without the `db.` prefix.
   * @default 't4g.micro'
   */
  readonly instanceClass?: string;
  /**
   * Storage in GiB.
   * @default 20
   */
  readonly allocatedStorage?: number;
  /**
   * Standby in a second AZ.
   * @default false
   */
  readonly multiAz?: boolean;
  /**
   * TCP port.
   * @default 5432
   */
  readonly port?: number;
  /**
   * Days of automated backups.
   * @default 7
   */
  readonly backupRetentionDays?: number;
  /**
   * What happens to the database when the stack is deleted.
   * @default 'destroy'
   */
  readonly removalPolicy?: 'destroy' | 'snapshot' | 'retain';
  /**
   * Refuse deletion.
   * @default false
   */
  readonly deletionProtection?: boolean;
  /**
   * Database created at launch.
   * @default 'corral'
   */
  readonly databaseName?: string;
}

const VERSIONS = {
  '14': rds.PostgresEngineVersion.VER_14,
  '15': rds.PostgresEngineVersion.VER_15,
  '16': rds.PostgresEngineVersion.VER_16,
  '17': rds.PostgresEngineVersion.VER_17,
} as const;

const REMOVAL = {
  destroy: RemovalPolicy.DESTROY,
  snapshot: RemovalPolicy.SNAPSHOT,
  retain: RemovalPolicy.RETAIN,
} as const;

/**
 * RDS PostgreSQL in the private subnets: encrypted, not public, password generated into
 * Secrets Manager, reachable only from the cluster security group.
 */
export class Database extends Construct {
  /** The database instance. */
  readonly instance: rds.DatabaseInstance;
  /** The database's own security group. */
  readonly securityGroup: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, props: DatabaseProps) {
    super(scope, id);
    const port = props.port ?? 5432;
    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.network.vpc,
      description: 'corral database: PostgreSQL from cluster members only',
      allowAllOutbound: false,
    });
    this.securityGroup.addIngressRule(
      props.clientSecurityGroup,
      ec2.Port.tcp(port),
      'PostgreSQL from cluster members',
    );
    this.instance = new rds.DatabaseInstance(this, 'Instance', {
      engine: rds.DatabaseInstanceEngine.postgres({ version: VERSIONS[props.engineVersion ?? '16'] }),
      instanceType: new ec2.InstanceType(props.instanceClass ?? 't4g.micro'),
      vpc: props.network.vpc,
      vpcSubnets: props.network.subnets('private'),
      securityGroups: [this.securityGroup],
      credentials: rds.Credentials.fromGeneratedSecret('corral'),
      databaseName: props.databaseName ?? 'corral',
      port,
      allocatedStorage: props.allocatedStorage ?? 20,
      storageType: rds.StorageType.GP3,
      storageEncrypted: true,
      multiAz: props.multiAz ?? false,
      publiclyAccessible: false,
      backupRetention: Duration.days(props.backupRetentionDays ?? 7),
      deletionProtection: props.deletionProtection ?? false,
      removalPolicy: REMOVAL[props.removalPolicy ?? 'destroy'],
      cloudwatchLogsExports: ['postgresql'],
      iamAuthentication: true,
    });
  }
}
