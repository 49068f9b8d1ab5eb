/**
 * Secrets Manager GetSecretValue, the one call a cluster worker makes to read the database's
 * secret. corral's dependencies hold no Secrets Manager client, and a host installs only those
 * (src/infra/worker-artifact.ts), so the request is made here: a JSON 1.1 POST signed with
 * Signature Version 4, with the credentials of the worker's other clients (the SDK's default
 * provider chain: the instance role through IMDSv2 on a host). The secret's value is returned
 * to the caller only: never logged, never put in an error message.
 */
import { createHash, createHmac } from 'node:crypto';

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

const sha256 = (data: string) => createHash('sha256').update(data, 'utf8').digest('hex');
const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data, 'utf8').digest();

/**
 * The headers of a SigV4-signed request (`Authorization`, `X-Amz-Date`, the session token), for
 * a POST to `url` of `body` with `headers` (lower-case names, all signed).
 */
export function signV4(o: {
  readonly url: URL;
  readonly body: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly service: string;
  readonly region: string;
  readonly credentials: AwsCredentials;
  readonly date?: Date;
}): Record<string, string> {
  const amzDate = (o.date ?? new Date()).toISOString().replace(/[:-]|\.\d{3}/g, '');
  const day = amzDate.slice(0, 8);
  const headers: Record<string, string> = {
    ...o.headers,
    host: o.url.host,
    'x-amz-date': amzDate,
    ...(o.credentials.sessionToken ? { 'x-amz-security-token': o.credentials.sessionToken } : {}),
  };
  const names = Object.keys(headers).sort();
  const signed = names.join(';');
  const canonical = [
    'POST',
    o.url.pathname || '/',
    '',
    names.map((n) => `${n}:${headers[n]!.trim().replace(/\s+/g, ' ')}\n`).join(''),
    signed,
    sha256(o.body),
  ].join('\n');
  const scope = `${day}/${o.region}/${o.service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const key = hmac(
    hmac(hmac(hmac(`AWS4${o.credentials.secretAccessKey}`, day), o.region), o.service),
    'aws4_request',
  );
  const signature = createHmac('sha256', key).update(toSign, 'utf8').digest('hex');
  const { host: _host, ...rest } = headers;
  return {
    ...rest,
    authorization: `AWS4-HMAC-SHA256 Credential=${o.credentials.accessKeyId}/${scope}, SignedHeaders=${signed}, Signature=${signature}`,
  };
}

/** The SecretString of a secret (GetSecretValue). */
export async function getSecretString(o: GetSecretOptions): Promise<string> {
  const suffix = o.region.startsWith('cn-') ? 'amazonaws.com.cn' : 'amazonaws.com';
  const url = new URL(o.endpointUrl ?? `https://secretsmanager.${o.region}.${suffix}`);
  const body = JSON.stringify({ SecretId: o.secretId });
  const attempts = o.attempts ?? 3;
  for (let attempt = 1; ; attempt++) {
    let res: Response;
    try {
      const headers = signV4({
        url,
        body,
        headers: {
          'content-type': 'application/x-amz-json-1.1',
          'x-amz-target': 'secretsmanager.GetSecretValue',
        },
        service: 'secretsmanager',
        region: o.region,
        credentials: await o.credentials(),
      });
      res = await fetch(url, { method: 'POST', headers, body, signal: AbortSignal.timeout(10_000) });
    } catch (err) {
      if (attempt >= attempts)
        throw new SecretReadError(
          'NetworkError',
          `Secrets Manager at ${url.origin}: ${(err as Error).message}`,
        );
      await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
      continue;
    }
    const text = await res.text();
    if (res.ok) {
      const v = (JSON.parse(text) as { SecretString?: string }).SecretString;
      if (typeof v !== 'string')
        throw new SecretReadError('NoSecretString', `${o.secretId} has no SecretString`, res.status);
      return v;
    }
    let code = `HTTP ${res.status}`;
    let message = '';
    try {
      const e = JSON.parse(text) as { __type?: string; message?: string; Message?: string };
      code = (e.__type ?? code).split('#').pop()!;
      message = e.message ?? e.Message ?? '';
    } catch {}
    const retry = res.status >= 500 || code === 'ThrottlingException';
    if (!retry || attempt >= attempts)
      throw new SecretReadError(
        code,
        `GetSecretValue ${o.secretId}: ${code}${message ? `: ${message}` : ''}`,
        res.status,
      );
    await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
  }
}
