import type { Command } from 'commander';
import { UsageError } from '../../spec/errors.js';
import { parsePositiveInt } from '../output.js';

interface WorkerFlags {
  cluster?: string;
  outputs?: string;
  queueUrl?: string;
  dlqUrl?: string;
  bucket?: string;
  region?: string;
  endpointUrl?: string;
  cacheDir?: string;
  idleExit?: number;
  prefetch?: number;
  image?: string;
  gpus?: string;
  logGroup?: string;
  check?: boolean;
  spot: boolean;
  autoScaling?: boolean;
}

/** `corral worker`: the cluster worker, configured by flags or the env the bootstrap writes. */
export function register(program: Command): void {
  program
    .command('worker')
    .description('pull tasks from a cluster queue and run them (started by the pool bootstrap under systemd)')
    .option(
      '--cluster <NAME>',
      "the cluster's queue and bucket from its outputs file or stack corral-NAME (instead of --queue-url/--bucket or the env)",
    )
    .option('--outputs <FILE>', 'with --cluster: stack outputs as JSON (corral up --json)')
    .option('--queue-url <URL>', 'job queue (env CORRAL_QUEUE_URL)')
    .option('--dlq-url <URL>', 'dead-letter queue (env CORRAL_DLQ_URL)')
    .option('--bucket <NAME>', 'cluster bucket (env CORRAL_BUCKET)')
    .option('--region <REGION>', 'AWS region (env AWS_REGION)')
    .option(
      '--endpoint-url <URL>',
      'endpoint of every AWS client (env CORRAL_ENDPOINT_URL, AWS_ENDPOINT_URL)',
    )
    .option('--cache-dir <DIR>', 'input cache, staging and logs (env CORRAL_CACHE_DIR)')
    .option(
      '--idle-exit <SECONDS>',
      'exit after this long without work (env CORRAL_IDLE_EXIT_SECONDS)',
      parsePositiveInt('--idle-exit'),
    )
    .option('--prefetch <N>', 'messages received per call, 1-10', parsePositiveInt('--prefetch'))
    .option('--image <IMAGE>', 'run commands in this image with docker run (env CORRAL_IMAGE)')
    .option(
      '--gpus <GPUS>',
      'with --image: the GPUs each container gets, as docker run --gpus takes them (all, a count, device=0,1) (env CORRAL_GPUS)',
    )
    .option('--no-spot', 'do not poll IMDSv2 for spot notices')
    .option(
      '--auto-scaling',
      "the host is in the pool's Auto Scaling group: protect it from scale-in while busy; idle, terminate it through the group while desired > min, else stay up (env CORRAL_AUTOSCALING=1)",
    )
    .option('--log-group <NAME>', "the cluster's log group (env CORRAL_LOG_GROUP)")
    .option(
      '--check',
      'check that the queue, the bucket and the log group answer, write a ready line to the log group, and exit (what a host runs before it reports ready)',
    )
    .action(async (flags: WorkerFlags) => {
      const env = process.env;
      let queueUrl = flags.queueUrl ?? env.CORRAL_QUEUE_URL;
      let bucket = flags.bucket ?? env.CORRAL_BUCKET;
      let dlqUrl = flags.dlqUrl ?? env.CORRAL_DLQ_URL;
      let region = flags.region;
      let logGroup = flags.logGroup ?? env.CORRAL_LOG_GROUP;
      if (flags.cluster !== undefined) {
        // --cluster: flags, else the outputs file, else CloudFormation; the bootstrap's env is not used
        const { resolveClusterTarget } = await import('../../aws/outputs.js');
        const { resolveStateDir } = await import('../../engine/state-dir.js');
        const t = await resolveClusterTarget(flags.cluster, flags, resolveStateDir(undefined));
        ({ queueUrl, bucket } = t);
        dlqUrl = t.deadLetterQueueUrl;
        region ??= t.region;
        logGroup = flags.logGroup ?? t.logGroupName;
      }
      if (!queueUrl)
        throw new UsageError(
          '--queue-url',
          'no job queue given',
          'pass --queue-url or set CORRAL_QUEUE_URL (stack output QueueUrl)',
        );
      if (!bucket)
        throw new UsageError(
          '--bucket',
          'no bucket given',
          'pass --bucket or set CORRAL_BUCKET (stack output BucketName)',
        );
      if (flags.prefetch !== undefined && flags.prefetch > 10)
        throw new UsageError('--prefetch', 'is more than 10', 'pass 1 to 10');
      const { runClusterWorker } = await import('../../worker/cluster-main.js');
      const { databaseFromEnv } = await import('../../worker/database.js');
      const { createS3Client, createSqsClient, resolveAwsSettings } = await import('../../aws/clients.js');
      const { preflightAws } = await import('../../aws/preflight.js');
      const settings = resolveAwsSettings({ region, endpointUrl: flags.endpointUrl });
      const s3 = createS3Client(settings);
      const sqs = createSqsClient(settings);
      try {
        await preflightAws({ s3, sqs, bucket, queueUrl, endpoint: settings.endpointUrl });
      } finally {
        s3.destroy();
        sqs.destroy();
      }
      if (flags.check) {
        if (!logGroup)
          throw new UsageError(
            '--log-group',
            'no log group given',
            'pass --log-group or set CORRAL_LOG_GROUP (stack output LogGroupName)',
          );
        const { createLogsClient } = await import('../../aws/clients.js');
        const { checkLogGroup } = await import('../../aws/host-logs.js');
        const logs = await createLogsClient(settings);
        try {
          await checkLogGroup(
            logs,
            logGroup,
            'corral worker ready: the queue, the bucket and the log group answer',
          );
        } finally {
          logs.destroy();
        }
        process.stdout.write(
          `corral worker --check: ok (queue ${queueUrl}, bucket ${bucket}, log group ${logGroup})\n`,
        );
        return;
      }
      const ac = new AbortController();
      process.once('SIGTERM', () => ac.abort());
      process.once('SIGINT', () => ac.abort());
      const idle =
        flags.idleExit ?? (env.CORRAL_IDLE_EXIT_SECONDS ? Number(env.CORRAL_IDLE_EXIT_SECONDS) : undefined);
      const { CoordinatorDuty } = await import('../../transport/cluster/detached.js');
      const r = await runClusterWorker(
        {
          // issue 23: this worker takes a detached run's coordinator when its lease is free
          duty: new CoordinatorDuty({
            bucket,
            region: settings.region,
            endpointUrl: settings.endpointUrl,
            tickMs: Number(env.CORRAL_CLUSTER_TICK_MS) || undefined,
          }),
          queueUrl,
          deadLetterQueueUrl: dlqUrl,
          bucket,
          region: settings.region,
          endpointUrl: settings.endpointUrl,
          cacheDir: flags.cacheDir ?? env.CORRAL_CACHE_DIR,
          idleExitMs: idle !== undefined ? idle * 1000 : undefined,
          prefetch: flags.prefetch,
          image: flags.image ?? env.CORRAL_IMAGE,
          gpus: flags.gpus ?? (env.CORRAL_GPUS || undefined),
          spot: flags.spot,
          autoScaling: flags.autoScaling ?? env.CORRAL_AUTOSCALING === '1',
          spotIntervalMs: env.CORRAL_SPOT_INTERVAL_MS ? Number(env.CORRAL_SPOT_INTERVAL_MS) : undefined,
          database: databaseFromEnv(env),
        },
        ac.signal,
      );
      process.exitCode = 0;
      if (r.reason === 'spot') process.stderr.write('corral worker: stopped for a spot interruption\n');
      if (r.reason === 'rebalance')
        process.stderr.write(
          'corral worker: stopped after a spot rebalance recommendation (held tasks finished)\n',
        );
    });
}
