import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { ClusterStack } from '../src/infra/cluster-stack.js';
import { archOf, machineImageFor } from '../src/infra/machine-image.js';
import { defineCluster } from '../src/spec/cluster.js';

/** The SSM parameter names a launch template of this image resolves its AMI from (not CDK's own). */
function ssmParametersOf(o: Parameters<typeof machineImageFor>[0]): string[] {
  const app = new App({ analyticsReporting: false });
  const stack = new Stack(app, 'Image', { env: { account: '123456789012', region: 'us-east-1' } });
  new ec2.LaunchTemplate(stack, 'LaunchTemplate', { machineImage: machineImageFor(o) });
  const params = Template.fromStack(stack).toJSON().Parameters as Record<
    string,
    { Type: string; Default?: string }
  >;
  return Object.values(params)
    .filter((p) => p.Type.startsWith('AWS::SSM::Parameter::Value'))
    .map((p) => p.Default ?? '')
    .filter((name) => !name.startsWith('/cdk-bootstrap/'));
}

describe('machineImageFor', () => {
  it('Graviton types get the arm64 Amazon Linux 2023', () => {
    const names = ssmParametersOf({ instanceTypes: ['c7g.large', 't4g.large'] });
    assert.equal(names.length, 1, names.join(', '));
    assert.match(names[0]!, /^\/aws\/service\/ami-amazon-linux-latest\/al2023-ami-.*arm64$/);
  });

  it('x86 types get the x86_64 Amazon Linux 2023', () => {
    const names = ssmParametersOf({ instanceTypes: ['c7i.large', 'm7i.large'] });
    assert.equal(names.length, 1, names.join(', '));
    assert.match(names[0]!, /^\/aws\/service\/ami-amazon-linux-latest\/al2023-ami-.*x86_64$/);
    assert.doesNotMatch(names[0]!, /arm64/);
  });

  it('ECS pools get the ECS-optimized AL2023: ARM64 for Graviton, standard for x86', () => {
    const arm = ssmParametersOf({ instanceTypes: ['c7g.large'], ecs: true });
    assert.deepEqual(arm, ['/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id']);
    const x86 = ssmParametersOf({ instanceTypes: ['c7i.large'], ecs: true });
    assert.deepEqual(x86, ['/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id']);
  });

  it('GPU pools get the ECS GPU-optimized AL2023, with or without ECS', () => {
    for (const ecs of [false, true]) {
      const names = ssmParametersOf({ instanceTypes: ['g5.xlarge', 'g4dn.xlarge'], gpu: true, ecs });
      assert.deepEqual(names, ['/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id']);
    }
  });

  it('throws for arm64 GPU types and for mixed architectures', () => {
    assert.throws(() => machineImageFor({ instanceTypes: ['g5g.xlarge'], gpu: true }), /arm64/);
    assert.throws(() => machineImageFor({ instanceTypes: ['c7g.large', 'c7i.large'] }), /mix x86_64/);
  });
});

describe('archOf', () => {
  it('is the one architecture of the types, and throws when they mix or are none', () => {
    assert.equal(archOf(['c7g.large', 'm7g.large', 'g5g.xlarge']), 'arm64');
    assert.equal(archOf(['g5.xlarge', 'c7a.large', 't3.small']), 'x86_64');
    assert.throws(() => archOf(['t4g.small', 't3.small']), /x86_64 \(t3\.small\) and arm64 \(t4g\.small\)/);
    assert.throws(() => archOf([]), /no instance types/);
  });
});

describe('a cluster stack', () => {
  it('gives an arm64 pool and an arm64 coordinator arm64 images, and an x86 pool x86_64', () => {
    const spec = defineCluster({
      name: 'arch',
      region: 'us-east-1',
      network: { azs: ['us-east-1a'] },
      instances: [{ name: 'coord', type: 't4g.small', az: 'us-east-1a', role: 'coordinator' }],
      pools: [
        { name: 'arm', instanceTypes: ['c7g.large', 'm7g.large'] },
        { name: 'x86', instanceTypes: ['c7i.large'] },
      ],
    });
    const app = new App({ analyticsReporting: false });
    const stack = new ClusterStack(app, 'corral-arch', {
      spec,
      env: { account: '123456789012', region: 'us-east-1' },
    });
    const t = Template.fromStack(stack).toJSON() as {
      Parameters: Record<string, { Default?: string }>;
      Resources: Record<string, { Type: string; Properties: Record<string, unknown> }>;
    };
    // the SSM parameter an image id refers to ({ Ref: ParameterName })
    const imageOf = (v: unknown) => t.Parameters[(v as { Ref: string }).Ref]!.Default!;
    const launchTemplates = Object.entries(t.Resources).filter(
      ([, r]) => r.Type === 'AWS::EC2::LaunchTemplate',
    );
    const pool = (name: string) =>
      launchTemplates.find(([id]) => id.startsWith(`Pool${name}`))![1].Properties.LaunchTemplateData as {
        ImageId: unknown;
      };
    assert.match(imageOf(pool('arm').ImageId), /al2023-ami-kernel-.*-arm64$/);
    assert.match(imageOf(pool('x86').ImageId), /al2023-ami-kernel-.*-x86_64$/);
    const coord = Object.values(t.Resources).find((r) => r.Type === 'AWS::EC2::Instance')!;
    assert.match(imageOf(coord.Properties.ImageId), /al2023-ami-kernel-.*-arm64$/);
  });
});
