import { existsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TaskPayload } from '../queue/queue.js';
import { UsageError } from '../spec/errors.js';
import { findCycle, type JobSpec, type LoadedJob, retriesSchema, type StepDef } from '../spec/job.js';
import { RESERVED_DIRS } from '../spec/limits.js';

/** HyperFlow process functions that run `config.executor` as a command; corral runs them all locally or on its workers. */
export const COMMAND_FUNCTIONS = new Set([
  'command',
  'k8sCommand',
  'awsCommand',
  'amqpCommand',
  'redisCommand',
  'RESTServiceCommand',
  'bojK8sCommand',
]);

/** One process of a HyperFlow workflow, as a corral task. */
export interface HyperflowTask {
  /** Process index in `processes`. */
  readonly index: number;
  readonly step: string;
  readonly payload: TaskPayload;
  /** Indexes of the processes whose outputs it reads. */
  readonly after: readonly number[];
}

/** Options of the import. */
export interface HyperflowOptions {
  /** Values of `{{var}}` placeholders (`--var name=value`). @default {} */
  readonly vars?: Readonly<Record<string, string>>;
  /** Working directory: where signals are files and commands run. @default - the JSON file's folder */
  readonly workdir?: string;
}

interface RawSignal {
  name?: unknown;
  data?: unknown;
}
interface RawProcess {
  name?: unknown;
  function?: unknown;
  type?: unknown;
  ins?: unknown;
  outs?: unknown;
  config?: { executor?: { executable?: unknown; args?: unknown } } & Record<string, unknown>;
  parlevel?: unknown;
  firingLimit?: unknown;
}

/** True when a parsed document looks like a HyperFlow workflow (`processes` or `tasks`, and `signals`). */
export function isHyperflow(doc: unknown): boolean {
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return false;
  const d = doc as Record<string, unknown>;
  return Array.isArray(d.signals) && (Array.isArray(d.processes) || Array.isArray(d.tasks));
}

const VAR_RE = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

/**
 * Turns a HyperFlow workflow into a corral job: every process becomes a task that is ready when
 * all its input signals exist; signals are file names in the working directory; processes with
 * the same name form one step (so `status` counts them together).
 */
export function importHyperflow(
  doc: unknown,
  file: string,
  opts: HyperflowOptions = {},
): LoadedJob & { hyperflow: HyperflowTask[] } {
  const d = doc as Record<string, unknown>;
  const vars = opts.vars ?? {};
  const workdir = path.resolve(opts.workdir ?? path.dirname(path.resolve(file)));
  const fill = (v: string, where: string): string =>
    v.replace(VAR_RE, (_m, name: string) => {
      const val = vars[name];
      if (val === undefined)
        throw new UsageError(where, `uses {{${name}}}, which has no value`, `pass --var ${name}=VALUE`, file);
      return val;
    });

  const signals = (d.signals as RawSignal[]).map((s, i) => {
    if (!s || typeof s.name !== 'string' || s.name === '') {
      throw new UsageError(
        `signals[${i}].name`,
        'is missing',
        'give every signal a name (its file name)',
        file,
      );
    }
    const name = fill(s.name, `signals[${i}].name`);
    const norm = path.posix.normalize(name);
    if (path.isAbsolute(name) || norm.split('/').includes('..')) {
      throw new UsageError(
        `signals[${i}].name`,
        `"${name}" leaves the working directory`,
        'use a file name relative to the workflow folder',
        file,
      );
    }
    return { name: norm, raw: name, hasData: s.data !== undefined };
  });
  const byName = new Map(signals.map((s, i) => [s.name, i]));
  const sigRef = (ref: unknown, where: string): number => {
    if (typeof ref === 'number' && Number.isInteger(ref) && ref >= 0 && ref < signals.length) return ref;
    if (typeof ref === 'string') {
      const i = byName.get(path.posix.normalize(fill(ref, where)));
      if (i !== undefined) return i;
    }
    throw new UsageError(
      where,
      `names signal ${JSON.stringify(ref)}, which does not exist`,
      'use a signal index or name from signals',
      file,
    );
  };

  const procs = (Array.isArray(d.processes) ? d.processes : d.tasks) as RawProcess[];
  const listKey = Array.isArray(d.processes) ? 'processes' : 'tasks';
  const wfIns = (Array.isArray(d.ins) ? d.ins : []).map((r, k) => sigRef(r, `ins[${k}]`));
  const wfInSet = new Set(wfIns);
  const producer = new Map<number, number>();
  /** Refuses a process output that cannot be a file the process writes in place (see checkOutput). */
  const checkOutput = (o: number, where: string, name: string) => {
    const why = unwritableOutput(signals[o]!, wfInSet.has(o), workdir);
    if (why) throw new UsageError(where, `process "${name}" ${why.problem}`, why.fix, file);
  };
  const parsed = procs.map((p, i) => {
    const at = `${listKey}[${i}]`;
    const name = typeof p?.name === 'string' && p.name ? p.name : `process-${i}`;
    const fn = p?.function ?? 'command';
    if (typeof fn !== 'string' || !COMMAND_FUNCTIONS.has(fn)) {
      throw new UsageError(
        `${at}.function`,
        `process "${name}" uses function ${JSON.stringify(fn)}, which corral does not run`,
        `use one of ${[...COMMAND_FUNCTIONS].join(', ')} (a command with config.executor)`,
        file,
      );
    }
    const type = p.type ?? 'dataflow';
    if (type !== 'dataflow') {
      throw new UsageError(
        `${at}.type`,
        `process "${name}" has type ${JSON.stringify(type)}, which corral does not run`,
        'use type dataflow',
        file,
      );
    }
    const exe = p.config?.executor;
    if (!exe || typeof exe.executable !== 'string' || exe.executable === '') {
      throw new UsageError(
        `${at}.config.executor.executable`,
        `process "${name}" has no executable`,
        'add config.executor.executable',
        file,
      );
    }
    const args = exe.args === undefined ? [] : Array.isArray(exe.args) ? exe.args : [exe.args];
    const argv = [
      fill(exe.executable, `${at}.config.executor.executable`),
      ...args.map((a, k) => fill(String(a), `${at}.config.executor.args[${k}]`)),
    ];
    const ins = (Array.isArray(p.ins) ? p.ins : []).map((r, k) => sigRef(r, `${at}.ins[${k}]`));
    const outs = (Array.isArray(p.outs) ? p.outs : []).map((r, k) => sigRef(r, `${at}.outs[${k}]`));
    for (const [k, o] of outs.entries()) checkOutput(o, `${at}.outs[${k}]`, name);
    for (const o of outs) {
      const other = producer.get(o);
      if (other !== undefined && other !== i) {
        throw new UsageError(
          `${at}.outs`,
          `signal "${signals[o]!.name}" is written by two processes`,
          'give each output its own name',
          file,
        );
      }
      producer.set(o, i);
    }
    return { name, argv, ins, outs };
  });

  // inputs nobody produces must be there before the run starts
  const needed = new Set<number>(wfIns);
  for (const p of parsed) for (const s of p.ins) if (!producer.has(s)) needed.add(s);
  const missing = [...needed].filter(
    (s) => !signals[s]!.hasData && !existsSync(path.join(workdir, signals[s]!.name)),
  );
  if (missing.length) {
    const names = missing.map((s) => signals[s]!.name);
    throw new UsageError(
      'ins',
      `workflow input${names.length > 1 ? 's' : ''} ${names.slice(0, 10).join(', ')}${names.length > 10 ? ` and ${names.length - 10} more` : ''} not found in ${workdir}`,
      'put the input files in the working directory or pass --workdir',
      file,
    );
  }
  const cycle = findCycle(
    parsed.map((p, i) => ({
      name: String(i),
      deps: p.ins
        .map((s) => producer.get(s))
        .filter((x) => x !== undefined)
        .map(String),
    })),
  );
  if (cycle) {
    throw new UsageError(
      listKey,
      `processes form a cycle: ${cycle.map((i) => parsed[Number(i)]!.name).join(' → ')}`,
      'remove one of the signals that close it',
      file,
    );
  }

  const perStep = new Map<string, number>();
  const hyperflow: HyperflowTask[] = parsed.map((p, index) => {
    const step = p.name;
    const i = perStep.get(step) ?? 0;
    perStep.set(step, i + 1);
    const after = [...new Set(p.ins.map((s) => producer.get(s)).filter((x): x is number => x !== undefined))];
    return {
      index,
      step,
      after,
      payload: {
        i,
        argv: p.argv,
        ins: p.ins.map((s) => signals[s]!.name),
        outs: p.outs.map((s) => signals[s]!.name),
      },
    };
  });
  const retries = retriesSchema.parse({});
  const rawName = typeof d.name === 'string' && d.name ? d.name : path.basename(file, path.extname(file));
  const name =
    rawName
      .replace(/[^A-Za-z0-9_-]/g, '-')
      .replace(/^[^A-Za-z0-9]+/, '')
      .slice(0, 63) || 'workflow';
  const spec: JobSpec = { name, retries, timeout: 3_600_000, lease: 30_000 };
  const steps: StepDef[] = [...perStep.keys()].map((n) => ({
    name: n,
    needs: [],
    exec: { executable: '', args: [] },
    stdin: 'none',
    env: {},
    retries,
    timeout: spec.timeout,
    continueOnFailure: false,
  }));
  return {
    spec,
    steps,
    file: path.resolve(file),
    baseDir: workdir,
    concurrency: Math.max(1, os.availableParallelism()),
    format: 'hyperflow',
    hyperflow,
    outs: (Array.isArray(d.outs) ? d.outs : []).map((r, k) => signals[sigRef(r, `outs[${k}]`)]!.name),
  } as LoadedJob & { hyperflow: HyperflowTask[] };
}

/**
 * Why a signal cannot be a process's output, or undefined when it can: a process writes its
 * outputs in place and a failed attempt removes what it wrote, so an output must be a file of the
 * working directory that is not a workflow input (a failed attempt would delete the user's input),
 * not a folder (`.`, `sub/..`, `out/`, or a folder that exists) and not inside corral's own folders.
 */
function unwritableOutput(
  sig: { name: string; raw: string },
  isWorkflowInput: boolean,
  workdir: string,
): { problem: string; fix: string } | undefined {
  if (isWorkflowInput)
    return {
      problem: `writes "${sig.name}", which is a workflow input (ins): a failed attempt would delete it`,
      fix: 'give the output its own name, or remove the signal from the workflow ins',
    };
  if (sig.name === '.' || sig.name.endsWith('/') || /(^|\/)\.\.?\/*$/.test(sig.raw))
    return {
      problem: `writes "${sig.raw}", which names a folder, not a file`,
      fix: 'name the file the process writes, e.g. out/result.txt',
    };
  const top = sig.name.split('/')[0]!;
  if (RESERVED_DIRS.includes(top))
    return {
      problem: `writes "${sig.name}", inside ${top}, corral's own folder (its files are removed at the end of a run)`,
      fix: 'write outputs below another folder',
    };
  let isDir = false;
  try {
    isDir = statSync(path.join(workdir, sig.name)).isDirectory();
  } catch {
    // not there yet (or unreadable): the process makes it
  }
  if (isDir)
    return {
      problem: `writes "${sig.name}", which is a folder in ${workdir}, not a file`,
      fix: 'name the file the process writes, or remove the folder',
    };
  return undefined;
}
