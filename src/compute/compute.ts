/**
 * The Compute port: starts and stops the workers of a job. One adapter: `local` (child processes
 * on this machine). On AWS there is none: a cluster's pools scale themselves (each Auto Scaling
 * group or ECS service follows the queue's backlog, src/infra/worker-pool.ts), and a cluster run
 * starts and stops no worker.
 */
export interface Compute {
  /** Starts workers until `count` run. */
  scaleTo(count: number): Promise<void>;
  /** Asks every worker to finish its current task, hand back the rest and exit; resolves when they have. */
  drain(): Promise<void>;
  /** Stops every worker at once (their tasks are killed and their leases handed back). */
  abort(): Promise<void>;
  /** Workers running now. */
  running(): number;
}

/** Something that happened to a worker, for the coordinator's event log. */
export interface WorkerEvent {
  readonly worker: string;
  readonly type: 'started' | 'exited' | 'lost';
  readonly code?: number | null;
  readonly signal?: string | null;
}
