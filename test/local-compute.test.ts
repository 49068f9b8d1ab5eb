/**
 * The local Compute adapter on its own, with real worker processes: a worker that cannot start
 * (here: its job file is missing) is not started again and again; after a few quick deaths in a
 * row the adapter gives up and says why, so that the run ends instead of spinning.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { WorkerEvent } from '../src/compute/compute.js';
import { LocalCompute } from '../src/compute/local/local-compute.js';
import { tempDir, waitFor } from './helpers.js';

test('workers that keep dying at start are given up on, with the reason', async (t) => {
  const dir = tempDir(t);
  for (const d of ['logs', 'workers', 'store']) mkdirSync(path.join(dir, d));
  const events: WorkerEvent[] = [];
  const compute = new LocalCompute({
    jobJson: path.join(dir, 'missing-job.json'),
    db: path.join(dir, 'state.db'),
    logsDir: path.join(dir, 'logs'),
    storeRoot: path.join(dir, 'store'),
    workersDir: path.join(dir, 'workers'),
    idPrefix: 'wtest',
    onEvent: (e) => events.push(e),
  });
  t.after(() => compute.abort());
  await compute.scaleTo(1);
  await waitFor(() => compute.failure !== undefined, 60_000);
  assert.match(
    compute.failure!,
    /5 worker processes in a row exited within 3s of starting \(last: exit 70\)/,
  );
  assert.equal(events.filter((e) => e.type === 'lost').length, 5);
  // and none is started after that
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(compute.running(), 0);
  assert.equal(events.filter((e) => e.type === 'started').length, 5);
});
