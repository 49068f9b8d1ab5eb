// Part of `npm run build`: compiles the C task forker (src/worker/forker.c) into
// dist/native/corral-forker when a C compiler is on PATH. Without one the build still succeeds and
// workers use the perl forker, which behaves the same and is slower per task (BENCHMARKS.md, 1a).
import { execFileSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'src/worker/forker.c');
const outDir = path.join(root, 'dist/native');
const out = path.join(outDir, 'corral-forker');
mkdirSync(outDir, { recursive: true });
const tmp = `${out}.${process.pid}`;
const compilers = [process.env.CC, 'cc', 'gcc', 'clang'].filter(Boolean);
let built = false;
for (const cc of compilers) {
  try {
    execFileSync(cc, ['-O2', '-Wall', '-o', tmp, src], { stdio: ['ignore', 'ignore', 'pipe'] });
    renameSync(tmp, out);
    built = true;
    break;
  } catch (err) {
    rmSync(tmp, { force: true });
    if (err.code !== 'ENOENT')
      process.stderr.write(`corral build: ${cc} could not compile ${src}: ${err.stderr ?? err.message}\n`);
  }
}
if (!built) {
  rmSync(out, { force: true });
  process.stderr.write('corral build: no C compiler on PATH; shell tasks will run through the perl forker\n');
}
