/** An IPv4 CIDR block as numbers: `base` is the network address as an unsigned 32-bit integer. */
export interface Cidr {
  /** Network address. */
  readonly base: number;
  /** Prefix length, 0–32. */
  readonly mask: number;
}

const CIDR_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

/** Parses `10.0.0.0/16`; undefined when it is not a valid IPv4 CIDR whose host bits are zero. */
export function parseCidr(text: string): Cidr | undefined {
  const m = CIDR_RE.exec(text.trim());
  if (!m) return undefined;
  const octets = m.slice(1, 5).map(Number);
  const mask = Number(m[5]);
  if (octets.some((o) => o > 255) || mask > 32) return undefined;
  const base = ((octets[0]! << 24) >>> 0) + (octets[1]! << 16) + (octets[2]! << 8) + octets[3]!;
  if (base % blockSize(mask) !== 0) return undefined;
  return { base, mask };
}

/** Number of addresses in a block of this prefix length. */
export function blockSize(mask: number): number {
  return 2 ** (32 - mask);
}

/** Formats a block back to `a.b.c.d/m`. */
export function formatCidr(c: Cidr): string {
  const b = c.base;
  return `${b >>> 24}.${(b >>> 16) & 255}.${(b >>> 8) & 255}.${b & 255}/${c.mask}`;
}

/** True when `inner` lies entirely inside `outer`. */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  return (
    inner.mask >= outer.mask &&
    inner.base >= outer.base &&
    inner.base + blockSize(inner.mask) <= outer.base + blockSize(outer.mask)
  );
}

/** True when the two blocks share at least one address. */
export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return a.base < b.base + blockSize(b.mask) && b.base < a.base + blockSize(a.mask);
}

/**
 * Carves consecutive, aligned blocks of the given prefix lengths out of `vpc`, in order.
 * Returns undefined when they do not fit.
 */
export function carveSubnets(vpc: Cidr, masks: readonly number[]): Cidr[] | undefined {
  const end = vpc.base + blockSize(vpc.mask);
  let cursor = vpc.base;
  const out: Cidr[] = [];
  for (const mask of masks) {
    if (mask < vpc.mask) return undefined;
    const size = blockSize(mask);
    cursor = Math.ceil(cursor / size) * size;
    if (cursor + size > end) return undefined;
    out.push({ base: cursor, mask });
    cursor += size;
  }
  return out;
}
