// Checks the results of job.yaml (and job-shell.yaml, if it ran) against the whole file.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
const data = readFileSync(path.join(here, 'data/corpus.txt'));
const dir = path.join(here, 'out');
const chunks = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')))
  .sort((a, b) => a.start - b.start);
let expectStart = 0;
let lines = 0;
for (const c of chunks) {
  if (c.start !== expectStart)
    throw new Error(`chunk ${c.index} starts at ${c.start}, expected ${expectStart}`);
  const part = data.subarray(c.start, c.end);
  if (c.start > 0 && data[c.start - 1] !== 10)
    throw new Error(`chunk ${c.index} does not start after a newline`);
  const sha = createHash('sha256').update(part).digest('hex');
  if (sha !== c.sha256) throw new Error(`chunk ${c.index}: sha256 differs`);
  const shell = path.join(here, 'out-shell', `chunk-${c.index}.sha256`);
  if (existsSync(shell) && readFileSync(shell, 'utf8').trim() !== sha)
    throw new Error(`chunk ${c.index}: shell sha256 differs`);
  lines += c.lines;
  expectStart = c.end;
}
if (expectStart !== data.length)
  throw new Error(`chunks end at ${expectStart}, file has ${data.length} bytes`);
const total = data.toString('latin1').split('\n').length - 1;
if (lines !== total) throw new Error(`chunk line counts sum to ${lines}, file has ${total} lines`);
console.log(
  `ok: ${chunks.length} chunks cover ${data.length} bytes and ${total} lines; every sha256 matches`,
);
