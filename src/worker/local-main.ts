/**
 * Entry point of a local worker process, started by the local Compute adapter with an IPC
 * channel. It exits when told to stop, when its coordinator goes away (the channel closes), or
 * on SIGTERM (drain) / SIGINT (abort).
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { SqliteQueue } from '../ledger/sqlite-queue.js';
import { AWAIT_CONFIG, type LocalWorkerConfig, TASK_EXTRA_CA_CERTS } from '../protocol/local-worker.js';
import { EXIT_NO_SPACE, isNoSpace } from '../spec/errors.js';
import type { LoadedJob } from '../spec/job.js';
import { FsStore } from '../store/fs/fs-store.js';
import { WorkerAgent } from './agent.js';
import { ownOutputCheck, staleOutputCheck } from './preexisting.js';

/** Messages from the coordinator; those before the config (a prestarted worker) wait for it. */
type Message = { type?: string; cfg?: LocalWorkerConfig };

async function main(cfg: LocalWorkerConfig, early: Message[]): Promise<void> {
  const job = JSON.parse(readFileSync(cfg.jobJson, 'utf8')) as LoadedJob;
  // one connection for all of them: their transactions never wait for each other's locks
  const queue = new SqliteQueue(cfg.db, { maxAttempts: job.spec.retries.maxAttempts });
  const store = new FsStore(cfg.storeRoot, { scope: job.spec.name });
  const host = os.hostname();
  const ownsOutput = ownOutputCheck(queue, store);
  const outputStale = staleOutputCheck(store);
  const agents = cfg.ids.map(
    (id) =>
      new WorkerAgent({
        id,
        job,
        queue,
        store,
        logsDir: cfg.logsDir,
        onBeat: (pgids) => queue.workerBeat(id, process.pid, host, pgids),
        onGroup: (pgid, running) => send({ type: 'group', pgid, running }),
        // the coordinator checks for the end of the run at once instead of at its next tick
        onIdle: () => send({ type: 'idle' }),
        holdUntilWake: cfg.hold,
        ownsOutput,
        outputStale,
      }),
  );
  const onMessage = (m: Message) => {
    for (const agent of agents) {
      if (m?.type === 'drain') agent.stop('drain');
      if (m?.type === 'abort') agent.stop('abort');
      if (m?.type === 'wake') agent.wake();
    }
  };
  for (const m of early) onMessage(m);
  handle = onMessage;
  process.on('disconnect', () => onMessage({ type: 'abort' }));
  process.on('SIGTERM', () => onMessage({ type: 'drain' }));
  process.on('SIGINT', () => onMessage({ type: 'abort' }));
  await Promise.all(agents.map((a) => a.run()));
  const poisoned = agents.some((a) => a.poisoned);
  for (const [i, a] of agents.entries())
    queue.workerBeat(cfg.ids[i]!, process.pid, host, [], a.poisoned ? 'restarting' : 'exited');
  await queue.close();
  process.exit(poisoned ? 75 : 0);
}

/**
 * Tells the coordinator, if it is still there. A send on a closed channel (the coordinator died,
 * even by kill -9) must not end this process: it raised ERR_IPC_CHANNEL_CLOSED as an uncaught
 * error, and the worker died holding its leases instead of killing its tasks and handing the
 * leases back, so a resume waited for them to expire and charged each task an attempt.
 */
function send(m: object): void {
  if (process.connected) process.send?.(m, () => {});
}

const fail = (err: unknown) => {
  process.stderr.write(`corral worker: ${(err as Error).stack ?? err}\n`);
  // a full disk is said by the exit code: the log that would say it may be empty for that reason
  process.exit(isNoSpace(err) ? EXIT_NO_SPACE : 70);
};

// started without it (it runs no TLS itself); the tasks it starts get it back
const ca = process.env[TASK_EXTRA_CA_CERTS];
if (ca !== undefined) {
  process.env.NODE_EXTRA_CA_CERTS = ca;
  delete process.env[TASK_EXTRA_CA_CERTS];
}
// One listener from the start; `ready` tells the coordinator that nothing it sends is lost now
// (an ES module's listener comes after its imports, and what arrives before is dropped).
const early: Message[] = [];
let handle: ((m: Message) => void) | undefined;
let started = false;
process.on('message', (m: Message) => {
  if (m?.type === 'config' && m.cfg && !started) {
    started = true;
    main(m.cfg, early.splice(0)).catch(fail);
  } else if (handle) handle(m);
  else early.push(m);
});
if (process.argv[2] === AWAIT_CONFIG) {
  // prestarted before its job was known: it ends with the CLI if no config comes
  process.once('disconnect', () => {
    if (!started) process.exit(0);
  });
} else {
  started = true;
  main(JSON.parse(process.argv[2] ?? '{}') as LocalWorkerConfig, []).catch(fail);
}
send({ type: 'ready' });
