// Floor of target 1 for any Node-based runner: `node-spawn.mjs <n> <procs>` forks <procs> Node
// processes that each spawn `/bin/sh -c true` n/procs times, one after another, with corral's
// spawn options (own process group, stdout and stderr piped) and nothing else: no queue, no
// durable state, no logs. The per-task cost here is libuv's fork+exec of a ~50 MB Node process.
import { fork, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const [mode, a] = process.argv.slice(2);
function one() {
  return new Promise((resolve, reject) => {
    const c = spawn('/bin/sh', ['-c', 'true'], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`exit ${code}`))));
  });
}
if (mode === 'child') {
  for (let i = 0; i < Number(a); i++) await one();
} else {
  const n = Number(mode);
  const procs = Number(a ?? 2);
  const self = fileURLToPath(import.meta.url);
  await Promise.all(
    Array.from({ length: procs }, (_, p) => {
      const share = Math.floor(n / procs) + (p < n % procs ? 1 : 0);
      return new Promise((resolve, reject) => {
        const c = fork(self, ['child', String(share)], { stdio: 'inherit' });
        c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child exited ${code}`))));
      });
    }),
  );
}
