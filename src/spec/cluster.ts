import { readFileSync } from 'node:fs';
import path from 'node:path';
import { carveSubnets, cidrContains, cidrOverlaps, formatCidr, parseCidr } from '../util/cidr.js';
import { z } from '../vendor/zod.js';
import { UsageError } from './errors.js';
import { readYamlFile, validate } from './load.js';
import { durationField } from './units.js';

/*
 * The cluster spec: one typed document that `corral plan`, `corral up` and `ClusterStack`
 * read. Every field has a one-line description and its default; docs/cluster.md mirrors it.
 * Custom messages follow the `'problem | fix: hint'` convention of src/spec/load.ts.
 */

const NAME_RE = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$/;
const REGION_RE = /^[a-z]{2}(-gov)?-[a-z]+-\d$/;
const INSTANCE_TYPE_RE = /^[a-z][a-z0-9-]*\.[a-z0-9]+$/;

const nameField = (what: string) =>
  z
    .string()
    .regex(
      NAME_RE,
      `"${what}" names are 1–32 lowercase letters, digits or dashes | fix: use a name such as worker-1 or gpu`,
    );

const cidrField = () =>
  z.string().refine((v) => parseCidr(v) !== undefined, {
    message:
      'is not an IPv4 CIDR block with zero host bits | fix: write a block such as 10.0.0.0/16 or 203.0.113.7/32',
  });

const instanceTypeField = () =>
  z
    .string()
    .regex(INSTANCE_TYPE_RE, 'is not an EC2 instance type | fix: write a type such as t3.small or g5.xlarge');

/** GPU instance families: a pool of these gets the GPU (NVIDIA) AMI. */
export const GPU_FAMILY_RE = /^(g\d[a-z]*|p\d[a-z]*|gr\d[a-z]*)\./;

/** True when the instance type has NVIDIA GPUs (g4dn, g5, g6, p3, p4d, p5…). */
export function isGpuInstanceType(type: string): boolean {
  return GPU_FAMILY_RE.test(type) && !type.startsWith('g4ad.');
}

/** CPU architecture of an instance type, as EC2 and the Amazon Linux AMIs name it. */
export type Architecture = 'x86_64' | 'arm64';

/**
 * The CPU architecture of an EC2 instance type: arm64 for AWS Graviton (a1, and every family
 * whose letters after the generation digit contain `g`: c7g, m6gd, x2gd, im4gn, is4gen, g5g,
 * hpc7g…) and for mac2 (Apple silicon); x86_64 for everything else (g5, g4dn, p4d, c7a, m7i…).
 * `g5.xlarge` is x86_64 (its `g` is the family letter, before the digit); `g5g.xlarge` is arm64.
 */
export function architectureOf(instanceType: string): Architecture {
  const family = instanceType.split('.')[0]!.toLowerCase();
  if (family === 'a1' || /^mac2(-|$)/.test(family)) return 'arm64';
  // letters, generation digits, then attribute letters up to an optional `-suffix` (m7i-flex, u7i-12tb)
  const m = /^([a-z]+)(\d+)([a-z]*)/.exec(family);
  return m?.[3]?.includes('g') ? 'arm64' : 'x86_64';
}

const ECR_IMAGE_RE =
  /^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z]{2}(?:-gov)?-[a-z]+-\d)\.amazonaws\.com(?:\.cn)?\/\S+$/;

/** True when a container image is in Amazon ECR (`<account>.dkr.ecr.<region>.amazonaws.com[.cn]/…`). */
export function isEcrImage(image: string): boolean {
  return ECR_IMAGE_RE.test(image);
}

/** The region of an ECR image, or undefined when the image is not in ECR. */
function ecrRegionOf(image: string): string | undefined {
  return ECR_IMAGE_RE.exec(image)?.[2];
}

const network = z
  .strictObject({
    /** IPv4 block of the VPC. @default '10.0.0.0/16' */
    cidr: cidrField().default('10.0.0.0/16'),
    /** Availability zones, by name (e.g. us-east-1a); any number, at least one. */
    azs: z
      .array(
        z
          .string()
          .regex(
            /^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$/,
            'is not an availability zone name | fix: write a zone such as us-east-1a',
          ),
      )
      .min(1, 'needs at least one availability zone | fix: list zones such as [us-east-1a, us-east-1b]'),
    /** One public subnet CIDR per AZ, in the order of `azs`. @default - derived from `cidr` with `publicSubnetMask` */
    publicSubnets: z.array(cidrField()).optional(),
    /** One private subnet CIDR per AZ, in the order of `azs`. @default - derived from `cidr` with `privateSubnetMask` */
    privateSubnets: z.array(cidrField()).optional(),
    /** Prefix length of derived public subnets. @default 24 */
    publicSubnetMask: z.number().int().min(16).max(28).default(24),
    /** Prefix length of derived private subnets. @default 20 */
    privateSubnetMask: z.number().int().min(16).max(28).default(20),
    /** NAT gateways (0 = private subnets are isolated; S3 gateway and interface endpoints reach AWS). @default 0 */
    natGateways: z.number().int().min(0).default(0),
    /** Interface endpoints (e.g. sqs, logs, ssm) in the private subnets. @default - sqs, logs, cloudformation, ssm, ssmmessages, ec2messages when natGateways is 0 (plus ecs, ecs-agent, ecs-telemetry for ECS pools, ecr.api and ecr.dkr when a pool or private instance has an ECR image, secretsmanager with a database); none otherwise */
    interfaceEndpoints: z
      .array(
        z
          .string()
          .regex(
            /^[a-z0-9.-]+$/,
            'is not an endpoint service name | fix: write a short name such as sqs or logs',
          ),
      )
      .optional(),
    /** Where the interface endpoints live: in every AZ of the cluster (one AZ's outage leaves the others reaching AWS, no cross-AZ traffic), or in the first only (1/N of their hourly cost, one point of failure). @default 'all' */
    endpointAzs: z.enum(['all', 'first']).default('all'),
    /** VPC flow logs (rejected traffic) to the cluster log group. @default true */
    flowLogs: z.boolean().default(true),
  })
  .superRefine((n, ctx) => {
    const vpc = parseCidr(n.cidr);
    if (!vpc) return;
    if (vpc.mask < 16 || vpc.mask > 28) {
      ctx.addIssue({
        code: 'custom',
        path: ['cidr'],
        message: `a VPC block must be /16 to /28, got /${vpc.mask} | fix: use a block such as 10.0.0.0/16`,
      });
    }
    const lists: ['publicSubnets' | 'privateSubnets', string[] | undefined][] = [
      ['publicSubnets', n.publicSubnets],
      ['privateSubnets', n.privateSubnets],
    ];
    const seen: { cidr: string; path: (string | number)[] }[] = [];
    for (const [key, list] of lists) {
      if (!list) continue;
      if (list.length !== n.azs.length) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `has ${list.length} subnets for ${n.azs.length} availability zones | fix: give exactly one CIDR per zone in azs, in the same order`,
        });
      }
      list.forEach((s, i) => {
        const c = parseCidr(s);
        if (!c) return;
        if (!cidrContains(vpc, c)) {
          ctx.addIssue({
            code: 'custom',
            path: [key, i],
            message: `${s} is not inside the VPC block ${n.cidr} | fix: pick a subnet inside ${n.cidr}`,
          });
        }
        for (const other of seen) {
          if (cidrOverlaps(parseCidr(other.cidr)!, c)) {
            ctx.addIssue({
              code: 'custom',
              path: [key, i],
              message: `${s} overlaps ${other.cidr} | fix: give every subnet its own block`,
            });
          }
        }
        seen.push({ cidr: s, path: [key, i] });
      });
    }
    if (new Set(n.azs).size !== n.azs.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['azs'],
        message: 'lists a zone twice | fix: list each availability zone once',
      });
    }
  })
  .transform((n, ctx) => {
    // Derive the subnets not given explicitly: private blocks first (bigger), then public.
    const vpc = parseCidr(n.cidr)!;
    const given = [...(n.publicSubnets ?? []), ...(n.privateSubnets ?? [])].map((s) => parseCidr(s)!);
    const wanted: number[] = [];
    if (!n.privateSubnets) wanted.push(...n.azs.map(() => n.privateSubnetMask));
    if (!n.publicSubnets) wanted.push(...n.azs.map(() => n.publicSubnetMask));
    const carved = carveAround(vpc, wanted, given);
    if (!carved) {
      ctx.addIssue({
        code: 'custom',
        path: ['cidr'],
        message: `${n.cidr} is too small for ${n.azs.length} private /${n.privateSubnetMask} and public /${n.publicSubnetMask} subnets | fix: use a bigger VPC block or larger subnet masks`,
      });
      return z.NEVER;
    }
    const derived = carved.map(formatCidr);
    const privateSubnets = n.privateSubnets ?? derived.splice(0, n.azs.length);
    const publicSubnets = n.publicSubnets ?? derived.splice(0, n.azs.length);
    return { ...n, publicSubnets, privateSubnets };
  });

function carveAround(
  vpc: ReturnType<typeof parseCidr> & object,
  masks: number[],
  taken: { base: number; mask: number }[],
) {
  // Try carving from successive offsets until no derived block overlaps an explicit one.
  if (taken.length === 0) return carveSubnets(vpc, masks);
  const out: { base: number; mask: number }[] = [];
  let start = vpc.base;
  const end = vpc.base + 2 ** (32 - vpc.mask);
  for (const mask of masks) {
    const size = 2 ** (32 - mask);
    let cursor = Math.ceil(start / size) * size;
    for (;;) {
      if (cursor + size > end) return undefined;
      const c = { base: cursor, mask };
      const clash = [...taken, ...out].find((t) => cidrOverlaps(t, c));
      if (!clash) break;
      cursor = Math.ceil((clash.base + 2 ** (32 - clash.mask)) / size) * size;
    }
    out.push({ base: cursor, mask });
    start = cursor + size;
  }
  return out;
}

const keyPair = z
  .strictObject({
    /** Name of an EC2 key pair that already exists in the region. @default - none */
    name: z.string().min(1).optional(),
    /** Path of an OpenSSH public key file to import as a new key pair (relative to the spec file). @default - none */
    publicKeyFile: z.string().min(1).optional(),
  })
  .refine((k) => (k.name === undefined) !== (k.publicKeyFile === undefined), {
    message:
      'needs exactly one of name or publicKeyFile | fix: name an existing key pair, or point publicKeyFile at an id_ed25519.pub',
  });

const access = z
  .strictObject({
    /** The only block allowed to reach port 22 (your IP as a /32); required for SSH. @default - no SSH; use SSM Session Manager */
    adminCidr: z
      .string()
      .optional()
      .superRefine((v, ctx) => {
        if (v === undefined) return;
        if (v.trim() === '0.0.0.0/0' || v.trim() === '::/0') {
          ctx.addIssue({
            code: 'custom',
            message: `${v} would open SSH to the whole internet | fix: use your own address as a /32 (curl https://checkip.amazonaws.com), or omit adminCidr and use SSM Session Manager`,
          });
        } else if (!parseCidr(v)) {
          ctx.addIssue({
            code: 'custom',
            message: `"${v}" is not an IPv4 CIDR block | fix: write your address as a /32 such as 203.0.113.7/32`,
          });
        } else if (parseCidr(v)!.mask < 8) {
          ctx.addIssue({
            code: 'custom',
            message: `${v} is wider than a /8 | fix: narrow adminCidr to your own network`,
          });
        }
      }),
    /** SSH key pair for the instances. @default - none (no SSH key; SSM Session Manager only) */
    keyPair: keyPair.optional(),
  })
  .refine((a) => !a.keyPair || a.adminCidr, {
    path: ['adminCidr'],
    message:
      'is required when a keyPair is set (SSH is only allowed from adminCidr) | fix: set adminCidr to your address as a /32',
  });

const instance = z
  .strictObject({
    /** Name of the instance, unique in the cluster. */
    name: nameField('instance'),
    /** EC2 instance type. @default 't3.small' */
    type: instanceTypeField().default('t3.small'),
    /** Availability zone, one of network.azs. @default - the first of network.azs */
    az: z.string().optional(),
    /** Subnet kind the instance is placed in. @default 'private' */
    subnet: z.enum(['public', 'private']).default('private'),
    /** Associate an Elastic IP (needs subnet: public). @default false */
    elasticIp: z.boolean().default(false),
    /** What the instance is for: a coordinator gets corral (the worker artifact) and the cluster's outputs, so `corral run FILE --cluster NAME` works on it; custom runs only your script. @default 'custom' */
    role: z.enum(['coordinator', 'custom']).default('custom'),
    /** Startup script text, run once at first boot. @default - none */
    userData: z.string().optional(),
    /** Path of a startup script file (relative to the spec file), run once at first boot. @default - none */
    script: z.string().optional(),
    /** Container image started at boot with docker (restart always, host network); in a private subnet with natGateways 0, an ECR image of the cluster region. @default - none */
    image: z.string().min(1).optional(),
    /** AMI id. @default - latest Amazon Linux 2023 (SSM parameter, resolved at deploy time) */
    ami: z
      .string()
      .regex(/^ami-[0-9a-f]{8,17}$/, 'is not an AMI id | fix: write an id such as ami-0123456789abcdef0')
      .optional(),
    /** Root volume size in GiB (encrypted gp3). @default 20 */
    volumeSize: z.number().int().min(8).max(16384).default(20),
  })
  .superRefine((i, ctx) => {
    if (i.userData !== undefined && i.script !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['script'],
        message: 'cannot be combined with userData | fix: keep one of userData (inline) or script (file)',
      });
    }
    if (i.elasticIp && i.subnet !== 'public') {
      ctx.addIssue({
        code: 'custom',
        path: ['elasticIp'],
        message:
          'needs subnet: public (an Elastic IP in a private subnet is unreachable) | fix: set subnet: public or elasticIp: false',
      });
    }
  });

const spot = z.strictObject({
  /** On-demand instances kept before any spot capacity. @default 0 */
  onDemandBase: z.number().int().min(0).default(0),
  /** Percent of capacity above the base that is on-demand (100 = no spot). @default 0 */
  onDemandAbovePercent: z.number().int().min(0).max(100).default(0),
  /** Spot allocation strategy. @default 'price-capacity-optimized' */
  allocationStrategy: z
    .enum(['price-capacity-optimized', 'capacity-optimized', 'lowest-price'])
    .default('price-capacity-optimized'),
});

const scaling = z.strictObject({
  /** Target visible queue messages per in-service instance (target tracking). @default 10 */
  backlogPerInstance: z.number().positive().default(10),
  /** Idle time after which a worker exits, so the pool can reach zero. @default '15m' (900000 ms) */
  scaleToZeroAfter: durationField({ timer: true }).default(900_000),
});

const pool = z
  .strictObject({
    /** Name of the pool, unique in the cluster. */
    name: nameField('pool'),
    /** Instance types, in order of preference (the mixed-instances overrides); all x86_64 or all arm64 (Graviton). */
    instanceTypes: z
      .array(instanceTypeField())
      .min(1, 'needs at least one instance type | fix: list types such as [c6i.large, c5.large]'),
    /** GPU pool: uses the GPU (NVIDIA) AMI. @default - true when every instance type is a GPU type */
    gpu: z.boolean().optional(),
    /** Minimum instances. @default 0 */
    min: z.number().int().min(0).default(0),
    /** Maximum instances. @default 4 */
    max: z.number().int().min(0).max(1000).default(4),
    /** Instances at creation. @default - min */
    desired: z.number().int().min(0).optional(),
    /** Spot and on-demand mix. @default - all spot above 0 on-demand, price-capacity-optimized */
    spot: spot.prefault({}),
    /** Hosts of the pool: asg (Amazon Linux 2023) or ecs (the ECS-optimized AMI, listed in an ECS cluster of the pool); either way the corral worker runs on each host and scales on backlog. @default 'asg' */
    capacity: z.enum(['asg', 'ecs']).default('asg'),
    /** Container image each task runs in (`docker run` by the worker on the host; pulled before the host reports ready; required for capacity: ecs); with natGateways 0, an ECR image of the cluster region. @default - none (tasks run on the host) */
    image: z.string().min(1).optional(),
    /** Backlog-based scaling. @default - 10 messages per instance, scale to zero after 15m idle */
    scaling: scaling.prefault({}),
    /** Subnet kind of the pool's instances; in a public subnet each host gets a public address (its security group still admits only SSH from adminCidr and the cluster). @default 'private' */
    subnet: z.enum(['public', 'private']).default('private'),
    /** Root volume size in GiB (encrypted gp3). @default 30 */
    volumeSize: z.number().int().min(8).max(16384).default(30),
  })
  .superRefine((p, ctx) => {
    const desired = p.desired ?? p.min;
    if (p.min > p.max) {
      ctx.addIssue({
        code: 'custom',
        path: ['min'],
        message: `min ${p.min} is above max ${p.max} | fix: set min ≤ desired ≤ max`,
      });
    } else if (desired < p.min || desired > p.max) {
      ctx.addIssue({
        code: 'custom',
        path: ['desired'],
        message: `desired ${desired} is outside min ${p.min} … max ${p.max} | fix: set min ≤ desired ≤ max`,
      });
    }
    if (p.capacity === 'ecs' && !p.image) {
      ctx.addIssue({
        code: 'custom',
        path: ['image'],
        message:
          'is required when capacity is ecs | fix: set image to the worker container image, or use capacity: asg',
      });
    }
    const gpuTypes = p.instanceTypes.filter(isGpuInstanceType);
    if (p.gpu === true && gpuTypes.length !== p.instanceTypes.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['instanceTypes'],
        message:
          'mixes non-GPU types into a gpu pool | fix: list only GPU types (g4dn, g5, g6, p3…) or set gpu: false',
      });
    }
    if (p.gpu === undefined && gpuTypes.length > 0 && gpuTypes.length !== p.instanceTypes.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['instanceTypes'],
        message: 'mixes GPU and non-GPU types | fix: split them into a gpu pool and a cpu pool',
      });
    }
    // One launch template, so one AMI, so one architecture per pool.
    const arm = p.instanceTypes.filter((t) => architectureOf(t) === 'arm64');
    const x86 = p.instanceTypes.filter((t) => architectureOf(t) === 'x86_64');
    if (arm.length > 0 && x86.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['instanceTypes'],
        message: `mixes x86_64 and arm64 types (x86_64: ${x86.join(', ')}; arm64: ${arm.join(', ')}) | fix: split them into one pool per architecture`,
      });
    } else if (arm.length > 0 && p.gpu !== false && gpuTypes.length === p.instanceTypes.length) {
      // Graviton GPU types (g5g): no GPU-optimized Amazon Linux 2023 AMI exists for arm64.
      const why =
        p.capacity === 'ecs'
          ? 'there is no ECS GPU-optimized AMI for arm64'
          : "corral's GPU pools use the ECS GPU-optimized Amazon Linux 2023 AMI, which is x86_64 only";
      ctx.addIssue({
        code: 'custom',
        path: ['instanceTypes'],
        message: `${arm.join(', ')} ${arm.length > 1 ? 'are arm64 GPU types' : 'is an arm64 GPU type'}, but ${why} | fix: use x86_64 GPU types (g4dn, g5, g6, g6e, p4d, p5…) such as g5.xlarge, or set gpu: false to run them as plain arm64 hosts without GPU drivers`,
      });
    }
  })
  .transform((p) => ({
    ...p,
    desired: p.desired ?? p.min,
    gpu: p.gpu ?? p.instanceTypes.every(isGpuInstanceType),
  }));

const lifecycle = z.strictObject({
  /** Delete objects this many days after creation. @default - never */
  expireAfterDays: z.number().int().min(1).optional(),
  /** Move objects to Standard-IA after this many days (≥ 30). @default - never */
  infrequentAccessAfterDays: z.number().int().min(30).optional(),
  /** Abort incomplete multipart uploads after this many days. @default 7 */
  abortIncompleteUploadsAfterDays: z.number().int().min(1).default(7),
  /** Delete noncurrent versions this many days after they are replaced (versioned buckets). @default 30 */
  noncurrentVersionsExpireAfterDays: z.number().int().min(1).default(30),
});

const bucket = z.strictObject({
  /** Bucket name. @default - generated by CloudFormation */
  name: z
    .string()
    .regex(
      /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
      'is not a valid S3 bucket name | fix: use 3–63 lowercase letters, digits, dots or dashes',
    )
    .optional(),
  /** Keep every version of every object. @default false */
  versioned: z.boolean().default(false),
  /** What `corral down` does with the bucket: destroy (emptied and deleted) or retain. @default 'destroy' */
  removalPolicy: z.enum(['destroy', 'retain']).default('destroy'),
  /** Empty the bucket on `down` when removalPolicy is destroy. @default true */
  autoDeleteObjects: z.boolean().default(true),
  /** Server access logs to a second private bucket. @default true */
  accessLogs: z.boolean().default(true),
  /** Lifecycle rules. @default - abort incomplete uploads after 7 days, noncurrent versions expire after 30 */
  lifecycle: lifecycle.prefault({}),
});

const queue = z.strictObject({
  /** How long a claimed message stays invisible (the lease). @default '5m' (300000 ms) */
  visibilityTimeout: durationField().default(300_000),
  /** How long an unclaimed message is kept. @default '4d' (345600000 ms) */
  retention: durationField().default(345_600_000),
  /** Receives before a message moves to the dead-letter queue. @default 5 */
  maxReceiveCount: z.number().int().min(1).max(1000).default(5),
});

const database = z.strictObject({
  /** PostgreSQL major version. @default '16' */
  engineVersion: z.enum(['14', '15', '16', '17']).default('16'),
  /** RDS instance class, without the `db.` prefix. @default 't4g.micro' */
  instanceClass: instanceTypeField().default('t4g.micro'),
  /** Allocated storage in GiB (gp3, encrypted). @default 20 */
  allocatedStorage: z.number().int().min(20).max(65536).default(20),
  /** Standby in a second AZ (needs ≥ 2 azs). @default false */
  multiAz: z.boolean().default(false),
  /** TCP port. @default 5432 */
  port: z.number().int().min(1150).max(65535).default(5432),
  /** Days of automated backups (0 disables them). @default 7 */
  backupRetentionDays: z.number().int().min(0).max(35).default(7),
  /** What `corral down` does with the database: destroy, snapshot (final snapshot kept) or retain. @default 'destroy' */
  removalPolicy: z.enum(['destroy', 'snapshot', 'retain']).default('destroy'),
  /** Refuse deletion until turned off. @default false */
  deletionProtection: z.boolean().default(false),
  /** Database name created at launch. @default 'corral' */
  databaseName: z
    .string()
    .regex(
      /^[a-zA-Z][a-zA-Z0-9_]{0,62}$/,
      'is not a PostgreSQL database name | fix: use letters, digits and underscores',
    )
    .default('corral'),
});

const peer = z.strictObject({
  /** Id of the VPC to peer with. */
  vpcId: z
    .string()
    .regex(/^vpc-[0-9a-f]{8,17}$/, 'is not a VPC id | fix: write an id such as vpc-0123456789abcdef0'),
  /** IPv4 block of the peer VPC (must not overlap the cluster or other peers). */
  cidr: cidrField(),
  /** Region of the peer VPC. @default - the cluster region */
  region: z
    .string()
    .regex(REGION_RE, 'is not an AWS region | fix: write a region such as us-east-1')
    .optional(),
  /** Account that owns the peer VPC. @default - the cluster account */
  accountId: z
    .string()
    .regex(/^\d{12}$/, 'is not a 12-digit account id | fix: write the peer account id')
    .optional(),
  /** Role in the peer account that accepts the peering (cross-account). @default - none (same account: accepted automatically) */
  peerRoleArn: z
    .string()
    .regex(
      /^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/,
      'is not an IAM role ARN | fix: write arn:aws:iam::<account>:role/<name>',
    )
    .optional(),
  /** Route tables of the peer VPC that get a route back to the cluster (same account and region only; refused otherwise). @default [] - no route back: add one in the peer VPC (plan warns) */
  routeTableIds: z
    .array(
      z
        .string()
        .regex(
          /^rtb-[0-9a-f]{8,17}$/,
          'is not a route table id | fix: write an id such as rtb-0123456789abcdef0',
        ),
    )
    .default([]),
  /** TCP ports the peer VPC may reach on cluster members. @default [80, 443] */
  ports: z.array(z.number().int().min(1).max(65535)).min(1).default([80, 443]),
});

/** Retention periods CloudWatch Logs accepts, in days. */
export const LOG_RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

const monitoring = z.strictObject({
  /** Days the cluster log group keeps events. @default 30 */
  logRetentionDays: z.number().int().min(1).default(30),
  /** Email address subscribed to alarm notifications (SNS). @default - none (alarms without notification) */
  alarmEmail: z.email('is not an email address | fix: write an address such as ops@example.com').optional(),
  /** Alarm when the oldest queued message is older than this. @default '1h' (3600000 ms) */
  queueAgeAlarm: durationField().default(3_600_000),
  /** CloudWatch dashboard with queue, pool and instance widgets. @default true */
  dashboard: z.boolean().default(true),
});

const suppression = z.strictObject({
  /** cdk-nag rule id, e.g. AwsSolutions-RDS3. */
  id: z
    .string()
    .regex(
      /^[A-Za-z]+-[A-Za-z0-9]+$/,
      'is not a cdk-nag rule id | fix: write an id such as AwsSolutions-RDS3',
    ),
  /** Why the finding is acceptable for this cluster (at least 10 characters). */
  reason: z
    .string()
    .trim()
    .min(
      10,
      'is too short: say why the finding is acceptable | fix: write a reason of at least 10 characters',
    ),
  /** Only these finding details (e.g. `Resource::*`) or construct-path substrings. @default - every finding of the rule */
  appliesTo: z.array(z.string().min(1)).min(1).optional(),
});

const budget = z.strictObject({
  /** Highest acceptable hourly cost in USD at full scale (every pool at max, expected spot price). */
  maxHourly: z.number().positive(),
});

const tagKey = z
  .string()
  .regex(/^[\w .:/=+\-@]{1,128}$/, 'is not a valid tag key | fix: use letters, digits, spaces and _.:/=+-@')
  .refine((k) => !k.toLowerCase().startsWith('aws:'), {
    message: 'starts with aws:, which AWS reserves | fix: use another prefix, e.g. team:owner',
  });

/** The AWS partition of a region: aws-cn for cn-*, aws-us-gov for us-gov-*, else aws. */
export function partitionOf(region: string): string {
  if (region.startsWith('cn-')) return 'aws-cn';
  if (region.startsWith('us-gov-')) return 'aws-us-gov';
  return 'aws';
}

/** One `dataBuckets` entry, parsed: a whole bucket, or the objects below one key prefix of it. */
export interface DataBucketRef {
  /** Partition of an ARN entry. @default - the cluster region's */
  readonly partition?: string;
  readonly bucket: string;
  /** Key prefix, a folder without the trailing slash (`raw/2024`). @default - the whole bucket */
  readonly prefix?: string;
}

const BUCKET_NAME_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const S3_ARN_RE = /^arn:(aws|aws-cn|aws-us-gov):s3:::([^/]*)(?:\/(.*))?$/;

function bucketNameProblem(name: string): string | undefined {
  if (
    !BUCKET_NAME_RE.test(name) ||
    name.includes('..') ||
    /^\d+\.\d+\.\d+\.\d+$/.test(name) ||
    /^(xn--|sthree-)/.test(name) ||
    /(-s3alias|--ol-s3)$/.test(name)
  )
    return `"${name}" is not a valid S3 bucket name | fix: write 3–63 lowercase letters, digits, dots or dashes, such as my-data`;
  return undefined;
}

/**
 * Parses a `dataBuckets` entry (`my-data` or `arn:aws:s3:::my-data/raw`); returns the problem
 * as a `'problem | fix: hint'` message when it is not one.
 */
export function parseDataBucket(entry: string): DataBucketRef | string {
  if (/[*?]/.test(entry))
    return 'contains a wildcard; corral grants exactly the bucket or prefix written | fix: write a bucket name such as my-data, or arn:aws:s3:::my-data/raw for the objects below raw/';
  if (entry.startsWith('s3://')) {
    const [bucket, ...rest] = entry.slice(5).split('/');
    const prefix = rest.join('/').replace(/\/+$/, '');
    return `is an s3:// URL | fix: write ${prefix ? `arn:aws:s3:::${bucket}/${prefix}` : bucket}`;
  }
  let partition: string | undefined;
  let bucket: string;
  let prefix: string | undefined;
  if (entry.startsWith('arn:')) {
    const m = S3_ARN_RE.exec(entry);
    if (!m)
      return 'is not an S3 bucket ARN | fix: write arn:aws:s3:::BUCKET or arn:aws:s3:::BUCKET/PREFIX, or just the bucket name';
    partition = m[1]!;
    bucket = m[2]!;
    prefix = m[3]?.replace(/\/+$/, '') || undefined;
  } else {
    if (entry.includes('/'))
      return `names a prefix without the ARN form | fix: write arn:aws:s3:::${entry.replace(/\/+$/, '')}, or only the bucket name`;
    bucket = entry;
  }
  const bad = bucketNameProblem(bucket);
  if (bad) return bad;
  if (
    prefix !== undefined &&
    (prefix.startsWith('/') || prefix.includes('//') || /[\u0000-\u001f\u007f]/.test(prefix))
  )
    return `has an empty or unprintable part in its prefix "${prefix}" | fix: write the key prefix such as raw/2024, without a leading or double slash`;
  if (prefix !== undefined && prefix.length > 1000)
    return 'has a prefix longer than 1000 characters | fix: grant a shorter prefix (a folder above it)';
  return { partition, bucket, prefix };
}

const dataBucket = z.string().superRefine((v, ctx) => {
  const r = parseDataBucket(v);
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r });
});

/**
 * With no NAT gateway the cluster reaches AWS only through its VPC endpoints: ECR of its own
 * region, nothing else. Pools and named instances in a public subnet have a public address
 * (auto-assigned, or an Elastic IP) and reach any registry; those in private subnets do not.
 * Refuses every image such an instance or pool could not pull.
 */
function imagesWithoutNat(
  c: {
    region: string;
    network: { interfaceEndpoints?: string[] | undefined };
    instances: { image?: string | undefined; subnet: 'public' | 'private' }[];
    pools: { image?: string | undefined; subnet: 'public' | 'private' }[];
  },
  ctx: z.RefinementCtx,
): void {
  const users: { path: (string | number)[]; image: string }[] = [
    ...c.pools.flatMap((p, i) =>
      p.image && p.subnet === 'private' ? [{ path: ['pools', i, 'image'], image: p.image }] : [],
    ),
    ...c.instances.flatMap((inst, i) =>
      inst.image && inst.subnet === 'private' ? [{ path: ['instances', i, 'image'], image: inst.image }] : [],
    ),
  ];
  const ecrUsers: string[] = [];
  for (const { path, image } of users) {
    const region = ecrRegionOf(image);
    if (region === undefined) {
      ctx.addIssue({
        code: 'custom',
        path,
        message: `${image} is not in Amazon ECR, and with network.natGateways: 0 there is no route to Docker Hub or any other public registry | fix: push the image to ECR in ${c.region} (reached through the VPC endpoints) and write it as ACCOUNT.dkr.ecr.${c.region}.amazonaws.com${c.region.startsWith('cn-') ? '.cn' : ''}/NAME:TAG, or set network.natGateways: 1`,
      });
    } else if (region !== c.region) {
      ctx.addIssue({
        code: 'custom',
        path,
        message: `${image} is in ECR in ${region}, but with network.natGateways: 0 only ECR in ${c.region} is reachable (through the VPC endpoints) | fix: replicate or push the image to ECR in ${c.region}, or set network.natGateways: 1`,
      });
    } else ecrUsers.push(path.join('.').replace(/\.(\d+)\./g, '[$1].'));
  }
  const endpoints = c.network.interfaceEndpoints;
  const missing = ['ecr.api', 'ecr.dkr'].filter((e) => endpoints && !endpoints.includes(e));
  if (ecrUsers.length > 0 && missing.length > 0) {
    ctx.addIssue({
      code: 'custom',
      path: ['network', 'interfaceEndpoints'],
      message: `lacks ${missing.join(' and ')}, without which ${ecrUsers[0]} cannot be pulled from ECR (network.natGateways is 0) | fix: add ${missing.join(' and ')} to network.interfaceEndpoints, or set network.natGateways: 1`,
    });
  }
}

/** The zod schema of a cluster spec. */
export const clusterSchema = z
  .strictObject({
    /** Cluster name; the stack is `corral-<name>` and every resource is tagged `corral:cluster=<name>`. */
    name: nameField('cluster'),
    /** AWS region. */
    region: z.string().regex(REGION_RE, 'is not an AWS region | fix: write a region such as us-east-1'),
    /** AWS account to deploy to. @default - the account of the credentials in use */
    account: z
      .string()
      .regex(/^\d{12}$/, 'is not a 12-digit account id | fix: write the account id or omit it')
      .optional(),
    /** VPC and subnets. */
    network: network,
    /** SSH access and key pair. @default - no SSH (SSM Session Manager only) */
    access: access.prefault({}),
    /** Named, long-lived instances (coordinator, services). @default [] */
    instances: z.array(instance).default([]),
    /** Auto-scaled worker pools. @default [] */
    pools: z.array(pool).default([]),
    /** The cluster's S3 bucket (job inputs and outputs). @default - private, encrypted, TLS-only, destroyed on down */
    bucket: bucket.prefault({}),
    /** The SQS job queue and its dead-letter queue. @default - 5m lease, 4d retention, 5 receives */
    queue: queue.prefault({}),
    /** Other buckets (`my-data`) or prefixes (`arn:aws:s3:::my-data/raw`) the workers may read (s3:GetObject, s3:ListBucket), e.g. for `s3://` job inputs. @default - none */
    dataBuckets: z.array(dataBucket).default([]),
    /** Gone: the coordinator's state is the cluster bucket, with or without a database; a spec that sets it is refused with the fix. @default - none */
    backend: z
      .never({
        error:
          'is no longer a setting: the coordinator keeps its state in the cluster bucket, with or without a database | fix: remove backend (a database section gives tasks a PostgreSQL database)',
      })
      .optional(),
    /** RDS PostgreSQL in the private subnets, for the tasks: they get its endpoint and a pgpass file (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSFILE). @default - none */
    database: database.optional(),
    /** VPC peering connections. @default [] */
    peering: z.array(peer).default([]),
    /** Logs, dashboard and alarms. @default - 30-day logs, dashboard, alarms without email */
    monitoring: monitoring.prefault({}),
    /** Tags added to every resource (with corral:cluster=<name>). @default {} */
    tags: z.record(tagKey, z.string().max(256)).default({}),
    /** Cost ceiling checked by `corral up`. @default - no ceiling */
    budget: budget.optional(),
    /** Accepted cdk-nag findings, each with a reason. @default [] */
    suppressions: z.array(suppression).default([]),
  })
  .superRefine((c, ctx) => {
    const azs = new Set(c.network.azs);
    const names = new Map<string, string>();
    const unique = (kind: 'instances' | 'pools', i: number, name: string) => {
      const prior = names.get(name);
      if (prior) {
        ctx.addIssue({
          code: 'custom',
          path: [kind, i, 'name'],
          message: `"${name}" is already used by ${prior} | fix: give every instance and pool its own name`,
        });
      } else names.set(name, `${kind}[${i}]`);
    };
    c.network.azs.forEach((az, i) => {
      if (!az.startsWith(c.region)) {
        ctx.addIssue({
          code: 'custom',
          path: ['network', 'azs', i],
          message: `${az} is not a zone of region ${c.region} | fix: use zones such as ${c.region}a, or change region`,
        });
      }
    });
    c.instances.forEach((inst, i) => {
      unique('instances', i, inst.name);
      if (inst.az !== undefined && !azs.has(inst.az)) {
        ctx.addIssue({
          code: 'custom',
          path: ['instances', i, 'az'],
          message: `${inst.az} is not one of network.azs (${[...azs].join(', ')}) | fix: use a zone listed in network.azs, or add it there`,
        });
      }
    });
    c.pools.forEach((p, i) => {
      unique('pools', i, p.name);
    });
    if (c.network.natGateways === 0) imagesWithoutNat(c, ctx);
    c.dataBuckets.forEach((d, i) => {
      const r = parseDataBucket(d);
      if (typeof r !== 'string' && r.partition && r.partition !== partitionOf(c.region)) {
        ctx.addIssue({
          code: 'custom',
          path: ['dataBuckets', i],
          message: `is in partition ${r.partition} but region ${c.region} is in ${partitionOf(c.region)} | fix: write arn:${partitionOf(c.region)}:s3:::${r.bucket}${r.prefix ? `/${r.prefix}` : ''}, or just the bucket name`,
        });
      }
    });
    if (c.instances.filter((i) => i.role === 'coordinator').length > 1) {
      const idx = c.instances.findIndex(
        (i, n) => i.role === 'coordinator' && n > c.instances.findIndex((j) => j.role === 'coordinator'),
      );
      ctx.addIssue({
        code: 'custom',
        path: ['instances', idx, 'role'],
        message: 'a cluster has at most one coordinator | fix: set role: custom on the others',
      });
    }
    if (c.database && c.network.azs.length < 2) {
      // RDS refuses a DB subnet group that does not span two zones, even for a single-AZ instance.
      ctx.addIssue({
        code: 'custom',
        path: ['database'],
        message:
          'needs at least two availability zones (an RDS subnet group must span two, even for a single-AZ database) | fix: add a second zone to network.azs',
      });
    }
    // A block that did not parse has its own issue already; overlaps are checked between valid ones.
    const vpc = parseCidr(c.network.cidr);
    c.peering.forEach((p, i) => {
      const pc = parseCidr(p.cidr);
      if (!pc) return;
      if (vpc && cidrOverlaps(vpc, pc)) {
        ctx.addIssue({
          code: 'custom',
          path: ['peering', i, 'cidr'],
          message: `${p.cidr} overlaps the cluster VPC ${c.network.cidr} | fix: peered VPCs need disjoint blocks`,
        });
      }
      c.peering.slice(0, i).forEach((q) => {
        const qc = parseCidr(q.cidr);
        if (qc && cidrOverlaps(qc, pc)) {
          ctx.addIssue({
            code: 'custom',
            path: ['peering', i, 'cidr'],
            message: `${p.cidr} overlaps peer ${q.vpcId} (${q.cidr}) | fix: peers need disjoint blocks`,
          });
        }
      });
      const elsewhere =
        p.region && p.region !== c.region
          ? `region ${p.region}`
          : p.accountId && p.accountId !== c.account
            ? `account ${p.accountId}`
            : undefined;
      if (elsewhere && p.routeTableIds.length > 0) {
        ctx.addIssue({
          code: 'custom',
          path: ['peering', i, 'routeTableIds'],
          message: `are in ${elsewhere}, where the cluster's stack cannot add routes (the peering would carry traffic one way only) | fix: remove routeTableIds and, in the peer VPC's route tables, route ${c.network.cidr} to the peering connection (corral up prints its id as output Peering${i}Connection)`,
        });
      }
      if (p.accountId && c.account && p.accountId !== c.account && !p.peerRoleArn) {
        ctx.addIssue({
          code: 'custom',
          path: ['peering', i, 'peerRoleArn'],
          message:
            'is required to accept a peering in another account | fix: set peerRoleArn to a role in the peer account',
        });
      }
    });
  })
  .transform((c) => ({
    ...c,
    instances: c.instances.map((i) => ({ ...i, az: i.az ?? c.network.azs[0]! })),
  }));

/** A validated cluster spec, with every default filled in. */
export type ClusterSpec = z.output<typeof clusterSchema>;
/** A cluster spec as written (YAML or TypeScript), before defaults. */
export type ClusterSpecInput = z.input<typeof clusterSchema>;
/** One named instance of a validated spec. */
export type InstanceSpec = ClusterSpec['instances'][number];
/** One worker pool of a validated spec. */
export type PoolSpec = ClusterSpec['pools'][number];
/** One peering of a validated spec. */
export type PeerSpec = ClusterSpec['peering'][number];
/** One cdk-nag suppression of a validated spec. */
export type SuppressionSpec = ClusterSpec['suppressions'][number];

/** Name of the CloudFormation stack of a cluster. */
export function stackNameOf(clusterName: string): string {
  return `corral-${clusterName}`;
}

/**
 * Validates a cluster spec written in TypeScript and fills in its defaults.
 * Throws a UsageError naming the field when the spec is invalid.
 */
export function defineCluster(spec: ClusterSpecInput, origin = 'defineCluster'): ClusterSpec {
  return validate(clusterSchema, { data: spec, file: origin });
}

/**
 * Reads, parses and validates a cluster spec file (YAML or JSON), and reads the files it names
 * (a public key, instance scripts), so that one it cannot read is refused before anything is
 * synthesized.
 */
export function loadClusterFile(file: string): ClusterSpec & { readonly sourceFile?: string } {
  const src = readYamlFile(file);
  const spec = validate(clusterSchema, src);
  const baseDir = path.dirname(path.resolve(file));
  const key = spec.access.keyPair?.publicKeyFile;
  if (key !== undefined) readSpecFile(baseDir, key, 'access.keyPair.publicKeyFile');
  spec.instances.forEach((i, n) => {
    if (i.script !== undefined) readSpecFile(baseDir, i.script, `instances[${n}].script`);
  });
  Object.defineProperty(spec, 'sourceFile', { value: file, enumerable: false });
  return spec;
}

/** Reads a file a spec names, relative to `baseDir` (the spec file's folder); one it cannot read is bad input. */
export function readSpecFile(baseDir: string, file: string, field: string): string {
  const full = path.resolve(baseDir, file);
  try {
    return readFileSync(full, 'utf8');
  } catch (err) {
    throw new UsageError(
      field,
      `cannot read ${full}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      'check the path (relative to the spec file)',
    );
  }
}

/** The file a spec was loaded from, when it came from loadClusterFile. */
export function sourceFileOf(spec: ClusterSpec): string | undefined {
  return (spec as { sourceFile?: string }).sourceFile;
}

export { UsageError };
