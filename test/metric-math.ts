/**
 * A small evaluator of CloudWatch metric math, for the expressions a synthesized template holds
 * (worker-pool.ts): numbers, metric ids, `+ - * /`, comparisons (`> < >= <= == !=`), `AND`,
 * `OR`, `IF(c, a, b)` and `FILL(m, value | REPEAT)`, point by point over time series where a
 * missing point is `null`. As in CloudWatch, an arithmetic or comparison on a missing point gives
 * a missing point and `IF` with a missing condition gives a missing point; `IF` picks per point,
 * so a division by zero in the branch it does not pick is harmless. A division by zero that
 * reaches the result throws: CloudWatch would drop the point, and the policy would act on no data.
 */

export type Series = ReadonlyArray<number | null>;

type Node =
  | { k: 'num'; v: number }
  | { k: 'id'; name: string }
  | { k: 'repeat' }
  | { k: 'bin'; op: string; a: Node; b: Node }
  | { k: 'call'; fn: string; args: Node[] };

function tokenize(src: string): string[] {
  const re = /\s*(>=|<=|==|!=|[-+*/(),<>]|\d+(?:\.\d+)?|[A-Za-z_][A-Za-z0-9_]*)/y;
  const out: string[] = [];
  let i = 0;
  while (i < src.length) {
    if (/^\s*$/.test(src.slice(i))) break;
    re.lastIndex = i;
    const m = re.exec(src);
    if (!m) throw new Error(`metric math: cannot read "${src.slice(i)}"`);
    out.push(m[1]!);
    i = re.lastIndex;
  }
  return out;
}

const LEVELS: string[][] = [['OR'], ['AND'], ['>', '<', '>=', '<=', '==', '!='], ['+', '-'], ['*', '/']];

/** Parses an expression. */
export function parse(src: string): Node {
  const t = tokenize(src);
  let p = 0;
  const level = (n: number): Node => {
    if (n === LEVELS.length) return atom();
    let a = level(n + 1);
    while (p < t.length && LEVELS[n]!.includes(t[p]!)) {
      const op = t[p++]!;
      a = { k: 'bin', op, a, b: level(n + 1) };
    }
    return a;
  };
  const atom = (): Node => {
    const tok = t[p++];
    if (tok === undefined) throw new Error('metric math: unexpected end');
    if (tok === '(') {
      const e = level(0);
      if (t[p++] !== ')') throw new Error('metric math: ) expected');
      return e;
    }
    if (/^\d/.test(tok)) return { k: 'num', v: Number(tok) };
    if (tok === 'REPEAT') return { k: 'repeat' };
    if (t[p] === '(') {
      p++;
      const args: Node[] = [];
      while (t[p] !== ')') {
        args.push(level(0));
        if (t[p] === ',') p++;
      }
      p++;
      return { k: 'call', fn: tok, args };
    }
    return { k: 'id', name: tok };
  };
  const e = level(0);
  if (p !== t.length) throw new Error(`metric math: unexpected ${t[p]}`);
  return e;
}

/** Evaluates an expression over series of equal length (`null`: no data at that point). */
export function evaluate(src: string, series: Readonly<Record<string, Series>>, length: number): Series {
  const ev = (n: Node): Series => {
    switch (n.k) {
      case 'num':
        return Array.from({ length }, () => n.v);
      case 'id': {
        const s = series[n.name];
        if (!s) throw new Error(`metric math: no series ${n.name}`);
        return s;
      }
      case 'repeat':
        throw new Error('metric math: REPEAT outside FILL');
      case 'call': {
        if (n.fn === 'FILL') {
          const s = ev(n.args[0]!);
          const how = n.args[1]!;
          const fill = how.k === 'repeat' ? undefined : ev(how);
          let last: number | null = null;
          return s.map((v, i) => {
            if (v !== null) {
              last = v;
              return v;
            }
            return fill ? fill[i]! : last;
          });
        }
        if (n.fn === 'IF') {
          const [c, a, b] = n.args.map(ev) as [Series, Series, Series];
          return c.map((v, i) => (v === null ? null : v !== 0 ? a[i]! : b[i]!));
        }
        throw new Error(`metric math: no function ${n.fn}`);
      }
      case 'bin': {
        const a = ev(n.a);
        const b = ev(n.b);
        return a.map((x, i) => {
          const y = b[i]!;
          if (x === null || y === null) return null;
          switch (n.op) {
            case '+':
              return x + y;
            case '-':
              return x - y;
            case '*':
              return x * y;
            case '/':
              return y === 0 ? Number.NaN : x / y; // thrown if it reaches the result
            case '>':
              return x > y ? 1 : 0;
            case '<':
              return x < y ? 1 : 0;
            case '>=':
              return x >= y ? 1 : 0;
            case '<=':
              return x <= y ? 1 : 0;
            case '==':
              return x === y ? 1 : 0;
            case '!=':
              return x !== y ? 1 : 0;
            case 'AND':
              return x !== 0 && y !== 0 ? 1 : 0;
            default:
              return x !== 0 || y !== 0 ? 1 : 0;
          }
        });
      }
    }
  };
  const out = ev(parse(src));
  const bad = out.findIndex((v) => Number.isNaN(v));
  if (bad >= 0) throw new Error(`metric math: division by zero at point ${bad}`);
  return out;
}
