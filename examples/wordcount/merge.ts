import { readFile } from 'node:fs/promises';
import type { TaskContext } from 'corral';

/** Sums the per-chunk "word count" lines into one table, most frequent first. */
export default async function merge(task: TaskContext) {
  const totals = new Map<string, number>();
  for (const file of task.inputs ?? []) {
    for (const line of (await readFile(file, 'utf8')).split('\n')) {
      const [word, n] = line.split(' ');
      if (word && n) totals.set(word, (totals.get(word) ?? 0) + Number(n));
    }
  }
  task.log(`merged ${task.inputs?.length} chunk counts into ${totals.size} words`);
  return [...totals].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
}
