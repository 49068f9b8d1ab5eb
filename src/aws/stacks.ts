/**
 * The cluster's CloudFormation stack (`corral-<name>`, as `corral up` creates it), read with
 * DescribeStacks: whether it exists (gc) and its outputs (`--cluster NAME` without an outputs file).
 */
import type { CloudFormationClient, DescribeStacksCommandOutput } from '@aws-sdk/client-cloudformation';
import { stackNameOf } from '../spec/cluster.js';
import { UsageError } from '../spec/errors.js';
import { usageErrorOf } from './preflight.js';

/** What DescribeStacks says of a cluster's stack. */
export interface ClusterStackInfo {
  readonly stackName: string;
  /** e.g. CREATE_COMPLETE, UPDATE_IN_PROGRESS, ROLLBACK_COMPLETE. */
  readonly status: string;
  /** Outputs by key (QueueUrl, DeadLetterQueueUrl, BucketName, Region, LogGroupName…). */
  readonly outputs: Readonly<Record<string, string>>;
}

/** True for CloudFormation's answer about a stack that is not there ("Stack with id X does not exist"). */
export function isStackMissing(err: unknown): boolean {
  const e = err as { name?: string; message?: string };
  return e?.name === 'ValidationError' && /does not exist/.test(e.message ?? '');
}

/** The stack of a cluster, or undefined when it does not exist (or only as DELETE_COMPLETE). */
export async function describeClusterStack(
  client: CloudFormationClient,
  cluster: string,
): Promise<ClusterStackInfo | undefined> {
  const { DescribeStacksCommand } = await import('@aws-sdk/client-cloudformation');
  const stackName = stackNameOf(cluster);
  let r: DescribeStacksCommandOutput;
  try {
    r = await client.send(new DescribeStacksCommand({ StackName: stackName }));
  } catch (err) {
    if (isStackMissing(err)) return undefined;
    throw err;
  }
  const s = (r.Stacks ?? []).find((x) => x.StackStatus !== 'DELETE_COMPLETE');
  if (!s) return undefined;
  const outputs: Record<string, string> = {};
  for (const o of s.Outputs ?? [])
    if (o.OutputKey && o.OutputValue !== undefined) outputs[o.OutputKey] = o.OutputValue;
  return { stackName, status: s.StackStatus ?? 'UNKNOWN', outputs };
}

/**
 * The UsageError (exit 2) for a DescribeStacks that failed other than "does not exist": denied,
 * an endpoint that does not serve CloudFormation, unreachable, no credentials. Undefined when
 * the error says nothing about the input (then it is a bug, reported as such).
 */
export function stackLookupError(
  err: unknown,
  cluster: string,
  endpoint: string | undefined,
): UsageError | undefined {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  const status = e?.$metadata?.httpStatusCode;
  const stack = stackNameOf(cluster);
  if (status === 403 || e?.name === 'AccessDenied' || e?.name === 'AccessDeniedException')
    return new UsageError(
      'credentials',
      `CloudFormation refused DescribeStacks of ${stack} (${e.name})`,
      'use credentials allowed cloudformation:DescribeStacks on the cluster stack',
    );
  const general = usageErrorOf(err, { field: '--endpoint-url', name: stack, endpoint });
  if (general) return general;
  if (status !== undefined)
    return new UsageError(
      '--endpoint-url',
      `CloudFormation at ${endpoint ?? 'the AWS endpoint'} answered DescribeStacks of ${stack} with ${e.name} (HTTP ${status})`,
      'point --endpoint-url / CORRAL_ENDPOINT_URL at an endpoint that serves CloudFormation, or unset it to use AWS',
    );
  return undefined;
}
