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
  /** Values of `{{var}}` placeholders (`--var name=value`), filled in every string of the document. @default {} */
  readonly vars?: Readonly<Record<string, string>>;
  /** Working directory: where signals are files and commands run. @default - the JSON file's folder */
  readonly workdir?: string;
  /**
   * The workflow runs on a cluster: each input named by an absolute path is uploaded once and
   * staged on the workers at `.corral-root/<its absolute path>` in the working directory, and the
   * process's `ins` and command arguments that name it are rewritten to that path. @default false
   */
  readonly forCluster?: boolean;
}

/**
 * Where a cluster worker stages a workflow input named by an absolute path, relative to the
 * working directory: `/data/ref.fa` is staged at `.corral-root/data/ref.fa`.
 */
export const STAGED_ROOT = '.corral-root';

/** Top-level keys of a HyperFlow workflow corral reads; any other is refused, never ignored. */
const TOP_KEYS = new Set(['name', 'processes', 'tasks', 'signals', 'ins', 'outs', 'functions']);
/**
 * Keys of a process corral reads. `firingLimit`, `parlevel` and `executeWhenRecovering` are
 * accepted and change nothing: each process fires once, when all its inputs exist, and a resumed
 * run never runs a finished process again.
 */
const PROCESS_KEYS = new Set([
  'name',
  'function',
  'type',
  'ins',
  'outs',
  'config',
  'executor',
  'firingLimit',
  'parlevel',
  'executeWhenRecovering',
]);
const SIGNAL_KEYS = new Set(['name', 'data']);
const EXECUTOR_KEYS = new Set(['executable', 'args', 'stdout']);
/** Values of a process's `executor` (how HyperFlow runs the command); corral runs it as a local process. */
const PROCESS_EXECUTORS = new Set(['syscommand']);

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
  config?: { executor?: { executable?: unknown; args?: unknown; stdout?: unknown } } & Record<
    string,
    unknown
  >;
  executor?: unknown;
}

/** True when a parsed document looks like a HyperFlow workflow (`processes` or `tasks`, and `signals`). */
export function isHyperflow(doc: unknown): boolean {
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return false;
  const d = doc as Record<string, unknown>;
  return Array.isArray(d.signals) && (Array.isArray(d.processes) || Array.isArray(d.tasks));
}

const VAR_RE = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

/**
 * Fills the `{{var}}` placeholders of every string of a document (HyperFlow renders the whole
 * workflow with its variables); the placeholders left without a value are refused together, each
 * with the first place it is used.
 */
export function renderHyperflow(doc: unknown, vars: Readonly<Record<string, string>>, file: string): unknown {
  const unfilled = new Map<string, string>();
  const at: Array<string | number> = [];
  const where = () => at.map((k, i) => (typeof k === 'number' ? `[${k}]` : i ? `.${k}` : k)).join('');
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') {
      if (!v.includes('{{')) return v;
      return v.replace(VAR_RE, (m, name: string) => {
        const val = Object.hasOwn(vars, name) ? vars[name] : undefined;
        if (val !== undefined) return val;
        if (!unfilled.has(name)) unfilled.set(name, where());
        return m;
      });
    }
    // copied only where a placeholder was filled: a big workflow without any is not copied
    if (Array.isArray(v)) {
      let copy: unknown[] | undefined;
      for (let i = 0; i < v.length; i++) {
        at.push(i);
        const r = walk(v[i]);
        at.pop();
        if (r !== v[i]) {
          copy ??= [...v];
          copy[i] = r;
        }
      }
      return copy ?? v;
    }
    if (v && typeof v === 'object') {
      let copy: Record<string, unknown> | undefined;
      for (const [k, x] of Object.entries(v)) {
        at.push(k);
        const r = walk(x);
        at.pop();
        if (r !== x) {
          copy ??= Object.fromEntries(Object.entries(v));
          // a data property even for a key such as __proto__
          Object.defineProperty(copy, k, { value: r, enumerable: true, writable: true, configurable: true });
        }
      }
      return copy ?? v;
    }
    return v;
  };
  const out = walk(doc);
  if (unfilled.size > 0) {
    const [[first, firstAt], ...rest] = [...unfilled];
    const names = [...unfilled.keys()];
    const others = rest.slice(0, 10).map(([n, w]) => `, {{${n}}} (at ${w})`);
    throw new UsageError(
      firstAt!,
      rest.length === 0
        ? `uses {{${first}}}, which has no value`
        : `uses {{${first}}}${others.join('')}${rest.length > 10 ? ` and ${rest.length - 10} more` : ''}, which have no value`,
      `pass ${names.map((n) => `--var ${n}=VALUE`).join(' ')}`,
      file,
    );
  }
  return out;
}

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
  const d = renderHyperflow(doc, opts.vars ?? {}, file) as Record<string, unknown>;
  const workdir = path.resolve(opts.workdir ?? path.dirname(path.resolve(file)));
  const unsupported = (where: string, what: string, fix = 'remove it'): never => {
    throw new UsageError(where, `${what}, which corral does not support`, fix, file);
  };
  for (const k of Object.keys(d))
    if (!TOP_KEYS.has(k))
      unsupported(k, `the workflow uses "${k}"`, `remove it; corral reads ${[...TOP_KEYS].join(', ')}`);
  if (d.functions !== undefined) {
    // the functions a workflow's processes may name: corral runs the command functions itself
    if (
      !Array.isArray(d.functions) ||
      d.functions.some((f) => !f || typeof f !== 'object' || typeof f.name !== 'string')
    )
      throw new UsageError(
        'functions',
        'is not a list of {name, module}',
        'write functions: [{"name": "command", "module": "functions"}]',
        file,
      );
  }

  const signals = (d.signals as RawSignal[]).map((s, i) => {
    if (s && typeof s === 'object')
      for (const k of Object.keys(s))
        if (!SIGNAL_KEYS.has(k))
          unsupported(
            `signals[${i}].${k}`,
            `signal ${i} uses "${k}"`,
            'remove it; a signal is a file: {"name": FILE}',
          );
    // HyperFlow accepts a number as a signal's name: the file of that name
    const raw = typeof s?.name === 'number' && Number.isFinite(s.name) ? String(s.name) : s?.name;
    if (typeof raw !== 'string' || raw === '') {
      throw new UsageError(
        `signals[${i}].name`,
        raw === undefined || raw === '' ? 'is missing' : `is ${JSON.stringify(raw)}, not a file name`,
        'give every signal a name (its file name)',
        file,
      );
    }
    const name = raw;
    const absolute = path.posix.isAbsolute(name);
    const norm = path.posix.normalize(name);
    if (!absolute && norm.split('/').includes('..')) {
      throw new UsageError(
        `signals[${i}].name`,
        `"${name}" leaves the working directory`,
        'name files relative to the working directory; a workflow input kept elsewhere may be named by its absolute path',
        file,
      );
    }
    if (!absolute && norm.split('/')[0] === STAGED_ROOT) {
      throw new UsageError(
        `signals[${i}].name`,
        `"${name}" is inside ${STAGED_ROOT}, where a cluster worker stages the inputs named by absolute paths`,
        'use another folder',
        file,
      );
    }
    return { name: norm, raw: name, absolute, hasData: s.data !== undefined };
  });
  const byName = new Map(signals.map((s, i) => [s.name, i]));
  const sigRef = (ref: unknown, where: string): number => {
    if (typeof ref === 'number' && Number.isInteger(ref) && ref >= 0 && ref < signals.length) return ref;
    if (typeof ref === 'string') {
      const i = byName.get(path.posix.normalize(ref));
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
  /** Files that are a process's stdout but no signal, and the process. */
  const stdoutOf = new Map<string, string>();
  const parsed = procs.map((p, i) => {
    const at = `${listKey}[${i}]`;
    const name = typeof p?.name === 'string' && p.name ? p.name : `process-${i}`;
    if (p && typeof p === 'object')
      for (const k of Object.keys(p))
        if (!PROCESS_KEYS.has(k)) unsupported(`${at}.${k}`, `process "${name}" uses "${k}"`);
    if (p?.executor !== undefined && !PROCESS_EXECUTORS.has(p.executor as string))
      unsupported(
        `${at}.executor`,
        `process "${name}" uses executor ${JSON.stringify(p.executor)}`,
        `use ${[...PROCESS_EXECUTORS].join(', ')}, or remove it`,
      );
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
    for (const k of Object.keys(p.config ?? {}))
      if (k !== 'executor') unsupported(`${at}.config.${k}`, `process "${name}" uses config.${k}`);
    const exe = p.config?.executor;
    for (const k of Object.keys(exe && typeof exe === 'object' ? exe : {}))
      if (!EXECUTOR_KEYS.has(k))
        unsupported(
          `${at}.config.executor.${k}`,
          `process "${name}" uses config.executor.${k}`,
          `remove it; corral reads ${[...EXECUTOR_KEYS].join(', ')}`,
        );
    if (!exe || typeof exe.executable !== 'string' || exe.executable === '') {
      throw new UsageError(
        `${at}.config.executor.executable`,
        `process "${name}" has no executable`,
        'add config.executor.executable',
        file,
      );
    }
    const args = exe.args === undefined ? [] : Array.isArray(exe.args) ? exe.args : [exe.args];
    const argv = [exe.executable, ...args.map((a) => String(a))];
    const ins = (Array.isArray(p.ins) ? p.ins : []).map((r, k) => sigRef(r, `${at}.ins[${k}]`));
    const outs = (Array.isArray(p.outs) ? p.outs : []).map((r, k) => sigRef(r, `${at}.outs[${k}]`));
    for (const [k, o] of outs.entries()) checkOutput(o, `${at}.outs[${k}]`, name);
    // config.executor.stdout: the process's stdout is written to that file, one of its outputs
    let stdout: string | undefined;
    if (exe.stdout !== undefined) {
      const where = `${at}.config.executor.stdout`;
      if (typeof exe.stdout !== 'string' || exe.stdout === '')
        throw new UsageError(
          where,
          `process "${name}" has stdout ${JSON.stringify(exe.stdout)}, not a file name`,
          'name the file its stdout is written to',
          file,
        );
      const norm = path.posix.normalize(exe.stdout);
      const o = byName.get(norm);
      if (o !== undefined) {
        checkOutput(o, where, name);
        if (!outs.includes(o)) outs.push(o);
        stdout = signals[o]!.name;
      } else {
        const sig = {
          name: norm,
          raw: exe.stdout,
          absolute: path.posix.isAbsolute(exe.stdout),
        };
        const why =
          !sig.absolute && norm.split('/').includes('..')
            ? { problem: `writes "${sig.raw}", which leaves the working directory`, fix: outsideFix(sig.raw) }
            : unwritableOutput(sig, false, workdir);
        if (why) throw new UsageError(where, `process "${name}" ${why.problem}`, why.fix, file);
        const other = stdoutOf.get(norm);
        if (other !== undefined)
          throw new UsageError(
            where,
            `"${norm}" is the stdout of two processes ("${other}" and "${name}")`,
            'give each process its own stdout file',
            file,
          );
        stdoutOf.set(norm, name);
        stdout = norm;
      }
    }
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
    return { name, argv, ins, outs, stdout };
  });

  // inputs nobody produces must be there before the run starts
  const needed = new Set<number>(wfIns);
  for (const p of parsed) for (const s of p.ins) if (!producer.has(s)) needed.add(s);
  const missing = [...needed].filter(
    (s) => !signals[s]!.hasData && !existsSync(path.resolve(workdir, signals[s]!.name)),
  );
  if (missing.length) {
    const names = missing.map((s) => signals[s]!.name);
    throw new UsageError(
      'ins',
      `workflow input${names.length > 1 ? 's' : ''} ${names.slice(0, 10).join(', ')}${names.length > 10 ? ` and ${names.length - 10} more` : ''} not found in ${workdir}`,
      'put the input files in the working directory (or at their absolute path) or pass --workdir',
      file,
    );
  }
  // on a cluster, an input named by an absolute path is staged below STAGED_ROOT in the working
  // directory; the command lines that name it are rewritten to match
  const external: Record<string, string> = {};
  const staged = new Map<string, string>();
  if (opts.forCluster)
    for (const p of parsed)
      for (const s of p.ins)
        if (signals[s]!.absolute && !producer.has(s) && existsSync(signals[s]!.name)) {
          const abs = signals[s]!.name;
          const rel = `${STAGED_ROOT}${abs}`;
          staged.set(abs, rel);
          external[rel] = abs;
        }
  const restage = staged.size > 0 ? restager(staged) : (v: string) => v;
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
        argv: p.argv.map(restage),
        ins: p.ins.map((s) => staged.get(signals[s]!.name) ?? signals[s]!.name),
        outs: [
          ...p.outs.map((s) => signals[s]!.name),
          ...(p.stdout && !byName.has(p.stdout) ? [p.stdout] : []),
        ],
        ...(p.stdout !== undefined ? { stdout: p.stdout } : {}),
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
    ...(staged.size > 0 ? { external } : {}),
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
  sig: { name: string; raw: string; absolute: boolean },
  isWorkflowInput: boolean,
  workdir: string,
): { problem: string; fix: string } | undefined {
  if (sig.absolute)
    return {
      problem: `writes "${sig.raw}", an absolute path: outputs stay inside the working directory`,
      fix: outsideFix(sig.raw),
    };
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

function outsideFix(raw: string): string {
  return `name the output relative to the working directory (e.g. ${path.posix.basename(raw) || 'out.txt'}); only workflow inputs may be absolute paths`;
}

/**
 * Rewrites the absolute input paths a command argument names (`/data/ref.fa`, `I=/data/ref.fa`)
 * to where a cluster worker stages them; a path is matched where it starts, not inside a longer one.
 */
function restager(staged: ReadonlyMap<string, string>): (arg: string) => string {
  const alts = [...staged.keys()]
    .sort((a, b) => b.length - a.length)
    .map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const re = new RegExp(`(?<![\\w./-])(?:${alts.join('|')})`, 'g');
  return (arg) => arg.replace(re, (m) => staged.get(m)!);
}
