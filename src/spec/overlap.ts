/**
 * Whether two path patterns can name the same file: an `outputs` pattern (`out/{index}.txt`) and
 * another one, or an input glob (`data/*.csv`). Each pattern is read as a small automaton over
 * characters; two patterns overlap when their product accepts some path. Placeholders stand for
 * what they can be: `{index}` and the chunk numbers are digits, `{input.name}` and `{input.stem}`
 * stay within one folder, `{input.path}` may span folders.
 */
import path from 'node:path';

/** What one edge of the automaton reads: nothing, one given character, or one of a class. */
type Read = '' | { readonly ch: string } | 'digit' | 'segment' | 'any';

interface Nfa {
  /** edges[state] = [what it reads, next state] */
  readonly edges: Array<Array<[Read, number]>>;
  readonly accept: number;
  /** Characters the pattern names literally. */
  readonly literals: Set<string>;
}

class Builder {
  readonly edges: Array<Array<[Read, number]>> = [[]];
  readonly literals = new Set<string>();
  cur = 0;
  private state(): number {
    this.edges.push([]);
    return this.edges.length - 1;
  }
  lit(ch: string): void {
    const n = this.state();
    this.edges[this.cur]!.push([{ ch }, n]);
    this.literals.add(ch);
    this.cur = n;
  }
  one(r: Read): void {
    const n = this.state();
    this.edges[this.cur]!.push([r, n]);
    this.cur = n;
  }
  /** Any number (0 or more) of characters of a class. */
  star(r: Read): void {
    this.edges[this.cur]!.push([r, this.cur]);
  }
  /** `**` followed by `/`: nothing, or any folders ending in `/`. */
  folders(): void {
    const from = this.cur;
    const loop = this.state();
    const after = this.state();
    this.edges[from]!.push(['', loop], ['', after]);
    this.edges[loop]!.push(['any', loop], [{ ch: '/' }, after]);
    this.literals.add('/');
    this.cur = after;
  }
  done(): Nfa {
    return { edges: this.edges, accept: this.cur, literals: this.literals };
  }
}

function normalize(p: string): string {
  return path.posix.normalize(p.replaceAll('\\', '/')).replace(/^(\.\/)+/, '');
}

const DIGIT_PLACEHOLDERS = new Set(['index', 'chunk.start', 'chunk.end', 'chunk.length']);

/** The automaton of an `outputs` pattern. */
export function outputsNfa(pattern: string): Nfa {
  const b = new Builder();
  const p = normalize(pattern);
  for (let i = 0; i < p.length; ) {
    const m = /^\{([a-z.]+)\}/.exec(p.slice(i));
    if (m) {
      const name = m[1]!;
      if (DIGIT_PLACEHOLDERS.has(name)) {
        b.one('digit');
        b.star('digit');
      } else if (name === 'input.path') {
        b.one('any');
        b.star('any');
      } else b.star('segment');
      i += m[0].length;
    } else b.lit(p[i++]!);
  }
  return b.done();
}

/** Alternatives of the first `{a,b}` group of a glob, expanded (at most `limit` patterns in all). */
function expandBraces(glob: string, limit = 64): string[] | undefined {
  const open = glob.indexOf('{');
  if (open < 0) return [glob];
  let depth = 0;
  let close = -1;
  const commas: number[] = [];
  for (let i = open; i < glob.length; i++) {
    if (glob[i] === '{') depth++;
    else if (glob[i] === '}' && --depth === 0) {
      close = i;
      break;
    } else if (glob[i] === ',' && depth === 1) commas.push(i);
  }
  if (close < 0 || commas.length === 0) return undefined;
  const parts: string[] = [];
  let from = open + 1;
  for (const c of [...commas, close]) {
    parts.push(glob.slice(from, c));
    from = c + 1;
  }
  const out: string[] = [];
  for (const part of parts) {
    const rest = expandBraces(glob.slice(0, open) + part + glob.slice(close + 1), limit);
    if (!rest) return undefined;
    out.push(...rest);
    if (out.length > limit) return undefined;
  }
  return out;
}

/**
 * The automata of an input path or glob (`*`, `**`, `?`, `[...]`, `{a,b}`), or undefined for
 * what this reading does not cover (extended globs such as `+(a|b)`): those are not checked.
 */
export function inputNfas(glob: string): Nfa[] | undefined {
  if (/[@!+*?]\(/.test(glob)) return undefined;
  const alternatives = expandBraces(glob);
  if (!alternatives) return undefined;
  const out: Nfa[] = [];
  for (const alt of alternatives) {
    const g = normalize(alt);
    const b = new Builder();
    for (let i = 0; i < g.length; ) {
      const c = g[i]!;
      if (c === '\\' && i + 1 < g.length) {
        b.lit(g[i + 1]!);
        i += 2;
      } else if (c === '*' && g[i + 1] === '*') {
        if (g[i + 2] === '/') {
          b.folders();
          i += 3;
        } else {
          b.star('any');
          i += 2;
        }
      } else if (c === '*') {
        b.star('segment');
        i++;
      } else if (c === '?') {
        b.one('segment');
        i++;
      } else if (c === '[') {
        const end = g.indexOf(']', i + 2);
        if (end < 0) return undefined;
        // any one character of the set (read wider than it is: never misses an overlap)
        b.one('segment');
        i = end + 1;
      } else {
        b.lit(c);
        i++;
      }
    }
    out.push(b.done());
  }
  return out;
}

function reads(r: Read, ch: string): boolean {
  if (r === '') return false;
  if (r === 'any') return true;
  if (r === 'segment') return ch !== '/';
  if (r === 'digit') return ch >= '0' && ch <= '9';
  return r.ch === ch;
}

function closure(nfa: Nfa, states: Iterable<number>): Set<number> {
  const out = new Set(states);
  const todo = [...out];
  while (todo.length > 0) {
    const s = todo.pop()!;
    for (const [r, n] of nfa.edges[s]!)
      if (r === '' && !out.has(n)) {
        out.add(n);
        todo.push(n);
      }
  }
  return out;
}

function step(nfa: Nfa, states: Set<number>, ch: string): Set<number> {
  const next: number[] = [];
  for (const s of states) for (const [r, n] of nfa.edges[s]!) if (reads(r, ch)) next.push(n);
  return closure(nfa, next);
}

/** Whether some path is accepted by both automata. */
export function nfasOverlap(a: Nfa, b: Nfa): boolean {
  // a character that neither pattern names behaves like one of these three
  const alphabet = new Set([...a.literals, ...b.literals, '0', 'x', '/']);
  const key = (x: Set<number>, y: Set<number>) => `${[...x].sort().join(',')}|${[...y].sort().join(',')}`;
  const start: [Set<number>, Set<number>] = [closure(a, [0]), closure(b, [0])];
  const seen = new Set([key(...start)]);
  const todo = [start];
  // bounded: both patterns are short, and each pair of state sets is visited once
  for (let visits = 0; todo.length > 0 && visits < 100_000; visits++) {
    const [x, y] = todo.pop()!;
    if (x.has(a.accept) && y.has(b.accept)) return true;
    for (const ch of alphabet) {
      const nx = step(a, x, ch);
      if (nx.size === 0) continue;
      const ny = step(b, y, ch);
      if (ny.size === 0) continue;
      const k = key(nx, ny);
      if (!seen.has(k)) {
        seen.add(k);
        todo.push([nx, ny]);
      }
    }
  }
  return false;
}

/** Whether two `outputs` patterns can name the same file. */
export function outputsOverlap(a: string, b: string): boolean {
  return nfasOverlap(outputsNfa(a), outputsNfa(b));
}

/** Whether an `outputs` pattern can name a file an input path or glob matches (unknown: false). */
export function outputsMatchInput(outputs: string, input: string): boolean {
  const ins = inputNfas(input);
  if (!ins) return false;
  const out = outputsNfa(outputs);
  return ins.some((n) => nfasOverlap(out, n));
}
