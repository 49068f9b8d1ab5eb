import assert from 'node:assert/strict';
import { test } from 'node:test';
import { keptRows } from '../bench/lib.js';

// `bench/run.ts --only 4,10` rewrites rows 4 and 10 of BENCHMARKS.md and keeps the others, with the
// lines that say which run each kept row came from.
test('--only keeps the rows and notes of the benches not run, and the lines naming their run', () => {
  const section = [
    '',
    'Run `npm run bench` (`node --import tsx bench/run.ts --size full`) on 2026-12-02, 1529 s, best of 3.',
    '',
    'Machine: 2 cores; load average 3.0 at the start.',
    '',
    'Rows 9: run `npm run bench` (`… --only 9`) on 2026-12-02 10:00 UTC.',
    '',
    'Machine: 2 cores; load average 7.0 at the start.',
    '',
    '| # | what | corral | peer / limit | ratio | target | status |',
    '|---|---|---|---|---|---|---|',
    '| 1a | shell | 6.99 s | xargs | 1.30× | ≥0.8× | met |',
    '| 4 | sqs | 0.309 | budget | 0.88× | ≤0.35 | met |',
    '| 9a | module outputs | 4.49 s | loop | 0.17× | ≥0.5× | missed |',
    '| 10 | aws | 2.324 | budget | 6.64× | ≤0.35 | missed |',
    '| 11a | snakemake | 6.37 s | 13.2 s | 2.07× | ≥10× | missed |',
    '',
    'Commands and notes:',
    '',
    '- **1a** `corral run job.yaml` — best of 8',
    '- **4** `node bench/sqs-requests.ts`',
    '- **9a** `corral run w.mjs`',
    '- **10** `node bench/aws-requests.ts`',
    '- **11a** `corral run fan.yaml`',
    '',
  ].join('\n');
  const k = keptRows(section, new Set(['4', '10']));
  assert.deepEqual(
    k.rows.map(([id]) => id),
    ['1a', '9a', '11a'],
  );
  assert.deepEqual(
    k.notes.map(([id]) => id),
    ['1a', '9a', '11a'],
  );
  assert.equal(k.header.length, 4, 'both earlier runs still provide rows');
  // rows 9 run again: the line of the run that gave only row 9 goes
  const again = keptRows(section, new Set(['9']));
  assert.deepEqual(
    again.rows.map(([id]) => id),
    ['1a', '4', '10', '11a'],
  );
  assert.deepEqual(again.header, [
    'Run `npm run bench` (`node --import tsx bench/run.ts --size full`) on 2026-12-02, 1529 s, best of 3.',
    'Machine: 2 cores; load average 3.0 at the start.',
  ]);
});
