// The layers of ARCHITECTURE.md, enforced: every import of every file under src/ (static, dynamic,
// type-only and re-exports, read with the TypeScript compiler's own pre-processor) is checked
// against the allowed matrix below, and the module graph must have no cycle.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import ts from 'typescript';
import { ROOT } from './helpers.js';

const SRC = path.join(ROOT, 'src');

/**
 * Which layers each layer may import (besides itself, node: built-ins and the vendored bundles).
 * A layer is the first folder under src/ (`queue/sqlite` and the like are adapters of a port and
 * named by their folder); `root` is src/index.ts and src/cluster.ts, the package's entry points.
 * Keep this table and the one in ARCHITECTURE.md ("Layers") the same.
 */
const ALLOWED: Record<string, readonly string[]> = {
  util: [],
  spec: ['util'],
  protocol: ['spec', 'util'],
  ledger: ['protocol', 'queue', 'spec', 'util'],
  queue: ['aws', 'protocol', 'spec', 'util'],
  store: ['aws', 'protocol', 'spec', 'util'],
  compute: ['protocol', 'spec', 'util'],
  engine: ['ledger', 'protocol', 'queue', 'spec', 'store', 'compute', 'util'],
  workflow: ['queue', 'spec', 'util'],
  aws: ['spec', 'util'],
  worker: ['aws', 'compute', 'engine', 'ledger', 'protocol', 'queue', 'spec', 'store', 'util'],
  transport: [
    'aws',
    'compute',
    'engine',
    'ledger',
    'observe',
    'protocol',
    'queue',
    'spec',
    'store',
    'util',
    'worker',
  ],
  infra: ['aws', 'protocol', 'spec', 'util'],
  observe: ['engine', 'infra', 'ledger', 'protocol', 'queue', 'spec', 'util'],
  cli: [
    'aws',
    'compute',
    'engine',
    'infra',
    'ledger',
    'observe',
    'protocol',
    'queue',
    'spec',
    'store',
    'transport',
    'util',
    'worker',
    'workflow',
  ],
  // the package's entry points export the public API of every layer
  root: [
    'aws',
    'cli',
    'compute',
    'engine',
    'infra',
    'ledger',
    'observe',
    'protocol',
    'queue',
    'spec',
    'store',
    'transport',
    'util',
    'worker',
    'workflow',
  ],
};

/** Inside these layers only the port's own file may be imported by others: the adapters sit in subfolders. */
const PORT_FILES: Record<string, readonly string[]> = {
  queue: ['queue/queue.ts'],
  store: ['store/store.ts'],
  compute: ['compute/compute.ts'],
};

/** Layers whose adapters only the composition (cli, root, transport, worker) may name. */
const ADAPTER_USERS = new Set(['cli', 'root', 'transport', 'worker', 'observe', 'ledger']);

/**
 * Imports that break the rules and are on their way out, each `from -> to` (or `cycle: a b`),
 * should a change need one for a while; the test fails when one is fixed and still listed, so
 * this list only shrinks. Empty since issue 19 moved the cluster loops and the local adapters
 * behind the engine's ports.
 */
const PENDING = new Set<string>([]);

/** The violations not in PENDING, plus the PENDING entries no longer seen (so the list shrinks). */
function unexpected(found: string[], kind: (entry: string) => boolean): string[] {
  const seen = new Set(found.map((f) => f.split(' | ')[0]));
  const fresh = found.filter((f) => !PENDING.has(f.split(' | ')[0]));
  const gone = [...PENDING]
    .filter((p) => kind(p) && !seen.has(p))
    .map((p) => `${p} | fixed: remove it from PENDING`);
  return [...fresh, ...gone];
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return walk(p);
    return /\.ts$/.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

function layerOf(rel: string): string {
  const parts = rel.split('/');
  return parts.length === 1 ? 'root' : parts[0];
}

interface Edge {
  from: string;
  to: string;
  spec: string;
}

function imports(): { files: string[]; edges: Edge[]; external: Edge[] } {
  const files = walk(SRC).map((f) => path.relative(SRC, f).split(path.sep).join('/'));
  const edges: Edge[] = [];
  const external: Edge[] = [];
  for (const rel of files) {
    const text = readFileSync(path.join(SRC, rel), 'utf8');
    const info = ts.preProcessFile(text, true, true);
    for (const imp of info.importedFiles) {
      const spec = imp.fileName;
      if (spec.startsWith('.')) {
        const target = path.posix
          .normalize(path.posix.join(path.posix.dirname(rel), spec))
          .replace(/\.js$/, '.ts');
        edges.push({ from: rel, to: target, spec });
      } else external.push({ from: rel, to: spec, spec });
    }
  }
  return { files, edges, external };
}

test('every import stays inside the layer matrix of ARCHITECTURE.md', () => {
  const { files, edges } = imports();
  assert.ok(files.length > 100, `read ${files.length} source files`);
  const bad: string[] = [];
  for (const e of edges) {
    if (e.to.startsWith('vendor/')) continue;
    const from = layerOf(e.from);
    const to = layerOf(e.to);
    if (!(from in ALLOWED)) bad.push(`${e.from} | layer "${from}" is not in the matrix`);
    if (from === to) continue;
    if (!ALLOWED[from]?.includes(to)) bad.push(`${e.from} -> ${e.to} | ${from} may not import ${to}`);
    else if (PORT_FILES[to] && !PORT_FILES[to].includes(e.to) && !ADAPTER_USERS.has(from)) {
      bad.push(
        `${e.from} -> ${e.to} | ${from} may import the ${to} port (${PORT_FILES[to].join(', ')}), not an adapter`,
      );
    }
  }
  assert.deepEqual(
    unexpected(bad, (p) => !p.startsWith('cycle') && !p.includes('@')),
    [],
  );
});

test('the spec and the engine use no AWS SDK, CDK, logger or CLI package', () => {
  const { external } = imports();
  const bad = external
    .filter((e) => ['spec', 'engine', 'protocol', 'util'].includes(layerOf(e.from)))
    .filter((e) => /^(@aws-sdk|@smithy|aws-cdk-lib|constructs|@aws-cdk|pino|commander)/.test(e.to))
    .map((e) => `${e.from} -> ${e.to}`);
  assert.deepEqual(
    unexpected([...new Set(bad)], (p) => p.includes('@')),
    [],
  );
});

test('no import cycle between modules', () => {
  const { files, edges } = imports();
  const out = new Map<string, string[]>(files.map((f) => [f, []]));
  for (const e of edges) if (out.has(e.to)) out.get(e.from)!.push(e.to);
  // Tarjan's strongly connected components, iteratively: any component of more than one module is a cycle.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  for (const root of files) {
    if (idx.has(root)) continue;
    const work: [string, number][] = [[root, 0]];
    while (work.length > 0) {
      const top = work[work.length - 1];
      const [v, i] = top;
      if (i === 0) {
        idx.set(v, index);
        low.set(v, index);
        index++;
        stack.push(v);
        onStack.add(v);
      }
      const next = out.get(v)!;
      if (i < next.length) {
        top[1] = i + 1;
        const w = next[i];
        if (!idx.has(w)) work.push([w, 0]);
        else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1][0];
        low.set(parent, Math.min(low.get(parent)!, low.get(v)!));
      }
      if (low.get(v) === idx.get(v)) {
        const comp: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          comp.push(w);
        } while (w !== v);
        if (comp.length > 1) cycles.push(comp.sort());
      }
    }
  }
  assert.deepEqual(
    unexpected(
      cycles.map((c) => `cycle: ${c.join(' ')}`),
      (p) => p.startsWith('cycle'),
    ),
    [],
  );
});

test('the Compute port has one adapter, the local one; cloud pools scale themselves, and the port and ARCHITECTURE.md say so', () => {
  const { files } = imports();
  const adapters = files.filter((f) =>
    /\bimplements\s+(?:[\w, ]+,\s*)?Compute\b/.test(readFileSync(path.join(SRC, f), 'utf8')),
  );
  assert.deepEqual(adapters, ['compute/local/local-compute.ts']);
  const port = readFileSync(path.join(SRC, 'compute/compute.ts'), 'utf8');
  assert.match(port, /On AWS there is none: a cluster's pools scale themselves/);
  assert.doesNotMatch(port, /Adapters: .*on AWS, Auto Scaling/s);
  const row = readFileSync(path.join(ROOT, 'ARCHITECTURE.md'), 'utf8')
    .split('\n')
    .find((l) => l.startsWith('| **Compute**'));
  assert.match(row ?? '', /\| none: pools scale themselves/);
  // and the pools do follow the backlog: the worker pool construct scales on it
  assert.match(readFileSync(path.join(SRC, 'infra/worker-pool.ts'), 'utf8'), /BACKLOG_EXPRESSION/);
});
