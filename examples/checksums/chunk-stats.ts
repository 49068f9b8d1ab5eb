import { createHash } from 'node:crypto';
import type { TaskContext } from 'corral';

/** Checksums one chunk of the corpus: its sha256 and how many lines it holds. */
export default async function chunkStats(task: TaskContext) {
  const hash = createHash('sha256');
  let lines = 0;
  let bytes = 0;
  for await (const buf of task.read() as AsyncIterable<Buffer>) {
    hash.update(buf);
    bytes += buf.length;
    for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) lines++;
  }
  return {
    index: task.index,
    start: task.chunk?.start,
    end: task.chunk?.end,
    bytes,
    lines,
    sha256: hash.digest('hex'),
  };
}
