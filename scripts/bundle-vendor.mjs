// Part of `npm run build`: replaces dist/vendor/*.js (re-exports of zod, yaml and pino, compiled by
// tsc) with one bundled ES module each, so that a CLI start loads one file instead of ~100
// (BENCHMARKS.md, 1a: zod 95 -> ~50 ms, yaml 40 -> 9 ms, pino 40 -> 18 ms). Without esbuild the
// re-exports stay, and work the same, more slowly.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  process.stderr.write('corral build: esbuild is not installed; zod and yaml stay unbundled\n');
  process.exit(0);
}
const dir = path.join(root, 'dist/vendor');
for (const f of readdirSync(path.join(root, 'src/vendor'))) {
  if (!f.endsWith('.ts')) continue;
  await esbuild.build({
    entryPoints: [path.join(root, 'src/vendor', f)],
    outfile: path.join(dir, f.replace(/\.ts$/, '.js')),
    bundle: true,
    format: 'esm',
    // pino is CommonJS for Node (its require()s of builtins need a real require); yaml and zod
    // have ES builds, which the neutral platform picks
    ...(f === 'pino.ts'
      ? {
          platform: 'node',
          banner: {
            js: "import { createRequire as __corralRequire } from 'node:module'; const require = __corralRequire(import.meta.url);",
          },
        }
      : { platform: 'neutral', mainFields: ['module', 'main'] }),
    target: 'node20',
    legalComments: 'inline',
    logLevel: 'warning',
  });
}
