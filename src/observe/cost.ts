/**
 * The cost estimate of a run on a cluster: instance-hours (per host, from its first worker's start
 * to its last heartbeat) times the instance type's hourly price from the bundled price table.
 */
import { EC2_ON_DEMAND, PRICE_TABLE_DATE, REGION_MULTIPLIER, SPOT_FRACTION } from '../infra/prices.js';
import { UsageError } from '../spec/errors.js';
import type { WorkerView } from './snapshot.js';

/** What the instances of a run were. */
export interface Pricing {
  readonly instanceType: string;
  /** @default us-east-1 */
  readonly region?: string;
  /** Spot instances (priced at the table's typical spot fraction). @default false */
  readonly spot?: boolean;
}

/** A run's estimated cost. */
export interface CostEstimate {
  readonly instanceType: string;
  readonly region: string;
  readonly spot: boolean;
  readonly hosts: number;
  readonly instanceHours: number;
  readonly hourly: number;
  readonly usd: number;
  /** Where the price comes from, and what is left out. */
  readonly note: string;
}

/**
 * Pricing of a run: the `cluster` metadata a cluster run records (JSON with instanceType, region,
 * spot), overridden by what the user passes; undefined for a local run.
 */
export function pricingOf(meta: Record<string, string>, given?: Partial<Pricing>): Pricing | undefined {
  let recorded: Partial<Pricing> = {};
  try {
    if (meta.cluster) recorded = JSON.parse(meta.cluster) as Partial<Pricing>;
  } catch {
    recorded = {};
  }
  const p = {
    ...recorded,
    ...Object.fromEntries(Object.entries(given ?? {}).filter(([, v]) => v !== undefined)),
  };
  if (!p.instanceType) return undefined;
  if (!(p.instanceType in EC2_ON_DEMAND)) {
    throw new UsageError(
      '--instance-type',
      `no price for instance type ${p.instanceType} in the bundled table`,
      `use one of ${Object.keys(EC2_ON_DEMAND).slice(0, 8).join(', ')}, …`,
    );
  }
  return p as Pricing;
}

/** Estimates a run's cost from its workers' hosts and lifetimes. */
export function estimateRunCost(workers: readonly WorkerView[], pricing: Pricing): CostEstimate {
  const spans = new Map<string, [number, number]>();
  for (const w of workers) {
    const s = spans.get(w.host);
    const end = Math.max(w.heartbeatAt, w.startedAt);
    if (s) spans.set(w.host, [Math.min(s[0], w.startedAt), Math.max(s[1], end)]);
    else spans.set(w.host, [w.startedAt, end]);
  }
  const instanceHours = [...spans.values()].reduce((h, [a, b]) => h + (b - a) / 3_600_000, 0);
  const region = pricing.region ?? 'us-east-1';
  const spot = pricing.spot ?? false;
  const hourly =
    EC2_ON_DEMAND[pricing.instanceType]! * (REGION_MULTIPLIER[region] ?? 1) * (spot ? SPOT_FRACTION.cpu : 1);
  return {
    instanceType: pricing.instanceType,
    region,
    spot,
    hosts: spans.size,
    instanceHours,
    hourly,
    usd: instanceHours * hourly,
    note: `instance time only, at ${spot ? 'typical spot' : 'on-demand'} prices of ${PRICE_TABLE_DATE}; storage, requests, transfer and the always-on parts of the cluster are not included`,
  };
}

/**
 * Estimates the cost of a run on a cluster from what this machine saw: the workers that committed
 * results, each counted as one instance for the run's wall time. The cluster's actual instance
 * hours (boot, idle time, scale-in, several workers on one instance) are not known here.
 */
export function estimateClusterCost(workers: number, seconds: number, pricing: Pricing): CostEstimate {
  const region = pricing.region ?? 'us-east-1';
  const spot = pricing.spot ?? false;
  const hourly =
    EC2_ON_DEMAND[pricing.instanceType]! * (REGION_MULTIPLIER[region] ?? 1) * (spot ? SPOT_FRACTION.cpu : 1);
  const instanceHours = (workers * Math.max(0, seconds)) / 3600;
  return {
    instanceType: pricing.instanceType,
    region,
    spot,
    hosts: workers,
    instanceHours,
    hourly,
    usd: instanceHours * hourly,
    note: `an estimate: ${workers} worker(s) seen committing results × the run's wall time, each counted as one instance, at ${spot ? 'typical spot' : 'on-demand'} prices of ${PRICE_TABLE_DATE}; the cluster's actual instance hours (boot, idle, scale-in) are not known on this machine, and storage, requests, transfer and the always-on parts of the cluster are not included`,
  };
}
