import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { stackNameOf } from '../spec/cluster.js';
import { UsageError } from '../spec/errors.js';
import type { ClusterStackInfo } from './stacks.js';

/** Where a cluster's queue and bucket are: the stack outputs the runtime needs. */
/** Where a coordinator instance's bootstrap writes the outputs of its cluster (`NAME.json`). */
export const HOST_CLUSTERS_DIR = '/etc/corral/clusters';

export interface ClusterTarget {
  readonly name: string;
  readonly queueUrl: string;
  readonly deadLetterQueueUrl?: string;
  readonly bucket: string;
  readonly region?: string;
  readonly logGroupName?: string;
  /**
   * The queue of each pool, in the spec's order: the first is the default (stack output PoolQueues).
   * @default - none known: every task goes to `queueUrl`
   */
  readonly pools?: readonly PoolQueue[];
}

/** One pool's queue. */
export interface PoolQueue {
  readonly pool: string;
  readonly queueUrl: string;
  readonly deadLetterQueueUrl?: string;
}

/** Flags that can stand in for the stack outputs. */
export interface ClusterTargetFlags {
  /** A JSON file of stack outputs (what `corral up --json` prints). */
  readonly outputs?: string;
  readonly queueUrl?: string;
  readonly dlqUrl?: string;
  readonly bucket?: string;
  readonly region?: string;
  /** Endpoint of the CloudFormation lookup (a peer). @default - CORRAL_ENDPOINT_URL, AWS_ENDPOINT_URL, else AWS */
  readonly endpointUrl?: string;
}

/** How `resolveClusterTarget` reads a stack when no outputs file is there. */
export interface ResolveTargetOptions {
  /**
   * The cluster's stack (undefined: it does not exist); `region` is where it was looked for.
   * @default - CloudFormation DescribeStacks of corral-NAME, with the flags' region and endpoint
   */
  readonly describeStack?: (cluster: string) => Promise<{ stack?: ClusterStackInfo; region: string }>;
  /** Environment of the default lookup. @default process.env */
  readonly env?: NodeJS.ProcessEnv;
}

function fromOutputs(name: string, raw: unknown, where: string): ClusterTarget {
  const obj = (raw as { outputs?: Record<string, string> })?.outputs ?? (raw as Record<string, string>);
  // PoolQueues: the stack output's JSON text (corral up --json), or a list (a coordinator's file)
  const poolQueues = (obj as Record<string, unknown> | undefined)?.PoolQueues;
  const q = obj?.QueueUrl;
  const b = obj?.BucketName;
  if (typeof q !== 'string' || typeof b !== 'string') {
    throw new UsageError(
      '--outputs',
      `${where} has no QueueUrl and BucketName`,
      'save the output of corral up FILE --json there',
    );
  }
  return {
    name,
    queueUrl: q,
    bucket: b,
    deadLetterQueueUrl: obj.DeadLetterQueueUrl,
    region: obj.Region,
    logGroupName: obj.LogGroupName,
    ...(poolQueues ? { pools: poolQueuesOf(poolQueues, where) } : {}),
  };
}

function poolQueuesOf(value: unknown, where: string): PoolQueue[] {
  try {
    const list = (typeof value === 'string' ? JSON.parse(value) : value) as PoolQueue[];
    if (
      Array.isArray(list) &&
      list.every((p) => typeof p.pool === 'string' && typeof p.queueUrl === 'string')
    )
      return list;
  } catch {
    // reported below
  }
  throw new UsageError(
    '--outputs',
    `${where} has a PoolQueues output that is not a list of {pool, queueUrl}`,
    'save the output of corral up FILE --json there',
  );
}

/**
 * The target of `--cluster NAME`: flags `--queue-url` + `--bucket`, else an outputs file
 * (`--outputs FILE`, else `<state dir>/clusters/NAME.json` when it exists, else
 * `/etc/corral/clusters/NAME.json`, which a coordinator instance has), else the outputs of
 * the cluster's CloudFormation stack `corral-NAME` (DescribeStacks). Every failure is a UsageError
 * naming the cluster and the fix.
 */
export async function resolveClusterTarget(
  name: string,
  flags: ClusterTargetFlags,
  stateDir: string,
  o: ResolveTargetOptions = {},
): Promise<ClusterTarget> {
  if (flags.queueUrl || flags.bucket) {
    if (!flags.queueUrl || !flags.bucket) {
      throw new UsageError(
        flags.queueUrl ? '--bucket' : '--queue-url',
        'is needed with the other',
        'pass both --queue-url and --bucket',
      );
    }
    return {
      name,
      queueUrl: flags.queueUrl,
      bucket: flags.bucket,
      deadLetterQueueUrl: flags.dlqUrl,
      region: flags.region,
    };
  }
  const defaultFile = path.join(stateDir, 'clusters', `${name}.json`);
  if (flags.outputs !== undefined && !existsSync(flags.outputs)) {
    throw new UsageError(
      '--outputs',
      `${flags.outputs} does not exist`,
      `save the output of corral up CLUSTER.yaml --json there, or leave --outputs out to read the outputs of stack ${stackNameOf(name)} from CloudFormation`,
    );
  }
  // On a coordinator instance its bootstrap wrote the outputs for every user and folder.
  const hostFile = path.join(HOST_CLUSTERS_DIR, `${name}.json`);
  const file = flags.outputs ?? (!existsSync(defaultFile) && existsSync(hostFile) ? hostFile : defaultFile);
  let t: ClusterTarget;
  if (existsSync(file)) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new UsageError(
        '--outputs',
        `${file} is not JSON (${(err as Error).message})`,
        'save the output of corral up FILE --json there',
      );
    }
    t = fromOutputs(name, raw, file);
  } else {
    t = await fromStack(name, flags, file, o);
  }
  return { ...t, region: flags.region ?? t.region, deadLetterQueueUrl: flags.dlqUrl ?? t.deadLetterQueueUrl };
}

/** DescribeStacks of corral-NAME through the client factory (so --endpoint-url applies). */
async function describeWithCloudFormation(
  cluster: string,
  flags: ClusterTargetFlags,
  env: NodeJS.ProcessEnv | undefined,
): Promise<{ stack?: ClusterStackInfo; region: string }> {
  const { createCloudFormationClient, resolveAwsSettings } = await import('./clients.js');
  const { describeClusterStack, stackLookupError } = await import('./stacks.js');
  let settings: ReturnType<typeof resolveAwsSettings>;
  try {
    settings = resolveAwsSettings({ region: flags.region, endpointUrl: flags.endpointUrl, env });
  } catch (err) {
    if (err instanceof UsageError && err.field === '--region')
      throw new UsageError(
        '--region',
        `no AWS region to look up the stack of cluster ${cluster} in`,
        `pass --region or set AWS_REGION, or pass --outputs FILE (corral up CLUSTER.yaml --json)`,
      );
    throw err;
  }
  const client = await createCloudFormationClient(settings);
  try {
    return { stack: await describeClusterStack(client, cluster), region: settings.region };
  } catch (err) {
    throw stackLookupError(err, cluster, settings.endpointUrl) ?? err;
  } finally {
    client.destroy();
  }
}

async function fromStack(
  name: string,
  flags: ClusterTargetFlags,
  file: string,
  o: ResolveTargetOptions,
): Promise<ClusterTarget> {
  const stackName = stackNameOf(name);
  const { stack, region } = await (o.describeStack?.(name) ?? describeWithCloudFormation(name, flags, o.env));
  if (!stack) {
    throw new UsageError(
      '--cluster',
      `cluster ${name} has no stack ${stackName} in ${region} (CloudFormation) and no outputs file ${file}`,
      `create it with corral up CLUSTER.yaml, check --region / AWS_REGION, or pass --outputs FILE or --queue-url and --bucket`,
    );
  }
  const out = stack.outputs;
  if (typeof out.QueueUrl !== 'string' || typeof out.BucketName !== 'string') {
    const missing = ['QueueUrl', 'BucketName'].filter((k) => typeof out[k] !== 'string').join(' and ');
    throw new UsageError(
      '--cluster',
      `stack ${stackName} of cluster ${name} in ${region} has no ${missing} output (status ${stack.status})`,
      /_IN_PROGRESS$/.test(stack.status)
        ? 'wait until corral up has finished, then run this again'
        : 'run corral up CLUSTER.yaml to create or repair the cluster stack, or pass --queue-url and --bucket',
    );
  }
  return fromOutputs(name, { ...out, Region: out.Region ?? region }, `stack ${stackName}`);
}
