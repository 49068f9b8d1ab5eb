import type { Command } from 'commander';
import { UsageError } from '../../spec/errors.js';
import { addClusterOptions, type ClusterFlags } from './cluster.js';

/** `corral attach JOB --cluster NAME`: follows a detached cluster run, then downloads its outputs (issue 23). */
export function register(program: Command): void {
  const cmd = program
    .command('attach')
    .description(
      'follow a detached cluster run (corral run --detach) until it ends, then download its outputs',
    )
    .argument('<JOB>', 'job name')
    .option('--into <DIR>', 'folder the outputs are downloaded into (paths as in the job folder)', '.')
    .option('--state-dir <DIR>', 'where cluster outputs files live (env CORRAL_STATE_DIR)')
    .option('--json', 'print the outcome as JSON')
    .option('-q, --quiet', 'no progress lines')
    .action(async (job: string, flags: ClusterFlags & { into?: string }) => {
      if (!flags.cluster)
        throw new UsageError(
          '--cluster',
          'is required: detached runs are on a cluster',
          'add --cluster NAME',
        );
      const { attachOnCluster } = await import('./detach.js');
      await attachOnCluster(job, flags);
    });
  addClusterOptions(cmd);
}
