import type { S3Client } from '@aws-sdk/client-s3';
import type { SQSClient } from '@aws-sdk/client-sqs';
import { UsageError } from '../spec/errors.js';
import { s3Sdk, sqsSdk } from './sdk.js';

const { HeadBucketCommand } = s3Sdk;
const { GetQueueAttributesCommand } = sqsSdk;

/** What a preflight checks. */
export interface AwsPreflightOptions {
  readonly s3: S3Client;
  readonly sqs: SQSClient;
  readonly bucket: string;
  readonly queueUrl: string;
  /** Shown in messages about the endpoint. @default 'the AWS endpoint' */
  readonly endpoint?: string;
}

/** Turns an SDK error into the UsageError that says which field is wrong and how to fix it. */
export function usageErrorOf(
  err: unknown,
  what: { field: string; name: string; endpoint?: string },
): UsageError | undefined {
  const e = err as {
    name?: string;
    code?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number };
    cause?: { code?: string };
  };
  const code = e.code ?? e.cause?.code ?? '';
  const msg = e.message ?? '';
  if (e.name === 'CredentialsProviderError' || /Could not load credentials|credential/i.test(msg)) {
    return new UsageError(
      'credentials',
      'no AWS credentials found',
      'run aws configure or set AWS_PROFILE (on EC2 the instance role is used)',
    );
  }
  if (
    /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|EHOSTUNREACH/.test(`${code} ${msg}`) ||
    e.name === 'TimeoutError'
  ) {
    return new UsageError(
      '--endpoint-url',
      `cannot reach ${what.endpoint ?? 'the AWS endpoint'} (${code || e.name})`,
      'check --endpoint-url / CORRAL_ENDPOINT_URL / AWS_ENDPOINT_URL, the region and the network',
    );
  }
  const status = e.$metadata?.httpStatusCode;
  if (e.name === 'NoSuchBucket' || e.name === 'NotFound' || (what.field === 'bucket' && status === 404)) {
    return new UsageError(
      'bucket',
      `bucket ${what.name} does not exist`,
      'check the cluster outputs (BucketName) or run corral up',
    );
  }
  if (/NonExistentQueue|QueueDoesNotExist/.test(`${e.name} ${msg}`)) {
    return new UsageError(
      'queue',
      `queue ${what.name} does not exist`,
      'check the cluster outputs (QueueUrl) or run corral up',
    );
  }
  if (status === 403 || e.name === 'AccessDenied') {
    return new UsageError(
      what.field,
      `access to ${what.name} denied`,
      'use credentials (or an instance role) allowed to use the cluster',
    );
  }
  return undefined;
}

/**
 * Checks before anything is uploaded or enqueued that the endpoint answers, credentials exist and
 * the bucket and queue are there; each failure is a UsageError (exit 2) naming the field.
 */
export async function preflightAws(o: AwsPreflightOptions): Promise<void> {
  const timeout = { abortSignal: AbortSignal.timeout(10_000) };
  try {
    await o.s3.send(new HeadBucketCommand({ Bucket: o.bucket }), timeout);
  } catch (err) {
    throw usageErrorOf(err, { field: 'bucket', name: o.bucket, endpoint: o.endpoint }) ?? err;
  }
  try {
    await o.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: o.queueUrl, AttributeNames: ['QueueArn'] }),
      timeout,
    );
  } catch (err) {
    throw usageErrorOf(err, { field: 'queue', name: o.queueUrl, endpoint: o.endpoint }) ?? err;
  }
}
