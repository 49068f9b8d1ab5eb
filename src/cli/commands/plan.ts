import type { Command } from 'commander';

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
    .action(async (file: string, opts: { json?: boolean }) => {
      // loaded on use: the CDK takes a second to import, and --help should not wait for it
      const { formatPlan, planCluster } = await import('../../infra/plan.js');
      const { loadClusterFile } = await import('../../spec/cluster.js');
      const spec = loadClusterFile(file);
      const report = planCluster(spec);
      if (opts.json) process.stdout.write(`${JSON.stringify(report)}\n`);
      else process.stdout.write(formatPlan(report));
      if (!report.ok) process.exitCode = 1;
    });
}
