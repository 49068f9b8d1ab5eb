import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  type ClusterSpecInput,
  defineCluster,
  loadClusterFile,
  parseDataBucket,
} from '../src/spec/cluster.js';
import { UsageError } from '../src/spec/errors.js';

const base: ClusterSpecInput = {
  name: 'demo',
  region: 'us-east-1',
  network: { azs: ['us-east-1a', 'us-east-1b'] },
};

function refused(spec: unknown, field: RegExp): UsageError {
  try {
    defineCluster(spec as ClusterSpecInput);
  } catch (err) {
    assert.ok(err instanceof UsageError, `expected UsageError, got ${err}`);
    assert.match(err.field, field);
    return err;
  }
  assert.fail('spec was accepted');
}

describe('cluster spec', () => {
  it('fills defaults and derives one public and one private subnet per AZ', () => {
    // WHEN
    const spec = defineCluster({ ...base, network: { azs: ['us-east-1a', 'us-east-1b', 'us-east-1c'] } });
    // THEN
    assert.equal(spec.network.cidr, '10.0.0.0/16');
    assert.equal(spec.network.natGateways, 0);
    assert.deepEqual(spec.network.privateSubnets, ['10.0.0.0/20', '10.0.16.0/20', '10.0.32.0/20']);
    assert.deepEqual(spec.network.publicSubnets, ['10.0.48.0/24', '10.0.49.0/24', '10.0.50.0/24']);
    assert.equal(spec.backend, 'local');
    assert.equal(spec.bucket.removalPolicy, 'destroy');
    assert.equal(spec.queue.visibilityTimeout, 300_000);
  });

  it('keeps explicit subnets and derives around them', () => {
    const spec = defineCluster({
      ...base,
      network: { azs: ['us-east-1a', 'us-east-1b'], publicSubnets: ['10.0.0.0/24', '10.0.1.0/24'] },
    });
    assert.deepEqual(spec.network.publicSubnets, ['10.0.0.0/24', '10.0.1.0/24']);
    assert.deepEqual(spec.network.privateSubnets, ['10.0.16.0/20', '10.0.32.0/20']);
  });

  it('fills pool defaults: desired = min, gpu inferred from the types', () => {
    const spec = defineCluster({
      ...base,
      pools: [{ name: 'gpu', instanceTypes: ['g5.xlarge', 'g4dn.xlarge'], min: 1 }],
    });
    const pool = spec.pools[0]!;
    assert.equal(pool.desired, 1);
    assert.equal(pool.gpu, true);
    assert.equal(pool.capacity, 'asg');
    assert.equal(pool.spot.allocationStrategy, 'price-capacity-optimized');
    assert.equal(pool.scaling.scaleToZeroAfter, 900_000);
  });

  it('refuses 0.0.0.0/0 and ::/0 as adminCidr, with a fix', () => {
    const err = refused({ ...base, access: { adminCidr: '0.0.0.0/0' } }, /^access\.adminCidr$/);
    assert.match(err.fix ?? '', /\/32/);
    refused({ ...base, access: { adminCidr: '::/0' } }, /^access\.adminCidr$/);
  });

  it('refuses unknown fields anywhere', () => {
    refused({ ...base, colour: 'blue' }, /^colour$/);
    refused({ ...base, pools: [{ name: 'a', instanceTypes: ['t3.small'], maxx: 3 }] }, /^pools\[0\]\.maxx$/);
  });

  it('refuses an instance in an AZ not in network.azs', () => {
    refused({ ...base, instances: [{ name: 'a', az: 'us-east-1f' }] }, /^instances\[0\]\.az$/);
  });

  it('refuses min > max and desired outside min…max', () => {
    refused(
      { ...base, pools: [{ name: 'a', instanceTypes: ['t3.small'], min: 3, max: 2 }] },
      /^pools\[0\]\.min$/,
    );
    refused(
      { ...base, pools: [{ name: 'a', instanceTypes: ['t3.small'], max: 2, desired: 5 }] },
      /^pools\[0\]\.desired$/,
    );
  });

  it('refuses bad CIDRs, subnet count mismatches, overlaps and duplicate names', () => {
    refused({ ...base, network: { azs: ['us-east-1a'], cidr: '10.0.0.1/16' } }, /^network\.cidr$/);
    refused(
      { ...base, network: { azs: ['us-east-1a', 'us-east-1b'], publicSubnets: ['10.0.0.0/24'] } },
      /^network\.publicSubnets$/,
    );
    refused(
      { ...base, network: { azs: ['us-east-1a'], publicSubnets: ['10.9.0.0/24'] } },
      /^network\.publicSubnets\[0\]$/,
    );
    refused(
      { ...base, instances: [{ name: 'x' }], pools: [{ name: 'x', instanceTypes: ['t3.small'] }] },
      /^pools\[0\]\.name$/,
    );
    refused({ ...base, peering: [{ vpcId: 'vpc-01234567', cidr: '10.0.128.0/17' }] }, /^peering\[0\]\.cidr$/);
  });

  it('needs adminCidr for a key pair, an image for ECS pools, a database for backend rds', () => {
    refused({ ...base, access: { keyPair: { name: 'k' } } }, /^access\.adminCidr$/);
    refused(
      { ...base, pools: [{ name: 'a', instanceTypes: ['t3.small'], capacity: 'ecs' }] },
      /^pools\[0\]\.image$/,
    );
    refused({ ...base, backend: 'rds' }, /^backend$/);
    refused({ ...base, instances: [{ name: 'a', elasticIp: true }] }, /^instances\[0\]\.elasticIp$/);
  });

  it('requires a reason of at least 10 characters for each suppression', () => {
    refused(
      { ...base, suppressions: [{ id: 'AwsSolutions-RDS3', reason: 'because' }] },
      /^suppressions\[0\]\.reason$/,
    );
    refused({ ...base, suppressions: [{ id: 'AwsSolutions-RDS3' }] }, /^suppressions\[0\]\.reason$/);
  });

  it('dataBuckets: bucket names and ARN prefixes; wildcards, s3:// URLs, bad names, other partitions refused with a fix', () => {
    assert.deepEqual(defineCluster(base).dataBuckets, []);
    const ok = ['my-data', 'arn:aws:s3:::lab.raw-2/runs/2024', 'arn:aws:s3:::lab-raw/runs/2025/'];
    assert.deepEqual(defineCluster({ ...base, dataBuckets: ok }).dataBuckets, ok);
    assert.deepEqual(parseDataBucket('arn:aws:s3:::lab-raw/runs/2025/'), {
      partition: 'aws',
      bucket: 'lab-raw',
      prefix: 'runs/2025',
    });
    assert.deepEqual(parseDataBucket('my-data'), {
      partition: undefined,
      bucket: 'my-data',
      prefix: undefined,
    });
    const cases: Array<[string, RegExp]> = [
      ['*', /contains a wildcard.*\(fix: write a bucket name/],
      ['arn:aws:s3:::*', /contains a wildcard/],
      ['arn:aws:s3:::lab-raw/runs/*', /contains a wildcard/],
      ['s3://lab-raw/runs/', /is an s3:\/\/ URL \(fix: write arn:aws:s3:::lab-raw\/runs\)/],
      ['s3://lab-raw', /is an s3:\/\/ URL \(fix: write lab-raw\)/],
      ['lab-raw/runs', /names a prefix without the ARN form \(fix: write arn:aws:s3:::lab-raw\/runs/],
      ['My_Data', /"My_Data" is not a valid S3 bucket name \(fix: /],
      ['ab', /not a valid S3 bucket name/],
      ['192.168.1.1', /not a valid S3 bucket name/],
      ['a..b', /not a valid S3 bucket name/],
      ['xn--data', /not a valid S3 bucket name/],
      ['arn:aws:iam::123456789012:role/x', /is not an S3 bucket ARN \(fix: /],
      ['arn:aws:s3:::lab-raw//x', /empty or unprintable part in its prefix/],
      [
        'arn:aws-cn:s3:::lab-raw',
        /is in partition aws-cn but region us-east-1 is in aws \(fix: write arn:aws:s3:::lab-raw/,
      ],
    ];
    for (const [entry, message] of cases) {
      const err = refused({ ...base, dataBuckets: ['fine-bucket', entry] }, /^dataBuckets\[1\]$/);
      assert.match(err.message, message, entry);
    }
    // the partition follows the region
    assert.equal(
      defineCluster({
        ...base,
        region: 'cn-north-1',
        network: { azs: ['cn-north-1a'] },
        dataBuckets: ['arn:aws-cn:s3:::x-data'],
      }).dataBuckets.length,
      1,
    );
  });

  it('loads YAML and points at file:line:col of a bad field', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-spec-'));
    const file = path.join(dir, 'c.yaml');
    writeFileSync(
      file,
      'name: demo\nregion: us-east-1\nnetwork:\n  azs: [us-east-1a]\naccess:\n  adminCidr: 0.0.0.0/0\n',
    );
    try {
      loadClusterFile(file);
      assert.fail('accepted');
    } catch (err) {
      assert.ok(err instanceof UsageError);
      assert.equal(err.field, 'access.adminCidr');
      assert.match(err.location ?? '', /c\.yaml:6:/);
    }
  });
});
