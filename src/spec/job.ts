import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { UsageError } from './errors.js';
import { readYamlFile, resolveFrom, validate } from './load.js';
import { durationField, sizeField } from './units.js';

/** Placeholders a command template or an `outputs` pattern may use. */
export const PLACEHOLDERS = [
  'input',
  'input.path',
  'input.name',
  'input.stem',
  'output',
  'index',
  'chunk.start',
  'chunk.end',
  'chunk.length',
  'attempt',
] as const;

const placeholderRe = /\{([a-z.]+)\}/g;

function checkPlaceholders(template: string, allowed: readonly string[], ctx: z.RefinementCtx, what: string) {
  for (const m of template.matchAll(placeholderRe)) {
    if (!allowed.includes(m[1]!)) {
      ctx.addIssue({
        code: 'custom',
        message: `unknown placeholder {${m[1]}} in ${what} | fix: use one of ${allowed.map((p) => `{${p}}`).join(', ')}`,
      });
    }
  }
}

/** What a map task runs over. Exactly one of `glob`, `lines` or `chunks`. */
export const mapSchema = z
  .strictObject({
    /** Files matching this glob (relative to the job file), one task per file. @default - none */
    glob: z.string().min(1).optional(),
    /** A text file whose non-empty lines are the inputs, one task per line. @default - none */
    lines: z.string().min(1).optional(),
    /** File(s) (a path or glob) split into byte ranges of `chunkSize`, one task per chunk. @default - none */
    chunks: z.string().min(1).optional(),
    /** Size of each chunk for `chunks`. @default 64MiB */
    chunkSize: sizeField({ min: 1 }).default(64 * 1024 * 1024),
    /** Where chunk boundaries fall: `newline` moves each one just past the next newline, `none` cuts at exact bytes. @default newline */
    align: z.enum(['newline', 'none']).default('newline'),
  })
  .superRefine((m, ctx) => {
    const given = (['glob', 'lines', 'chunks'] as const).filter((k) => m[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          given.length === 0
            ? 'needs one input source | fix: add glob: "data/*.csv", lines: inputs.txt or chunks: data/big.txt'
            : `has ${given.join(' and ')}; only one input source is allowed | fix: keep one of glob, lines or chunks`,
      });
    }
  });

/** What a task runs and over what. */
export const tasksSchema = z
  .strictObject({
    /** The inputs: one task per file, line or chunk. */
    map: mapSchema,
    /**
     * A shell command template run with /bin/sh; placeholders such as {input}, {output}, {index},
     * {chunk.start}, {chunk.end} are substituted shell-quoted, so file names cannot inject commands.
     * When it does not mention {output}, the command's stdout becomes the output.
     * @default - none (give `command` or `module`)
     */
    command: z.string().min(1).optional(),
    /** A JS/TS module (relative to the job file) whose default export `async (task) => result` is the task body. @default - none */
    module: z.string().min(1).optional(),
    /** What the task reads on stdin (command) or `task.read()` (module): `input` streams the file, chunk or line; `none` gives nothing. @default none */
    stdin: z.enum(['input', 'none']).default('none'),
    /** Extra environment variables for the task. @default {} */
    env: z.record(z.string(), z.string()).default({}),
  })
  .superRefine((t, ctx) => {
    if ((t.command === undefined) === (t.module === undefined)) {
      ctx.addIssue({
        code: 'custom',
        message: 'needs exactly one of command or module | fix: add command: "..." or module: ./task.ts',
      });
    }
    if (t.command) checkPlaceholders(t.command, PLACEHOLDERS, ctx, 'command');
  });

/** Backoff between attempts of a failing task. */
export const backoffSchema = z.strictObject({
  /** Delay before the second attempt. @default 1s */
  initial: durationField().default(1000),
  /** Each further delay is the previous one times this. @default 2 */
  factor: z.number().min(1).max(100).default(2),
  /** The longest delay. @default 5m */
  max: durationField().default(300_000),
});

/** Retries of failing tasks. */
export const retriesSchema = z.strictObject({
  /** Attempts per task before it goes to the dead letters (1 = no retry). @default 3 */
  maxAttempts: z.int().min(1).max(100).default(3),
  /** Delay between attempts. @default 1s, doubling, at most 5m */
  backoff: backoffSchema.default({ initial: 1000, factor: 2, max: 300_000 }),
});

/** A job: a named map of tasks over inputs. */
export const jobSchema = z
  .strictObject({
    /** The job's name: letters, digits, `-` and `_`; names its state in the state dir. */
    name: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/, 'must be 1-63 letters, digits, - or _ | fix: rename it, e.g. my-job'),
    /** The tasks of the job. */
    tasks: tasksSchema,
    /**
     * Output path pattern per task, relative to the job file's folder (e.g. `out/{index}.json`).
     * A task is complete when its output is committed; committed outputs are never overwritten.
     * @default - none: a task is complete when it exits successfully
     */
    outputs: z.string().min(1).optional(),
    /** Retries of failing tasks. @default maxAttempts 3, backoff 1s doubling to 5m */
    retries: retriesSchema.default({ maxAttempts: 3, backoff: { initial: 1000, factor: 2, max: 300_000 } }),
    /** Longest time one attempt may run; past it the task's whole process group is killed. @default 1h */
    timeout: durationField().default(3_600_000),
    /** How many tasks run at once (local worker processes). @default the number of CPU cores */
    concurrency: z.int().min(1).max(4096).optional(),
    /** How long a worker's claim on a task lasts without a heartbeat. @default 30s */
    lease: durationField().default(30_000),
  })
  .superRefine((j, ctx) => {
    if (j.outputs) {
      checkPlaceholders(
        j.outputs,
        PLACEHOLDERS.filter((p) => p !== 'output' && p !== 'attempt' && p !== 'input'),
        ctx,
        'outputs',
      );
      const normalized = path.posix.normalize(j.outputs.replaceAll('\\', '/'));
      if (path.posix.isAbsolute(normalized) || normalized.split('/').includes('..')) {
        ctx.addIssue({
          code: 'custom',
          path: ['outputs'],
          message: `"${j.outputs}" leaves the job folder | fix: write a relative path below the job file's folder, e.g. out/{index}.txt`,
        });
      }
      if (!/\{(index|input\.path|input\.name|input\.stem|chunk\.start)\}/.test(j.outputs)) {
        ctx.addIssue({
          code: 'custom',
          path: ['outputs'],
          message: `"${j.outputs}" gives every task the same output | fix: include {index} (or {input.name}) in the pattern`,
        });
      }
    }
    if (j.lease < 2000) {
      ctx.addIssue({ code: 'custom', path: ['lease'], message: 'must be at least 2s | fix: use lease: 30s' });
    }
  });

/** A job spec as written (YAML or `defineJob`), before defaults. */
export type JobSpecInput = z.input<typeof jobSchema>;
/** A validated job spec with every default filled in. */
export type JobSpec = z.output<typeof jobSchema>;

/** A validated job spec together with where it came from. */
export interface LoadedJob {
  readonly spec: JobSpec;
  /** Absolute path of the spec file (or of the folder standing in for it). */
  readonly file: string;
  /** Folder that relative paths in the spec are resolved from. */
  readonly baseDir: string;
  /** Resolved concurrency (spec value or number of cores). */
  readonly concurrency: number;
}

/** Validates a job spec written in TypeScript; throws UsageError on bad input. */
export function defineJob(spec: JobSpecInput): JobSpec {
  return validate(jobSchema, { data: spec, file: 'defineJob' });
}

/** Reads, parses and validates a job YAML file. */
export function loadJobFile(file: string): LoadedJob {
  const src = readYamlFile(file);
  if (src.data === null || typeof src.data !== 'object' || Array.isArray(src.data)) {
    throw new UsageError('(root)', 'a job spec must be a mapping', 'start the file with name: and tasks:', file);
  }
  const spec = validate(jobSchema, src);
  return resolveJob(spec, path.resolve(file));
}

/** Completes a spec with the paths and defaults that depend on where it lives. */
export function resolveJob(spec: JobSpec, file: string, baseDir = path.dirname(file)): LoadedJob {
  return { spec, file, baseDir, concurrency: spec.concurrency ?? Math.max(1, os.availableParallelism()) };
}

export { resolveFrom };
