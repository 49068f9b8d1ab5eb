import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eachLimit } from '../src/transport/cluster/cluster-common.js';

const tick = () => new Promise((r) => setTimeout(r, 1));

test('eachLimit runs every item, never more than the limit at once', async () => {
  let running = 0;
  let most = 0;
  const seen: number[] = [];
  await eachLimit(
    Array.from({ length: 50 }, (_, i) => i),
    4,
    async (i) => {
      running++;
      most = Math.max(most, running);
      await tick();
      seen.push(i);
      running--;
    },
  );
  assert.equal(most, 4);
  assert.deepEqual(
    seen.sort((a, b) => a - b),
    Array.from({ length: 50 }, (_, i) => i),
  );
});

test('eachLimit: the first error stops it from starting more, and is thrown after the running ones end', async () => {
  const started: number[] = [];
  let ended = 0;
  await assert.rejects(
    eachLimit(
      Array.from({ length: 50 }, (_, i) => i),
      3,
      async (i) => {
        started.push(i);
        await tick();
        if (i === 4) throw new Error('item 4 failed');
        ended++;
      },
    ),
    /item 4 failed/,
  );
  assert.ok(started.length < 10, `started ${started.length}`);
  assert.equal(ended, started.length - 1, 'an item was still running when the error was thrown');
});
