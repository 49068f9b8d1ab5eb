/**
 * Entry point of a local worker process, started by the local Compute adapter with an IPC
 * channel. It exits when told to stop, when its coordinator goes away (the channel closes), or
 * on SIGTERM (drain) / SIGINT (abort).
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { TASK_EXTRA_CA_CERTS } from '../compute/local/local-compute.js';
import { SqliteQueue } from '../queue/sqlite/sqlite-queue.js';
import type { LoadedJob } from '../spec/job.js';
import { FsStore } from '../store/fs/fs-store.js';
import { WorkerAgent } from './agent.js';

/** What the coordinator hands a local worker (as JSON in argv). */
export interface LocalWorkerConfig {
  readonly id: string;
  readonly jobJson: string;
  readonly db: string;
  readonly logsDir: string;
  readonly storeRoot: string;
  /** Claim nothing until the coordinator says `wake` (it is still planning the tasks). */
  readonly hold?: boolean;
}

async function main(): Promise<void> {
  // started without it (it runs no TLS itself); the tasks it starts get it back
  const ca = process.env[TASK_EXTRA_CA_CERTS];
  if (ca !== undefined) {
    process.env.NODE_EXTRA_CA_CERTS = ca;
    delete process.env[TASK_EXTRA_CA_CERTS];
  }
  const cfg = JSON.parse(process.argv[2] ?? '{}') as LocalWorkerConfig;
  const job = JSON.parse(readFileSync(cfg.jobJson, 'utf8')) as LoadedJob;
  const queue = new SqliteQueue(cfg.db, { maxAttempts: job.spec.retries.maxAttempts });
  const store = new FsStore(cfg.storeRoot, { scope: job.spec.name });
  const host = os.hostname();
  const agent = new WorkerAgent({
    id: cfg.id,
    job,
    queue,
    store,
    logsDir: cfg.logsDir,
    onBeat: (pgids) => queue.workerBeat(cfg.id, process.pid, host, pgids),
    onGroup: (pgid, running) => process.send?.({ type: 'group', pgid, running }),
    // the coordinator checks for the end of the run at once instead of at its next tick
    onIdle: () => process.send?.({ type: 'idle' }),
    holdUntilWake: cfg.hold,
  });
  process.on('disconnect', () => agent.stop('abort'));
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'drain') agent.stop('drain');
    if (m?.type === 'abort') agent.stop('abort');
    if (m?.type === 'wake') agent.wake();
  });
  process.on('SIGTERM', () => agent.stop('drain'));
  process.on('SIGINT', () => agent.stop('abort'));
  await agent.run();
  queue.workerBeat(cfg.id, process.pid, host, [], agent.poisoned ? 'restarting' : 'exited');
  await queue.close();
  process.exit(agent.poisoned ? 75 : 0);
}

main().catch((err) => {
  process.stderr.write(`corral worker: ${(err as Error).stack ?? err}\n`);
  process.exit(70);
});
