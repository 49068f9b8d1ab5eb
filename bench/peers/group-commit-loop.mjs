// Peer of row 9 (issue 24, item 2): a bare Node loop that writes each of N small files to a
// staging folder, hard-links it to its output path, and syncs the file system once per 256 files
// (group commit: `sync -f`, i.e. syncfs(2)) before it unlinks their staged names. No state, no
// workers: the floor of durable outputs on this disk.
//   node group-commit-loop.mjs DIR N
import { execFileSync } from 'node:child_process';
import { linkSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const [dir, nArg] = process.argv.slice(2);
const n = Number(nArg);
const staging = path.join(dir, 'staging');
const out = path.join(dir, 'out');
mkdirSync(staging, { recursive: true });
mkdirSync(out, { recursive: true });
const t0 = performance.now();
for (let i = 0; i < n; i += 256) {
  const end = Math.min(n, i + 256);
  for (let j = i; j < end; j++) writeFileSync(path.join(staging, String(j)), `${JSON.stringify({ i: j })}\n`);
  execFileSync('sync', ['-f', staging]);
  for (let j = i; j < end; j++) {
    linkSync(path.join(staging, String(j)), path.join(out, `${j}.json`));
    unlinkSync(path.join(staging, String(j)));
  }
}
execFileSync('sync', ['-f', out]);
console.log(JSON.stringify({ files: n, ms: performance.now() - t0 }));
