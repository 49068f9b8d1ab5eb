/**
 * One place that builds every AWS SDK client of the runtime, so they all honour the same
 * endpoint override, region and credentials. Credentials come only from the SDK's default
 * provider chain (environment, profile, web identity, container, or the instance role through
 * IMDSv2); corral never reads, stores or prints them.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { SQSClient } from '@aws-sdk/client-sqs';
import { UsageError } from '../spec/errors.js';
import { s3Sdk, sqsSdk } from './sdk.js';

/** Where the AWS clients connect. */
export interface AwsClientOptions {
  /**
   * AWS region.
   * @default - AWS_REGION, else AWS_DEFAULT_REGION
   */
  readonly region?: string;
  /**
   * Endpoint for every service (a local peer such as fauxqs, or a VPC endpoint).
   * @default - CORRAL_ENDPOINT_URL, else AWS_ENDPOINT_URL, else the AWS endpoint of the region
   */
  readonly endpointUrl?: string;
  /**
   * Environment to read the defaults from.
   * @default process.env
   */
  readonly env?: NodeJS.ProcessEnv;
}

/** Resolved client settings. */
export interface AwsSettings {
  readonly region: string;
  readonly endpointUrl?: string;
}

/** Resolves region and endpoint from options, then the environment; throws UsageError when bad. */
export function resolveAwsSettings(o: AwsClientOptions = {}): AwsSettings {
  const env = o.env ?? process.env;
  const region = o.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  if (!region) {
    throw new UsageError(
      '--region',
      'no AWS region given',
      'pass --region, set AWS_REGION, or use the cluster outputs',
    );
  }
  const endpointUrl = o.endpointUrl ?? env.CORRAL_ENDPOINT_URL ?? env.AWS_ENDPOINT_URL ?? undefined;
  if (endpointUrl !== undefined) {
    let u: URL;
    try {
      u = new URL(endpointUrl);
    } catch {
      throw new UsageError(
        '--endpoint-url',
        `"${endpointUrl}" is not a URL`,
        'pass e.g. http://127.0.0.1:4566',
      );
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new UsageError(
        '--endpoint-url',
        `"${endpointUrl}" is not http(s)`,
        'pass e.g. http://127.0.0.1:4566',
      );
    }
  }
  return { region, endpointUrl: endpointUrl || undefined };
}

function common(s: AwsSettings) {
  // The SDK warns about Node 20 on every process start; corral supports Node 20 on purpose.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  return {
    region: s.region,
    ...(s.endpointUrl ? { endpoint: s.endpointUrl } : {}),
    maxAttempts: 4,
  };
}

/** An SQS client. */
export function createSqsClient(s: AwsSettings): SQSClient {
  return new sqsSdk.SQSClient(common(s));
}

/** An S3 client; path-style addressing when an endpoint override is set (peers have no wildcard DNS). */
export function createS3Client(s: AwsSettings): S3Client {
  return new s3Sdk.S3Client({ ...common(s), ...(s.endpointUrl ? { forcePathStyle: true } : {}) });
}

/**
 * A CloudFormation client (stack outputs, gc's "is the stack gone?"). Loaded on demand: only
 * the CLI's cluster lookups need it, never the worker.
 */
export async function createCloudFormationClient(
  s: AwsSettings,
): Promise<import('@aws-sdk/client-cloudformation').CloudFormationClient> {
  const { CloudFormationClient } = await import('@aws-sdk/client-cloudformation');
  return new CloudFormationClient(common(s));
}

/** An EC2 client (gc of instances). Loaded on demand, like the CloudFormation client. */
export async function createEc2Client(s: AwsSettings): Promise<import('@aws-sdk/client-ec2').EC2Client> {
  const { EC2Client } = await import('@aws-sdk/client-ec2');
  return new EC2Client(common(s));
}

/** A CloudWatch Logs client (loaded on first use: only the worker check and `corral up` need it). */
export async function createLogsClient(
  s: AwsSettings,
): Promise<import('@aws-sdk/client-cloudwatch-logs').CloudWatchLogsClient> {
  const { CloudWatchLogsClient } = await import('@aws-sdk/client-cloudwatch-logs');
  return new CloudWatchLogsClient(common(s));
}
