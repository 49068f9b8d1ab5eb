import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../../spec/errors.js';

/** Creates the `--out` folder (and its parents) if missing; refuses a path that is not a folder. */
function outFolder(dir: string): string {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(
      '--out',
      code === 'EEXIST' || code === 'ENOTDIR'
        ? `${dir} exists and is not a folder`
        : `cannot create the folder ${dir} (${code ?? (err as Error).message})`,
      'give a folder that exists or can be created, e.g. --out plan-out',
    );
  }
  return dir;
}

/** Adds `corral plan FILE [--json] [--out DIR]`. */
export function register(program: Command): void {
  program
    .command('plan')
    .argument('<FILE>', 'cluster spec (YAML)')
    .option('--json', 'print the plan as one JSON object on stdout')
    .option('--job <FILE>', 'also show which pool each step of this job (YAML or HyperFlow JSON) runs on')
    .option(
      '--pool <STEP=POOL>',
      'with --job: route a step or HyperFlow process to a pool, as run --cluster does (repeatable)',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option(
      '--var <K=V>',
      'with --job: a HyperFlow {{var}} value (repeatable)',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option(
      '--out <DIR>',
      'also write the synthesized CloudFormation template, plan.json and plan.txt into DIR (created if missing)',
    )
    .description(
      'synthesize the cluster offline: resources, security summary, cdk-nag findings, limits and cost',
    )
    .addHelpText(
      'after',
      [
        '',
        'Needs no AWS credentials. Exits 1 when cdk-nag reports unsuppressed errors or a CloudFormation',
        'limit is exceeded, 2 when the spec is invalid. See docs/cluster.md.',
        '',
        'With --out DIR, DIR holds the cloud assembly as `cdk synth` writes it: corral-<name>.template.json',
        '(the CloudFormation template `corral up` deploys, user data and IAM policies included), its file',
        'assets, manifest.json and tree.json; and beside them plan.json (what --json prints) and plan.txt',
        '(the text plan). They are written even when the plan fails. Where they went is printed last (on',
        'stderr with --json).',
      ].join('\n'),
    )
    .action(
      async (
        file: string,
        opts: { json?: boolean; out?: string; job?: string; pool?: string[]; var?: string[] },
      ) => {
        const { loadClusterFile } = await import('../../spec/cluster.js');
        const spec = loadClusterFile(file);
        // the job's routing is checked before anything is synthesized: an unknown pool is exit 2
        const routes =
          opts.job === undefined ? undefined : await jobRoutes(spec, opts.job, opts.pool, opts.var);
        if (opts.job === undefined && (opts.pool?.length || opts.var?.length))
          throw new UsageError(
            '--pool',
            'and --var need --job',
            'add --job FILE, the job whose steps to route',
          );
        const out = opts.out === undefined ? undefined : outFolder(opts.out);
        // loaded on use, once the input is known good: the CDK takes a second to import, and
        // neither --help nor a refused spec should wait for it
        const { formatPlan, planFromSynth, synthCluster } = await import('../../infra/plan.js');
        const synth = synthCluster(spec, { outdir: out });
        const report = { ...planFromSynth(spec, synth), ...(routes ? { routes: routes.byStep } : {}) };
        const json = `${JSON.stringify(report)}\n`;
        const text =
          formatPlan(report) +
          (routes ? `\nrouting of job ${routes.job}:\n${routes.lines.map((l) => `  ${l}\n`).join('')}` : '');
        process.stdout.write(opts.json ? json : text);
        if (out !== undefined) {
          writeFileSync(path.join(out, 'plan.json'), json);
          writeFileSync(path.join(out, 'plan.txt'), text);
          const files = [synth.templateFile!, 'plan.json', 'plan.txt'].map((f) =>
            path.join(out, path.basename(f)),
          );
          const where = `corral plan: wrote ${files.join(', ')}\n`;
          (opts.json ? process.stderr : process.stdout).write(opts.json ? where : `\n${where}`);
        }
        if (!report.ok) process.exitCode = 1;
      },
    );
}

/** Which pool each step of a job would run on, on a cluster of this spec (what `run --cluster` logs). */
async function jobRoutes(
  spec: { readonly name: string; readonly pools: ReadonlyArray<{ readonly name: string }> },
  file: string,
  pool: readonly string[] = [],
  vars: readonly string[] = [],
): Promise<{ job: string; byStep: Record<string, string>; lines: string[] }> {
  const { loadJob, parseVars } = await import('../../workflow/load-job.js');
  const { describeRoutes, parsePoolFlags, routeSteps } = await import(
    '../../transport/cluster/pool-routing.js'
  );
  const job = loadJob(file, { vars: parseVars([...vars]) });
  const byName = parsePoolFlags(pool);
  // the cluster's pools as the stack will have them; no queue exists yet
  const target = {
    name: spec.name,
    queueUrl: '',
    bucket: '',
    pools: spec.pools.map((p) => ({ pool: p.name, queueUrl: `(queue of pool ${p.name})` })),
  };
  const routes = routeSteps(job, target, byName);
  return {
    job: job.spec.name,
    byStep: Object.fromEntries([...routes].map(([step, q]) => [step, q.pool])),
    lines: describeRoutes(routes),
  };
}
