import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { SqliteQueue, type WorkerRow } from '../ledger/sqlite-queue.js';
import type { DeadLetter, TaskCounts } from '../queue/queue.js';
import { UsageError } from '../spec/errors.js';
import { pidAlive } from './process-utils.js';
import { jobPaths, unreadableState } from './state-dir.js';
import { workflowSteps } from './step-order.js';

/** What `corral status JOB` reports. */
export interface JobStatus {
  readonly job: string;
  /** `running` while a coordinator holds the job, `interrupted` when the one that held it died, else how the last run ended. */
  readonly status: string;
  readonly counts: TaskCounts;
  /** Counts per step, in workflow order (topological, then file order); a step not planned yet has none. */
  readonly steps: Record<string, TaskCounts>;
  /** Steps skipped whole: a step they need failed before they were planned (they have no task). */
  readonly skippedSteps: string[];
  readonly startedAt?: string;
  readonly finishedAt?: string;
  readonly workers: Array<Pick<WorkerRow, 'id' | 'pid' | 'host' | 'state'> & { lastHeartbeat: string }>;
  readonly deadLetters: DeadLetter[];
  readonly stateDir: string;
}

/** Names of the jobs in a state folder. */
export function listJobs(stateDir: string): string[] {
  const dir = `${stateDir}/jobs`;
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(jobPaths(stateDir, d.name).db))
    .map((d) => d.name)
    .sort();
}

/** Throws a UsageError naming the known jobs when a job has no state file (without opening anything). */
export function assertJobExists(stateDir: string, name: string): void {
  if (existsSync(jobPaths(stateDir, name).db)) return;
  const jobs = listJobs(stateDir);
  throw new UsageError(
    'JOB',
    `no job named "${name}" in ${stateDir}`,
    jobs.length
      ? `use one of: ${jobs.join(', ')}`
      : 'run a job first with corral run FILE, or pass --state-dir',
  );
}

/**
 * Opens a job's state file read-only (a reader changes nothing, and works in a read-only state
 * folder), or says which jobs exist, or that the file cannot be read and what to do.
 */
export function openJob(stateDir: string, name: string): SqliteQueue {
  assertJobExists(stateDir, name);
  return readState(stateDir, name, () => new SqliteQueue(jobPaths(stateDir, name).db, { readonly: true }));
}

/** Runs `read` on a job's state, turning sqlite's refusal of the file into a UsageError that says what to do. */
export function readState<T>(stateDir: string, name: string, read: () => T): T {
  try {
    return read();
  } catch (err) {
    throw unreadableState(err, jobPaths(stateDir, name), name) ?? err;
  }
}

function iso(ms: string | undefined): string | undefined {
  return ms ? new Date(Number(ms)).toISOString() : undefined;
}

/**
 * `running` while the coordinator that wrote the lock file is alive; `interrupted` when the lock
 * file outlived it (a kill -9, a reboot: the next run resumes); undefined without a lock file.
 */
export function lockStatus(lockFile: string): 'running' | 'interrupted' | undefined {
  let text: string;
  try {
    text = readFileSync(lockFile, 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 0 && pidAlive(pid) ? 'running' : 'interrupted';
}

/** Reads a job's status from its state file. */
export async function readJobStatus(stateDir: string, name: string): Promise<JobStatus> {
  const q = openJob(stateDir, name);
  try {
    const lock = jobPaths(stateDir, name).lock;
    const counts = q.countsSync();
    const steps: Record<string, TaskCounts> = {};
    const counted = (q.db.prepare('SELECT DISTINCT step FROM counts').all() as { step: string }[]).map(
      (r) => r.step,
    );
    // workflow order, then any step the spec does not name (a map job's `map`)
    const declared = workflowSteps(q.getMeta('spec')).map((st) => st.name);
    for (const step of [...declared, ...counted.filter((c) => !declared.includes(c))])
      steps[step] = q.countsSync(step);
    const skippedSteps = (
      q.db.prepare("SELECT name FROM steps WHERE state = 'skipped'").all() as { name: string }[]
    ).map((r) => r.name);
    return {
      job: name,
      status: lockStatus(lock) ?? q.getMeta('status') ?? 'planned',
      counts,
      steps,
      skippedSteps,
      startedAt: iso(q.getMeta('started_at')),
      finishedAt: iso(q.getMeta('finished_at')),
      workers: q.workers().map((w) => ({
        id: w.id,
        pid: w.pid,
        host: w.host,
        state: w.state,
        lastHeartbeat: new Date(w.heartbeat_at).toISOString(),
      })),
      deadLetters: await q.deadLetters(1000),
      stateDir: jobPaths(stateDir, name).dir,
    };
  } catch (err) {
    // a file cut short opens, and fails at the first page it lacks
    throw unreadableState(err, jobPaths(stateDir, name), name) ?? err;
  } finally {
    await q.close();
  }
}
