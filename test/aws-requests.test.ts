// Issue 24, item 1: every AWS request of a cluster job of small tasks with outputs, counted at
// the peer (fauxqs, real workers and coordinator, the real AWS SDK): no request per task beyond
// the protocol's own (a task's output object and its conditional commit marker; the coordinator's
// downloads), and the counts and list-price cost that bench row 10 reports.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { countAwsRequests, pricePerRequest } from '../bench/aws-requests.js';
import { tempDir } from './helpers.js';

test('a cluster job of small tasks with outputs: one PUT (its marker, holding the output) commits a task and one GET downloads it, a first attempt sent once looks for nothing, first attempt wins', async (t) => {
  const dir = tempDir(t);
  const n = 60;
  const c = await countAwsRequests(n, dir);
  // every output downloaded, whole
  for (let i = 0; i < n; i++)
    assert.equal(readFileSync(path.join(dir, 'out', `${i}.txt`), 'utf8'), `item-${i}\n`);
  // a worker looks for a task's output before a first attempt only when the task is marked as
  // sent again (a hand-back, a resumed coordinator: test/cluster-distributed.test.ts); here none is,
  // so the only HEADs are the job's own (the coordinator's preflight of the bucket, whether its
  // uploads are there already): a handful, not one per task
  assert.ok((c.byAction['s3:HEAD'] ?? 0) < 10, JSON.stringify(c.byAction));
  // per task: its conditional marker, which holds the small output; a few more for the job
  // (spec, manifest, records of what was sent)
  const puts = c.byAction['s3:PUT'] ?? 0;
  assert.ok(puts >= n && puts <= n + 10, `PUTs ${puts} for ${n} tasks`);
  // the coordinator downloads each output with one GET of its marker; a few more read the job's
  // records and sample the committers
  const gets = c.byAction['s3:GET'] ?? 0;
  assert.ok(gets >= n && gets <= n + 20, `GETs ${gets} for ${n} tasks`);
  // the cost is the requests at list prices
  const dollars = Object.entries(c.byAction).reduce((a, [k, v]) => a + v * pricePerRequest(k), 0);
  assert.ok(Math.abs(c.dollarsPerMillion - (dollars / n) * 1e6) < 1e-9);
  assert.equal(
    c.total,
    Object.values(c.byService).reduce((a, b) => a + b, 0),
  );
});
