/**
 * A minimal IMDSv2 client (token first, then metadata with the token; IMDSv1 is never used).
 * Only what the spot watcher reads.
 */

/** Options of the IMDS client. */
export interface ImdsOptions {
  /**
   * Base URL of the instance metadata service.
   * @default - CORRAL_IMDS_ENDPOINT, else http://169.254.169.254
   */
  readonly endpoint?: string;
  /** Token lifetime asked for, in seconds. @default 300 */
  readonly tokenTtlSeconds?: number;
  /** Timeout of each request. @default 1000 */
  readonly timeoutMs?: number;
}

/** IMDSv2: `PUT /latest/api/token`, then GETs with `X-aws-ec2-metadata-token`. */
export class Imds {
  private token: string | undefined;
  private tokenUntil = 0;
  readonly endpoint: string;

  constructor(private readonly o: ImdsOptions = {}) {
    this.endpoint = (o.endpoint ?? process.env.CORRAL_IMDS_ENDPOINT ?? 'http://169.254.169.254').replace(
      /\/$/,
      '',
    );
  }

  private async getToken(): Promise<string> {
    if (this.token && Date.now() < this.tokenUntil) return this.token;
    const ttl = this.o.tokenTtlSeconds ?? 300;
    const r = await fetch(`${this.endpoint}/latest/api/token`, {
      method: 'PUT',
      headers: { 'X-aws-ec2-metadata-token-ttl-seconds': String(ttl) },
      signal: AbortSignal.timeout(this.o.timeoutMs ?? 1000),
    });
    if (!r.ok) throw new Error(`IMDSv2 token request failed: HTTP ${r.status}`);
    this.token = await r.text();
    this.tokenUntil = Date.now() + (ttl - 30) * 1000;
    return this.token;
  }

  /** Reads a metadata path; undefined on 404 (not set). */
  async get(p: string): Promise<string | undefined> {
    const token = await this.getToken();
    const r = await fetch(`${this.endpoint}${p}`, {
      headers: { 'X-aws-ec2-metadata-token': token },
      signal: AbortSignal.timeout(this.o.timeoutMs ?? 1000),
    });
    if (r.status === 404) return undefined;
    if (r.status === 401) {
      this.token = undefined;
      throw new Error('IMDSv2 token expired');
    }
    if (!r.ok) throw new Error(`IMDS ${p}: HTTP ${r.status}`);
    return r.text();
  }
}
