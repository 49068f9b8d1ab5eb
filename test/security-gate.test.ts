import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { UNSCOPED_ACTIONS } from '../src/infra/instance-role.js';
import { type PlanReport, planFromSynth, synthCluster } from '../src/infra/plan.js';
import { SCALE_IN_DESCRIBE_ACTIONS } from '../src/infra/worker-pool.js';
import { type ClusterSpec, loadClusterFile } from '../src/spec/cluster.js';

/**
 * The security gate: every cluster example and a maximal spec (every feature on) pass cdk-nag
 * AwsSolutions with 0 unsuppressed errors and every suppression has a reason, and the synthesized
 * templates hold the invariants below. One synthesis per spec, shared by every assertion.
 */
const EXAMPLES = path.join(import.meta.dirname, '..', 'examples', 'clusters');
const SPECS = [
  ...readdirSync(EXAMPLES)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => path.join(EXAMPLES, f)),
  path.join(import.meta.dirname, 'fixtures', 'maximal-cluster.yaml'),
];

/** Actions that aws-cdk-lib's ECS capacity provider grants on `*` (the ECS agent needs them). */
const ECS_AGENT_ACTIONS = [
  'ecs:DiscoverPollEndpoint',
  'ecr:GetAuthorizationToken',
  'logs:CreateLogStream',
  'logs:PutLogEvents',
  'ecs:Poll',
  'ecs:StartTelemetrySession',
];

interface Synth {
  file: string;
  spec: ClusterSpec;
  template: Template;
  json: { Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }> };
  plan: PlanReport;
}

const all: Synth[] = [];
before(() => {
  for (const p of SPECS) {
    const spec = loadClusterFile(p);
    const synth = synthCluster(spec);
    all.push({
      file: path.basename(p),
      spec,
      template: Template.fromJSON(synth.template),
      json: synth.template as Synth['json'],
      plan: planFromSynth(spec, synth),
    });
  }
});

const ofType = (s: Synth, type: string) =>
  Object.entries(s.json.Resources).filter(([, r]) => r.Type === type);

describe('security gate', () => {
  it('covers every example and the maximal spec (which has every feature on)', () => {
    assert.ok(all.length >= 8, `${all.length} specs`);
    const max = all.find((s) => s.file === 'maximal-cluster.yaml')!;
    assert.ok(max.spec.network.azs.length >= 3);
    assert.ok(max.spec.instances.length >= 2 && max.spec.pools.length >= 3);
    assert.ok(max.spec.pools.some((p) => p.capacity === 'ecs'));
    assert.ok(max.spec.database && max.spec.peering.length >= 2 && max.spec.monitoring.alarmEmail);
    assert.ok(max.spec.bucket.versioned);
    assert.ok(
      max.spec.dataBuckets.some((d) => d.includes('/')) && max.spec.dataBuckets.some((d) => !d.includes(':')),
    );
    for (const type of ['AWS::RDS::DBInstance', 'AWS::EC2::VPCPeeringConnection', 'AWS::SNS::Subscription']) {
      assert.ok(ofType(max, type).length > 0, `no ${type}`);
    }
  });

  it('cdk-nag AwsSolutions: 0 unsuppressed errors, every suppression with a reason', () => {
    for (const s of all) {
      assert.equal(s.plan.nag.errors, 0, `${s.file}: ${s.plan.problems.join('; ')}`);
      assert.ok(s.plan.ok, `${s.file}: ${s.plan.problems.join('; ')}`);
      for (const f of s.plan.nag.findings.filter((x) => x.suppressed)) {
        assert.ok((f.reason ?? '').trim().length >= 10, `${s.file}: ${f.rule} suppressed without a reason`);
      }
    }
  });

  it('no ingress from 0.0.0.0/0 or ::/0 (security groups and inline rules)', () => {
    for (const s of all) {
      for (const r of s.plan.ingress) {
        assert.ok(!['cidr:0.0.0.0/0', 'cidr:::/0'].includes(r.source), `${s.file}: ${JSON.stringify(r)}`);
      }
      // the raw template too, in case a rule escaped the plan's view
      for (const [id, sg] of ofType(s, 'AWS::EC2::SecurityGroup')) {
        for (const rule of (sg.Properties?.SecurityGroupIngress as Array<Record<string, unknown>>) ?? []) {
          assert.ok(rule.CidrIp !== '0.0.0.0/0' && rule.CidrIpv6 !== '::/0', `${s.file} ${id}`);
        }
      }
      for (const [id, rule] of ofType(s, 'AWS::EC2::SecurityGroupIngress')) {
        assert.ok(
          rule.Properties?.CidrIp !== '0.0.0.0/0' && rule.Properties?.CidrIpv6 !== '::/0',
          `${s.file} ${id}`,
        );
      }
    }
  });

  it('IMDSv2 is required on every launch template and instance', () => {
    for (const s of all) {
      const lts = ofType(s, 'AWS::EC2::LaunchTemplate');
      assert.ok(lts.length > 0, s.file);
      for (const [id, lt] of lts) {
        const data = lt.Properties?.LaunchTemplateData as { MetadataOptions?: { HttpTokens?: string } };
        assert.equal(data.MetadataOptions?.HttpTokens, 'required', `${s.file} ${id}`);
      }
      for (const [id, inst] of ofType(s, 'AWS::EC2::Instance')) {
        assert.ok(
          inst.Properties?.LaunchTemplate,
          `${s.file}: instance ${id} without its IMDSv2 launch template`,
        );
      }
    }
  });

  it('buckets block public access, are encrypted and deny non-TLS requests', () => {
    for (const s of all) {
      s.template.allResourcesProperties('AWS::S3::Bucket', {
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        BucketEncryption: { ServerSideEncryptionConfiguration: Match.anyValue() },
      });
      assert.equal(ofType(s, 'AWS::S3::BucketPolicy').length, ofType(s, 'AWS::S3::Bucket').length, s.file);
      s.template.allResourcesProperties('AWS::S3::BucketPolicy', {
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Effect: 'Deny',
              Action: 's3:*',
              Condition: { Bool: { 'aws:SecureTransport': 'false' } },
            }),
          ]),
        },
      });
    }
  });

  it('encryption at rest everywhere: queues, database, EBS volumes', () => {
    for (const s of all) {
      for (const [id, q] of ofType(s, 'AWS::SQS::Queue')) {
        assert.ok(
          q.Properties?.SqsManagedSseEnabled === true || q.Properties?.KmsMasterKeyId,
          `${s.file} ${id}`,
        );
      }
      for (const [id, db] of ofType(s, 'AWS::RDS::DBInstance')) {
        assert.equal(db.Properties?.StorageEncrypted, true, `${s.file} ${id}`);
        assert.equal(db.Properties?.PubliclyAccessible, false, `${s.file} ${id}`);
      }
      const volumes = [
        ...ofType(s, 'AWS::EC2::Instance').map(([id, r]) => [id, r.Properties?.BlockDeviceMappings] as const),
        ...ofType(s, 'AWS::EC2::LaunchTemplate').map(
          ([id, r]) =>
            [
              id,
              (r.Properties?.LaunchTemplateData as { BlockDeviceMappings?: unknown } | undefined)
                ?.BlockDeviceMappings,
            ] as const,
        ),
      ];
      for (const [id, mappings] of volumes) {
        for (const m of (mappings as Array<{ Ebs?: { Encrypted?: boolean } }>) ?? []) {
          if (m.Ebs) assert.equal(m.Ebs.Encrypted, true, `${s.file} ${id}: unencrypted EBS volume`);
        }
      }
    }
  });

  it('dataBuckets grant only s3:GetObject and s3:ListBucket, on exactly the written buckets and prefixes', () => {
    for (const s of all.filter((x) => x.spec.dataBuckets.length > 0)) {
      const written = s.spec.dataBuckets.map((d) => (d.startsWith('arn:') ? d : `arn:aws:s3:::${d}`));
      const statements = s.plan.iam.filter((x) => x.policy.includes('DataBuckets'));
      const roles = new Set(statements.map((x) => x.policy.replace(/DataBuckets.*$/, '')));
      assert.equal(roles.size, s.spec.pools.length + (s.spec.instances.length > 0 ? 1 : 0), s.file);
      for (const st of statements) {
        assert.equal(st.effect, 'Allow');
        assert.equal(st.actions.length, 1, `${s.file}: ${st.actions}`);
        for (const r of st.resources) {
          if (st.actions[0] === 's3:ListBucket')
            assert.ok(
              written.some((w) => w === r || w.startsWith(`${r}/`)),
              `${s.file}: list ${r}`,
            );
          else {
            assert.equal(st.actions[0], 's3:GetObject', s.file);
            assert.ok(
              written.some((w) => `${w.replace(/\/$/, '')}/*` === r),
              `${s.file}: read ${r}`,
            );
          }
        }
      }
    }
  });

  it('IAM statements with a * resource only for actions AWS cannot scope; never * actions', () => {
    const allowed = new Set([...UNSCOPED_ACTIONS, ...SCALE_IN_DESCRIBE_ACTIONS, ...ECS_AGENT_ACTIONS]);
    for (const s of all) {
      for (const st of s.plan.iam.filter((x) => x.kind === 'identity' && x.effect === 'Allow')) {
        if (st.resources.includes('*')) {
          for (const a of st.actions) assert.ok(allowed.has(a), `${s.file}: ${st.policy} allows ${a} on *`);
        }
        assert.ok(
          !st.actions.some((a) => a === '*' || a.endsWith(':*')),
          `${s.file}: ${st.policy} ${st.actions}`,
        );
      }
    }
  });
});
