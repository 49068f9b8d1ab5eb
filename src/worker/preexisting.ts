import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { Lease, TaskPayload } from '../queue/queue.js';

/** What the check reads of the job's state ledger: its attempts and when this run started. */
export interface AttemptHistory {
  readonly db: { prepare(sql: string): { get(...params: unknown[]): unknown } };
  getMeta(k: string): string | undefined;
}

/** Where a local store keeps an output. */
export interface LocalPaths {
  pathOf(key: string): string;
}

/** A local store's outputs and the folder its keys are relative to. */
export interface LocalRoot extends LocalPaths {
  readonly root: string;
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

/**
 * Whether a task's existing output is older than one of its inputs (its input file, or the
 * outputs it reads: a reduce's, a map over an earlier step's), as `make` decides: that input
 * changed after the output was made (`--fresh` after an input was edited, or a redone earlier
 * task), so the task runs again and replaces it. An input that cannot be read is no reason.
 */
export function staleOutputCheck(store: LocalRoot): (p: TaskPayload, key: string) => Promise<boolean> {
  const mtime = async (f: string) => {
    try {
      return (await stat(f)).mtimeMs;
    } catch {
      return undefined;
    }
  };
  return async (p, key) => {
    const made = await mtime(store.pathOf(key));
    if (made === undefined) return false;
    const inputs = [...(p.p !== undefined && !p.p.startsWith('s3://') ? [p.p] : []), ...(p.ins ?? [])];
    for (const f of inputs) {
      const m = await mtime(path.resolve(store.root, f));
      if (m !== undefined && m > made) return true;
    }
    return false;
  };
}
