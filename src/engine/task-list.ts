/**
 * Every task of a job with what it ran on, and every attempt as a GNU parallel `--joblog` row,
 * read from the job's state file (`corral tasks`, `corral joblog`, `corral logs JOB TASK`).
 */
import { constants } from 'node:os';
import { describeInput, type TaskPayload } from '../queue/queue.js';
import { UsageError } from '../spec/errors.js';
import type { LoadedJob, StepDef } from '../spec/job.js';
import { openJob, readState } from './job-state.js';
import { render, shellQuote, taskVars } from './template.js';

/** A task's state as `corral tasks` names it (the state file's `leased` is `running`, `pending` is `waiting`). */
export const TASK_STATES = ['done', 'failed', 'dead', 'running', 'waiting', 'blocked', 'skipped'] as const;
export type TaskStateName = (typeof TASK_STATES)[number];

const STATE_NAMES: Record<string, TaskStateName> = {
  pending: 'waiting',
  leased: 'running',
  blocked: 'blocked',
  done: 'done',
  dead: 'dead',
  skipped: 'skipped',
};

/** One task, as `corral tasks` lists it. */
export interface TaskInfo {
  readonly key: string;
  readonly step: string;
  /** `done`, `running`, `waiting` (ready, or waiting for a retry), `blocked`, `dead` (a dead letter) or `skipped`. */
  readonly state: TaskStateName;
  readonly attempts: number;
  /** Failed attempts, the last one included for a dead letter. */
  readonly failures: number;
  /** What it ran on: `data/a.txt`, `data/big.csv bytes 0-1048576`, `line 12 "text"`, `in a b → out c`. */
  readonly input?: string;
  /** Its output, relative to the job folder. */
  readonly output?: string;
  /** The worker that holds it now. */
  readonly worker?: string;
  readonly startedAt?: string;
  readonly finishedAt?: string;
  /** The last attempt's error. */
  readonly error?: string;
  readonly logPath?: string;
}

/** Which tasks to list. */
export interface TaskFilter {
  /** Only tasks in this state (`failed`: every task with a failed attempt, dead or retried). */
  readonly state?: TaskStateName;
  /** Only tasks of this step. */
  readonly step?: string;
}

interface Row {
  id: number;
  key: string;
  step: string;
  state: string;
  attempts: number;
  owner: string | null;
  started_at: number | null;
  finished_at: number | null;
  last_error: string | null;
  log_path: string | null;
  payload: string;
  failures: number;
}

const FAILED = "('failed', 'expired', 'dead')";

/** Lists a job's tasks, in the order they were planned. */
export function listTasks(stateDir: string, name: string, filter: TaskFilter = {}): TaskInfo[] {
  const q = openJob(stateDir, name);
  try {
    return readState(stateDir, name, () => {
      const steps = (q.db.prepare('SELECT DISTINCT step FROM tasks').all() as { step: string }[]).map(
        (r) => r.step,
      );
      if (filter.step !== undefined && !steps.includes(filter.step))
        throw new UsageError(
          '--step',
          `job ${name} has no step "${filter.step}"`,
          steps.length ? `use one of: ${steps.join(', ')}` : 'the job has no task yet',
        );
      const where: string[] = [];
      const args: (string | number)[] = [];
      if (filter.step !== undefined) {
        where.push('t.step = ?');
        args.push(filter.step);
      }
      if (filter.state === 'failed')
        where.push(`EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = t.id AND a.outcome IN ${FAILED})`);
      else if (filter.state !== undefined) {
        where.push('t.state = ?');
        args.push(Object.entries(STATE_NAMES).find(([, v]) => v === filter.state)![0]);
      }
      const rows = q.db
        .prepare(
          `SELECT t.id, t.key, t.step, t.state, t.attempts, t.owner, t.started_at, t.finished_at, t.last_error,
             t.log_path, t.payload,
             (SELECT count(*) FROM attempts a WHERE a.task_id = t.id AND a.outcome IN ${FAILED}) AS failures
           FROM tasks t ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY t.id`,
        )
        .all(...args) as Row[];
      return rows.map((r) => {
        const p = JSON.parse(r.payload) as TaskPayload;
        const state = STATE_NAMES[r.state] ?? (r.state as TaskStateName);
        return {
          key: r.key,
          step: r.step,
          state,
          attempts: r.attempts,
          failures: r.failures,
          input: describeInput(p),
          output: p.o ?? (p.outs?.length ? p.outs.join(' ') : undefined),
          worker: state === 'running' ? (r.owner ?? undefined) : undefined,
          startedAt: r.started_at ? new Date(r.started_at).toISOString() : undefined,
          finishedAt: r.finished_at ? new Date(r.finished_at).toISOString() : undefined,
          error: r.last_error ?? undefined,
          logPath: r.log_path ?? undefined,
        };
      });
    });
  } finally {
    void q.close();
  }
}

/**
 * The task a user names: its key (`3`, `fetch/12`), the whole label `corral tasks` and the failure
 * summaries print (`3 (data/d.txt)`), or its input alone (`data/d.txt`, a line's text, a HyperFlow
 * output file) when one task of the job has it. Undefined when none does; a UsageError when several do.
 */
export function findTask(stateDir: string, name: string, said: string): string | undefined {
  const q = openJob(stateDir, name);
  try {
    return readState(stateDir, name, () => {
      const byKey = q.db.prepare('SELECT key FROM tasks WHERE key = ?');
      const exact = byKey.get(said) as { key: string } | undefined;
      if (exact) return exact.key;
      // a label pasted whole: `KEY (INPUT)`
      const m = /^(\S+) \(.*\)$/s.exec(said);
      const labelled = m ? (byKey.get(m[1]) as { key: string } | undefined) : undefined;
      if (labelled) return labelled.key;
      const hits: string[] = [];
      for (const r of q.db.prepare('SELECT key, payload FROM tasks ORDER BY id').iterate() as Iterable<{
        key: string;
        payload: string;
      }>) {
        const p = JSON.parse(r.payload) as TaskPayload;
        if (
          p.p === said ||
          p.l === said ||
          p.o === said ||
          p.outs?.includes(said) ||
          describeInput(p) === said
        )
          hits.push(r.key);
        if (hits.length > 5) break;
      }
      if (hits.length > 1)
        throw new UsageError(
          'TASK',
          `"${said}" is the input of several tasks of job ${name}: ${hits.slice(0, 5).join(', ')}${hits.length > 5 ? ', …' : ''}`,
          'pass one task key (corral tasks JOB lists them)',
        );
      return hits[0];
    });
  } finally {
    void q.close();
  }
}

/** The columns of GNU parallel's `--joblog`, in its order. */
export const JOBLOG_COLUMNS = [
  'Seq',
  'Host',
  'Starttime',
  'JobRuntime',
  'Send',
  'Receive',
  'Exitval',
  'Signal',
  'Command',
] as const;

interface AttemptRow {
  task_id: number;
  key: string;
  step: string;
  payload: string;
  owner: string | null;
  host: string | null;
  started_at: number;
  finished_at: number | null;
  outcome: string;
  error: string | null;
}

const SUCCEEDED = new Set(['committed', 'duplicate', 'ok', 'found']);

/** Exit value and signal number of an attempt, from how it ended (`exited with code 3`, `killed by SIGKILL`). */
export function exitOf(outcome: string, error: string | null): { exitval: number; signal: number } {
  if (SUCCEEDED.has(outcome)) return { exitval: 0, signal: 0 };
  const code = /exited with code (\d+)/.exec(error ?? '');
  if (code) return { exitval: Number(code[1]), signal: 0 };
  const sig = /killed by (SIG[A-Z0-9]+)|signal (\d+)/.exec(error ?? '');
  if (sig) {
    const n = sig[1] ? (constants.signals as Record<string, number>)[sig[1]] : Number(sig[2]);
    return { exitval: -1, signal: n ?? 0 };
  }
  // failed without an exit status of its own (a timeout, a lost worker, an output not written)
  return { exitval: -1, signal: 0 };
}

/** One line of text for a TSV field: tabs and line breaks become spaces. */
function field(v: string): string {
  return v.replace(/[\t\r\n]+/g, ' ');
}

/** The command a task ran, as its step renders it for the task's input (its output at its final path). */
function commandOf(step: StepDef | undefined, p: TaskPayload, job: LoadedJob | undefined): string {
  if (p.argv) return p.argv.map(shellQuote).join(' ');
  const vars = job ? taskVars(p, job.baseDir, p.o !== undefined ? { output: p.o } : {}) : {};
  if (step?.command !== undefined) return render(step.command, vars, shellQuote);
  if (step?.exec) return [step.exec.executable, ...step.exec.args].map(shellQuote).join(' ');
  if (step?.module !== undefined) return `module ${step.module} ${describeInput(p) ?? ''}`.trimEnd();
  return describeInput(p) ?? '';
}

/**
 * The job's attempts as GNU parallel's `--joblog` (TSV with a header): one line per attempt that
 * started, in the order they started. Seq is the task's position in the job (from 1), Host the
 * worker (`id@host`), Starttime epoch seconds, JobRuntime seconds (both to the ms), Send and
 * Receive 0 (corral moves no stdin/stdout between hosts), Exitval the command's exit code (-1 when
 * the attempt ended without one: killed, timed out, worker lost, output missing), Signal the
 * signal that killed it, Command the command as run (the output at its final path).
 */
export function jobLog(stateDir: string, name: string, filter: TaskFilter = {}): string {
  const q = openJob(stateDir, name);
  try {
    return readState(stateDir, name, () => {
      const specText = q.getMeta('spec');
      const job = specText ? (JSON.parse(specText) as LoadedJob) : undefined;
      const steps = new Map((job?.steps ?? []).map((s) => [s.name, s]));
      const keys =
        filter.state !== undefined || filter.step !== undefined
          ? new Set(listTasks(stateDir, name, filter).map((t) => t.key))
          : undefined;
      const rows = q.db
        .prepare(
          `SELECT a.task_id, t.key, t.step, t.payload, a.owner, w.host, a.started_at, a.finished_at, a.outcome, a.error
           FROM attempts a JOIN tasks t ON t.id = a.task_id LEFT JOIN workers w ON w.id = a.owner
           WHERE a.started_at IS NOT NULL AND a.outcome <> 'released'
           ORDER BY a.started_at, a.rowid`,
        )
        .all() as AttemptRow[];
      const lines = [JOBLOG_COLUMNS.join('\t')];
      for (const r of rows) {
        if (keys && !keys.has(r.key)) continue;
        const p = JSON.parse(r.payload) as TaskPayload;
        const { exitval, signal } = exitOf(r.outcome, r.error);
        const runtime = r.finished_at !== null ? (r.finished_at - r.started_at) / 1000 : 0;
        lines.push(
          [
            String(r.task_id),
            field(r.owner ? `${r.owner}${r.host ? `@${r.host}` : ''}` : ':'),
            (r.started_at / 1000).toFixed(3),
            runtime.toFixed(3),
            '0',
            '0',
            String(exitval),
            String(signal),
            field(commandOf(steps.get(r.step), p, job)),
          ].join('\t'),
        );
      }
      return `${lines.join('\n')}\n`;
    });
  } finally {
    void q.close();
  }
}
