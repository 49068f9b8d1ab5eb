import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { type PlanReport, planFromSynth, synthCluster } from '../src/infra/plan.js';
import {
  EC2_ON_DEMAND,
  estimateCost,
  HOURS_PER_MONTH,
  onDemandCount,
  RDS_ON_DEMAND,
  SPOT_FRACTION,
  UNIT_PRICES,
} from '../src/infra/prices.js';
import { instanceUserData, workerUserData } from '../src/infra/user-data.js';
import { BACKLOG_EXPRESSION } from '../src/infra/worker-pool.js';
import { type ClusterSpec, defineCluster } from '../src/spec/cluster.js';

// GIVEN one cluster using every construct, synthesized once and shared by the assertions.
const spec: ClusterSpec = defineCluster({
  name: 'full',
  region: 'us-east-1',
  network: { cidr: '10.40.0.0/16', azs: ['us-east-1a', 'us-east-1b'] },
  access: { adminCidr: '203.0.113.7/32' },
  instances: [{ name: 'coord', role: 'coordinator', subnet: 'public', elasticIp: true, image: 'nginx:1.27' }],
  pools: [
    {
      name: 'cpu',
      instanceTypes: ['c6i.large', 'c5.large'],
      max: 10,
      desired: 3,
      spot: { onDemandBase: 1, onDemandAbovePercent: 50 },
    },
    { name: 'gpu', instanceTypes: ['g5.xlarge'], max: 2 },
    {
      name: 'ecs',
      instanceTypes: ['g4dn.xlarge'],
      capacity: 'ecs',
      image: '123456789012.dkr.ecr.us-east-1.amazonaws.com/worker:1',
      max: 3,
    },
  ],
  database: { multiAz: true },
  peering: [
    { vpcId: 'vpc-0123456789abcdef0', cidr: '172.31.0.0/16', routeTableIds: ['rtb-0123456789abcdef0'] },
    {
      vpcId: 'vpc-0fedcba9876543210',
      cidr: '192.168.0.0/20',
      region: 'eu-west-1',
      routeTableIds: ['rtb-0fedcba987654321f'],
    },
  ],
  monitoring: { alarmEmail: 'ops@example.com' },
  tags: { team: 'research' },
  dataBuckets: ['reference-genomes', 'arn:aws:s3:::lab-raw/runs/2024', 'arn:aws:s3:::lab-raw/runs/2025/'],
});
let template: Template;
let plan: PlanReport;
before(() => {
  const synth = synthCluster(spec);
  template = Template.fromJSON(synth.template);
  plan = planFromSynth(spec, synth);
});

describe('ClusterStack constructs', () => {
  it('worker pools: mixed instances policy with spot settings and capacity rebalance', () => {
    template.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      MinSize: '0',
      MaxSize: '10',
      DesiredCapacity: '3',
      CapacityRebalance: true,
      MixedInstancesPolicy: {
        InstancesDistribution: {
          OnDemandBaseCapacity: 1,
          OnDemandPercentageAboveBaseCapacity: 50,
          SpotAllocationStrategy: 'price-capacity-optimized',
        },
        LaunchTemplate: { Overrides: [{ InstanceType: 'c6i.large' }, { InstanceType: 'c5.large' }] },
      },
    });
    template.resourceCountIs('AWS::AutoScaling::AutoScalingGroup', 3);
  });

  it('launch templates require IMDSv2 and encrypt the root volume', () => {
    template.allResourcesProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: Match.objectLike({ MetadataOptions: Match.objectLike({ HttpTokens: 'required' }) }),
    });
    template.hasResourceProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: Match.objectLike({
        BlockDeviceMappings: [
          Match.objectLike({ Ebs: Match.objectLike({ Encrypted: true, VolumeType: 'gp3' }) }),
        ],
      }),
    });
  });

  it('a GPU pool gets the ECS GPU-optimized AMI; a CPU pool gets Amazon Linux 2023', () => {
    const params = JSON.stringify(template.toJSON().Parameters);
    assert.match(params, /\/aws\/service\/ecs\/optimized-ami\/amazon-linux-2023\/gpu\/recommended\/image_id/);
    assert.match(params, /al2023-ami-kernel/);
  });

  it('capacity: ecs creates an ECS cluster, a capacity provider and a service scaled on backlog per task', () => {
    template.resourceCountIs('AWS::ECS::Cluster', 1);
    template.hasResourceProperties('AWS::ECS::CapacityProvider', {
      AutoScalingGroupProvider: Match.objectLike({ ManagedScaling: Match.objectLike({ Status: 'ENABLED' }) }),
    });
    template.hasResourceProperties('AWS::ECS::TaskDefinition', {
      ContainerDefinitions: [
        Match.objectLike({
          Image: '123456789012.dkr.ecr.us-east-1.amazonaws.com/worker:1',
          ResourceRequirements: [{ Type: 'GPU', Value: '1' }],
        }),
      ],
    });
    template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      PolicyType: 'TargetTrackingScaling',
      TargetTrackingScalingPolicyConfiguration: Match.objectLike({
        CustomizedMetricSpecification: {
          Metrics: Match.arrayWith([
            Match.objectLike({ Id: 'e1', Expression: BACKLOG_EXPRESSION, ReturnData: true }),
          ]),
        },
      }),
    });
  });

  it('ASG pools scale on backlog per instance (visible messages / in-service instances)', () => {
    template.resourcePropertiesCountIs(
      'AWS::AutoScaling::ScalingPolicy',
      {
        PolicyType: 'TargetTrackingScaling',
        TargetTrackingConfiguration: {
          TargetValue: 10,
          CustomizedMetricSpecification: {
            Metrics: [
              Match.objectLike({
                Id: 'm1',
                MetricStat: Match.objectLike({
                  Metric: Match.objectLike({ MetricName: 'ApproximateNumberOfMessagesVisible' }),
                }),
              }),
              Match.objectLike({
                Id: 'm2',
                MetricStat: Match.objectLike({
                  Metric: Match.objectLike({ MetricName: 'GroupInServiceInstances' }),
                }),
              }),
              { Id: 'e1', Expression: BACKLOG_EXPRESSION, Label: 'BacklogPerInstance', ReturnData: true },
            ],
          },
        },
      },
      2,
    );
  });

  it('peering: routes to each peer from every cluster route table, back from owned peer tables, SG rules for peer CIDRs', () => {
    template.resourceCountIs('AWS::EC2::VPCPeeringConnection', 2);
    template.hasResourceProperties('AWS::EC2::VPCPeeringConnection', {
      PeerVpcId: 'vpc-0fedcba9876543210',
      PeerRegion: 'eu-west-1',
    });
    const routes = Object.values(template.findResources('AWS::EC2::Route')).map((r) => r.Properties);
    const toPeer = (cidr: string) =>
      routes.filter((r) => r.DestinationCidrBlock === cidr && r.VpcPeeringConnectionId);
    assert.equal(toPeer('172.31.0.0/16').length, 4); // 2 public + 2 private route tables
    assert.equal(toPeer('192.168.0.0/20').length, 4);
    const back = routes.filter((r) => r.DestinationCidrBlock === '10.40.0.0/16');
    assert.deepEqual(
      back.map((r) => r.RouteTableId),
      ['rtb-0123456789abcdef0'],
    ); // the eu-west-1 peer is not owned here
    for (const port of [80, 443]) {
      assert.ok(plan.ingress.some((r) => r.source === 'cidr:172.31.0.0/16' && r.fromPort === port));
    }
  });

  it('database: encrypted private PostgreSQL, password in Secrets Manager, reachable only from the cluster SG', () => {
    template.hasResourceProperties('AWS::RDS::DBInstance', {
      Engine: 'postgres',
      StorageEncrypted: true,
      PubliclyAccessible: false,
      MultiAZ: true,
      MasterUserPassword: Match.objectLike({ 'Fn::Join': Match.anyValue() }),
    });
    template.resourceCountIs('AWS::SecretsManager::Secret', 1);
    const dbRules = plan.ingress.filter((r) => r.group.startsWith('DatabaseSecurityGroup'));
    assert.equal(dbRules.length, 1);
    assert.match(dbRules[0]!.source, /^sg:AccessSecurityGroup/);
    assert.equal(dbRules[0]!.fromPort, 5432);
    template.hasResourceProperties('AWS::EC2::SecurityGroup', {
      GroupDescription: Match.stringLikeRegexp('corral database'),
      SecurityGroupEgress: Match.anyValue(),
    });
  });

  it('monitoring: queue age, dead letter and health alarms to an SNS email, and a dashboard', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ApproximateAgeOfOldestMessage',
      Threshold: 3600,
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Threshold: 0,
      ComparisonOperator: 'GreaterThanThreshold',
      AlarmActions: [Match.objectLike({ Ref: Match.stringLikeRegexp('Notifications') })],
    });
    template.resourcePropertiesCountIs('AWS::CloudWatch::Alarm', { MetricName: 'StatusCheckFailed' }, 4); // 1 instance + 3 pools
    template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.com',
    });
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    template.resourceCountIs('AWS::Logs::LogGroup', 1);
    template.hasResourceProperties('AWS::EC2::FlowLog', { TrafficType: 'REJECT' });
  });

  it('queue and dead-letter queue are encrypted, TLS-only and linked', () => {
    template.hasResourceProperties('AWS::SQS::Queue', {
      RedrivePolicy: { maxReceiveCount: 5, deadLetterTargetArn: Match.anyValue() },
      SqsManagedSseEnabled: true,
      VisibilityTimeout: 300,
    });
    template.resourceCountIs('AWS::SQS::QueuePolicy', 2);
  });

  it('one instance role per pool, none with access keys', () => {
    for (const name of ['cpu', 'gpu', 'ecs']) {
      assert.ok(
        plan.iam.some((s) => s.policy.startsWith(`PoolRole${name}ClusterData`)),
        name,
      );
    }
    template.resourceCountIs('AWS::IAM::AccessKey', 0);
    template.resourceCountIs('AWS::IAM::User', 0);
  });

  it('dataBuckets: read-only grants scoped to the written buckets and prefixes, for every pool, the named instances and ECS tasks', () => {
    const policies = template.findResources('AWS::IAM::Policy', {
      Properties: { PolicyName: Match.stringLikeRegexp('DataBuckets') },
    });
    const expected = [
      { Action: 's3:ListBucket', Effect: 'Allow', Resource: 'arn:aws:s3:::reference-genomes' },
      { Action: 's3:GetObject', Effect: 'Allow', Resource: 'arn:aws:s3:::reference-genomes/*' },
      {
        Action: 's3:ListBucket',
        Effect: 'Allow',
        Resource: 'arn:aws:s3:::lab-raw',
        Condition: { StringLike: { 's3:prefix': ['runs/2024/*', 'runs/2025/*'] } },
      },
      {
        Action: 's3:GetObject',
        Effect: 'Allow',
        Resource: ['arn:aws:s3:::lab-raw/runs/2024/*', 'arn:aws:s3:::lab-raw/runs/2025/*'],
      },
    ];
    // one policy per role: the named instances' role and each pool's role (ECS tasks use theirs)
    const roles = Object.values(policies).map((p) => {
      const props = p.Properties as {
        PolicyDocument: { Statement: unknown[] };
        Roles: Array<{ Ref: string }>;
      };
      assert.deepEqual(props.PolicyDocument.Statement, expected);
      assert.equal(props.Roles.length, 1);
      return props.Roles[0]!.Ref;
    });
    assert.deepEqual(roles.map((r) => r.replace(/[A-F0-9]{8}$/, '')).sort(), [
      'InstancesRole',
      'PoolRolecpuRole',
      'PoolRoleecsRole',
      'PoolRolegpuRole',
    ]);
    const taskDefs = template.findResources('AWS::ECS::TaskDefinition');
    for (const td of Object.values(taskDefs)) {
      const taskRole = (td.Properties as { TaskRoleArn: { 'Fn::GetAtt': [string, string] } }).TaskRoleArn;
      assert.ok(roles.includes(taskRole['Fn::GetAtt'][0]), 'the ECS task role has the data bucket grants');
    }
    // never a * resource, never a write
    for (const st of plan.iam.filter((x) => x.policy.includes('DataBuckets'))) {
      assert.ok(
        st.resources.every((r) => r.startsWith('arn:aws:s3:::') && r !== 'arn:aws:s3:::*'),
        String(st.resources),
      );
      assert.ok(
        st.actions.every((a) => a === 's3:GetObject' || a === 's3:ListBucket'),
        String(st.actions),
      );
    }
    // cdk-nag's wildcard finding on bucket/prefix/* objects is accepted by corral, with its reason
    const nag = plan.nag.findings.filter((f) => f.resourcePath.includes('/DataBuckets/'));
    assert.ok(
      nag.length > 0 && nag.every((f) => f.suppressed && f.suppressedBy === 'corral'),
      JSON.stringify(nag),
    );
  });

  it('without dataBuckets no role can read another bucket', () => {
    const bare = Template.fromJSON(
      synthCluster(
        defineCluster({
          name: 'bare',
          region: 'us-east-1',
          network: { azs: ['us-east-1a'] },
          pools: [{ name: 'cpu', instanceTypes: ['c6i.large'] }],
        }),
      ).template,
    );
    assert.deepEqual(
      bare.findResources('AWS::IAM::Policy', {
        Properties: { PolicyName: Match.stringLikeRegexp('DataBuckets') },
      }),
      {},
    );
  });

  it('tags every taggable resource with corral:cluster and the spec tags', () => {
    const tagged = Object.entries(
      template.toJSON().Resources as Record<string, { Type: string; Properties?: { Tags?: unknown } }>,
    );
    const taggableTypes = [
      'AWS::EC2::VPC',
      'AWS::EC2::Subnet',
      'AWS::EC2::Instance',
      'AWS::EC2::SecurityGroup',
      'AWS::S3::Bucket',
      'AWS::SQS::Queue',
      'AWS::IAM::Role',
      'AWS::RDS::DBInstance',
      'AWS::Lambda::Function',
      'AWS::ECS::Cluster',
      'AWS::Logs::LogGroup',
      'AWS::SNS::Topic',
      'AWS::EC2::EIP',
    ];
    for (const [id, r] of tagged.filter(([, r]) => taggableTypes.includes(r.Type))) {
      const tags = JSON.stringify(r.Properties?.Tags ?? []);
      assert.match(tags, /"Key":"corral:cluster","Value":"full"/, `${id} (${r.Type})`);
      assert.match(tags, /"Key":"team","Value":"research"/, `${id} (${r.Type})`);
    }
    template.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      Tags: Match.arrayWith([{ Key: 'corral:cluster', PropagateAtLaunch: true, Value: 'full' }]),
    });
  });

  it('cost estimate is the sum of the price table entries', () => {
    // Expectation computed from the table, not hard-coded.
    const ebs = (gib: number) => (gib * UNIT_PRICES.ebsGp3GibMonth) / HOURS_PER_MONTH;
    const coord = EC2_ON_DEMAND['t3.small']! + ebs(20) + UNIT_PRICES.publicIpv4Hourly;
    const endpoints = 12 * UNIT_PRICES.interfaceEndpointHourly; // 6 base + 5 ECS + secretsmanager
    const db = 2 * RDS_ON_DEMAND['t4g.micro']! + (2 * 20 * UNIT_PRICES.rdsGp3GibMonth) / HOURS_PER_MONTH;
    const cpuUnit = EC2_ON_DEMAND['c6i.large']! + ebs(30);
    const od = onDemandCount(3, 1, 50);
    assert.equal(od, 2);
    const fixed = coord + endpoints + db;
    const cost = estimateCost(spec, 12);
    assert.ok(Math.abs(cost.hourly.onDemand - (fixed + 3 * cpuUnit)) < 1e-4, `${cost.hourly.onDemand}`);
    assert.ok(
      Math.abs(cost.hourly.expected - (fixed + od * cpuUnit + (3 - od) * cpuUnit * SPOT_FRACTION.cpu)) < 1e-4,
    );
    assert.ok(Math.abs(cost.monthly.onDemand - cost.hourly.onDemand * HOURS_PER_MONTH) < 1e-2);
    const gpuUnit = EC2_ON_DEMAND['g5.xlarge']! + ebs(30);
    const ecsUnit = EC2_ON_DEMAND['g4dn.xlarge']! + ebs(30);
    const peakOd = fixed + 10 * cpuUnit + 2 * gpuUnit + 3 * ecsUnit;
    assert.ok(Math.abs(cost.peakHourly.onDemand - peakOd) < 1e-4);
    const odMax = onDemandCount(10, 1, 50);
    const peakExpected =
      fixed +
      odMax * cpuUnit +
      (10 - odMax) * cpuUnit * SPOT_FRACTION.cpu +
      (2 * gpuUnit + 3 * ecsUnit) * SPOT_FRACTION.gpu;
    assert.ok(Math.abs(cost.peakHourly.expected - peakExpected) < 1e-4);
    assert.deepEqual(plan.cost.hourly, cost.hourly);
  });

  it('plan lists findings with rule id, path and suppression; limits and outputs', () => {
    assert.ok(
      plan.nag.findings.every(
        (f) => f.ruleId.startsWith('AwsSolutions-') && f.resourcePath.startsWith('corral-full/'),
      ),
    );
    // No spec suppressions here, so the database findings are open errors and the plan fails.
    assert.ok(plan.nag.findings.some((f) => f.ruleId === 'AwsSolutions-SMG4' && !f.suppressed));
    assert.equal(plan.ok, false);
    assert.equal(plan.limits.resources.max, 500);
    assert.ok(plan.limits.templateBytes.used > 0);
  });
});

describe('user data', () => {
  it('worker bootstrap installs the pinned artifact, checks, starts `corral worker` under systemd, then signals', () => {
    const sha = 'ab'.repeat(32);
    const text = workerUserData({
      clusterName: 'c',
      poolName: 'p',
      region: 'us-east-1',
      queueUrl: 'https://sqs/q',
      bucketName: 'b',
      logGroupName: 'lg',
      idleExitSeconds: 900,
      artifact: { bucket: 'assets', key: 'k.tgz', sha256: sha },
      signal: { stackName: 'corral-c', resource: 'Group' },
    });
    assert.match(text, /^#!\/bin\/bash\nset -euo pipefail\n/);
    assert.doesNotMatch(text, /npm install|@latest/);
    assert.match(text, /aws s3 cp .* 's3:\/\/assets\/k\.tgz'/);
    assert.ok(text.includes(`echo '${sha}  /var/lib/corral-boot/corral.tgz' | sha256sum -c`));
    assert.match(text, /CORRAL_QUEUE_URL=https:\/\/sqs\/q/);
    assert.match(text, /CORRAL_IDLE_EXIT_SECONDS=900/);
    assert.match(text, /ExecStart=\/usr\/local\/bin\/corral worker/);
    // a crash-looping worker stops after a bound and reports instead of looping
    assert.match(text, /StartLimitBurst=5\n[\s\S]*OnFailure=corral-worker-failed\.service/);
    // order: check, then the unit, then the success signal; a failure trap signals failure
    const check = text.indexOf('corral worker --check');
    const start = text.indexOf('systemctl enable --now corral-worker.service');
    const ready = text.indexOf('corral_signal 0');
    assert.ok(check > 0 && start > check && ready > start, 'check < start < signal');
    assert.match(text, /cfn-signal -e "\$1" --stack 'corral-c' --resource 'Group'/);
    assert.match(text, /trap 'corral_failed \$\? \$LINENO "\$BASH_COMMAND"' ERR/);
  });

  it('ECS hosts join their cluster instead of running the worker', () => {
    const text = workerUserData({
      clusterName: 'c',
      poolName: 'p',
      region: 'r',
      queueUrl: 'q',
      bucketName: 'b',
      logGroupName: 'l',
      idleExitSeconds: 1,
      ecsClusterName: 'ecs-1',
      artifact: { bucket: 'a', key: 'k', sha256: 'cd'.repeat(32) },
    });
    assert.match(text, /ECS_CLUSTER=ecs-1/);
    assert.doesNotMatch(text, /ExecStart=/);
  });

  it('named instances start their container, then the user script', () => {
    const text = instanceUserData({
      name: 'w',
      clusterName: 'c',
      role: 'custom',
      image: 'img:1',
      script: 'echo hi',
    });
    assert.ok(text.indexOf('docker run') < text.indexOf('echo hi'));
    assert.match(text, /\/bin\/bash \/var\/lib\/corral-startup\.sh/);
  });
});
