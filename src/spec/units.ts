import { z } from '../vendor/zod.js';

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/** Parses `64MiB`, `1.5GB`, `4096` into bytes; undefined when it is not a size. */
export function parseSize(v: string | number): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.floor(v) : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  if (!m) return undefined;
  const unit = SIZE_UNITS[m[2]!.toLowerCase()];
  return unit === undefined ? undefined : Math.floor(Number(m[1]) * unit);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `30s`, `5m`, `1h30m`, `250ms` or a number of seconds into milliseconds. */
export function parseDuration(v: string | number): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.round(v * 1000) : undefined;
  const s = v.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    matched = re.lastIndex;
  }
  return matched === s.length && matched > 0 ? Math.round(total) : undefined;
}

/** A zod field for sizes written as `64MiB` (or bytes); outputs a number of bytes. */
export const sizeField = (opts: { min?: number } = {}) =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    const n = parseSize(v);
    if (n === undefined || n < (opts.min ?? 0)) {
      ctx.addIssue({
        code: 'custom',
        message: `"${v}" is not a size${opts.min ? ` of at least ${opts.min} bytes` : ''} | fix: write a size such as 64MiB, 512KiB or 1GB`,
      });
      return z.NEVER;
    }
    return n;
  });

/**
 * The longest duration corral accepts: Node's timers hold at most 2^31-1 ms (~24.8 days) and fire
 * at once past it, so a longer timeout would end every attempt immediately.
 */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/**
 * A zod field for durations written as `30s`, `5m`, `1h` (or seconds); outputs milliseconds, at
 * least `min` (default 0). `timer: true` bounds it by {@link MAX_DURATION_MS}: for durations
 * corral times itself (timeouts, leases, backoff, idle exit).
 */
export const durationField = (opts: { min?: number; timer?: boolean } = {}) =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    const n = parseDuration(v);
    if (n === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `"${v}" is not a duration | fix: write a duration such as 30s, 5m or 1h`,
      });
      return z.NEVER;
    }
    if (opts.timer && n > MAX_DURATION_MS) {
      ctx.addIssue({
        code: 'custom',
        message: `"${v}" is longer than 24 days, the longest duration corral can time | fix: write at most 24d`,
      });
      return z.NEVER;
    }
    const min = opts.min ?? 0;
    if (n < min) {
      ctx.addIssue({
        code: 'custom',
        message: `"${v}" is shorter than ${min === 1 ? '1ms' : `${min}ms`} | fix: write a positive duration such as 30s`,
      });
      return z.NEVER;
    }
    return n;
  });
