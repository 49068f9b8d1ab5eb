import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { UsageError } from '../../spec/errors.js';

/** Adds `corral down NAME [--yes] [--region REGION]`. */
export function register(program: Command): void {
  program
    .command('down')
    .argument('<NAME>', 'cluster name (the name field of the spec)')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--region <REGION>', 'region of the cluster [default: AWS_REGION]')
    .description('delete the cluster stack corral-<NAME> and everything in it')
    .addHelpText(
      'after',
      '\nThe bucket is emptied and deleted unless the spec set bucket.removalPolicy: retain; the database\nfollows database.removalPolicy. Nothing else is left behind.',
    )
    .action(async (name: string, opts: { yes?: boolean; region?: string }) => {
      const { down, requireCredentials } = await import('../../infra/deploy.js');
      const { stackNameOf } = await import('../../spec/cluster.js');
      requireCredentials();
      if (!opts.yes) {
        if (!process.stdin.isTTY) {
          throw new UsageError(
            '--yes',
            'confirmation needed but stdin is not a terminal',
            'pass --yes to delete the cluster',
          );
        }
        const rl = createInterface({ input: process.stdin, output: process.stderr });
        const answer = await rl.question(`Delete stack ${stackNameOf(name)} and all its resources? [y/N] `);
        rl.close();
        if (!/^y(es)?$/i.test(answer.trim())) {
          process.stderr.write('Nothing was changed.\n');
          return;
        }
      }
      await down(name, { region: opts.region });
      process.stdout.write(`Stack ${stackNameOf(name)} is deleted.\n`);
    });
}
