import type { ClusterSpec } from '../spec/cluster.js';

/*
 * Bundled price table.
 * Source: AWS public price list (https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/index.json,
 * offers AmazonEC2, AmazonRDS, AmazonVPC), Linux/UNIX on-demand, shared tenancy, us-east-1,
 * as published on 2025-06-01. Other regions use a multiplier over us-east-1 (approximate).
 * Spot is estimated as a fixed fraction of on-demand (typical discount from the
 * EC2 Spot Instance Advisor); real spot prices move with the market.
 * Usage-based charges (S3 storage and requests, SQS requests, data transfer, CloudWatch) are
 * not included.
 */

/** Date the table was taken from the AWS price list. */
export const PRICE_TABLE_DATE = '2025-06-01';
/** Where the table comes from. */
export const PRICE_TABLE_SOURCE =
  'AWS public price list (Linux on-demand, us-east-1), region multipliers approximate';

/** Hours in a month, as AWS bills them (365 × 24 / 12). */
export const HOURS_PER_MONTH = 730;

/** On-demand USD per hour of EC2 instance types in us-east-1. */
export const EC2_ON_DEMAND: Readonly<Record<string, number>> = {
  't2.micro': 0.0116,
  't2.small': 0.023,
  't2.medium': 0.0464,
  't3.micro': 0.0104,
  't3.small': 0.0208,
  't3.medium': 0.0416,
  't3.large': 0.0832,
  't3.xlarge': 0.1664,
  't3a.small': 0.0188,
  't3a.medium': 0.0376,
  't4g.micro': 0.0084,
  't4g.small': 0.0168,
  't4g.medium': 0.0336,
  't4g.large': 0.0672,
  'm5.large': 0.096,
  'm5.xlarge': 0.192,
  'm5.2xlarge': 0.384,
  'm6i.large': 0.096,
  'm6i.xlarge': 0.192,
  'm6i.2xlarge': 0.384,
  'm7i.large': 0.1008,
  'm7i.xlarge': 0.2016,
  'c5.large': 0.085,
  'c5.xlarge': 0.17,
  'c5.2xlarge': 0.34,
  'c5.4xlarge': 0.68,
  'c6i.large': 0.085,
  'c6i.xlarge': 0.17,
  'c6i.2xlarge': 0.34,
  'c6i.4xlarge': 0.68,
  'c7i.large': 0.08925,
  'c7i.xlarge': 0.1785,
  'r5.large': 0.126,
  'r5.xlarge': 0.252,
  'r6i.large': 0.126,
  'r6i.xlarge': 0.252,
  'p2.xlarge': 0.9,
  'p3.2xlarge': 3.06,
  'p3.8xlarge': 12.24,
  'p3.16xlarge': 24.48,
  'g4dn.xlarge': 0.526,
  'g4dn.2xlarge': 0.752,
  'g4dn.4xlarge': 1.204,
  'g4dn.12xlarge': 3.912,
  'g5.xlarge': 1.006,
  'g5.2xlarge': 1.212,
  'g5.4xlarge': 1.624,
  'g5.12xlarge': 5.672,
  'g6.xlarge': 0.8048,
  'g6.2xlarge': 0.9776,
};

/** On-demand USD per hour of RDS PostgreSQL instance classes (single-AZ) in us-east-1. */
export const RDS_ON_DEMAND: Readonly<Record<string, number>> = {
  't3.micro': 0.018,
  't3.small': 0.036,
  't3.medium': 0.072,
  't4g.micro': 0.016,
  't4g.small': 0.032,
  't4g.medium': 0.065,
  'm5.large': 0.178,
  'm6g.large': 0.159,
  'm6i.large': 0.178,
  'r6g.large': 0.225,
};

/** Other hourly and monthly unit prices in us-east-1, USD. */
export const UNIT_PRICES = {
  /** NAT gateway, per hour (data processing not included). */
  natGatewayHourly: 0.045,
  /** Public IPv4 address (Elastic IP or auto-assigned), per hour. */
  publicIpv4Hourly: 0.005,
  /** Interface VPC endpoint, per AZ, per hour. */
  interfaceEndpointHourly: 0.01,
  /** EBS gp3 storage, per GiB-month. */
  ebsGp3GibMonth: 0.08,
  /** RDS gp3 storage, per GiB-month (single-AZ). */
  rdsGp3GibMonth: 0.115,
} as const;

/** Expected spot price as a fraction of on-demand. */
export const SPOT_FRACTION = { cpu: 0.35, gpu: 0.4 } as const;

/** Price of a region relative to us-east-1. */
export const REGION_MULTIPLIER: Readonly<Record<string, number>> = {
  'us-east-1': 1,
  'us-east-2': 1,
  'us-west-2': 1,
  'us-west-1': 1.17,
  'eu-west-1': 1.1,
  'eu-central-1': 1.17,
  'eu-west-2': 1.16,
  'ap-northeast-1': 1.27,
  'ap-southeast-1': 1.2,
};

/** One line of an estimate. */
export interface CostLine {
  /** What is priced, e.g. `pool gpu (g5.xlarge)`. */
  readonly item: string;
  /** Units at the estimate's size (instances, gateways, addresses…). */
  readonly quantity: number;
  /** USD per hour if everything ran on-demand. */
  readonly onDemandHourly: number;
  /** USD per hour with the spot share at the expected spot price. */
  readonly expectedHourly: number;
}

/** Cost totals in USD. */
export interface CostTotals {
  /** Everything on-demand. */
  readonly onDemand: number;
  /** Spot share at the expected spot price. */
  readonly expected: number;
}

/** An hourly and monthly estimate of a spec. */
export interface CostEstimate {
  readonly region: string;
  /** Multiplier applied over us-east-1 prices. */
  readonly regionMultiplier: number;
  /** Lines at the desired size of each pool. */
  readonly lines: readonly CostLine[];
  /** Hourly cost at desired size. */
  readonly hourly: CostTotals;
  /** Monthly cost at desired size (730 hours). */
  readonly monthly: CostTotals;
  /**
   * Hourly cost with every pool at max, each at its most expensive allowed instance type: the
   * expected figure is what `budget.maxHourly` is compared with; the on-demand one is the worst
   * case (spot never costs more than on-demand).
   */
  readonly peakHourly: CostTotals;
  /** Lines with every pool at max and its most expensive allowed type. */
  readonly peakLines: readonly CostLine[];
  /** Hourly cost of a cluster with no work: every pool at its min, plus what runs regardless. */
  readonly idleHourly: CostTotals;
  /** Things the table has no price for (counted as 0). */
  readonly unpriced: readonly string[];
  readonly source: string;
  readonly date: string;
}

/** Instances of a pool of `n` that are on-demand under its spot settings. */
export function onDemandCount(n: number, base: number, abovePercent: number): number {
  const b = Math.min(n, base);
  return b + Math.ceil(((n - b) * abovePercent) / 100);
}

const round = (v: number) => Math.round(v * 1e6) / 1e6;

/**
 * Estimates the hourly and monthly cost of a spec from the bundled table. `interfaceEndpoints` is
 * the number of endpoint services; each is billed once per AZ it sits in (`network.endpointAzs`).
 */
export function estimateCost(spec: ClusterSpec, interfaceEndpoints = 0): CostEstimate {
  const mult = REGION_MULTIPLIER[spec.region] ?? 1;
  const unpriced: string[] = [];
  if (REGION_MULTIPLIER[spec.region] === undefined)
    unpriced.push(`region ${spec.region} (priced as us-east-1)`);
  const ec2 = (type: string) => {
    const p = EC2_ON_DEMAND[type];
    if (p === undefined) {
      unpriced.push(`instance type ${type}`);
      return 0;
    }
    return p * mult;
  };
  const ebsHourly = (gib: number) => (gib * UNIT_PRICES.ebsGp3GibMonth * mult) / HOURS_PER_MONTH;
  const fixed: CostLine[] = [];
  const line = (item: string, quantity: number, od: number, expected = od): CostLine => ({
    item,
    quantity,
    onDemandHourly: round(od),
    expectedHourly: round(expected),
  });
  for (const i of spec.instances) {
    const h = ec2(i.type) + ebsHourly(i.volumeSize);
    fixed.push(line(`instance ${i.name} (${i.type}, ${i.volumeSize} GiB)`, 1, h));
    if (i.subnet === 'public')
      fixed.push(line(`public IPv4 of ${i.name}`, 1, UNIT_PRICES.publicIpv4Hourly * mult));
  }
  if (spec.network.natGateways > 0) {
    const n = spec.network.natGateways;
    fixed.push(line('NAT gateways', n, n * UNIT_PRICES.natGatewayHourly * mult));
    fixed.push(line('public IPv4 of NAT gateways', n, n * UNIT_PRICES.publicIpv4Hourly * mult));
  }
  if (interfaceEndpoints > 0) {
    const azs = spec.network.endpointAzs === 'all' ? spec.network.azs.length : 1;
    const n = interfaceEndpoints * azs;
    fixed.push(
      line(
        `interface endpoints (${interfaceEndpoints} × ${azs} AZ${azs > 1 ? 's' : ''})`,
        n,
        n * UNIT_PRICES.interfaceEndpointHourly * mult,
      ),
    );
  }
  if (spec.database) {
    const d = spec.database;
    let p = RDS_ON_DEMAND[d.instanceClass];
    if (p === undefined) {
      unpriced.push(`database class db.${d.instanceClass}`);
      p = 0;
    }
    const azs = d.multiAz ? 2 : 1;
    const h = (p * azs + (d.allocatedStorage * UNIT_PRICES.rdsGp3GibMonth * azs) / HOURS_PER_MONTH) * mult;
    fixed.push(
      line(
        `database db.${d.instanceClass}${d.multiAz ? ' multi-AZ' : ''} (${d.allocatedStorage} GiB)`,
        azs,
        h,
      ),
    );
  }
  // At desired and min size a pool is priced at its first (preferred) type; at max at its most
  // expensive one, as the group may launch any type it allows.
  const priciest = (types: readonly string[]) =>
    types.reduce((a, t) => ((EC2_ON_DEMAND[t] ?? 0) > (EC2_ON_DEMAND[a] ?? 0) ? t : a), types[0]!);
  // every allowed type must be priced for a budget to hold
  for (const p of spec.pools) for (const t of p.instanceTypes) ec2(t);
  const poolLines = (size: 'min' | 'desired' | 'max') =>
    spec.pools.map((p) => {
      const n = p[size];
      const type = size === 'max' ? priciest(p.instanceTypes) : p.instanceTypes[0]!;
      const unit = ec2(type) + ebsHourly(p.volumeSize);
      const od = onDemandCount(n, p.spot.onDemandBase, p.spot.onDemandAbovePercent);
      const spotFraction = p.gpu ? SPOT_FRACTION.gpu : SPOT_FRACTION.cpu;
      return line(
        `pool ${p.name} (${type}, ${od} on-demand + ${n - od} spot)`,
        n,
        n * unit,
        od * unit + (n - od) * unit * spotFraction,
      );
    });
  const sum = (lines: readonly CostLine[]): CostTotals => ({
    onDemand: round(lines.reduce((a, l) => a + l.onDemandHourly, 0)),
    expected: round(lines.reduce((a, l) => a + l.expectedHourly, 0)),
  });
  const lines = [...fixed, ...poolLines('desired')];
  const peak = [...fixed, ...poolLines('max')];
  const idle = [...fixed, ...poolLines('min')];
  const hourly = sum(lines);
  return {
    region: spec.region,
    regionMultiplier: mult,
    lines,
    hourly,
    monthly: {
      onDemand: round(hourly.onDemand * HOURS_PER_MONTH),
      expected: round(hourly.expected * HOURS_PER_MONTH),
    },
    peakHourly: sum(peak),
    peakLines: peak,
    idleHourly: sum(idle),
    unpriced: [...new Set(unpriced)],
    source: PRICE_TABLE_SOURCE,
    date: PRICE_TABLE_DATE,
  };
}
