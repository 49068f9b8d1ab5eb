import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { RETAIN_TAG } from '../src/infra/cluster-bucket.js';
import { interfaceEndpointsOf } from '../src/infra/cluster-stack.js';
import { ATTEMPT_OBJECTS, ECR_LOGIN_ACTION, ECR_PULL_ACTIONS } from '../src/infra/instance-role.js';
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
import { ecrImageOf, instanceUserData, shellQuote, workerUserData } from '../src/infra/user-data.js';
import { jobPrefix, S3_LAYOUT } from '../src/protocol/keys.js';
import { type ClusterSpec, type ClusterSpecInput, defineCluster } from '../src/spec/cluster.js';
import { UsageError } from '../src/spec/errors.js';
import { evaluate } from './metric-math.js';
import { resolveIntrinsics } from './sandbox.js';

const ECR_WORKER = '123456789012.dkr.ecr.us-east-1.amazonaws.com/worker:1';

type Resources = Record<string, { Type: string; Properties: Record<string, unknown> }>;

/** The user data of a pool's launch template, every Ref and Fn::GetAtt written as `<Name>`. */
function poolUserData(t: Template, pool: string): string {
  const [, lt] = Object.entries(t.findResources('AWS::EC2::LaunchTemplate')).find(([id]) =>
    id.startsWith(`Pool${pool}LaunchTemplate`),
  )!;
  return resolveIntrinsics(
    (lt.Properties as { LaunchTemplateData: { UserData: unknown } }).LaunchTemplateData.UserData,
    (name) => `<${name}>`,
  );
}

/** The launch template's IMDS hop limit of a pool. */
function hopLimitOf(t: Template, pool: string): number | undefined {
  const [, lt] = Object.entries(t.findResources('AWS::EC2::LaunchTemplate')).find(([id]) =>
    id.startsWith(`Pool${pool}LaunchTemplate`),
  )!;
  return (lt.Properties as { LaunchTemplateData: { MetadataOptions: { HttpPutResponseHopLimit?: number } } })
    .LaunchTemplateData.MetadataOptions.HttpPutResponseHopLimit;
}

/** Every statement of the policies attached to a role (by the role's logical id prefix). */
function statementsOf(t: Template, rolePrefix: string) {
  return Object.values(t.findResources('AWS::IAM::Policy') as Resources).flatMap((p) => {
    const props = p.Properties as {
      PolicyName: string;
      PolicyDocument: { Statement: { Action: string | string[]; Resource: unknown; Condition?: unknown }[] };
      Roles: { Ref: string }[];
    };
    if (!props.Roles.some((r) => r.Ref.startsWith(rolePrefix))) return [];
    return props.PolicyDocument.Statement.map((st) => ({
      policy: props.PolicyName,
      actions: ([] as string[]).concat(st.Action),
      resource: st.Resource,
      condition: st.Condition,
    }));
  });
}

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
      image: ECR_WORKER,
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
    },
  ],
  monitoring: { alarmEmail: 'ops@example.com' },
  tags: { team: 'research' },
  dataBuckets: ['reference-genomes', 'arn:aws:s3:::lab-raw/runs/2024', 'arn:aws:s3:::lab-raw/runs/2025/'],
});
/** A small cluster over two AZs. */
const lean: ClusterSpecInput = {
  name: 'lean',
  region: 'us-east-1',
  network: { azs: ['us-east-1a', 'us-east-1b'] },
};
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

  it('capacity: ecs: the hosts join an ECS cluster and run the corral worker under systemd; no ECS service, task definition or capacity provider', () => {
    template.resourceCountIs('AWS::ECS::Cluster', 1);
    template.hasResourceProperties('AWS::ECS::Cluster', {
      ClusterSettings: [{ Name: 'containerInsights', Value: 'enabled' }],
    });
    for (const type of [
      'AWS::ECS::Service',
      'AWS::ECS::TaskDefinition',
      'AWS::ECS::CapacityProvider',
      'AWS::ECS::ClusterCapacityProviderAssociations',
      'AWS::ApplicationAutoScaling::ScalableTarget',
      'AWS::ApplicationAutoScaling::ScalingPolicy',
    ]) {
      template.resourceCountIs(type, 0);
    }
    const text = poolUserData(template, 'ecs');
    const cluster = Object.keys(template.findResources('AWS::ECS::Cluster'))[0]!;
    assert.ok(text.includes(`echo ECS_CLUSTER=<${cluster}> >> /etc/ecs/ecs.config`), text);
    assert.match(text, /ExecStart=\/usr\/local\/bin\/corral worker\n/);
    assert.ok(text.includes(`CORRAL_IMAGE=${ECR_WORKER}\n`));
    // g4dn: a GPU pool, so each task's container gets the GPUs
    assert.match(text, /\nCORRAL_GPUS=all\n/);
    const pull = text.indexOf(`docker pull '${ECR_WORKER}'`);
    assert.ok(pull > 0 && pull < text.indexOf('corral_signal 0 "corral worker started"'));
    // the ECS agent may register the host in its own cluster, and run nothing
    const agent = statementsOf(template, 'PoolRoleecsRole').filter(
      (st) => st.policy.includes('DefaultPolicy') && st.actions.some((a) => a.startsWith('ecs:')),
    );
    assert.deepEqual(
      agent.map((st) => [st.actions, st.resource, st.condition]),
      [
        [
          ['ecs:DeregisterContainerInstance', 'ecs:RegisterContainerInstance', 'ecs:Submit*'],
          { 'Fn::GetAtt': [cluster, 'Arn'] },
          undefined,
        ],
        [
          ['ecs:Poll', 'ecs:StartTelemetrySession'],
          '*',
          { ArnEquals: { 'ecs:cluster': { 'Fn::GetAtt': [cluster, 'Arn'] } } },
        ],
        [['ecs:DiscoverPollEndpoint'], '*', undefined],
      ],
    );
    // only EC2 assumes the pool roles: no ECS task role any more
    for (const role of Object.values(template.findResources('AWS::IAM::Role') as Resources)) {
      assert.doesNotMatch(JSON.stringify(role.Properties.AssumeRolePolicyDocument), /ecs-tasks/);
    }
  });

  it('a pool with an image: IMDS hop limit 1 (its containers get no instance credentials); 2 without', () => {
    assert.equal(hopLimitOf(template, 'ecs'), 1);
    assert.equal(hopLimitOf(template, 'cpu'), 2);
    assert.equal(hopLimitOf(template, 'gpu'), 2);
  });

  it('ECR pull rights for the pool whose image is in ECR, scoped to its repository; none for the others', () => {
    const ecs = statementsOf(template, 'PoolRoleecsRole');
    assert.deepEqual(
      ecs.filter((st) => st.actions.some((a) => a.startsWith('ecr:') && a !== ECR_LOGIN_ACTION)),
      [
        {
          policy: ecs.find((st) => st.policy.startsWith('PoolRoleecsImages'))!.policy,
          actions: [...ECR_PULL_ACTIONS],
          resource: 'arn:aws:ecr:us-east-1:123456789012:repository/worker',
          condition: undefined,
        },
      ],
    );
    const login = ecs.filter((st) => st.actions.includes(ECR_LOGIN_ACTION));
    assert.equal(login.length, 1);
    assert.match(login[0]!.policy, /^PoolRoleecsSessionManager/);
    assert.equal(login[0]!.resource, '*');
    for (const role of ['PoolRolecpuRole', 'PoolRolegpuRole', 'InstancesRole']) {
      assert.ok(
        !statementsOf(template, role).some((st) => st.actions.some((a) => a.startsWith('ecr:'))),
        `${role}: no ECR rights without an ECR image (nginx:1.27 is on Docker Hub)`,
      );
    }
    // cdk-nag's findings on the roles (the ECR token and the ECS agent on *) are accepted by corral
    const roles = plan.nag.findings.filter((f) => /\/(PoolRole-[^/]+|InstancesRole)\//.test(f.resourcePath));
    assert.ok(roles.length > 0);
    assert.ok(
      roles.every((f) => f.suppressed && f.suppressedBy === 'corral'),
      JSON.stringify(roles.filter((f) => !f.suppressed)),
    );
  });

  it('every pool scales on its work (waiting + in flight) per in-service instance; the math never divides by zero nor reads a gap as no work; an alarm scales out from zero (issue 20, item 1)', () => {
    const policies = Object.values(template.findResources('AWS::AutoScaling::ScalingPolicy') as Resources)
      .map((r) => r.Properties)
      .filter((p) => p.PolicyType === 'TargetTrackingScaling');
    assert.equal(policies.length, 3); // cpu, gpu and ecs: a capacity: ecs pool scales the same way
    type Query = {
      Id: string;
      Expression?: string;
      ReturnData?: boolean;
      MetricStat?: { Metric: { MetricName: string } };
    };
    for (const p of policies) {
      const c = p.TargetTrackingConfiguration as {
        TargetValue: number;
        CustomizedMetricSpecification: { Metrics: Query[] };
      };
      assert.equal(c.TargetValue, 10);
      const q = c.CustomizedMetricSpecification.Metrics;
      const byName = Object.fromEntries(
        q.filter((m) => m.MetricStat).map((m) => [m.MetricStat!.Metric.MetricName, m.Id]),
      );
      assert.deepEqual(Object.keys(byName).sort(), [
        'ApproximateNumberOfMessagesNotVisible',
        'ApproximateNumberOfMessagesVisible',
        'GroupInServiceInstances',
      ]);
      const expr = q.find((m) => m.ReturnData)!.Expression!;
      // visible, in flight, in service over 7 minutes: work in flight only (prefetched and
      // running: the old metric read 0 and scaled the busy hosts in), no instance, a gap
      const series = (
        vis: Array<number | null>,
        inflight: Array<number | null>,
        inService: Array<number | null>,
      ) => ({
        [byName.ApproximateNumberOfMessagesVisible!]: vis,
        [byName.ApproximateNumberOfMessagesNotVisible!]: inflight,
        [byName.GroupInServiceInstances!]: inService,
      });
      const out = evaluate(
        expr,
        series([0, 0, 5, 5, null, 0, 0], [20, 20, 0, 0, 3, null, 0], [2, 2, 0, null, 1, 1, 1]),
        7,
      );
      assert.deepEqual(out, [10, 10, 5, 5, 8, 3, 0]);
    }
    // from zero: the alarm is 1 with work and a desired capacity of 0, and adds one instance
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm') as Resources)
      .map((r) => r.Properties)
      .filter((a) =>
        (a.Metrics as Query[] | undefined)?.some(
          (m) => m.MetricStat?.Metric.MetricName === 'GroupDesiredCapacity',
        ),
      );
    assert.equal(alarms.length, 3);
    for (const a of alarms) {
      const q = a.Metrics as Query[];
      const id = (name: string) => q.find((m) => m.MetricStat?.Metric.MetricName === name)!.Id;
      const out = evaluate(
        q.find((m) => m.ReturnData)!.Expression!,
        {
          [id('ApproximateNumberOfMessagesVisible')]: [0, 4, null, 4, 0],
          [id('ApproximateNumberOfMessagesNotVisible')]: [0, 0, 0, 0, 0],
          [id('GroupDesiredCapacity')]: [0, 0, 0, 1, null],
        },
        5,
      );
      assert.deepEqual(out, [0, 1, 1, 0, 0]);
      assert.equal(a.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
      assert.equal(a.Threshold, 1);
      const policyId = (a.AlarmActions as Array<{ Ref: string }>)[0]!.Ref;
      const policy = template.toJSON().Resources[policyId].Properties;
      assert.equal(policy.PolicyType, 'StepScaling');
      assert.equal(policy.AdjustmentType, 'ChangeInCapacity');
      assert.deepEqual(policy.StepAdjustments, [{ MetricIntervalLowerBound: 0, ScalingAdjustment: 1 }]);
    }
    // a host that powers itself off is terminated, not left stopped for the group to replace
    for (const lt of Object.values(template.findResources('AWS::EC2::LaunchTemplate') as Resources).filter(
      (r) => JSON.stringify(r).includes('corral worker'),
    ))
      assert.equal(
        (lt.Properties.LaunchTemplateData as { InstanceInitiatedShutdownBehavior?: string })
          .InstanceInitiatedShutdownBehavior,
        'terminate',
      );
  });

  it('each pool has its own queue and dead-letter queue (the first pool the job queue), its hosts read only it, and the PoolQueues output lists them in order (issue 20, item 3)', () => {
    const queues = Object.keys(template.findResources('AWS::SQS::Queue'));
    for (const id of [
      'JobQueue',
      'JobQueueDeadLetterQueue',
      'JobQueuegpuQueue',
      'JobQueuegpuDeadLetterQueue',
      'JobQueueecsQueue',
      'JobQueueecsDeadLetterQueue',
    ])
      assert.ok(
        queues.some((q) => q.startsWith(id)),
        `${id} in ${queues}`,
      );
    assert.equal(queues.length, 6);
    const urlOf = (pool: string) => /CORRAL_QUEUE_URL=<([^>]+)>/.exec(poolUserData(template, pool))?.[1];
    assert.match(urlOf('cpu')!, /^JobQueue[A-F0-9]{8}\.QueueUrl$|^JobQueue[A-F0-9]{8}$/);
    assert.match(urlOf('gpu')!, /^JobQueuegpuQueue/);
    assert.match(urlOf('ecs')!, /^JobQueueecsQueue/);
    const out = resolveIntrinsics(template.toJSON().Outputs.PoolQueues.Value, (n) => `<${n}>`);
    assert.deepEqual(
      (JSON.parse(out) as Array<{ pool: string; queueUrl: string }>).map((p) => [
        p.pool,
        p.queueUrl.replace(/[A-F0-9]{8}>$/, '>'),
      ]),
      [
        ['cpu', '<JobQueue>'],
        ['gpu', '<JobQueuegpuQueue>'],
        ['ecs', '<JobQueueecsQueue>'],
      ],
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
    // the peer without a route back is named in the plan, with the connection id as an output
    assert.ok(
      plan.warnings.some((w) =>
        /peer vpc-0fedcba9876543210: no route back is created.*10\.40\.0\.0\/16/.test(w),
      ),
      plan.warnings.join('\n'),
    );
    assert.ok(!plan.warnings.some((w) => /peer vpc-0123456789abcdef0: no route back/.test(w)));
    const outputs = Object.keys(template.toJSON().Outputs as object);
    assert.ok(
      outputs.includes('Peering0Connection') && outputs.includes('Peering1Connection'),
      String(outputs),
    );
  });

  it('peering: routes back in another region or account are refused at load, with the fix', () => {
    const peer = {
      vpcId: 'vpc-0fedcba9876543210',
      cidr: '192.168.0.0/20',
      routeTableIds: ['rtb-0fedcba987654321f'],
    };
    for (const where of [{ region: 'eu-west-1' }, { accountId: '210987654321' }]) {
      assert.throws(
        () =>
          defineCluster({
            ...lean,
            peering: [{ ...peer, ...where, peerRoleArn: 'arn:aws:iam::210987654321:role/accept' }],
          }),
        (e: unknown) =>
          e instanceof UsageError &&
          e.field === 'peering[0].routeTableIds' &&
          /cannot add routes/.test(e.problem) &&
          /output Peering0Connection/.test(e.fix ?? ''),
      );
    }
    assert.ok(defineCluster({ ...lean, peering: [peer] }));
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
    // the cluster's, the database's exported logs, Container Insights of the ecs pool, the auto-delete function's
    template.resourceCountIs('AWS::Logs::LogGroup', 4);
    template.hasResourceProperties('AWS::EC2::FlowLog', { TrafficType: 'REJECT' });
  });

  it('log groups AWS services write for the cluster are made first, with retention and tags, and go on down', () => {
    const json = template.toJSON() as {
      Resources: Record<
        string,
        { Type: string; Properties: Record<string, unknown>; DependsOn?: string[]; DeletionPolicy?: string }
      >;
    };
    const res = Object.entries(json.Resources);
    const groups = res.filter(([, r]) => r.Type === 'AWS::Logs::LogGroup');
    for (const [id, g] of groups) {
      assert.equal(g.Properties.RetentionInDays, spec.monitoring.logRetentionDays, id);
      assert.match(JSON.stringify(g.Properties.Tags), /"Key":"corral:cluster","Value":"full"/, id);
      assert.equal(g.DeletionPolicy, 'Delete', id);
    }
    const groupOf = (name: string) => {
      const found = groups.find(([, g]) => g.Properties.LogGroupName === name);
      assert.ok(found, `a log group ${name}: ${groups.map(([, g]) => g.Properties.LogGroupName).join(', ')}`);
      return found[0];
    };
    const dependsOn = (id: string, group: string) =>
      assert.ok(json.Resources[id]!.DependsOn?.includes(group), `${id} depends on ${group}`);
    // RDS: the instance has a fixed identifier, its exports' group is named after it and made first
    const [dbId, db] = res.find(([, r]) => r.Type === 'AWS::RDS::DBInstance')!;
    assert.equal(db.Properties.DBInstanceIdentifier, 'corral-full');
    assert.deepEqual(db.Properties.EnableCloudwatchLogsExports, ['postgresql']);
    dependsOn(dbId, groupOf(`/aws/rds/instance/${db.Properties.DBInstanceIdentifier}/postgresql`));
    // ECS: the pool's cluster has a fixed name; Container Insights' group is named after it and made first
    const [ecsId, ecsCluster] = res.find(([, r]) => r.Type === 'AWS::ECS::Cluster')!;
    assert.equal(ecsCluster.Properties.ClusterName, 'corral-full-ecs');
    dependsOn(ecsId, groupOf(`/aws/ecs/containerinsights/${ecsCluster.Properties.ClusterName}/performance`));
    // Lambda: every function (the auto-delete provider) logs to its own group, made first
    const functions = res.filter(([, r]) => r.Type === 'AWS::Lambda::Function');
    assert.ok(functions.length >= 1);
    for (const [fnId, fn] of functions) {
      const group = groupOf(`/aws/lambda/corral-full-${fnId}`);
      assert.deepEqual(fn.Properties.LoggingConfig, { LogGroup: { Ref: group } }, fnId);
      dependsOn(fnId, group);
    }
    assert.equal(groups.length, 3 + functions.length);
  });

  it('a retained database keeps its exported logs, tagged corral:retain', () => {
    const t = Template.fromJSON(
      synthCluster(defineCluster({ ...lean, name: 'keep', database: { removalPolicy: 'retain' } })).template,
    );
    t.hasResource('AWS::Logs::LogGroup', {
      Properties: {
        LogGroupName: '/aws/rds/instance/corral-keep/postgresql',
        Tags: Match.arrayWith([{ Key: RETAIN_TAG, Value: 'true' }]),
      },
      DeletionPolicy: 'Retain',
    });
  });

  it('database: tasks are told its endpoint and secret ARN, every host role may read that one secret, and no password is in the template', () => {
    const json = template.toJSON() as { Resources: Resources; Outputs: Record<string, { Value: unknown }> };
    const [attachmentId] = Object.entries(json.Resources).find(
      ([, r]) => r.Type === 'AWS::SecretsManager::SecretTargetAttachment',
    )!;
    const [dbId] = Object.entries(json.Resources).find(([, r]) => r.Type === 'AWS::RDS::DBInstance')!;
    for (const role of ['PoolRolecpuRole', 'PoolRolegpuRole', 'PoolRoleecsRole', 'InstancesRole']) {
      const sm = statementsOf(template, role).filter((st) =>
        st.actions.some((a) => a.startsWith('secretsmanager:')),
      );
      assert.deepEqual(
        sm.map((st) => ({ actions: st.actions, resource: st.resource })),
        [{ actions: ['secretsmanager:GetSecretValue'], resource: { Ref: attachmentId } }],
        role,
      );
    }
    for (const pool of ['cpu', 'gpu', 'ecs']) {
      const ud = poolUserData(template, pool);
      assert.match(ud, new RegExp(`^CORRAL_DB_HOST=<${dbId}.Endpoint.Address>$`, 'm'), pool);
      assert.match(ud, new RegExp(`^CORRAL_DB_PORT=<${dbId}.Endpoint.Port>$`, 'm'), pool);
      assert.match(ud, /^CORRAL_DB_NAME=corral$/m, pool);
      assert.match(ud, new RegExp(`^CORRAL_DB_SECRET_ARN=<${attachmentId}>$`, 'm'), pool);
    }
    assert.deepEqual(json.Outputs.DatabaseName!.Value, 'corral');
    assert.deepEqual(json.Outputs.DatabaseSecretArn!.Value, { Ref: attachmentId });
    // the password is generated by Secrets Manager: only the instance itself resolves it
    const text = JSON.stringify(json);
    const resolves = [...text.matchAll(/resolve:secretsmanager/g)].length;
    const dbProps = JSON.stringify(json.Resources[dbId]!.Properties);
    assert.equal([...dbProps.matchAll(/resolve:secretsmanager/g)].length, resolves);
    assert.doesNotMatch(JSON.stringify(json.Outputs), /resolve:secretsmanager|password/i);
    assert.doesNotMatch(
      ['cpu', 'gpu', 'ecs'].map((p) => poolUserData(template, p)).join('\n'),
      /resolve:secretsmanager|PGPASSWORD|SecretString/,
    );
  });

  it('queue and dead-letter queue are encrypted, TLS-only and linked', () => {
    template.hasResourceProperties('AWS::SQS::Queue', {
      RedrivePolicy: { maxReceiveCount: 5, deadLetterTargetArn: Match.anyValue() },
      SqsManagedSseEnabled: true,
      VisibilityTimeout: 300,
    });
    template.resourceCountIs('AWS::SQS::QueuePolicy', 6); // a queue and a dead-letter queue per pool
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

  it('hosts delete only attempt uploads and ended detached-run records in the cluster bucket, and hold no metrics grant nothing uses', () => {
    const deletes = plan.iam.filter((st) => st.actions.some((a) => a === 's3:DeleteObject' || a === 's3:*'));
    // the named instances' role and one per pool
    const hostDeletes = deletes.filter((st) => /^(InstancesRole|PoolRole)/.test(st.policy));
    assert.equal(hostDeletes.length, 4);
    for (const st of hostDeletes) {
      assert.deepEqual(st.actions, ['s3:DeleteObject']);
      assert.equal(st.resources.length, 2);
      assert.match(st.resources[0]!, /^<StorageBucket[0-9A-F]+\.Arn>\/jobs\/\*\/attempts\/\*$/);
      // issue 23: the coordinator of a detached run deletes its record (detached/JOB.json) when it ends
      assert.match(st.resources[1]!, /^<StorageBucket[0-9A-F]+\.Arn>\/detached\/\*$/);
    }
    // the pattern covers what the S3 store deletes (an attempt upload), not outputs or markers
    const glob = new RegExp(`^${ATTEMPT_OBJECTS.replaceAll('*', '[^]*')}$`);
    assert.match(`${jobPrefix('j')}${S3_LAYOUT.attempts}out/a.txt/attempt-1`, glob);
    assert.doesNotMatch(`${jobPrefix('j')}${S3_LAYOUT.committed}out/a.txt`, glob);
    assert.ok(!plan.iam.some((st) => st.actions.includes('cloudwatch:PutMetricData')));
  });

  it('the Elastic IP and its association wait for the internet gateway attachment', () => {
    const [attachment] = Object.keys(template.findResources('AWS::EC2::VPCGatewayAttachment'));
    assert.ok(attachment);
    for (const type of ['AWS::EC2::EIP', 'AWS::EC2::EIPAssociation']) {
      const found = Object.values(template.findResources(type)) as { DependsOn?: string[] }[];
      assert.equal(found.length, 1, type);
      assert.ok(found[0]!.DependsOn?.includes(attachment), `${type} DependsOn ${found[0]!.DependsOn}`);
    }
  });

  it('dataBuckets: read-only grants scoped to the written buckets and prefixes, for every pool and the named instances', () => {
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
    // one policy per role: the named instances' role and each pool's role
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
    // 6 base + 3 ECS (the ecs pool) + 2 ECR (its ECR image) + secretsmanager
    assert.equal(interfaceEndpointsOf(spec).length, 12);
    // one endpoint per service and AZ (network.endpointAzs: all, 2 AZs)
    const endpoints = 12 * 2 * UNIT_PRICES.interfaceEndpointHourly;
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
    // at max each pool is priced on its most expensive allowed type
    const cpuPeakUnit = Math.max(EC2_ON_DEMAND['c6i.large']!, EC2_ON_DEMAND['c5.large']!) + ebs(30);
    const peakOd = fixed + 10 * cpuPeakUnit + 2 * gpuUnit + 3 * ecsUnit;
    assert.ok(Math.abs(cost.peakHourly.onDemand - peakOd) < 1e-4);
    const odMax = onDemandCount(10, 1, 50);
    const peakExpected =
      fixed +
      odMax * cpuPeakUnit +
      (10 - odMax) * cpuPeakUnit * SPOT_FRACTION.cpu +
      (2 * gpuUnit + 3 * ecsUnit) * SPOT_FRACTION.gpu;
    assert.ok(Math.abs(cost.peakHourly.expected - peakExpected) < 1e-4);
    assert.deepEqual(plan.cost.hourly, cost.hourly);
    // idle: every pool at min (0 here), what runs regardless stays
    assert.ok(Math.abs(cost.idleHourly.onDemand - fixed) < 1e-4, `${cost.idleHourly.onDemand}`);
  });

  it('interface endpoints sit in every AZ by default, in the first only with endpointAzs: first', () => {
    const subnetsPerEndpoint = (t: Template) =>
      Object.values(t.findResources('AWS::EC2::VPCEndpoint') as Resources)
        .filter((e) => e.Properties.VpcEndpointType === 'Interface')
        .map((e) => (e.Properties.SubnetIds as unknown[]).length);
    const everywhere = subnetsPerEndpoint(template);
    assert.equal(everywhere.length, 12);
    assert.ok(everywhere.every((n) => n === 2));
    const one = defineCluster({ ...lean, network: { ...lean.network, endpointAzs: 'first' } });
    assert.deepEqual([...new Set(subnetsPerEndpoint(Template.fromJSON(synthCluster(one).template)))], [1]);
    assert.equal(
      estimateCost(one, 6).lines.find((l) => l.item.startsWith('interface endpoints'))?.quantity,
      6,
    );
    assert.equal(
      estimateCost(defineCluster(lean), 6).lines.find((l) => l.item.startsWith('interface endpoints'))
        ?.quantity,
      12,
    );
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

describe('pools and named instances with images', () => {
  const TOOLS = '123456789012.dkr.ecr.us-east-1.amazonaws.com/lab/tools:1.4';
  const TRAIN = `123456789012.dkr.ecr.us-east-1.amazonaws.com/lab/train@sha256:${'e'.repeat(64)}`;
  const API = '123456789012.dkr.ecr.us-east-1.amazonaws.com/svc/api:2';
  const input: ClusterSpecInput = {
    name: 'imaged',
    region: 'us-east-1',
    network: { azs: ['us-east-1a'] }, // natGateways 0: ECR through its endpoints only
    instances: [
      { name: 'api', image: API },
      { name: 'web', subnet: 'public', image: '123456789012.dkr.ecr.us-east-1.amazonaws.com/svc/web:1' },
    ],
    pools: [
      { name: 'tools', instanceTypes: ['c7i.large'], image: TOOLS, min: 1 },
      { name: 'train', instanceTypes: ['g5.xlarge'], image: TRAIN },
      { name: 'plain', instanceTypes: ['c7i.large'] },
    ],
  };
  let t: Template;
  let imaged: PlanReport;
  before(() => {
    const spec = defineCluster(input);
    const synth = synthCluster(spec);
    t = Template.fromJSON(synth.template);
    imaged = planFromSynth(spec, synth);
  });

  it('an asg pool with an ECR image: CORRAL_IMAGE, docker pulled (after an ECR login) before the success signal', () => {
    const text = poolUserData(t, 'tools');
    assert.ok(text.includes(`\nCORRAL_IMAGE=${TOOLS}\n`));
    assert.doesNotMatch(text, /CORRAL_GPUS/, 'not a GPU pool');
    const login = text.indexOf('| docker login --username AWS --password-stdin');
    const pull = text.indexOf(`docker pull '${TOOLS}'`);
    const ready = text.indexOf('corral_signal 0 "corral worker started"');
    assert.ok(login > 0 && pull > login && ready > pull, 'login < pull < ready');
    assert.doesNotMatch(text, /ECS_CLUSTER/);
    const plain = poolUserData(t, 'plain');
    assert.doesNotMatch(plain, /docker|CORRAL_IMAGE/);
  });

  it('a GPU pool with an image: CORRAL_GPUS=all, so each task runs with docker run --gpus all', () => {
    const text = poolUserData(t, 'train');
    assert.ok(text.includes(`\nCORRAL_IMAGE=${TRAIN}\nCORRAL_GPUS=all\n`), text);
    assert.ok(text.includes(`docker pull '${TRAIN}'`));
  });

  it('pull rights on exactly the repositories of the images, the ECR token wherever an ECR image is pulled', () => {
    const pulls = (role: string) =>
      statementsOf(t, role)
        .filter((st) => st.actions.includes('ecr:BatchGetImage'))
        .map((st) => {
          assert.deepEqual(st.actions, [...ECR_PULL_ACTIONS]);
          return st.resource;
        });
    assert.deepEqual(pulls('PoolRoletoolsRole'), ['arn:aws:ecr:us-east-1:123456789012:repository/lab/tools']);
    assert.deepEqual(pulls('PoolRoletrainRole'), ['arn:aws:ecr:us-east-1:123456789012:repository/lab/train']);
    assert.deepEqual(pulls('PoolRoleplainRole'), []);
    assert.deepEqual(pulls('InstancesRole'), [
      [
        'arn:aws:ecr:us-east-1:123456789012:repository/svc/api',
        'arn:aws:ecr:us-east-1:123456789012:repository/svc/web',
      ],
    ]);
    const token = (role: string) => statementsOf(t, role).some((st) => st.actions.includes(ECR_LOGIN_ACTION));
    assert.deepEqual(
      ['PoolRoletoolsRole', 'PoolRoletrainRole', 'PoolRoleplainRole', 'InstancesRole'].map(token),
      [true, true, false, true],
    );
    // no other ECR action, nowhere on a wildcard but the token
    for (const st of statementsOf(t, '')) {
      for (const a of st.actions.filter((x) => x.startsWith('ecr:'))) {
        assert.ok([ECR_LOGIN_ACTION, ...ECR_PULL_ACTIONS].includes(a), a);
        if (a !== ECR_LOGIN_ACTION) assert.notEqual(st.resource, '*');
      }
    }
  });

  it('the named instance logs in to ECR before its docker run', () => {
    const api = Object.entries(t.findResources('AWS::EC2::Instance')).find(([id]) =>
      id.startsWith('Instancesapi'),
    )!;
    const text = resolveIntrinsics((api[1].Properties as { UserData: unknown }).UserData, (n) => `<${n}>`);
    const login = text.indexOf('docker login --username AWS --password-stdin');
    assert.ok(
      login > 0 && text.indexOf(`docker run -d --restart always --network host --name 'api'`) > login,
    );
  });

  it('no NAT gateway: ecr.api and ecr.dkr endpoints, no ECS endpoints without an ecs pool; hop limit 1 on image pools', () => {
    const services = Object.values(t.findResources('AWS::EC2::VPCEndpoint'))
      .map((e) => (e.Properties as { ServiceName: unknown }).ServiceName)
      .filter((n): n is string => typeof n === 'string')
      .map((n) => n.replace('com.amazonaws.us-east-1.', ''));
    assert.deepEqual(services.sort(), [...interfaceEndpointsOf(defineCluster(input))].sort());
    assert.ok(services.includes('ecr.api') && services.includes('ecr.dkr'));
    assert.ok(!services.some((n) => n.startsWith('ecs')), String(services));
    assert.deepEqual(
      ['tools', 'train', 'plain'].map((p) => hopLimitOf(t, p)),
      [1, 1, 2],
    );
    t.resourceCountIs('AWS::ECS::Cluster', 0);
  });

  it('cdk-nag: every finding on the roles is accepted by corral, with its reason', () => {
    const roles = imaged.nag.findings.filter((f) =>
      /\/(PoolRole-[^/]+|InstancesRole)\//.test(f.resourcePath),
    );
    assert.ok(
      roles.every((f) => f.suppressed && f.suppressedBy === 'corral' && (f.reason ?? '').length > 10),
      JSON.stringify(roles.filter((f) => !f.suppressed)),
    );
    assert.equal(imaged.nag.errors, 0, imaged.problems.join('; '));
  });

  it('interfaceEndpointsOf: ECR endpoints for ECR images of pools and private instances when there is no NAT', () => {
    const ecr = '123456789012.dkr.ecr.us-east-1.amazonaws.com/w:1';
    const of = (extra: Partial<ClusterSpecInput>) =>
      interfaceEndpointsOf(
        defineCluster({ name: 'e', region: 'us-east-1', network: { azs: ['us-east-1a'] }, ...extra }),
      );
    const hasEcr = (names: string[]) => names.includes('ecr.api') && names.includes('ecr.dkr');
    assert.ok(!hasEcr(of({ pools: [{ name: 'p', instanceTypes: ['c7i.large'] }] })));
    assert.ok(hasEcr(of({ pools: [{ name: 'p', instanceTypes: ['c7i.large'], image: ecr }] })));
    assert.ok(hasEcr(of({ instances: [{ name: 'i', image: ecr }] })));
    // a public instance reaches ECR through the internet gateway
    assert.ok(!hasEcr(of({ instances: [{ name: 'i', subnet: 'public', image: ecr }] })));
    const ecsPool = of({ pools: [{ name: 'p', instanceTypes: ['c7i.large'], capacity: 'ecs', image: ecr }] });
    for (const n of ['ecs', 'ecs-agent', 'ecs-telemetry', 'ecr.api', 'ecr.dkr'])
      assert.ok(ecsPool.includes(n), n);
    // with a NAT gateway: no interface endpoint at all, unless written
    assert.deepEqual(
      of({
        network: { azs: ['us-east-1a'], natGateways: 1 },
        pools: [{ name: 'p', instanceTypes: ['c7i.large'], image: 'tensorflow/tensorflow:latest' }],
      }),
      [],
    );
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

  const base = {
    clusterName: 'c',
    poolName: 'p',
    region: 'us-east-1',
    queueUrl: 'q',
    bucketName: 'b',
    logGroupName: 'l',
    idleExitSeconds: 1,
    artifact: { bucket: 'a', key: 'k', sha256: 'cd'.repeat(32) },
    signal: { stackName: 'corral-c', resource: 'Group' },
  };

  it('ECS hosts join their cluster and run the corral worker under systemd like any pool', () => {
    const text = workerUserData({ ...base, ecsClusterName: 'ecs-1', image: 'img:1' });
    assert.match(text, /echo ECS_CLUSTER=ecs-1 >> \/etc\/ecs\/ecs.config/);
    assert.doesNotMatch(text, /ECS_ENABLE_SPOT_INSTANCE_DRAINING/, 'no ECS task to drain');
    assert.match(text, /ExecStart=\/usr\/local\/bin\/corral worker\n/);
    assert.ok(text.indexOf('ECS_CLUSTER') < text.indexOf('corral worker --check'));
    assert.ok(text.indexOf('systemctl enable --now corral-worker.service') < text.indexOf('corral_signal 0'));
    // the ECS-optimized AMIs (minimal AL2023) may lack the AWS CLI and tar the bootstrap uses
    assert.ok(text.indexOf('dnf install -y awscli-2') < text.indexOf('aws s3 cp'));
  });

  it('a pool with an ECR image: docker, login, pull and logout before the worker starts and the host reports ready', () => {
    const image = '123456789012.dkr.ecr.eu-west-1.amazonaws.com/lab/tools:1.4';
    const text = workerUserData({ ...base, image, gpus: 'all' });
    assert.ok(text.includes(`\nCORRAL_IMAGE=${image}\nCORRAL_GPUS=all\nCORRAL_ENV\n`), text);
    const at = (line: string) => {
      const i = text.indexOf(line);
      assert.ok(i > 0, `missing: ${line}`);
      return i;
    };
    const order = [
      at('corral worker --check'),
      at('command -v docker >/dev/null || corral_retry dnf install -y docker'),
      at('systemctl enable --now docker'),
      // what needs the registry is retried: the host's network may come up after boot
      at(
        `corral_retry bash -o pipefail -c ${shellQuote("aws ecr get-login-password --region 'eu-west-1' | docker login --username AWS --password-stdin '123456789012.dkr.ecr.eu-west-1.amazonaws.com'")}`,
      ),
      at(`corral_retry docker pull '${image}'`),
      at("docker logout '123456789012.dkr.ecr.eu-west-1.amazonaws.com'"),
      at('useradd --system'),
      at('usermod -aG docker corral'),
      at('systemctl enable --now corral-worker.service'),
      at('corral_signal 0 "corral worker started"'),
    ];
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
    );
  });

  it('an image of another registry is pulled without a login; GPUs only reach containers of an image pool', () => {
    const text = workerUserData({ ...base, image: 'tensorflow/tensorflow:latest-gpu', gpus: 'all' });
    assert.match(text, /docker pull 'tensorflow\/tensorflow:latest-gpu'/);
    assert.doesNotMatch(text, /docker login|ecr get-login-password|docker logout/);
    const plain = workerUserData({ ...base, gpus: 'all' });
    assert.doesNotMatch(plain, /CORRAL_GPUS|CORRAL_IMAGE|docker/);
  });

  it('ecrImageOf: registry, repository and its ARN from tags, digests, nested names and partitions', () => {
    assert.deepEqual(ecrImageOf('123456789012.dkr.ecr.us-east-1.amazonaws.com/lab/tools:1.4'), {
      registry: '123456789012.dkr.ecr.us-east-1.amazonaws.com',
      account: '123456789012',
      region: 'us-east-1',
      partition: 'aws',
      repository: 'lab/tools',
      repositoryArn: 'arn:aws:ecr:us-east-1:123456789012:repository/lab/tools',
    });
    const arn = (i: string) => ecrImageOf(i)?.repositoryArn;
    assert.equal(
      arn(`123456789012.dkr.ecr.eu-west-1.amazonaws.com/worker@sha256:${'a'.repeat(64)}`),
      'arn:aws:ecr:eu-west-1:123456789012:repository/worker',
    );
    assert.equal(
      arn('123456789012.dkr.ecr.eu-west-1.amazonaws.com/a/b/c:v1@sha256:ff'),
      'arn:aws:ecr:eu-west-1:123456789012:repository/a/b/c',
    );
    assert.equal(
      arn('123456789012.dkr.ecr.eu-west-1.amazonaws.com/worker'),
      'arn:aws:ecr:eu-west-1:123456789012:repository/worker',
    );
    assert.equal(
      arn('123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/w:1'),
      'arn:aws-cn:ecr:cn-north-1:123456789012:repository/w',
    );
    assert.equal(
      arn('123456789012.dkr.ecr.us-gov-west-1.amazonaws.com/w:1'),
      'arn:aws-us-gov:ecr:us-gov-west-1:123456789012:repository/w',
    );
    for (const other of ['nginx:1.27', 'registry.example.com:5000/lab/tools:1', 'public.ecr.aws/lab/tools:1'])
      assert.equal(ecrImageOf(other), undefined, other);
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
    assert.doesNotMatch(text, /docker login/, 'not an ECR image');
  });

  it('a named instance with an ECR image logs in to its registry before docker run', () => {
    const image = '123456789012.dkr.ecr.us-east-1.amazonaws.com/svc/api:2';
    const text = instanceUserData({ name: 'api', clusterName: 'c', role: 'custom', image });
    const login = text.indexOf(
      `corral_retry bash -o pipefail -c ${shellQuote("aws ecr get-login-password --region 'us-east-1' | docker login --username AWS --password-stdin '123456789012.dkr.ecr.us-east-1.amazonaws.com'")}`,
    );
    const pull = text.indexOf(`corral_retry docker pull '${image}'`);
    const run = text.indexOf(`docker run -d --restart always --network host --name 'api' '${image}'`);
    assert.ok(login > 0 && pull > login && run > pull, text);
    assert.ok(text.indexOf('corral_retry() {') < login);
    assert.ok(text.indexOf("docker logout '123456789012.dkr.ecr.us-east-1.amazonaws.com'") > run);
  });
});

describe('physical names', () => {
  /** Every literal physical name in a template, as `Type Property value`. */
  function physicalNames(spec: ClusterSpecInput, baseDir: string): string[] {
    const t = synthCluster(defineCluster(spec), { baseDir }).template as { Resources: Resources };
    const named = [
      'LaunchTemplateName',
      'KeyName',
      'DashboardName',
      'LogGroupName',
      'QueueName',
      'BucketName',
    ];
    return Object.values(t.Resources).flatMap((r) =>
      Object.entries(r.Properties ?? {})
        .filter(([k, v]) => named.includes(k) && typeof v === 'string')
        .map(([k, v]) => `${r.Type} ${k} ${v as string}`),
    );
  }

  it('two clusters in one account share no physical name; a new public key gets a new key pair name', () => {
    // GIVEN two clusters, each with a named instance `master` and an imported key
    const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-names-'));
    writeFileSync(
      path.join(dir, 'a.pub'),
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1c2bWq7o9wB8x0c1Q5oK4nR5mZ1yFq0bJ0yJ7b8c9d a\n',
    );
    writeFileSync(
      path.join(dir, 'b.pub'),
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ2d3cXr8p0xC9y1d2R6pL5oS6nA2zGr1cK1zK8c9d0e b\n',
    );
    const cluster = (name: string, region: string, key: string): ClusterSpecInput => ({
      name,
      region,
      network: { azs: [`${region}a`] },
      access: { adminCidr: '203.0.113.7/32', keyPair: { publicKeyFile: key } },
      instances: [{ name: 'master' }],
    });
    // WHEN
    const one = physicalNames(cluster('one', 'us-east-1', 'a.pub'), dir);
    const two = physicalNames(cluster('two', 'us-east-1', 'a.pub'), dir);
    const oneElsewhere = physicalNames(cluster('one', 'eu-west-1', 'a.pub'), dir);
    const rotated = physicalNames(cluster('one', 'us-east-1', 'b.pub'), dir);
    // THEN names are per cluster; the dashboard (global to the account) also per region
    assert.ok(one.some((n) => n.startsWith('AWS::EC2::LaunchTemplate')));
    assert.deepEqual(
      one.filter((n) => two.includes(n)),
      [],
    );
    assert.deepEqual(
      one.filter((n) => n.startsWith('AWS::CloudWatch::Dashboard') && oneElsewhere.includes(n)),
      [],
    );
    // and a rotated key is a key pair of another name, so its replacement can be created first
    const keyName = (names: string[]) => names.find((n) => n.startsWith('AWS::EC2::KeyPair'));
    assert.match(keyName(one) ?? '', /KeyName corral-one-[0-9a-f]{8}$/);
    assert.notEqual(keyName(one), keyName(rotated));
  });
});

describe('public pools', () => {
  it('a pool in a public subnet gives its hosts a public address; a private pool does not', () => {
    // GIVEN
    const t = Template.fromJSON(
      synthCluster(
        defineCluster({
          name: 'pub',
          region: 'us-east-1',
          network: { azs: ['us-east-1a'] },
          pools: [
            { name: 'out', instanceTypes: ['t3.small'], subnet: 'public' },
            { name: 'in', instanceTypes: ['t3.small'] },
          ],
        }),
      ).template,
    );
    // WHEN
    const interfacesOf = (pool: string) => {
      const [, lt] = Object.entries(t.findResources('AWS::EC2::LaunchTemplate')).find(([id]) =>
        id.startsWith(`Pool${pool}LaunchTemplate`),
      )!;
      return (
        lt.Properties as {
          LaunchTemplateData: { NetworkInterfaces?: { AssociatePublicIpAddress?: boolean }[] };
        }
      ).LaunchTemplateData.NetworkInterfaces;
    };
    // THEN
    assert.equal(interfacesOf('out')?.[0]?.AssociatePublicIpAddress, true);
    assert.equal(interfacesOf('in'), undefined);
  });
});

describe('retained buckets', () => {
  it('a bucket down keeps carries corral:retain, so gc keeps it too; a destroyed one does not', () => {
    const tagsOfBuckets = (removalPolicy: 'retain' | 'destroy') => {
      const t = Template.fromJSON(
        synthCluster(defineCluster({ ...lean, name: `b-${removalPolicy}`, bucket: { removalPolicy } }))
          .template,
      );
      return Object.values(t.findResources('AWS::S3::Bucket') as Resources).map((b) =>
        ((b.Properties.Tags ?? []) as { Key: string; Value: string }[]).find((x) => x.Key === RETAIN_TAG),
      );
    };
    const kept = tagsOfBuckets('retain');
    assert.equal(kept.length, 2);
    assert.ok(kept.every((tag) => tag?.Value === 'true'));
    assert.ok(tagsOfBuckets('destroy').every((tag) => tag === undefined));
  });
});
