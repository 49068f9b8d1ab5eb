import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  realpathSync,
  rmdirSync,
  statSync,
} from 'node:fs';
import path from 'node:path';
import { CommandFailed, UsageError } from '../spec/errors.js';
import type { LoadedJob } from '../spec/job.js';
import { DEFAULT_STATE_DIR } from '../spec/limits.js';

export { DEFAULT_STATE_DIR } from '../spec/limits.js';

/** Where a job's state lives inside the state folder. */
export interface JobPaths {
  readonly dir: string;
  readonly db: string;
  readonly jobJson: string;
  readonly logs: string;
  readonly workers: string;
  readonly events: string;
  readonly lock: string;
}

/** The state folder from `--state-dir`, `CORRAL_STATE_DIR` or `./.corral`. */
export function resolveStateDir(flag?: string): string {
  // An empty folder name would put the state in the working folder itself (./jobs/…).
  if (flag === '') throw new UsageError('--state-dir', 'is empty', 'give a folder, e.g. --state-dir .corral');
  const env = process.env.CORRAL_STATE_DIR;
  if (flag === undefined && env === '') {
    throw new UsageError(
      'CORRAL_STATE_DIR',
      'is empty',
      'unset it or name a folder, e.g. CORRAL_STATE_DIR=.corral',
    );
  }
  return path.resolve(flag ?? env ?? DEFAULT_STATE_DIR);
}

/** A path with its existing part's symlinks resolved (the rest may not exist yet). */
function realish(p: string): string {
  let head = p;
  let tail = '';
  for (;;) {
    try {
      return path.join(realpathSync(head), tail);
    } catch {
      const parent = path.dirname(head);
      if (parent === head) return p;
      tail = path.join(path.basename(head), tail);
      head = parent;
    }
  }
}

/**
 * Refuses, before anything is created, a state folder that would hold a job's outputs (e.g.
 * `--state-dir results` with outputs `results/{index}.txt`): corral writes and removes files
 * there, as in the default `.corral`, which the spec reserves.
 */
export function assertStateDirHoldsNoOutputs(stateDir: string, job: LoadedJob, flag = '--state-dir'): void {
  const state = realish(stateDir);
  for (const [i, st] of job.steps.entries()) {
    if (!st.outputs) continue;
    // the fixed folder of the pattern: every output of the step is below it
    const fixed = st.outputs.replaceAll('\\', '/').split('{')[0]!;
    const dir = realish(path.resolve(job.baseDir, fixed.slice(0, fixed.lastIndexOf('/') + 1) || '.'));
    const rel = path.relative(state, dir);
    if (rel.startsWith('..') || path.isAbsolute(rel)) continue;
    throw new UsageError(
      flag,
      `${path.relative(process.cwd(), stateDir) || '.'} would hold the outputs of ${job.spec.tasks ? 'the job' : `steps[${i}]`} ("${st.outputs}"); corral writes and removes its own files there`,
      `pass a state dir outside the outputs' folder, e.g. ${flag === '--state-dir' ? '--state-dir ' : 'CORRAL_STATE_DIR='}.corral`,
    );
  }
}

/** Paths of a job's state. */
export function jobPaths(stateDir: string, name: string): JobPaths {
  const dir = path.join(stateDir, 'jobs', name);
  return {
    dir,
    db: path.join(dir, 'state.db'),
    jobJson: path.join(dir, 'job.json'),
    logs: path.join(dir, 'logs'),
    workers: path.join(dir, 'workers'),
    events: path.join(dir, 'events.log'),
    lock: path.join(dir, 'coordinator.pid'),
  };
}

/**
 * Checks, before anything is created, that the state folder can be written: it exists and is a
 * writable folder, or the nearest existing parent is.
 */
export function assertWritableStateDir(stateDir: string): void {
  let p = stateDir;
  while (!existsSync(p)) {
    const parent = path.dirname(p);
    if (parent === p) break;
    p = parent;
  }
  try {
    if (!statSync(p).isDirectory()) {
      throw new UsageError(
        '--state-dir',
        `${p} is not a folder`,
        'pass a folder with --state-dir or CORRAL_STATE_DIR',
      );
    }
    accessSync(p, constants.W_OK | constants.X_OK);
    // access(2) says yes to root everywhere; only a real write proves it (e.g. /proc says no here).
    rmdirSync(mkdtempSync(path.join(p, '.corral-probe-')));
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(
      '--state-dir',
      `${stateDir} is not writable (${(err as NodeJS.ErrnoException).code})`,
      'pass a writable folder with --state-dir or CORRAL_STATE_DIR',
    );
  }
}

/** Creates a job's state folders. */
export function createJobDirs(paths: JobPaths): void {
  for (const d of [paths.dir, paths.logs, paths.workers]) mkdirSync(d, { recursive: true });
}

/** File name of a task's log, from its key. */
export function taskLogName(key: string): string {
  return `${key.replace(/[^A-Za-z0-9._-]/g, '_')}.log`;
}

/** sqlite's codes for a state file that cannot be opened or read (not a busy or full one). */
const UNREADABLE = /^(SQLITE_(CORRUPT|NOTADB|CANTOPEN|IOERR|PERM|READONLY|AUTH|FORMAT)|CORRAL_NEWER_STATE)/;

/**
 * A UsageError saying that a job's state file cannot be read and what to do, when `err` is
 * sqlite's refusal of the file (garbage, cut short, unreadable); undefined for any other error.
 */
export function unreadableState(err: unknown, paths: JobPaths, job: string): UsageError | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string' || !UNREADABLE.test(code)) return undefined;
  const rel = path.relative(process.cwd(), paths.dir) || paths.dir;
  const file = path.join(rel, path.basename(paths.db));
  if (code === 'CORRAL_NEWER_STATE')
    return new UsageError(
      'JOB',
      `the state of job ${job} cannot be read: ${file}: ${(err as Error).message}`,
      `use the corral that wrote it (or a newer one), or run the job again with --fresh to plan it anew with this one`,
    );
  return new UsageError(
    'JOB',
    `the state of job ${job} cannot be read: ${file}: ${(err as Error).message} (${code})`,
    `run the job again with --fresh to plan it anew (committed outputs are kept and not redone), or remove ${rel}`,
  );
}

/** The one-line failure of a run that stopped because the disk of its state (or outputs) is full. */
export function noSpaceFailure(job: string, dir: string, cause: string): CommandFailed {
  return new CommandFailed(
    `job ${job} stopped: no space left on the device of ${dir} (${cause}); its state is kept: free some space and run the same command again to resume`,
  );
}
