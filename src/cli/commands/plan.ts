import type { Command } from 'commander';
import { formatPlan, planCluster } from '../../infra/plan.js';
import { loadClusterFile } from '../../spec/cluster.js';

/** Adds `corral plan FILE [--json]`. */
export function register(program: Command): void {
  program
    .command('plan')
    .argument('<FILE>', 'cluster spec (YAML)')
    .option('--json', 'print the plan as one JSON object on stdout')
    .description(
      'synthesize the cluster offline: resources, security summary, cdk-nag findings, limits and cost',
    )
    .addHelpText(
      'after',
      '\nNeeds no AWS credentials. Exits 1 when cdk-nag reports unsuppressed errors or a CloudFormation\nlimit is exceeded, 2 when the spec is invalid. See docs/cluster.md.',
    )
    .action((file: string, opts: { json?: boolean }) => {
      const spec = loadClusterFile(file);
      const report = planCluster(spec);
      if (opts.json) process.stdout.write(`${JSON.stringify(report)}\n`);
      else process.stdout.write(formatPlan(report));
      if (!report.ok) process.exitCode = 1;
    });
}
