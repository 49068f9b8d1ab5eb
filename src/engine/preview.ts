/**
 * What a job would do, without doing it: `corral run FILE --dry-run` plans its tasks in a
 * throw-away state file (in the system's temp folder, removed after) and says what would run and
 * what is already committed; `corral dag FILE` draws its steps (and tasks, for small workflows)
 * as Graphviz dot or Mermaid. Neither starts a worker nor touches the job's state folder.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { SqliteQueue } from '../ledger/sqlite-queue.js';
import { describeInput, type TaskPayload } from '../queue/queue.js';
import type { LoadedJob } from '../spec/job.js';
import { DagState } from './dag.js';

/** Plans `job` in a temp state file, runs `read` on it, then removes the file. */
export async function withPlan<T>(job: LoadedJob, read: (db: Database.Database) => T): Promise<T> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-dry-run-'));
  let queue: SqliteQueue | undefined;
  try {
    queue = new SqliteQueue(path.join(dir, 'state.db'), { maxAttempts: job.spec.retries.maxAttempts });
    await new DagState(queue, job, {}).advance();
    return read(queue.db);
  } finally {
    await queue?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Whether a task's result is there already, so that a run would not run it: its output, or every file a HyperFlow process writes. */
function committedIn(baseDir: string, p: TaskPayload): boolean {
  if (p.o !== undefined) return existsSync(path.resolve(baseDir, p.o));
  if (p.outs?.length)
    return p.outs.every((f) => {
      try {
        return statSync(path.resolve(baseDir, f)).isFile();
      } catch {
        return false;
      }
    });
  return false;
}

/** One step of a dry run. */
export interface DryRunStep {
  readonly name: string;
  /** Its tasks (0 while it is `waiting`). */
  readonly tasks: number;
  /** Of those, the ones whose output is already there: a run skips them. */
  readonly committed: number;
  /** The ones a run would start. */
  readonly toRun: number;
  /** `planned`, or `waiting`: its inputs are files the steps it needs write, listed once they have run. */
  readonly state: 'planned' | 'waiting';
  /** The steps whose outputs it maps over, reduces or waits for. */
  readonly after: readonly string[];
}

/** One task of a dry run. */
export interface DryRunTask {
  readonly key: string;
  readonly step: string;
  readonly input?: string;
  readonly output?: string;
  /** Its output is already there: a run skips it. */
  readonly committed: boolean;
}

/** What `corral run FILE --dry-run` prints. */
export interface DryRun {
  readonly job: string;
  readonly file: string;
  readonly total: number;
  readonly committed: number;
  readonly toRun: number;
  readonly steps: DryRunStep[];
  /** The first tasks, in plan order. */
  readonly tasks: DryRunTask[];
}

/** The steps a step maps over, reduces or waits for. */
function stepEdges(
  job: LoadedJob,
): Array<{ from: string; to: string; kind: 'outputsOf' | 'reduce' | 'needs' | 'data' }> {
  const edges: Array<{ from: string; to: string; kind: 'outputsOf' | 'reduce' | 'needs' | 'data' }> = [];
  if (job.format === 'hyperflow') {
    const seen = new Set<string>();
    const tasks = job.hyperflow ?? [];
    for (const t of tasks)
      for (const a of t.after) {
        const from = tasks[a]!.step;
        const k = `${from}\n${t.step}`;
        if (from === t.step || seen.has(k)) continue;
        seen.add(k);
        edges.push({ from, to: t.step, kind: 'data' });
      }
    return edges;
  }
  for (const st of job.steps) {
    if (st.map?.outputsOf) edges.push({ from: st.map.outputsOf, to: st.name, kind: 'outputsOf' });
    if (st.reduce) edges.push({ from: st.reduce, to: st.name, kind: 'reduce' });
    for (const n of st.needs) if (n !== st.reduce) edges.push({ from: n, to: st.name, kind: 'needs' });
  }
  return edges;
}

/** Plans `job` without running it: counts per step, the first `limit` tasks, what is committed already. */
export async function dryRun(job: LoadedJob, limit = 10): Promise<DryRun> {
  const edges = stepEdges(job);
  return withPlan(job, (db) => {
    const perStep = new Map<string, { tasks: number; committed: number }>();
    const tasks: DryRunTask[] = [];
    for (const r of db.prepare('SELECT key, step, payload FROM tasks ORDER BY id').iterate() as Iterable<{
      key: string;
      step: string;
      payload: string;
    }>) {
      const p = JSON.parse(r.payload) as TaskPayload;
      const committed = committedIn(job.baseDir, p);
      const s = perStep.get(r.step) ?? { tasks: 0, committed: 0 };
      s.tasks++;
      if (committed) s.committed++;
      perStep.set(r.step, s);
      if (tasks.length < limit)
        tasks.push({
          key: r.key,
          step: r.step,
          input: describeInput(p),
          output: p.o ?? (p.outs?.length ? p.outs.join(' ') : undefined),
          committed,
        });
    }
    const expanded = new Set(
      (db.prepare("SELECT name FROM steps WHERE state = 'expanded'").all() as { name: string }[]).map(
        (r) => r.name,
      ),
    );
    const steps: DryRunStep[] = job.steps.map((st) => {
      const s = perStep.get(st.name) ?? { tasks: 0, committed: 0 };
      return {
        name: st.name,
        tasks: s.tasks,
        committed: s.committed,
        toRun: s.tasks - s.committed,
        state: expanded.has(st.name) ? 'planned' : 'waiting',
        after: [...new Set(edges.filter((e) => e.to === st.name).map((e) => e.from))],
      };
    });
    const total = steps.reduce((n, s) => n + s.tasks, 0);
    const committed = steps.reduce((n, s) => n + s.committed, 0);
    return {
      job: job.spec.name,
      file: job.file,
      total,
      committed,
      toRun: total - committed,
      steps,
      tasks,
    };
  });
}

/** Graph formats of `corral dag`. */
export const GRAPH_FORMATS = ['dot', 'mermaid'] as const;
export type GraphFormat = (typeof GRAPH_FORMATS)[number];

/** Options of {@link workflowGraph}. */
export interface GraphOptions {
  /** `dot` (Graphviz) or `mermaid`. @default 'dot' */
  readonly format?: GraphFormat;
  /** Draw every task, not only the steps: `true` always, `false` never. @default - when the plan has at most 50 tasks */
  readonly tasks?: boolean;
}

/** A plan of at most this many tasks is drawn task by task (unless told otherwise). */
export const SMALL_GRAPH_TASKS = 50;

const EDGE_LABEL = { outputsOf: 'each output', reduce: 'all outputs', needs: 'needs', data: '' } as const;

function dotString(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

function mermaidLabel(s: string): string {
  return `"${s
    .replace(/#/g, '#35;')
    .replace(/"/g, '#quot;')
    .replace(/</g, '#lt;')
    .replace(/>/g, '#gt;')
    .replace(/\n/g, '<br/>')}"`;
}

/**
 * The job's graph: its steps with edges (`each output`: a map over a step's outputs, task by
 * task; `all outputs`: a reduce; `needs`: waits for the step to finish; unlabelled: a HyperFlow
 * signal), and, for a small plan, every task in its step with the task-to-task edges.
 */
export async function workflowGraph(job: LoadedJob, opts: GraphOptions = {}): Promise<string> {
  const format = opts.format ?? 'dot';
  const edges = stepEdges(job);
  const plan = await withPlan(job, (db) => ({
    tasks: db.prepare('SELECT id, key, step, payload FROM tasks ORDER BY id').all() as Array<{
      id: number;
      key: string;
      step: string;
      payload: string;
    }>,
    deps: db.prepare('SELECT task_id AS a, dependent_id AS b FROM deps ORDER BY rowid').all() as Array<{
      a: number;
      b: number;
    }>,
  }));
  const drawTasks = opts.tasks ?? plan.tasks.length <= SMALL_GRAPH_TASKS;
  const stepId = new Map(job.steps.map((s, k) => [s.name, `s${k}`]));
  const byStep = new Map<string, typeof plan.tasks>();
  for (const t of plan.tasks) {
    const l = byStep.get(t.step) ?? [];
    l.push(t);
    byStep.set(t.step, l);
  }
  const stepLabel = (name: string): string => {
    const n = byStep.get(name)?.length ?? 0;
    const from = edges.find((e) => e.to === name && e.kind === 'needs')?.from;
    return n === 0 && from !== undefined
      ? `${name}\n(planned once ${from} has run)`
      : `${name}\n${n} task${n === 1 ? '' : 's'}`;
  };
  const taskLabel = (t: { key: string; payload: string }): string => {
    const input = describeInput(JSON.parse(t.payload) as TaskPayload);
    return input === undefined ? t.key : `${t.key}\n${input}`;
  };
  // task-to-task edges stand for `each output` and HyperFlow edges; the others join the steps
  const stepLevel = drawTasks ? edges.filter((e) => e.kind === 'needs' || e.kind === 'reduce') : edges;
  const out: string[] = [];
  if (format === 'dot') {
    out.push(`digraph ${dotString(job.spec.name)} {`, '  rankdir=LR;', '  node [shape=box, style=rounded];');
    if (drawTasks) out.push('  compound=true;');
    for (const st of job.steps) {
      const id = stepId.get(st.name)!;
      const tasks = byStep.get(st.name) ?? [];
      if (!drawTasks) {
        out.push(`  ${id} [label=${dotString(stepLabel(st.name))}];`);
        continue;
      }
      out.push(`  subgraph cluster_${id} {`, `    label=${dotString(st.name)};`);
      if (tasks.length === 0) out.push(`    ${id} [label=${dotString(stepLabel(st.name))}, style=dashed];`);
      for (const t of tasks) out.push(`    t${t.id} [label=${dotString(taskLabel(t))}];`);
      out.push('  }');
    }
    const anchor = (step: string, last: boolean): string => {
      const tasks = byStep.get(step) ?? [];
      if (tasks.length === 0) return stepId.get(step)!;
      return `t${(last ? tasks[tasks.length - 1] : tasks[0])!.id}`;
    };
    for (const e of stepLevel) {
      const attrs = [
        ...(EDGE_LABEL[e.kind] ? [`label=${dotString(EDGE_LABEL[e.kind])}`] : []),
        ...(e.kind === 'needs' ? ['style=dashed'] : []),
        ...(drawTasks ? [`ltail=cluster_${stepId.get(e.from)}`, `lhead=cluster_${stepId.get(e.to)}`] : []),
      ];
      const [a, b] = drawTasks
        ? [anchor(e.from, true), anchor(e.to, false)]
        : [stepId.get(e.from), stepId.get(e.to)];
      out.push(`  ${a} -> ${b}${attrs.length ? ` [${attrs.join(', ')}]` : ''};`);
    }
    if (drawTasks) for (const d of plan.deps) out.push(`  t${d.a} -> t${d.b};`);
    out.push('}');
  } else {
    out.push('flowchart LR');
    for (const st of job.steps) {
      const id = stepId.get(st.name)!;
      const tasks = byStep.get(st.name) ?? [];
      if (!drawTasks) {
        out.push(`  ${id}[${mermaidLabel(stepLabel(st.name))}]`);
        continue;
      }
      out.push(`  subgraph ${id}[${mermaidLabel(st.name)}]`);
      if (tasks.length === 0) out.push(`    ${id}_wait[${mermaidLabel(stepLabel(st.name))}]`);
      for (const t of tasks) out.push(`    t${t.id}[${mermaidLabel(taskLabel(t))}]`);
      out.push('  end');
    }
    for (const e of stepLevel) {
      const label = EDGE_LABEL[e.kind];
      const arrow = e.kind === 'needs' ? '-.->' : '-->';
      out.push(`  ${stepId.get(e.from)} ${arrow}${label ? `|${label}|` : ''} ${stepId.get(e.to)}`);
    }
    if (drawTasks) for (const d of plan.deps) out.push(`  t${d.a} --> t${d.b}`);
  }
  return `${out.join('\n')}\n`;
}
