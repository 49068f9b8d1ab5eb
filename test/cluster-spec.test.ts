import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  architectureOf,
  type ClusterSpecInput,
  defineCluster,
  isEcrImage,
  loadClusterFile,
  parseDataBucket,
} from '../src/spec/cluster.js';
import { UsageError } from '../src/spec/errors.js';
import { runCli, tempDir } from './helpers.js';

const base: ClusterSpecInput = {
  name: 'demo',
  region: 'us-east-1',
  network: { azs: ['us-east-1a', 'us-east-1b'] },
};

const ECR = '123456789012.dkr.ecr.us-east-1.amazonaws.com/worker:1';

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
    assert.equal('backend' in spec, false);
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

  it('names the field of every malformed CIDR, with peers present, instead of crashing', () => {
    const peer = { vpcId: 'vpc-01234567', cidr: '172.31.0.0/16' };
    for (const bad of ['10.0.0.0/33', '300.0.0.0/16', '10.0.0.0/-1', '10.0.0.0', 'x']) {
      refused({ ...base, network: { ...base.network, cidr: bad }, peering: [peer] }, /^network\.cidr$/);
      refused({ ...base, peering: [{ ...peer, cidr: bad }] }, /^peering\[0\]\.cidr$/);
      refused({ ...base, peering: [peer, { vpcId: 'vpc-0123456a', cidr: bad }] }, /^peering\[1\]\.cidr$/);
      refused({ ...base, access: { adminCidr: bad } }, /^access\.adminCidr$/);
    }
  });

  it('refuses a database in one availability zone (an RDS subnet group spans two)', () => {
    const err = refused({ ...base, network: { azs: ['us-east-1a'] }, database: {} }, /^database$/);
    assert.match(err.message, /two availability zones/);
    assert.ok(defineCluster({ ...base, database: {} }).database);
  });

  it('needs adminCidr for a key pair and an image for ECS pools; refuses backend, which is gone', () => {
    refused({ ...base, access: { keyPair: { name: 'k' } } }, /^access\.adminCidr$/);
    refused(
      { ...base, pools: [{ name: 'a', instanceTypes: ['t3.small'], capacity: 'ecs' }] },
      /^pools\[0\]\.image$/,
    );
    for (const backend of ['rds', 'local']) {
      const err = refused({ ...base, database: {}, backend } as never, /^backend$/);
      assert.match(err.message, /state in the cluster bucket.*fix: remove backend/);
    }
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

  it('architectureOf: Graviton families are arm64, everything else x86_64', () => {
    const arm = [
      'a1.large',
      'c6g.large',
      'c6gd.xlarge',
      'c6gn.16xlarge',
      'c7g.large',
      'c7gd.large',
      'c7gn.large',
      'c8g.large',
      'm6g.large',
      'm7g.large',
      'm8g.large',
      'r6g.large',
      'r7g.large',
      'r8g.large',
      't4g.small',
      'x2gd.large',
      'im4gn.large',
      'is4gen.large',
      'i4g.large',
      'g5g.xlarge',
      'hpc7g.4xlarge',
      'c7g.metal',
      'mac2-m2pro.metal',
    ];
    const x86 = [
      'g4dn.xlarge',
      'g4ad.xlarge',
      'g5.xlarge',
      'g6.xlarge',
      'g6e.xlarge',
      'gr6.4xlarge',
      'p3.2xlarge',
      'p4d.24xlarge',
      'p5.48xlarge',
      'c7a.large',
      'm7i.large',
      'm7i-flex.large',
      'inf2.xlarge',
      'trn1.2xlarge',
      'trn1n.32xlarge',
      't3.small',
      't3a.small',
      'c5n.large',
      'x2iedn.xlarge',
      'u7i-12tb.224xlarge',
      'u-6tb1.metal',
      'mac1.metal',
      'dl1.24xlarge',
    ];
    for (const t of arm) assert.equal(architectureOf(t), 'arm64', t);
    for (const t of x86) assert.equal(architectureOf(t), 'x86_64', t);
  });

  it('refuses a pool that mixes x86_64 and arm64 types, naming both', () => {
    const err = refused(
      { ...base, pools: [{ name: 'a', instanceTypes: ['c7g.large', 'c7i.large', 't4g.large'] }] },
      /^pools\[0\]\.instanceTypes$/,
    );
    assert.match(
      err.problem,
      /mixes x86_64 and arm64 types \(x86_64: c7i\.large; arm64: c7g\.large, t4g\.large\)/,
    );
    assert.match(err.fix ?? '', /one pool per architecture/);
    // one architecture per pool is fine, either one
    const spec = defineCluster({
      ...base,
      pools: [
        { name: 'arm', instanceTypes: ['c7g.large', 'm7g.large'] },
        { name: 'x86', instanceTypes: ['c7i.large', 'c7a.large'] },
        { name: 'armecs', instanceTypes: ['c7g.large'], capacity: 'ecs', image: ECR },
      ],
    });
    assert.equal(spec.pools.length, 3);
  });

  it('refuses arm64 GPU types (g5g) in a GPU pool, for ecs and asg, with x86 GPU families in the fix', () => {
    for (const capacity of ['ecs', 'asg'] as const) {
      const err = refused(
        { ...base, pools: [{ name: 'g', instanceTypes: ['g5g.xlarge'], capacity, image: ECR }] },
        /^pools\[0\]\.instanceTypes$/,
      );
      assert.match(err.problem, /g5g\.xlarge is an arm64 GPU type/);
      assert.match(err.problem, capacity === 'ecs' ? /no ECS GPU-optimized AMI for arm64/ : /x86_64 only/);
      assert.match(err.fix ?? '', /g4dn, g5, g6/);
    }
    refused(
      { ...base, pools: [{ name: 'g', instanceTypes: ['g5g.xlarge', 'g5g.2xlarge'], gpu: true }] },
      /^pools\[0\]\.instanceTypes$/,
    );
    // gpu: false runs them as plain arm64 hosts
    assert.equal(
      defineCluster({ ...base, pools: [{ name: 'g', instanceTypes: ['g5g.xlarge'], gpu: false }] }).pools[0]!
        .gpu,
      false,
    );
    // named instances are not validated for architecture
    defineCluster({ ...base, instances: [{ name: 'a', type: 'g5g.xlarge' }] });
  });

  it('isEcrImage: only private ECR repositories (aws and aws-cn)', () => {
    for (const image of [
      ECR,
      '123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/worker@sha256:abc',
      '123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/worker:1',
      '123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/worker:1',
    ])
      assert.ok(isEcrImage(image), image);
    for (const image of [
      'nginx:1.27',
      'tensorflow/tensorflow:latest-gpu',
      'docker.io/library/nginx',
      'public.ecr.aws/docker/library/nginx:1.27',
      'ghcr.io/org/worker:1',
      '123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example/worker:1',
      '12345.dkr.ecr.us-east-1.amazonaws.com/worker:1',
    ])
      assert.ok(!isEcrImage(image), image);
  });

  it('refuses a non-ECR image when natGateways is 0, naming the field; accepts ECR, or any image with a NAT', () => {
    const pool = { name: 'w', instanceTypes: ['t3.small'], capacity: 'ecs' as const };
    const err = refused(
      { ...base, pools: [{ ...pool, image: 'hyperflowwms/hyperflow-job-executor:latest' }] },
      /^pools\[0\]\.image$/,
    );
    assert.match(err.problem, /is not in Amazon ECR.*natGateways: 0.*no route to Docker Hub/);
    assert.match(err.fix ?? '', /push the image to ECR in us-east-1 .*or set network\.natGateways: 1/);
    // an asg pool runs tasks in its image with docker run: the same
    refused(
      { ...base, pools: [{ name: 'w', instanceTypes: ['t3.small'], image: 'nginx:1.27' }] },
      /^pools\[0\]\.image$/,
    );
    // a pool in a public subnet has public addresses: it reaches any registry
    assert.ok(
      defineCluster({ ...base, pools: [{ ...pool, subnet: 'public', image: 'public.ecr.aws/x/y:1' }] }),
    );
    // a named instance in a private subnet
    refused({ ...base, instances: [{ name: 'a', image: 'nginx:1.27' }] }, /^instances\[0\]\.image$/);
    // ECR of another region is not behind this VPC's endpoints
    const other = refused(
      { ...base, pools: [{ ...pool, image: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/w:1' }] },
      /^pools\[0\]\.image$/,
    );
    assert.match(other.problem, /is in ECR in eu-west-1/);
    // explicit interface endpoints without ECR
    refused(
      {
        ...base,
        network: { ...base.network, interfaceEndpoints: ['sqs', 'logs'] },
        pools: [{ ...pool, image: ECR }],
      },
      /^network\.interfaceEndpoints$/,
    );

    // accepted: ECR of the region; a public-subnet instance (own address); anything with a NAT gateway
    assert.equal(defineCluster({ ...base, pools: [{ ...pool, image: ECR }] }).pools[0]!.image, ECR);
    defineCluster({
      ...base,
      instances: [{ name: 'a', subnet: 'public', image: 'nginx:1.27' }],
      pools: [{ ...pool, image: ECR }],
    });
    const nat = defineCluster({
      ...base,
      network: { ...base.network, natGateways: 1 },
      instances: [{ name: 'a', image: 'nginx:1.27' }],
      pools: [{ ...pool, image: 'hyperflowwms/hyperflow-job-executor:latest' }],
    });
    assert.equal(nat.pools[0]!.image, 'hyperflowwms/hyperflow-job-executor:latest');
  });

  it('corral plan on a pool mixing architectures exits 2 with one error line and no stack trace', async (t) => {
    const dir = tempDir(t);
    writeFileSync(
      path.join(dir, 'mixed.yaml'),
      'name: demo\nregion: us-east-1\nnetwork:\n  azs: [us-east-1a]\npools:\n  - name: p\n    instanceTypes: [c7g.large, c7i.large]\n',
    );
    const r = await runCli(['plan', 'mixed.yaml'], { cwd: dir });
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0]!,
      /^corral: error: mixed\.yaml:7:\d+: pools\[0\]\.instanceTypes: mixes x86_64 and arm64 types .*\(fix: split them into one pool per architecture\)$/,
    );
    assert.doesNotMatch(r.stderr, /\n\s+at /);
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
