import type { Command } from 'commander';
import { UsageError } from '../../spec/errors.js';
import { addClusterOptions, type ClusterFlags } from './cluster.js';

/** `corral cancel JOB --cluster NAME [--abandon]`: stops a detached cluster run (issue 23). */
export function register(program: Command): void {
  const cmd = program
    .command('cancel')
    .description(
      'stop a detached cluster run: nothing new is sent, tasks already sent finish (or are dropped with --abandon); prints what is left',
    )
    .argument('<JOB>', 'job name')
    .option(
      '--abandon',
      'workers drop the queued tasks of the job instead of running them (running ones finish)',
    )
    .option('--state-dir <DIR>', 'where cluster outputs files live (env CORRAL_STATE_DIR)')
    .option('--json', 'print the outcome as JSON')
    .action(async (job: string, flags: ClusterFlags & { abandon?: boolean }) => {
      if (!flags.cluster)
        throw new UsageError(
          '--cluster',
          'is required: detached runs are on a cluster',
          'add --cluster NAME',
        );
      const { cancelOnCluster } = await import('./detach.js');
      await cancelOnCluster(job, flags);
    });
  addClusterOptions(cmd);
}
