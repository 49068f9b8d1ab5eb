/**
 * `corral run FILE --cluster NAME`: the composition of a cluster run. It decides each step's pool
 * queue, checks the cluster is reachable, opens the job's store in the bucket and hands the job,
 * whatever its shape (a map job is a one-step workflow), to the one coordinator
 * (src/engine/drive.ts) over the cluster transport (cluster-transport.ts: ready tasks go to SQS, their
 * ends come back from the bucket's commit and failure markers).
 */
import path from 'node:path';
import { createS3Client, createSqsClient, resolveAwsSettings } from '../../aws/clients.js';
import type { ClusterTarget } from '../../aws/outputs.js';
import { preflightAws, usageErrorOf } from '../../aws/preflight.js';
import type { RunSummary } from '../../engine/coordinator.js';
import { jobPrefix } from '../../protocol/keys.js';
import { UsageError } from '../../spec/errors.js';
import type { LoadedJob } from '../../spec/job.js';
import { S3Store } from '../../store/s3/s3-store.js';
import type { ClusterRunOptions, ClusterSession } from './cluster-common.js';
import { runOnCluster } from './cluster-transport.js';
import { describeRoutes, routeSteps } from './pool-routing.js';

export type { ClusterRunOptions, Manifest } from './cluster-common.js';
export { MANIFEST } from './cluster-common.js';

/** Runs a job on a cluster until every task is committed, dead or skipped. */
export async function runClusterJob(
  job: LoadedJob,
  target: ClusterTarget,
  opts: ClusterRunOptions,
): Promise<RunSummary> {
  const started = Date.now();
  const log = opts.log ?? (() => {});
  const settings = resolveAwsSettings({
    region: opts.region ?? target.region,
    endpointUrl: opts.endpointUrl,
  });
  const s3 = createS3Client(settings);
  const sqs = createSqsClient(settings);
  try {
    // issue 20: each step's pool queue, decided before anything is sent (an unknown pool is exit 2)
    const routes = routeSteps(job, target, opts.pools);
    if (target.pools?.length) for (const line of describeRoutes(routes)) log(`job ${job.spec.name}: ${line}`);
    await preflightAws({
      s3,
      sqs,
      bucket: target.bucket,
      queueUrl: target.queueUrl,
      endpoint: settings.endpointUrl,
    });
    const store = new S3Store({
      client: s3,
      bucket: target.bucket,
      prefix: jobPrefix(job.spec.name),
      stagingDir: path.join(opts.stateDir, 'staging'),
    });
    const session: ClusterSession = { job, target, opts, s3, sqs, store, log, started, routes };
    return await runOnCluster(session);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw usageErrorOf(err, { field: 'bucket', name: target.bucket, endpoint: settings.endpointUrl }) ?? err;
  } finally {
    s3.destroy();
    sqs.destroy();
  }
}
