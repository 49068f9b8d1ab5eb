import { stat } from 'node:fs/promises';
import type { Lease } from '../queue/queue.js';

/** What the check reads of the job's state ledger: its attempts and when this run started. */
export interface AttemptHistory {
  readonly db: { prepare(sql: string): { get(...params: unknown[]): unknown } };
  getMeta(k: string): string | undefined;
}

/** Where a local store keeps an output. */
export interface LocalPaths {
  pathOf(key: string): string;
}

/**
 * Whether an output that is there before a task runs is the task's own result, on one machine:
 * it is when an earlier lease of the task may have committed it (released or expired: its worker
 * died or stopped after the commit, before the ack), or when the file is older than this run
 * (a run whose state was lost, or `--fresh`: outputs are the truth). A file that appeared during
 * this run before the task ever ran was written by something else (another step's command, a
 * process outside corral), and the task is not done by it. Undefined: the file is gone.
 */
export function ownOutputCheck(
  queue: AttemptHistory,
  store: LocalPaths,
): (lease: Lease, key: string) => Promise<boolean | undefined> {
  const leasedBefore = queue.db.prepare(
    "SELECT 1 FROM attempts WHERE task_id = ? AND outcome IN ('released', 'expired') LIMIT 1",
  );
  let runStart: number | undefined;
  return async (lease, key) => {
    if (leasedBefore.get(lease.taskId) !== undefined) return true;
    // read when first needed: the coordinator records it before any task is claimed
    runStart ??= Number(queue.getMeta('started_at') ?? 0);
    try {
      return (await stat(store.pathOf(key))).mtimeMs < runStart;
    } catch {
      return undefined; // gone meanwhile: the task runs as if it had never been there
    }
  };
}
