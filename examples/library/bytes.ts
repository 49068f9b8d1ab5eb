import { buffer } from 'node:stream/consumers';
import type { TaskContext } from 'corral';

export default async (task: TaskContext) => ({
  index: task.index,
  bytes: (await buffer(task.read())).length,
});
