import os from 'node:os';
import path from 'node:path';
import { z } from '../vendor/zod.js';
import { UsageError } from './errors.js';
import { MAX_CONCURRENCY, RESERVED_DIRS } from './limits.js';
import { readYamlFile, resolveFrom, type SourceDocument, validate } from './load.js';
import { outputsMatchInput, outputsOverlap } from './overlap.js';
import { PLACEHOLDERS, placeholdersIn } from './placeholders.js';
import type { TaskPayload } from './task.js';
import { durationField, sizeField } from './units.js';

export { PLACEHOLDERS } from './placeholders.js';

/** An `outputs` pattern names only corral's placeholders (a command may hold any other braces: awk '{print}'). */
function checkPlaceholders(template: string, allowed: readonly string[], ctx: z.RefinementCtx, what: string) {
  for (const name of placeholdersIn(template)) {
    if (!allowed.includes(name)) {
      ctx.addIssue({
        code: 'custom',
        path: [what],
        message: `unknown placeholder {${name}} in ${what} | fix: use one of ${allowed.map((p) => `{${p}}`).join(', ')} (or {{ and }} for a literal brace)`,
      });
    }
  }
}

/** What a map task runs over. Exactly one of `glob`, `lines` or `chunks`. */
export const mapSchema = z
  .strictObject({
    /** Files matching this glob (relative to the job file), one task per file; or `s3://BUCKET/prefix/*.csv` objects (cluster runs). @default - none */
    glob: z.string().min(1).optional(),
    /** A text file whose non-empty lines are the inputs, one task per line. @default - none */
    lines: z.string().min(1).optional(),
    /** File(s) (a path or glob, or `s3://BUCKET/KEY-or-glob` on a cluster) split into byte ranges of `chunkSize`, one task per chunk. @default - none */
    chunks: z.string().min(1).optional(),
    /** An earlier step whose outputs are the inputs, one task per output; each task starts as soon as its input is committed. @default - none */
    outputsOf: z.string().min(1).optional(),
    /** Size of each chunk for `chunks`. @default 64MiB */
    chunkSize: sizeField({ min: 1 }).default(64 * 1024 * 1024),
    /** Where chunk boundaries fall: `newline` moves each one just past the next newline, `none` cuts at exact bytes. @default newline */
    align: z.enum(['newline', 'none']).default('newline'),
  })
  .superRefine((m, ctx) => {
    const given = (['glob', 'lines', 'chunks', 'outputsOf'] as const).filter((k) => m[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          given.length === 0
            ? 'needs one input source | fix: add glob: "data/*.csv", lines: inputs.txt, chunks: data/big.txt or outputsOf: STEP'
            : `has ${given.join(' and ')}; only one input source is allowed | fix: keep one of glob, lines, chunks or outputsOf`,
      });
    }
  });

/** What a task runs: the fields shared by `tasks` and each of `steps`. */
const bodyFields = {
  /**
   * A shell command template run with /bin/sh; placeholders such as {input}, {output}, {index},
   * {chunk.start}, {chunk.end}, {inputs} are substituted shell-quoted, so file names cannot inject
   * commands. {inputs.file} is a file listing a reduce's inputs, one path a line (for lists too
   * long for a command line). A command over 64 KiB once filled in is run from a script file. When it does not mention {output}, the command's stdout becomes the output.
   * @default - none (give `command` or `module`)
   */
  command: z.string().min(1).optional(),
  /** A JS/TS module (relative to the job file) whose default export `async (task) => result` is the task body. @default - none */
  module: z.string().min(1).optional(),
  /** What the task reads on stdin (command) or `task.read()` (module): `input` streams the file, chunk or line; `none` gives nothing. @default none */
  stdin: z.enum(['input', 'none']).default('none'),
  /** Extra environment variables for the task. @default {} */
  env: z.record(z.string(), z.string()).default({}),
};

type Body = { command?: string; module?: string };

function checkBody(t: Body, ctx: z.RefinementCtx): void {
  if ((t.command === undefined) === (t.module === undefined)) {
    ctx.addIssue({
      code: 'custom',
      message: 'needs exactly one of command or module | fix: add command: "..." or module: ./task.ts',
    });
  }
  if (t.command) {
    const quoted = [...t.command.matchAll(/(['"])\{([a-z.]+)\}\1/g)].find((m) =>
      (PLACEHOLDERS as readonly string[]).includes(m[2]!),
    );
    if (quoted) {
      ctx.addIssue({
        code: 'custom',
        path: ['command'],
        message: `${quoted[0]} is quoted, but corral quotes substituted values itself | fix: write ${quoted[0].slice(1, -1)} without quotes`,
      });
    }
  }
}

/** What a task runs and over what. */
export const tasksSchema = z
  .strictObject({
    /** The inputs: one task per file, line or chunk. */
    map: mapSchema,
    ...bodyFields,
  })
  .superRefine((t, ctx) => {
    checkBody(t, ctx);
    if (t.map.outputsOf !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['map', 'outputsOf'],
        message: 'needs steps | fix: write the job with steps: to chain steps',
      });
    }
  });

/** Backoff between attempts of a failing task. */
export const backoffSchema = z.strictObject({
  /** Delay before the second attempt. @default 1s */
  initial: durationField({ timer: true }).default(1000),
  /** Each further delay is the previous one times this. @default 2 */
  factor: z.number().min(1).max(100).default(2),
  /** The longest delay. @default 5m */
  max: durationField({ timer: true }).default(300_000),
});

/** Retries of failing tasks. */
export const retriesSchema = z.strictObject({
  /** Attempts per task before it goes to the dead letters (1 = no retry). @default 3 */
  maxAttempts: z.int().min(1).max(100).default(3),
  /** Delay between attempts. @default 1s, doubling, at most 5m */
  backoff: backoffSchema.default({ initial: 1000, factor: 2, max: 300_000 }),
});

const STEP_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** One step of a workflow: a single task, a map, or a reduce; `needs` orders it after other steps. */
export const stepSchema = z
  .strictObject({
    /** The step's name, unique in the job. */
    name: z
      .string()
      .regex(
        STEP_NAME_RE,
        'must be 1-63 letters, digits, ., - or _ | fix: rename the step, e.g. count-words',
      ),
    /** Steps that must finish before this one starts (a map over `outputsOf` needs only its own input). @default [] */
    needs: z.array(z.string()).default([]),
    /** Run one task per input (files, lines, chunks, or the outputs of an earlier step). @default - one task */
    map: mapSchema.optional(),
    /** Run one task over all outputs of this earlier step ({inputs} / `task.inputs`). @default - none */
    reduce: z.string().min(1).optional(),
    ...bodyFields,
    /** Output path pattern per task, relative to the job folder. @default - none: a task is complete when it succeeds */
    outputs: z.string().min(1).optional(),
    /** Retries of this step's tasks. @default - the job's `retries` */
    retries: retriesSchema.optional(),
    /** Longest time one attempt may run. @default - the job's `timeout` */
    timeout: durationField({ min: 1, timer: true }).optional(),
    /** Let dependents run when tasks of this step fail (their failed inputs are missing). @default false */
    continueOnFailure: z.boolean().default(false),
    /** Tasks of this step claimed together in one lease batch (agglomeration of small tasks). @default - adaptive, by measured task duration */
    batch: z.int().min(1).max(1000).optional(),
    /** The cluster pool whose workers run this step's tasks (`--cluster` runs). @default - the job's `pool`, else the cluster's first pool */
    pool: z.string().min(1).optional(),
  })
  .superRefine((st, ctx) => {
    checkBody(st, ctx);
    if (st.map && st.reduce) {
      ctx.addIssue({
        code: 'custom',
        message: 'has both map and reduce | fix: keep one; a reduce takes all outputs of one step',
      });
    }
    checkOutputs(st.outputs, ctx, Boolean(st.map));
  });

function checkOutputs(outputs: string | undefined, ctx: z.RefinementCtx, perTask: boolean): void {
  if (!outputs) return;
  checkPlaceholders(
    outputs,
    PLACEHOLDERS.filter((p) => !['output', 'attempt', 'input', 'inputs', 'inputs.file'].includes(p)),
    ctx,
    'outputs',
  );
  const normalized = path.posix.normalize(outputs.replaceAll('\\', '/'));
  if (path.posix.isAbsolute(normalized) || normalized.split('/').includes('..')) {
    ctx.addIssue({
      code: 'custom',
      path: ['outputs'],
      message: `"${outputs}" leaves the job folder | fix: write a relative path below the job file's folder, e.g. out/{index}.txt`,
    });
  }
  const top = normalized.split('/')[0]!;
  if (RESERVED_DIRS.includes(top)) {
    ctx.addIssue({
      code: 'custom',
      path: ['outputs'],
      message: `"${outputs}" is inside ${top}, corral's own folder (its files are removed at the end of a run) | fix: write outputs below another folder, e.g. out/{index}.txt`,
    });
  }
  if (perTask && !/\{(index|input\.path|input\.name|input\.stem|chunk\.start)\}/.test(outputs)) {
    ctx.addIssue({
      code: 'custom',
      path: ['outputs'],
      message: `"${outputs}" gives every task the same output | fix: include {index} (or {input.name}) in the pattern`,
    });
  }
}

/** A job: a named map of tasks over inputs (`tasks`), or a workflow of `steps`. */
export const jobSchema = z
  .strictObject({
    /** The job's name: letters, digits, `-` and `_`; names its state in the state dir. */
    name: z
      .string()
      .regex(
        /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/,
        'must be 1-63 letters, digits, - or _ | fix: rename it, e.g. my-job',
      ),
    /** The tasks of a map job. @default - none (give `tasks` or `steps`) */
    tasks: tasksSchema.optional(),
    /** The steps of a workflow, joined by `needs`, `map.outputsOf` and `reduce`. @default - none (give `tasks` or `steps`) */
    steps: z.array(stepSchema).min(1).optional(),
    /**
     * Output path pattern per task of a map job, relative to the job file's folder (e.g. `out/{index}.json`).
     * A task is complete when its output is committed; committed outputs are never overwritten.
     * @default - none: a task is complete when it exits successfully
     */
    outputs: z.string().min(1).optional(),
    /** Retries of failing tasks (steps may override). @default maxAttempts 3, backoff 1s doubling to 5m */
    retries: retriesSchema.default({ maxAttempts: 3, backoff: { initial: 1000, factor: 2, max: 300_000 } }),
    /** Longest time one attempt may run; past it the task's whole process group is killed (steps may override). @default 1h */
    timeout: durationField({ min: 1, timer: true }).default(3_600_000),
    /** How many tasks run at once (local worker processes). @default the number of CPU cores */
    concurrency: z.int().min(1).max(MAX_CONCURRENCY).optional(),
    /** The cluster pool whose workers run the job's tasks (`--cluster` runs; a step may name its own). @default - the cluster's first pool */
    pool: z.string().min(1).optional(),
    /** How long a worker's claim on a task lasts without a heartbeat. @default 30s */
    lease: durationField({ timer: true }).default(30_000),
  })
  .superRefine((j, ctx) => {
    if ((j.tasks === undefined) === (j.steps === undefined)) {
      ctx.addIssue({
        code: 'custom',
        message:
          'needs exactly one of tasks or steps | fix: a map job has tasks: { map, command }; a workflow has steps: [...]',
      });
    }
    if (j.steps && j.outputs) {
      ctx.addIssue({
        code: 'custom',
        path: ['outputs'],
        message: 'is per step in a workflow | fix: move outputs into each step',
      });
    }
    checkOutputs(j.outputs, ctx, true);
    if (j.lease < 2000) {
      ctx.addIssue({ code: 'custom', path: ['lease'], message: 'must be at least 2s | fix: use lease: 30s' });
    }
    if (j.steps) checkGraph(j.steps, ctx);
    checkOutputsApart(j, ctx);
  });

/** The file input (`glob`, `lines` or `chunks`) of a map, with its field name. */
function fileInput(map: MapSpec | undefined): [string, 'glob' | 'lines' | 'chunks'] | undefined {
  for (const k of ['glob', 'lines', 'chunks'] as const) {
    const v = map?.[k];
    if (v !== undefined && !v.startsWith('s3://')) return [v, k];
  }
  return undefined;
}

/**
 * Outputs that another step, or an input, can name too: a task whose output exists when it
 * starts is done without running, so a second step writing the same files never ran, and outputs
 * that are inputs "succeeded" with 0 tasks run. Refused at load: each step's outputs apart from
 * every other step's, and from every input the step cannot have produced (a map that `needs` a
 * step may read that step's outputs).
 */
function checkOutputsApart(
  j: { tasks?: z.output<typeof tasksSchema>; steps?: StepIn[]; outputs?: string },
  ctx: z.RefinementCtx,
): void {
  if (j.tasks) {
    const input = fileInput(j.tasks.map);
    if (j.outputs && input && outputsMatchInput(j.outputs, input[0])) {
      ctx.addIssue({
        code: 'custom',
        path: ['outputs'],
        message: `"${j.outputs}" can name the input files (map.${input[1]}: "${input[0]}"), which would be taken for outputs | fix: write outputs to another folder, e.g. out/{index}.txt`,
      });
    }
    return;
  }
  const steps = j.steps ?? [];
  const byName = new Map(steps.map((st) => [st.name, st]));
  /** Steps that `name` waits for, directly or not. */
  const upstream = (name: string): Set<string> => {
    const out = new Set<string>();
    const todo = [name];
    while (todo.length > 0) {
      const st = byName.get(todo.pop()!);
      if (!st) continue;
      for (const d of [
        ...st.needs,
        ...(st.reduce ? [st.reduce] : []),
        ...(st.map?.outputsOf ? [st.map.outputsOf] : []),
      ])
        if (!out.has(d)) {
          out.add(d);
          todo.push(d);
        }
    }
    return out;
  };
  steps.forEach((st, i) => {
    if (!st.outputs) return;
    for (const [k, other] of steps.slice(0, i).entries()) {
      if (other.outputs && outputsOverlap(st.outputs, other.outputs)) {
        ctx.addIssue({
          code: 'custom',
          path: ['steps', i, 'outputs'],
          message: `"${st.outputs}" can name the same files as the outputs of step ${other.name} (steps[${k}]: "${other.outputs}"); a task whose output exists is taken as done | fix: give each step its own folder, e.g. ${st.name}/{index}.txt`,
        });
        return;
      }
    }
    for (const reader of steps) {
      const input = fileInput(reader.map);
      if (!input || (reader !== st && upstream(reader.name).has(st.name))) continue;
      if (outputsMatchInput(st.outputs, input[0])) {
        const whose = reader === st ? 'its own input' : `the input of step ${reader.name}`;
        ctx.addIssue({
          code: 'custom',
          path: ['steps', i, 'outputs'],
          message: `"${st.outputs}" can name files of ${whose} (map.${input[1]}: "${input[0]}"), which would be taken for outputs | fix: write outputs to another folder, e.g. ${st.name}/{index}.txt`,
        });
        return;
      }
    }
  });
}

type StepIn = z.output<typeof stepSchema>;

/** Unknown step names, self references and cycles, each reported at its field. */
function checkGraph(steps: StepIn[], ctx: z.RefinementCtx): void {
  const index = new Map<string, number>();
  steps.forEach((st, i) => {
    if (index.has(st.name)) {
      ctx.addIssue({
        code: 'custom',
        path: ['steps', i, 'name'],
        message: `"${st.name}" names two steps | fix: give each step its own name`,
      });
    }
    index.set(st.name, i);
  });
  const refs = (st: StepIn): Array<[string, (string | number)[]]> => [
    ...st.needs.map((n, k): [string, (string | number)[]] => [n, ['needs', k]]),
    ...(st.map?.outputsOf ? [[st.map.outputsOf, ['map', 'outputsOf']] as [string, (string | number)[]]] : []),
    ...(st.reduce ? [[st.reduce, ['reduce']] as [string, (string | number)[]]] : []),
  ];
  let ok = true;
  steps.forEach((st, i) => {
    for (const [ref, at] of refs(st)) {
      if (!index.has(ref)) {
        ok = false;
        ctx.addIssue({
          code: 'custom',
          path: ['steps', i, ...at],
          message: `names step "${ref}", which does not exist | fix: use one of ${[...index.keys()].join(', ')}`,
        });
      } else if (ref === st.name) {
        ok = false;
        ctx.addIssue({
          code: 'custom',
          path: ['steps', i, ...at],
          message: 'names the step itself | fix: remove it',
        });
      } else if ((at[0] === 'map' || at[0] === 'reduce') && !steps[index.get(ref)!]!.outputs) {
        ok = false;
        ctx.addIssue({
          code: 'custom',
          path: ['steps', i, ...at],
          message: `step "${ref}" has no outputs to take | fix: give step ${ref} an outputs pattern`,
        });
      }
    }
  });
  if (!ok) return;
  const cycle = findCycle(steps.map((st) => ({ name: st.name, deps: refs(st).map(([r]) => r) })));
  if (cycle) {
    ctx.addIssue({
      code: 'custom',
      path: ['steps', index.get(cycle[0]!)!, 'needs'],
      message: `steps form a cycle: ${cycle.join(' → ')} | fix: remove one of these needs`,
    });
  }
}

/** A cycle among named nodes, as the list of names around it (first repeated last), or undefined. */
export function findCycle(nodes: Array<{ name: string; deps: string[] }>): string[] | undefined {
  const deps = new Map(nodes.map((n) => [n.name, n.deps]));
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const visit = (n: string): string[] | undefined => {
    if (state.get(n) === 2) return undefined;
    if (state.get(n) === 1) return [...stack.slice(stack.indexOf(n)), n];
    state.set(n, 1);
    stack.push(n);
    for (const d of deps.get(n) ?? []) {
      const c = visit(d);
      if (c) return c;
    }
    stack.pop();
    state.set(n, 2);
    return undefined;
  };
  for (const n of deps.keys()) {
    const c = visit(n);
    if (c) return c;
  }
  return undefined;
}

/** A job spec as written (YAML or `defineJob`), before defaults. */
export type JobSpecInput = z.input<typeof jobSchema>;
/** A validated job spec with every default filled in. */
export type JobSpec = z.output<typeof jobSchema>;
/** A map's input source. */
export type MapSpec = z.output<typeof mapSchema>;

/** A step as the engine runs it: every default resolved, whatever the job was written as. */
export interface StepDef {
  readonly name: string;
  /** Steps that must have finished (a barrier), beyond the input of a map over `outputsOf`. */
  readonly needs: readonly string[];
  readonly map?: MapSpec;
  readonly reduce?: string;
  readonly command?: string;
  readonly module?: string;
  /** An executable and its arguments, run without a shell (HyperFlow processes). */
  readonly exec?: { readonly executable: string; readonly args: readonly string[] };
  readonly stdin: 'input' | 'none';
  readonly env: Readonly<Record<string, string>>;
  readonly outputs?: string;
  readonly retries: z.output<typeof retriesSchema>;
  readonly timeout: number;
  readonly continueOnFailure: boolean;
  readonly batch?: number;
  /** The cluster pool of the step's tasks. @default - the job's, else the cluster's first pool */
  readonly pool?: string;
}

/** A validated job spec together with where it came from. */
export interface LoadedJob {
  readonly spec: JobSpec;
  /** The steps the engine runs (a map job is one step named `map`). */
  readonly steps: readonly StepDef[];
  /** Absolute path of the spec file (or of the folder standing in for it). */
  readonly file: string;
  /** Folder that relative paths in the spec are resolved from, and where commands run. */
  readonly baseDir: string;
  /** Resolved concurrency (spec value or number of cores). */
  readonly concurrency: number;
  /** Folder holding `s3://` inputs as `<bucket>/<key>` (a cluster worker's input cache). @default - none */
  readonly s3Dir?: string;
  /** What the job was written as. @default 'corral' */
  readonly format?: 'corral' | 'hyperflow';
  /** A HyperFlow workflow's tasks (one per process), planned all at once. @default - none */
  readonly hyperflow?: ReadonlyArray<{
    readonly step: string;
    readonly payload: TaskPayload;
    readonly after: readonly number[];
  }>;
  /** Files a HyperFlow workflow promises (its `outs`), checked when it ends. @default - none */
  readonly outs?: readonly string[];
  /**
   * Files outside `baseDir` a HyperFlow workflow on a cluster reads: the name it is staged at
   * (relative to `baseDir`) → its absolute path on this machine, uploaded from there. @default - none
   */
  readonly external?: Readonly<Record<string, string>>;
}

/** The step name of a map job's tasks. */
export const MAP_STEP = 'map';

/** Validates a job spec written in TypeScript; throws UsageError on bad input. */
export function defineJob(spec: JobSpecInput): JobSpec {
  return validate(jobSchema, { data: spec, file: 'defineJob' });
}

/** Reads, parses and validates a corral job YAML file (see `loadJob` for every format). */
export function loadJobFile(file: string): LoadedJob {
  return jobFromDocument(readYamlFile(file));
}

/** Validates a parsed corral job document and resolves it against its file. */
export function jobFromDocument(src: SourceDocument): LoadedJob {
  if (src.data === null || typeof src.data !== 'object' || Array.isArray(src.data)) {
    throw new UsageError(
      '(root)',
      'a job spec must be a mapping',
      'start the file with name: and tasks: (or steps:)',
      src.file,
    );
  }
  return resolveJob(validate(jobSchema, src), path.resolve(src.file));
}

/** The engine's steps of a spec. */
export function stepsOf(spec: JobSpec): StepDef[] {
  if (spec.tasks) {
    const t = spec.tasks;
    return [
      {
        name: MAP_STEP,
        needs: [],
        map: t.map,
        command: t.command,
        module: t.module,
        stdin: t.stdin,
        env: t.env,
        outputs: spec.outputs,
        retries: spec.retries,
        timeout: spec.timeout,
        continueOnFailure: false,
        ...(spec.pool !== undefined ? { pool: spec.pool } : {}),
      },
    ];
  }
  return (spec.steps ?? []).map((st) => ({
    name: st.name,
    needs: st.needs,
    map: st.map,
    reduce: st.reduce,
    command: st.command,
    module: st.module,
    stdin: st.stdin,
    env: st.env,
    outputs: st.outputs,
    retries: st.retries ?? spec.retries,
    timeout: st.timeout ?? spec.timeout,
    continueOnFailure: st.continueOnFailure,
    batch: st.batch,
    ...((st.pool ?? spec.pool) !== undefined ? { pool: st.pool ?? spec.pool } : {}),
  }));
}

/** Completes a spec with the paths and defaults that depend on where it lives. */
export function resolveJob(spec: JobSpec, file: string, baseDir = path.dirname(file)): LoadedJob {
  return {
    spec,
    steps: stepsOf(spec),
    file,
    baseDir,
    concurrency: spec.concurrency ?? Math.max(1, os.availableParallelism()),
  };
}

export { resolveFrom };
