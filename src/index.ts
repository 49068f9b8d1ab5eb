/** corral's library API: the spec vocabulary, the ports and their embedded adapters, and the engine. */
export type { Compute } from './compute/compute.js';
export { LocalCompute, type LocalComputeOptions } from './compute/local/local-compute.js';
export {
  fingerprint,
  type Progress,
  type RunOptions,
  type RunSummary,
} from './engine/coordinator.js';
export { expandTasks } from './engine/expand.js';
export { type JobStatus, readJobStatus } from './engine/job-state.js';
export { SqliteQueue, type SqliteQueueOptions } from './ledger/sqlite-queue.js';
export type {
  Completion,
  DeadLetter,
  Failure,
  Lease,
  NewTask,
  Queue,
  TaskCounts,
  TaskPayload,
} from './queue/queue.js';
export { UsageError } from './spec/errors.js';
export {
  defineJob,
  type JobSpec,
  type JobSpecInput,
  type LoadedJob,
  loadJobFile,
  resolveJob,
} from './spec/job.js';
export { FsStore, type FsStoreOptions } from './store/fs/fs-store.js';
export type { Store } from './store/store.js';
export { type LocalRunOptions, localAdapters, runJob } from './transport/local.js';
export { WorkerAgent, type WorkerAgentOptions } from './worker/agent.js';
export type { TaskContext, TaskFunction } from './worker/run-module.js';
