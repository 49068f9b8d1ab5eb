import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { UsageError } from '../../spec/errors.js';

/** Adds `corral up FILE [--yes] [--json]`. */
export function register(program: Command): void {
  program
    .command('up')
    .argument('<FILE>', 'cluster spec (YAML)')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--json', 'print the stack outputs as one JSON object on stdout')
    .option(
      '--update-images',
      'move named instances without ami to the latest image (replaces them and their disks); by default they keep the image they were created with',
    )
    .description('create or update the cluster on AWS (CloudFormation stack corral-<name>)')
    .addHelpText(
      'after',
      '\nChecks budget.maxHourly and AWS credentials before any call to AWS, and refuses a spec whose\nplan fails. Without --yes, prints the plan and asks for confirmation (needs a terminal).',
    )
    .action(async (file: string, opts: { yes?: boolean; json?: boolean; updateImages?: boolean }) => {
      const { checkBudget, requireCredentials, up } = await import('../../infra/deploy.js');
      const { formatPlan, planCluster } = await import('../../infra/plan.js');
      const { loadClusterFile } = await import('../../spec/cluster.js');
      const spec = loadClusterFile(file);
      checkBudget(spec);
      requireCredentials();
      let plan: ReturnType<typeof planCluster> | undefined;
      if (!opts.yes) {
        if (!process.stdin.isTTY) {
          throw new UsageError(
            '--yes',
            'confirmation needed but stdin is not a terminal',
            'pass --yes to create the cluster',
          );
        }
        plan = planCluster(spec);
        process.stderr.write(formatPlan(plan));
        const rl = createInterface({ input: process.stdin, output: process.stderr });
        const answer = await rl.question(
          `Create or update stack corral-${spec.name} in ${spec.region}? [y/N] `,
        );
        rl.close();
        if (!/^y(es)?$/i.test(answer.trim())) {
          process.stderr.write('Nothing was changed.\n');
          return;
        }
      }
      const result = await up(spec, { plan, updateImages: opts.updateImages });
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ stackName: result.stackName, outputs: result.outputs })}\n`);
      } else {
        process.stdout.write(`Stack ${result.stackName} is up.\n`);
        for (const [k, v] of Object.entries(result.outputs)) process.stdout.write(`  ${k} = ${v}\n`);
      }
    });
}
