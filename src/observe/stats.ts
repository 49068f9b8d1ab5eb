/** Small statistics over task durations, for the report. */

/** Duration statistics of a set of attempts (seconds). */
export interface DurationStats {
  readonly n: number;
  readonly min: number;
  readonly p25: number;
  readonly median: number;
  readonly mean: number;
  readonly p75: number;
  readonly p90: number;
  readonly max: number;
  /** Sum of the durations. */
  readonly total: number;
}

/** The q-quantile (0..1) of sorted values, interpolated linearly. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Statistics of durations in seconds; undefined when there are none. */
export function durationStats(values: readonly number[]): DurationStats | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  const total = s.reduce((a, b) => a + b, 0);
  return {
    n: s.length,
    min: s[0]!,
    p25: quantile(s, 0.25),
    median: quantile(s, 0.5),
    mean: total / s.length,
    p75: quantile(s, 0.75),
    p90: quantile(s, 0.9),
    max: s.at(-1)!,
    total,
  };
}

/** Formats seconds as `850ms`, `12.3s`, `3m05s` or `1h02m`. */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '–';
  if (s < 1) return `${Math.round(s * 1000)}ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
