import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT, runCli, tempDir } from './helpers.js';

test('the checksums example runs end to end and its results verify against the whole file', async (t) => {
  // GIVEN a copy of the example
  const dir = tempDir(t);
  cpSync(path.join(ROOT, 'examples/checksums'), path.join(dir, 'checksums'), {
    recursive: true,
    filter: (src) => !/\/out(-shell)?$/.test(src),
  });
  // WHEN both jobs run
  const a = await runCli(['run', 'checksums/job.yaml'], { cwd: dir });
  const b = await runCli(['run', 'checksums/job-shell.yaml'], { cwd: dir });
  // THEN they succeed, say where results are, and the results check out
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  assert.match(a.stdout, /job checksums succeeded: 16\/16 tasks done, 0 failed/);
  assert.match(a.stdout, /results: checksums\/out\//);
  assert.equal(readdirSync(path.join(dir, 'checksums/out')).length, 16);
  const verify = execFileSync(process.execPath, [path.join(dir, 'checksums/verify.mjs')], {
    encoding: 'utf8',
  });
  assert.match(verify, /ok: 16 chunks cover 1048588 bytes and 21079 lines/);
  // AND no staging leftovers are visible among the outputs
  assert.deepEqual(readdirSync(path.join(dir, 'checksums')).sort(), [
    'chunk-stats.ts',
    'data',
    'job-shell.yaml',
    'job.yaml',
    'out',
    'out-shell',
    'verify.mjs',
  ]);
});
