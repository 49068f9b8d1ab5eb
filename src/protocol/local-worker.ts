// What the local compute adapter and the local worker process say to each other: the argv flag, the
// environment name and the config message. Both import them from here, neither from the other.

/** What the coordinator hands a local worker process (as JSON in argv, or in a `config` message). */
export interface LocalWorkerConfig {
  /** Ids of the workers this process hosts, each running one task at a time (several: a commands-only job). */
  readonly ids: string[];
  readonly jobJson: string;
  readonly db: string;
  readonly logsDir: string;
  readonly storeRoot: string;
  /** Claim nothing until the coordinator says `wake` (it is still planning the tasks). */
  readonly hold?: boolean;
}

/** Where a worker started without NODE_EXTRA_CA_CERTS finds it for its tasks. */
export const TASK_EXTRA_CA_CERTS = 'CORRAL_TASK_NODE_EXTRA_CA_CERTS';

/** argv of a prestarted worker, which waits for its config on the IPC channel. */
export const AWAIT_CONFIG = '--await-config';
