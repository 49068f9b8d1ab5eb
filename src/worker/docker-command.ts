import { fillPlaceholders, placeholdersIn } from '../spec/placeholders.js';

/** Options of a containerized task command. */
export interface DockerCommandOptions {
  /** The pool's image. */
  readonly image: string;
  /** Host folders mounted at the same path (input cache, staging). */
  readonly mounts: readonly string[];
  /** Working folder inside the container. */
  readonly workdir: string;
  /**
   * Names of the step's own environment variables (`tasks.env`), passed with `-e NAME` so their
   * values never appear on a command line.
   * @default - none
   */
  readonly env?: readonly string[];
  /**
   * GPUs the container gets (`docker run --gpus`): `all`, a count, or `device=0,1`. A GPU pool's
   * bootstrap sets `all` (CORRAL_GPUS); the NVIDIA container toolkit of the ECS GPU AMI serves it.
   * @default - none
   */
  readonly gpus?: string;
}

/** Placeholders and the environment variables the agent sets for them. */
const PLACEHOLDER_ENV: Record<string, string> = {
  input: 'CORRAL_INPUT',
  'input.path': 'CORRAL_INPUT_PATH',
  'input.name': 'CORRAL_INPUT_NAME',
  'input.stem': 'CORRAL_INPUT_STEM',
  output: 'CORRAL_OUTPUT',
  index: 'CORRAL_INDEX',
  'chunk.start': 'CORRAL_CHUNK_START',
  'chunk.end': 'CORRAL_CHUNK_END',
  'chunk.length': 'CORRAL_CHUNK_LENGTH',
  attempt: 'CORRAL_ATTEMPT',
};

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The output's folder, mounted at the same path so that a command writing `{output}` writes the
 * worker's staging file: the outer shell expands it from CORRAL_OUTPUT (the attempt's own folder,
 * nothing else of the staging area), and leaves it out when the task has no output.
 */
const OUTPUT_MOUNT = [
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, for the host shell
  '${CORRAL_OUTPUT:+-v}',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, for the host shell
  '${CORRAL_OUTPUT:+"${CORRAL_OUTPUT%/*}:${CORRAL_OUTPUT%/*}"}',
];

function q(v: string): string {
  return `'${v.replaceAll("'", `'\\''`)}'`;
}

/** One word of the host command line: a literal (quoted) or shell text kept as it is. */
type Word = { readonly literal: string } | { readonly shell: string };

/**
 * `docker run … IMAGE`: the flags every task gets, `--gpus` on a GPU pool, and `-e` for the
 * variables it reads. The container is on docker's bridge network, not the host's: on a pool host
 * the launch template's IMDS hop limit is 1, so IMDSv2 does not answer it and a task has no AWS
 * credentials (nor any in its environment): the worker on the host moves its inputs and outputs.
 * It still reaches the VPC and, with a NAT gateway, the internet (through the host).
 */
function runWords(o: DockerCommandOptions, used: ReadonlySet<string>): Word[] {
  const w: Word[] = ['docker', 'run', '--rm', '-i', '--network', 'bridge', '--init'].map((literal) => ({
    literal,
  }));
  if (o.gpus) w.push({ literal: '--gpus' }, { literal: o.gpus });
  for (const m of o.mounts) w.push({ literal: '-v' }, { literal: `${m}:${m}` });
  if (used.has('CORRAL_OUTPUT')) w.push(...OUTPUT_MOUNT.map((shell) => ({ shell })));
  w.push({ literal: '-w' }, { literal: o.workdir });
  const names = new Set([...used, ...(o.env ?? []).filter((n) => ENV_NAME_RE.test(n))]);
  for (const e of [...names].sort()) w.push({ literal: '-e' }, { literal: e });
  w.push({ literal: o.image });
  return w;
}

/**
 * The argv that runs an executable with its arguments (a HyperFlow process, an `exec` step) in
 * the pool's image, without a shell: `docker run … IMAGE FILE ARGS…`.
 */
export function dockerExec(argv: readonly string[], o: DockerCommandOptions): string[] {
  return [...runWords(o, new Set()).map((w) => ('literal' in w ? w.literal : w.shell)), ...argv];
}

function words(template: string, o: DockerCommandOptions): Word[] {
  const used = new Set<string>();
  let reduce = false;
  const inner = fillPlaceholders(template, (name) => {
    if (name === 'inputs') {
      reduce = true;
      return '"$@"';
    }
    const env = PLACEHOLDER_ENV[name];
    if (!env) return undefined;
    used.add(env);
    return `"$${env}"`;
  });
  const w = runWords(o, used);
  w.push({ literal: '/bin/sh' }, { literal: '-c' }, { literal: inner });
  // a reduce's {inputs}: each path its own argument of sh -c, quoted by the agent when it renders
  if (reduce) w.push({ literal: 'sh' }, { shell: '{inputs}' });
  return w;
}

/**
 * The argv of `docker run` for one task: the command template runs in the image with
 * /bin/sh -c, its placeholders read from `CORRAL_*` variables passed with `-e NAME` (so values
 * are never spliced into the command text; `{inputs}` becomes `"$@"`, the paths following as
 * arguments), stdin attached, bridge network (no AWS credentials: see {@link runWords}), the
 * pool's GPUs when it has any, same-path mounts, plus the output's folder when the template
 * writes `{output}`.
 * Words the host shell expands are shown as written (`${CORRAL_OUTPUT:+-v}`, `{inputs}`).
 */
export function dockerArgv(template: string, o: DockerCommandOptions): string[] {
  return words(template, o).map((w) => ('literal' in w ? w.literal : w.shell));
}

/** The host command line that runs a task's command template in the pool's image. */
export function dockerCommand(template: string, o: DockerCommandOptions): string {
  // The agent lets stdout be the output unless the template names {output}: keep the name visible.
  const keep = placeholdersIn(template).includes('output') ? ' # {output}' : '';
  const line = words(template, o)
    .map((w) => ('literal' in w ? q(w.literal) : w.shell))
    .join(' ');
  return `exec ${line}${keep}`;
}
