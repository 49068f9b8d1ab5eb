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
    .action(async (file: string, opts: { json?: boolean; out?: string }) => {
      const out = opts.out === undefined ? undefined : outFolder(opts.out);
      // loaded on use: the CDK takes a second to import, and --help should not wait for it
      const { formatPlan, planFromSynth, synthCluster } = await import('../../infra/plan.js');
      const { loadClusterFile } = await import('../../spec/cluster.js');
      const spec = loadClusterFile(file);
      const synth = synthCluster(spec, { outdir: out });
      const report = planFromSynth(spec, synth);
      const json = `${JSON.stringify(report)}\n`;
      const text = formatPlan(report);
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
    });
}
