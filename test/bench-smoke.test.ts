import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { ROOT } from './helpers.js';

// Keeps the bench scripts working: runs them at the tiny size and checks every row is printed.
// No timing is asserted; benchmarks are not unit tests.
test('bench/run.ts --size tiny --no-write prints every row', { timeout: 300_000 }, () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--size', 'tiny', '--no-write'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 280_000,
  });
  assert.equal(r.status, 0, `bench exited with ${r.status}\n${r.stderr.slice(-3000)}`);
  for (const id of ['1a', '1b', '1c', '2a', '2b', '3a', '3b', '4', '5a', '5b', '5c', '6a', '6b', '7', '8']) {
    assert.match(r.stdout, new RegExp(`^${id}\\s`, 'm'), `row ${id} is missing\n${r.stdout}`);
  }
  // issue 24: a wide streaming workflow, durable outputs, all AWS requests per task, Snakemake and
  // Dask (skipped with the reason where not installed)
  for (const id of ['8b', '9a', '9b', '10', '11a', '11b']) {
    assert.match(r.stdout, new RegExp(`^${id}\\s`, 'm'), `row ${id} is missing\n${r.stdout}`);
  }
  assert.match(r.stdout, /^machine: .+ cores, .+ GiB RAM, .+ Node v\d+/m);
});
