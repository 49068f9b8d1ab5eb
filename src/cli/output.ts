import { InvalidArgumentError } from 'commander';

/** Writes one JSON document to stdout (for `--json`). */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Formats seconds as `1h02m`, `3m05s` or `12.3s`. */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** Parses a positive integer CLI flag, naming the flag on bad input. */
export function parsePositiveInt(flag: string, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    // decimal digits only: Number() would also take 1e1, 0x2 and ' 2 '
    const n = /^[0-9]+$/.test(v) ? Number(v) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < 1) {
      throw new InvalidArgumentError(`${flag} must be a whole number of at least 1, not "${v}"`);
    }
    if (n > max) throw new InvalidArgumentError(`${flag} must be at most ${max}, not "${v}"`);
    return n;
  };
}

/** A task's `input → output`, once: a HyperFlow process's input (`in a → out b`) names its outputs already. */
export function inputToOutput(input: string | undefined, output: string | undefined): string {
  const shown = input ?? '-';
  return output === undefined || shown.endsWith(` out ${output}`) ? shown : `${shown} → ${output}`;
}
