import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { ECR_LOGIN_ACTION, UNSCOPED_ACTIONS } from '../src/infra/instance-role.js';
import { type PlanReport, planFromSynth, type SynthesizedCluster, synthCluster } from '../src/infra/plan.js';
import { SCALE_IN_DESCRIBE_ACTIONS } from '../src/infra/worker-pool.js';
import { type ClusterSpec, loadClusterFile } from '../src/spec/cluster.js';

const DIR = path.join(import.meta.dirname, '..', 'examples', 'clusters');
const FILES = readdirSync(DIR).filter((f) => f.endsWith('.yaml'));

/**
 * Actions a capacity: ecs pool grants on `*` so that the ECS agent registers its hosts in the
 * pool's ECS cluster (ecs:Poll and ecs:StartTelemetrySession conditioned on that cluster).
 */
const ECS_AGENT_ACTIONS = ['ecs:DiscoverPollEndpoint', 'ecs:Poll', 'ecs:StartTelemetrySession'];

interface Example {
  file: string;
  spec: ClusterSpec;
  synth: SynthesizedCluster;
  template: Template;
  plan: PlanReport;
}

// One synthesis and one cdk-nag run per example, shared by every assertion below.
const examples: Example[] = [];
before(() => {
  for (const file of FILES) {
    const spec = loadClusterFile(path.join(DIR, file));
    const synth = synthCluster(spec);
    examples.push({
      file,
      spec,
      synth,
      template: Template.fromJSON(synth.template),
      plan: planFromSynth(spec, synth),
    });
  }
});

describe('examples/clusters', () => {
  it('has at least 7 examples', () => assert.ok(FILES.length >= 7, FILES.join(', ')));

  it('deploy side by side in one account: no two routes into one peer route table for the same block, no shared stack', () => {
    // routes each example adds to route tables outside its stack (the peer VPC's), by table and destination
    const outside = examples.flatMap((e) =>
      Object.values(e.synth.template.Resources ?? {})
        .filter((r) => r.Type === 'AWS::EC2::Route' && typeof r.Properties?.RouteTableId === 'string')
        .map((r) => ({
          file: e.file,
          key: `${e.spec.region} ${r.Properties!.RouteTableId} ${r.Properties!.DestinationCidrBlock}`,
        })),
    );
    assert.ok(outside.length > 0, 'the peering examples route back from a peer table');
    const seen = new Map<string, string>();
    for (const { file, key } of outside) {
      assert.ok(
        !seen.has(key) || seen.get(key) === file,
        `${file} and ${seen.get(key)} both add the route ${key}`,
      );
      seen.set(key, file);
    }
    const stacks = examples.map((e) => `${e.spec.region} ${e.spec.name}`);
    assert.equal(new Set(stacks).size, stacks.length);
  });

  it('covers every seed with a header naming what it replaces', () => {
    const headers = FILES.map((f) =>
      readFileSync(path.join(DIR, f), 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('#'))
        .join('\n'),
    );
    for (const seed of ['seed 000', 'seed 001', 'seed 002', 'seed 003', 'seed 004']) {
      assert.ok(
        headers.some((h) => h.includes(seed) && /replaces|variant/i.test(h)),
        `no example replaces ${seed}`,
      );
    }
    for (const [i, h] of headers.entries())
      assert.match(h, /replaces|variant of/, `${FILES[i]} has no header`);
  });

  it('every example synthesizes and passes cdk-nag with 0 unsuppressed errors and within limits', () => {
    for (const e of examples) {
      assert.equal(e.plan.nag.errors, 0, `${e.file}: ${e.plan.problems.join('; ')}`);
      assert.ok(e.plan.ok, `${e.file}: ${e.plan.problems.join('; ')}`);
      assert.ok(e.plan.resources.total <= 500);
      for (const f of e.plan.nag.findings.filter((x) => x.suppressed))
        assert.ok((f.reason ?? '').length >= 10);
    }
  });

  it('no ingress from 0.0.0.0/0 or ::/0; SSH only from adminCidr; 80/443 only from the SG itself or a peer', () => {
    for (const e of examples) {
      for (const r of e.plan.ingress) {
        assert.ok(!['cidr:0.0.0.0/0', 'cidr:::/0'].includes(r.source), `${e.file}: ${JSON.stringify(r)}`);
        if (r.fromPort !== undefined && r.fromPort <= 22 && (r.toPort ?? 0) >= 22) {
          assert.equal(r.source, `cidr:${e.spec.access.adminCidr}`, `${e.file}: SSH from ${r.source}`);
        }
        if (r.fromPort === 80 || r.fromPort === 443) {
          const peers = e.spec.peering.map((p) => `cidr:${p.cidr}`);
          assert.ok(
            r.source === 'sg:self' || peers.includes(r.source),
            `${e.file}: ${r.fromPort} from ${r.source}`,
          );
        }
        assert.notEqual(r.protocol, '-1', `${e.file}: all-protocol ingress`);
      }
      const ssh = e.plan.ingress.filter((r) => r.fromPort === 22);
      assert.equal(ssh.length, e.spec.access.adminCidr ? 1 : 0, e.file);
    }
  });

  it('every launch template and instance requires IMDSv2', () => {
    for (const e of examples) {
      const lts = e.template.findResources('AWS::EC2::LaunchTemplate');
      assert.ok(Object.keys(lts).length > 0, e.file);
      for (const [id, lt] of Object.entries(lts)) {
        assert.equal(
          lt.Properties.LaunchTemplateData.MetadataOptions?.HttpTokens,
          'required',
          `${e.file} ${id}`,
        );
      }
      const instances = e.template.findResources('AWS::EC2::Instance');
      for (const [id, inst] of Object.entries(instances)) {
        // ec2.Instance with requireImdsv2 attaches a launch template that carries HttpTokens: required.
        assert.ok(
          inst.Properties.LaunchTemplate,
          `${e.file}: instance ${id} without its IMDSv2 launch template`,
        );
      }
    }
  });

  it('the bucket blocks public access, is encrypted and denies non-TLS requests', () => {
    for (const e of examples) {
      e.template.allResourcesProperties('AWS::S3::Bucket', {
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
        },
      });
      const policies = e.template.findResources('AWS::S3::BucketPolicy');
      assert.equal(
        Object.keys(policies).length,
        Object.keys(e.template.findResources('AWS::S3::Bucket')).length,
      );
      e.template.allResourcesProperties('AWS::S3::BucketPolicy', {
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

  it('IAM statements use no * resource except where AWS requires it, and none allows s3:* on *', () => {
    const allowed = new Set([
      ...UNSCOPED_ACTIONS,
      ...SCALE_IN_DESCRIBE_ACTIONS,
      ...ECS_AGENT_ACTIONS,
      ECR_LOGIN_ACTION,
    ]);
    for (const e of examples) {
      for (const s of e.plan.iam.filter((x) => x.kind === 'identity' && x.effect === 'Allow')) {
        if (s.resources.includes('*')) {
          for (const a of s.actions) assert.ok(allowed.has(a), `${e.file}: ${s.policy} allows ${a} on *`);
        }
        assert.ok(
          !(s.actions.some((a) => a === 's3:*' || a === '*') && s.resources.includes('*')),
          `${e.file}: ${s.policy}`,
        );
        assert.ok(!s.actions.includes('*'), `${e.file}: ${s.policy} allows *`);
      }
    }
  });

  it('pools with an image run the corral worker on the host and pull the image before they report ready; no ECS service', () => {
    for (const e of examples) {
      e.template.resourceCountIs('AWS::ECS::Service', 0);
      e.template.resourceCountIs('AWS::ECS::TaskDefinition', 0);
      e.template.resourceCountIs('AWS::ECS::CapacityProvider', 0);
      const lts = e.template.findResources('AWS::EC2::LaunchTemplate');
      for (const p of e.spec.pools) {
        const [, lt] = Object.entries(lts).find(([id]) =>
          id.startsWith(`Pool${p.name.replace(/-/g, '')}LaunchTemplate`),
        )!;
        const text = JSON.stringify(lt.Properties.LaunchTemplateData.UserData);
        assert.match(text, /ExecStart=\/usr\/local\/bin\/corral worker/, `${e.file} ${p.name}`);
        assert.equal(/ECS_CLUSTER=/.test(text), p.capacity === 'ecs', `${e.file} ${p.name}`);
        if (!p.image) continue;
        assert.ok(text.includes(`CORRAL_IMAGE=${p.image}`), `${e.file} ${p.name}`);
        const pull = text.indexOf(`docker pull '${p.image}'`);
        assert.ok(
          pull > 0 && pull < text.indexOf('corral_signal 0 \\"corral worker started\\"'),
          `${e.file} ${p.name}`,
        );
        assert.equal(text.includes('CORRAL_GPUS=all'), p.gpu, `${e.file} ${p.name}: GPUs for the containers`);
        assert.equal(
          lt.Properties.LaunchTemplateData.MetadataOptions.HttpPutResponseHopLimit,
          1,
          `${e.file} ${p.name}`,
        );
      }
    }
  });

  it('every pool host and coordinator installs the worker artifact by its sha256; no host installs corral from a registry', () => {
    for (const e of examples) {
      const sha = e.plan.workerArtifact.sha256;
      assert.match(sha, /^[0-9a-f]{64}$/);
      const text = JSON.stringify(e.synth.template);
      assert.doesNotMatch(text, /npm (install|i) |npx |corral@/, `${e.file}: a registry install`);
      const res = Object.values(e.synth.template.Resources);
      const launchTemplates = res.filter(
        (r) =>
          r.Type === 'AWS::EC2::LaunchTemplate' &&
          (r.Properties?.LaunchTemplateData as { UserData?: unknown } | undefined)?.UserData !== undefined,
      );
      assert.equal(launchTemplates.length, e.spec.pools.length, e.file);
      const coordinators = e.spec.instances.filter((i) => i.role === 'coordinator').length;
      const pinned = res.filter(
        (r) =>
          (r.Type === 'AWS::EC2::LaunchTemplate' || r.Type === 'AWS::EC2::Instance') &&
          JSON.stringify(r.Properties).includes(`${sha}  /var/lib/corral-boot/corral.tgz`),
      );
      assert.equal(
        pinned.length,
        e.spec.pools.length + coordinators,
        `${e.file}: hosts that pin the artifact`,
      );
      // every pool rolls its hosts when the artifact changes, waiting for their signals
      for (const g of res.filter((r) => r.Type === 'AWS::AutoScaling::AutoScalingGroup')) {
        const update = (
          g as { UpdatePolicy?: { AutoScalingRollingUpdate?: { WaitOnResourceSignals?: boolean } } }
        ).UpdatePolicy?.AutoScalingRollingUpdate;
        assert.equal(update?.WaitOnResourceSignals, true, `${e.file}: rolling update`);
      }
    }
  });

  it('tags everything with corral:cluster and the spec tags', () => {
    for (const e of examples) {
      e.template.allResourcesProperties('AWS::EC2::VPC', {
        Tags: Match.arrayWith([{ Key: 'corral:cluster', Value: e.spec.name }]),
      });
      e.template.allResourcesProperties('AWS::S3::Bucket', {
        Tags: Match.arrayWith([{ Key: 'corral:cluster', Value: e.spec.name }]),
      });
      e.template.allResourcesProperties('AWS::SQS::Queue', {
        Tags: Match.arrayWith([{ Key: 'corral:cluster', Value: e.spec.name }]),
      });
      for (const [k, v] of Object.entries(e.spec.tags)) {
        e.template.allResourcesProperties('AWS::IAM::Role', {
          Tags: Match.arrayWith([{ Key: k, Value: v }]),
        });
      }
    }
  });

  it('exposes the outputs the AWS runtime reads', () => {
    for (const e of examples) {
      for (const o of ['QueueUrl', 'DeadLetterQueueUrl', 'BucketName', 'Region', 'LogGroupName']) {
        assert.ok(e.plan.outputs.includes(o), `${e.file}: missing output ${o}`);
      }
    }
  });

  it('private-ec2: 3 named instances over 2 AZs with Elastic IPs and one coordinator', () => {
    const e = examples.find((x) => x.file === 'private-ec2.yaml')!;
    e.template.resourceCountIs('AWS::EC2::Instance', 3);
    e.template.resourceCountIs('AWS::EC2::EIP', 3);
    e.template.resourceCountIs('AWS::EC2::EIPAssociation', 3);
    e.template.resourceCountIs('AWS::EC2::KeyPair', 1);
    const azs = new Set(
      Object.values(e.template.findResources('AWS::EC2::Instance')).map((i) => i.Properties.AvailabilityZone),
    );
    assert.deepEqual([...azs].sort(), ['us-east-1a', 'us-east-1b']);
    const instances = Object.values(e.template.findResources('AWS::EC2::Instance')).map((i) =>
      JSON.stringify(i.Properties.UserData),
    );
    assert.ok(instances.every((u) => /docker run -d --restart always/.test(u)));
    // one coordinator: the only instance with the cluster's outputs and a readiness signal
    assert.equal(instances.filter((u) => /coordinator\.env/.test(u)).length, 1);
    assert.equal(instances.filter((u) => /cfn-signal/.test(u)).length, 1);
    assert.equal(
      Object.values(e.template.findResources('AWS::EC2::Instance')).filter((i) => i.CreationPolicy).length,
      1,
    );
  });
});
