import type { Command } from 'commander';
import type { Orphan } from '../../aws/gc.js';
import { UsageError } from '../../spec/errors.js';
import { printJson } from '../output.js';

interface GcFlags {
  cluster?: string;
  retained?: string[];
  yes?: boolean;
  region?: string;
  endpointUrl?: string;
  json?: boolean;
}

/** `corral gc`: resources tagged corral:cluster whose stack corral-<name> is gone; deletes them with --yes. */
export function register(program: Command): void {
  program
    .command('gc')
    .description(
      'list (and with --yes terminate/delete) instances, buckets, queues and log groups tagged corral:cluster whose stack corral-NAME is gone',
    )
    .addHelpText(
      'after',
      '\nInstances and log groups are searched in the region of --region / AWS_REGION (instances pending,\nrunning, stopping or stopped); buckets and queues wherever the credentials can list them. Nothing\nis changed without --yes.',
    )
    .option('--cluster <NAME>', 'only the resources of this cluster')
    .option(
      '--retained <NAME>',
      'with --yes, also delete this bucket or log group although its cluster asked to keep it (removalPolicy: retain); repeatable',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option(
      '--yes',
      'terminate the listed instances and delete the listed buckets (emptied first, every version), queues and log groups',
    )
    .option('--region <REGION>', 'AWS region (env AWS_REGION)')
    .option(
      '--endpoint-url <URL>',
      'endpoint of every AWS client (env CORRAL_ENDPOINT_URL, AWS_ENDPOINT_URL)',
    )
    .option('--json', 'print JSON on stdout')
    .action(async (flags: GcFlags) => {
      const {
        createCloudFormationClient,
        createEc2Client,
        createLogsClient,
        createS3Client,
        createSqsClient,
        resolveAwsSettings,
      } = await import('../../aws/clients.js');
      const { usageErrorOf } = await import('../../aws/preflight.js');
      const { findOrphans, deleteOrphan } = await import('../../aws/gc.js');
      const { describeClusterStack, stackLookupError } = await import('../../aws/stacks.js');
      const settings = resolveAwsSettings({ region: flags.region, endpointUrl: flags.endpointUrl });
      const s3 = createS3Client(settings);
      const sqs = createSqsClient(settings);
      const ec2 = await createEc2Client(settings);
      const cfn = await createCloudFormationClient(settings);
      const logs = await createLogsClient(settings);
      const stackExists = async (cluster: string) => {
        try {
          return (await describeClusterStack(cfn, cluster)) !== undefined;
        } catch (err) {
          throw stackLookupError(err, cluster, settings.endpointUrl) ?? err;
        }
      };
      const out = process.stdout;
      try {
        const orphans = await findOrphans({
          s3,
          sqs,
          ec2,
          logs,
          cluster: flags.cluster,
          stackExists,
          onSkip: (kind, id, why) =>
            process.stderr.write(
              `corral gc: skipped ${id === '*' ? `every ${kind}` : `${kind} ${id}`}: ${why}\n`,
            ),
        });
        const named = new Set(flags.retained ?? []);
        const unknown = [...named].filter((b) => !orphans.some((o) => o.retained && o.id === b));
        if (unknown.length > 0) {
          throw new UsageError(
            '--retained',
            `${unknown[0]} is not a retained bucket or log group of a cluster whose stack is gone`,
            'name a bucket or log group that corral gc lists as kept',
          );
        }
        const kept = (o: Orphan) => o.retained === true && !named.has(o.id);
        const deleted: string[] = [];
        if (flags.yes) {
          for (const o of orphans) {
            if (kept(o)) continue;
            await deleteOrphan({ s3, sqs, ec2, logs }, o);
            deleted.push(o.id);
          }
        }
        if (flags.json) {
          printJson({ orphans, deleted });
          return;
        }
        if (orphans.length === 0) out.write('no orphaned corral resources\n');
        for (const o of orphans) {
          if (kept(o)) {
            out.write(
              `kept ${o.kind} ${o.id} (cluster ${o.cluster}, retained on purpose; delete it with --yes --retained ${o.id})\n`,
            );
            continue;
          }
          const verb = !flags.yes ? 'orphan' : o.kind === 'instance' ? 'terminated' : 'deleted';
          out.write(`${verb} ${o.kind} ${o.id} (cluster ${o.cluster}${o.state ? `, ${o.state}` : ''})\n`);
        }
        if (orphans.some((o) => !kept(o)) && !flags.yes)
          out.write('run again with --yes to terminate/delete them\n');
      } catch (err) {
        if (err instanceof UsageError) throw err;
        throw usageErrorOf(err, { field: 'endpoint', name: 'gc', endpoint: settings.endpointUrl }) ?? err;
      } finally {
        cfn.destroy();
        logs.destroy();
        ec2.destroy();
        s3.destroy();
        sqs.destroy();
      }
    });
}
