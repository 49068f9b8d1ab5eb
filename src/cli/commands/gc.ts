import type { Command } from 'commander';
import { UsageError } from '../../spec/errors.js';
import { printJson } from '../output.js';

interface GcFlags {
  cluster?: string;
  yes?: boolean;
  assumeStacksGone?: boolean;
  region?: string;
  endpointUrl?: string;
  json?: boolean;
}

/** Whether CloudFormation has the stack (DescribeStacks; a deleted stack is "does not exist"). */
async function cloudFormationCheck(region: string | undefined, endpointUrl: string | undefined) {
  const cfn = await import('@aws-sdk/client-cloudformation');
  const client = new cfn.CloudFormationClient({ region, ...(endpointUrl ? { endpoint: endpointUrl } : {}) });
  const { stackNameOf } = await import('../../spec/cluster.js');
  return {
    close: () => client.destroy(),
    exists: async (cluster: string) => {
      try {
        const r = await client.send(new cfn.DescribeStacksCommand({ StackName: stackNameOf(cluster) }));
        return (r.Stacks ?? []).some((s) => s.StackStatus !== 'DELETE_COMPLETE');
      } catch (err) {
        if (/does not exist/.test((err as Error).message)) return false;
        throw err;
      }
    },
  };
}

/** `corral gc`: resources tagged corral:cluster whose stack corral-<name> is gone; deletes them with --yes. */
export function register(program: Command): void {
  program
    .command('gc')
    .description(
      'list (and with --yes delete) buckets and queues tagged corral:cluster whose stack corral-NAME is gone',
    )
    .option('--cluster <NAME>', 'only the resources of this cluster')
    .option('--yes', 'delete what is listed (buckets are emptied first, every version)')
    .option(
      '--assume-stacks-gone',
      'do not ask CloudFormation: treat every tagged resource as orphaned (for peers without CloudFormation, e.g. tests against fauxqs)',
    )
    .option('--region <REGION>', 'AWS region (env AWS_REGION)')
    .option(
      '--endpoint-url <URL>',
      'endpoint of every AWS client (env CORRAL_ENDPOINT_URL, AWS_ENDPOINT_URL)',
    )
    .option('--json', 'print JSON on stdout')
    .action(async (flags: GcFlags) => {
      const { createS3Client, createSqsClient, resolveAwsSettings } = await import('../../aws/clients.js');
      const { usageErrorOf } = await import('../../aws/preflight.js');
      const { findOrphans, deleteOrphan } = await import('../../aws/gc.js');
      const settings = resolveAwsSettings({ region: flags.region, endpointUrl: flags.endpointUrl });
      const s3 = createS3Client(settings);
      const sqs = createSqsClient(settings);
      const check = flags.assumeStacksGone
        ? { exists: async () => false, close: () => {} }
        : await cloudFormationCheck(settings.region, settings.endpointUrl);
      const out = process.stdout;
      try {
        const orphans = await findOrphans({
          s3,
          sqs,
          cluster: flags.cluster,
          stackExists: check.exists,
          onSkip: (kind, id, why) => process.stderr.write(`corral gc: skipped ${kind} ${id}: ${why}\n`),
        });
        const deleted: string[] = [];
        if (flags.yes) {
          for (const o of orphans) {
            await deleteOrphan({ s3, sqs }, o);
            deleted.push(o.id);
          }
        }
        if (flags.json) {
          printJson({ orphans, deleted });
          return;
        }
        if (orphans.length === 0) out.write('no orphaned corral resources\n');
        for (const o of orphans)
          out.write(`${flags.yes ? 'deleted' : 'orphan'} ${o.kind} ${o.id} (cluster ${o.cluster})\n`);
        if (orphans.length > 0 && !flags.yes) out.write('run again with --yes to delete them\n');
      } catch (err) {
        if (err instanceof UsageError) throw err;
        throw usageErrorOf(err, { field: 'endpoint', name: 'gc', endpoint: settings.endpointUrl }) ?? err;
      } finally {
        check.close();
        s3.destroy();
        sqs.destroy();
      }
    });
}
