// Preloaded with NODE_OPTIONS="--import ./bench/cpu-prof-hook.mjs" (node refuses --cpu-prof in
// NODE_OPTIONS): profiles every Node process of a run, workers included, into $CORRAL_PROF_DIR,
// sampling every $CORRAL_PROF_US microseconds (default 500).
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

const dir = process.env.CORRAL_PROF_DIR;
if (dir) {
  const s = new Session();
  s.connect();
  s.post('Profiler.enable');
  s.post('Profiler.setSamplingInterval', { interval: Number(process.env.CORRAL_PROF_US ?? 500) });
  s.post('Profiler.start');
  process.on('exit', () => {
    s.post('Profiler.stop', (err, r) => {
      if (err) return;
      mkdirSync(dir, { recursive: true });
      const name = `${path.basename(process.argv[1] ?? 'node')}-${process.pid}.cpuprofile`;
      writeFileSync(path.join(dir, name), JSON.stringify(r.profile));
    });
  });
}
