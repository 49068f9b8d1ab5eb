/**
 * The four EC2 Auto Scaling calls a worker makes about its own host, over the Auto Scaling Query
 * API (version 2011-01-01): which group it is in, instance scale-in protection on and off, the
 * group's sizes, and terminating itself with a decrement of the desired capacity.
 *
 * corral has no @aws-sdk/client-auto-scaling: the requests are signed with SigV4 by
 * @smithy/signature-v4 (the signer every @aws-sdk client of corral uses, installed with them),
 * with the credentials of an existing client's default provider chain (the instance role through
 * IMDSv2 on a host); nothing else is read, stored or printed.
 */
import { createHash, createHmac } from 'node:crypto';
import { createRequire } from 'node:module';
import type { AwsCredentialIdentity, Provider } from '@smithy/types';
import type { AwsSettings } from './clients.js';

const require = createRequire(import.meta.url);
const { SignatureV4 } = require('@smithy/signature-v4') as typeof import('@smithy/signature-v4');

function bytes(d: string | ArrayBuffer | ArrayBufferView): string | Uint8Array {
  if (typeof d === 'string') return d;
  if (d instanceof ArrayBuffer) return new Uint8Array(d);
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

/** SHA-256 (HMAC with a secret) as the signer wants it. */
class Sha256 {
  private readonly h: ReturnType<typeof createHash> | ReturnType<typeof createHmac>;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.h = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.h.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.h.digest());
  }
}

/** An error the Auto Scaling API answered (`ValidationError`, `AccessDenied`…). */
export class AutoScalingError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
  ) {
    super(`${code}: ${message}`);
  }
}

/** Sizes of a group. */
export interface GroupSizes {
  readonly min: number;
  readonly max: number;
  readonly desired: number;
}

function tag(xml: string, name: string): string | undefined {
  return new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml)?.[1];
}

/** A minimal Auto Scaling client. */
export class AutoScaling {
  private readonly signer: InstanceType<typeof SignatureV4>;
  private readonly url: URL;

  constructor(settings: AwsSettings, credentials: AwsCredentialIdentity | Provider<AwsCredentialIdentity>) {
    this.url = new URL(settings.endpointUrl ?? `https://autoscaling.${settings.region}.amazonaws.com/`);
    this.signer = new SignatureV4({
      service: 'autoscaling',
      region: settings.region,
      credentials,
      sha256: Sha256,
    });
  }

  private async call(action: string, params: Record<string, string>): Promise<string> {
    const body = new URLSearchParams({ Action: action, Version: '2011-01-01', ...params }).toString();
    const signed = await this.signer.sign({
      method: 'POST',
      protocol: this.url.protocol,
      hostname: this.url.hostname,
      port: this.url.port ? Number(this.url.port) : undefined,
      path: this.url.pathname,
      headers: {
        host: this.url.host,
        'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
      },
      body,
      query: {},
    });
    const r = await fetch(this.url, {
      method: 'POST',
      headers: signed.headers,
      body,
      signal: AbortSignal.timeout(10_000),
    });
    const text = await r.text();
    if (!r.ok)
      throw new AutoScalingError(
        tag(text, 'Code') ?? `HTTP ${r.status}`,
        tag(text, 'Message') ?? '',
        r.status,
      );
    return text;
  }

  /** The group an instance belongs to; undefined when it is in none. */
  async groupOf(instanceId: string): Promise<string | undefined> {
    const xml = await this.call('DescribeAutoScalingInstances', { 'InstanceIds.member.1': instanceId });
    return tag(xml, 'AutoScalingGroupName');
  }

  /** Sets or clears the instance's scale-in protection. */
  async setProtection(group: string, instanceId: string, on: boolean): Promise<void> {
    await this.call('SetInstanceProtection', {
      AutoScalingGroupName: group,
      'InstanceIds.member.1': instanceId,
      ProtectedFromScaleIn: String(on),
    });
  }

  /** The group's minimum, maximum and desired capacity. */
  async sizes(group: string): Promise<GroupSizes> {
    const xml = await this.call('DescribeAutoScalingGroups', { 'AutoScalingGroupNames.member.1': group });
    const n = (name: string) => Number(tag(xml, name));
    if (tag(xml, 'AutoScalingGroupName') === undefined)
      throw new AutoScalingError('ValidationError', `no group ${group}`, 400);
    return { min: n('MinSize'), max: n('MaxSize'), desired: n('DesiredCapacity') };
  }

  /** Terminates the instance through its group and lowers the desired capacity by one. */
  async terminateWithDecrement(instanceId: string): Promise<void> {
    await this.call('TerminateInstanceInAutoScalingGroup', {
      InstanceId: instanceId,
      ShouldDecrementDesiredCapacity: 'true',
    });
  }
}
