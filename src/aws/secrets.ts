/**
 * Secrets Manager GetSecretValue, the one call a cluster worker makes to read the database's
 * secret, with @aws-sdk/client-secrets-manager and the credentials of the worker's other clients
 * (the SDK's default provider chain: the instance role through IMDSv2 on a host). The secret's
 * value is returned to the caller only: never logged, never put in an error message.
 */
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';

/** AWS credentials, as the SDK's providers resolve them. */
export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** Options of {@link getSecretString}. */
export interface GetSecretOptions {
  /** ARN or name of the secret. */
  readonly secretId: string;
  /** Region of the secret. */
  readonly region: string;
  /**
   * Endpoint to call.
   * @default - https://secretsmanager.REGION.amazonaws.com (amazonaws.com.cn in China)
   */
  readonly endpointUrl?: string;
  /** Where the credentials come from (an SDK client's `config.credentials`). */
  readonly credentials: () => Promise<AwsCredentials>;
  /**
   * Attempts on a network error, a throttle or a 5xx.
   * @default 3
   */
  readonly attempts?: number;
}

/** A GetSecretValue that failed: the service's error type and message, never the secret. */
export class SecretReadError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'SecretReadError';
  }
}

/** The SecretString of a secret (GetSecretValue). */
export async function getSecretString(o: GetSecretOptions): Promise<string> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const client = new SecretsManagerClient({
    region: o.region,
    ...(o.endpointUrl ? { endpoint: o.endpointUrl } : {}),
    credentials: o.credentials,
    maxAttempts: o.attempts ?? 3,
  });
  try {
    const r = await client.send(new GetSecretValueCommand({ SecretId: o.secretId }));
    if (typeof r.SecretString !== 'string')
      throw new SecretReadError('NoSecretString', `${o.secretId} has no SecretString`, 200);
    return r.SecretString;
  } catch (err) {
    if (err instanceof SecretReadError) throw err;
    const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    const code = e.name ?? 'Error';
    // the service's message names the secret and the reason, never its value
    throw new SecretReadError(
      code,
      `GetSecretValue ${o.secretId}: ${code}${e.message ? `: ${e.message}` : ''}`,
      e.$metadata?.httpStatusCode,
    );
  } finally {
    client.destroy();
  }
}
