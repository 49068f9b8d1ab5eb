/** Options of a containerized task command. */
export interface DockerCommandOptions {
  /** The pool's image. */
  readonly image: string;
  /** Host folders mounted at the same path (input cache, staging). */
  readonly mounts: readonly string[];
  /** Working folder inside the container. */
  readonly workdir: string;
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

function q(v: string): string {
  return `'${v.replaceAll("'", `'\\''`)}'`;
}

/**
 * The argv of `docker run` for one task: the command template runs in the image with
 * /bin/sh -c, its placeholders read from `CORRAL_*` variables passed with `-e NAME` (so values
 * are never spliced into the command text), stdin attached, host network, same-path mounts.
 */
export function dockerArgv(template: string, o: DockerCommandOptions): string[] {
  const used = new Set<string>();
  const inner = template.replace(/\{([a-z.]+)\}/g, (m, name: string) => {
    const env = PLACEHOLDER_ENV[name];
    if (!env) return m;
    used.add(env);
    return `"$${env}"`;
  });
  const argv = ['docker', 'run', '--rm', '-i', '--network', 'host', '--init'];
  for (const m of o.mounts) argv.push('-v', `${m}:${m}`);
  argv.push('-w', o.workdir);
  for (const e of [...used].sort()) argv.push('-e', e);
  argv.push(o.image, '/bin/sh', '-c', inner);
  return argv;
}

/** The host command line that runs a task's command template in the pool's image. */
export function dockerCommand(template: string, o: DockerCommandOptions): string {
  // The agent lets stdout be the output unless the template names {output}: keep the name visible.
  const keep = template.includes('{output}') ? ' # {output}' : '';
  return `exec ${dockerArgv(template, o).map(q).join(' ')}${keep}`;
}
