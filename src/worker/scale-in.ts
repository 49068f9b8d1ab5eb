/**
 * A worker's say in its pool's scaling (issue 20): the host is protected from scale-in while the
 * worker holds work and unprotected when it is idle (EC2 Auto Scaling instance protection), and
 * an idle host leaves through its group (TerminateInstanceInAutoScalingGroup with a decrement of
 * the desired capacity) only while the desired capacity is above the group's minimum; at the
 * minimum it stays up, idle. Never a power-off, which the group would answer with a replacement.
 *
 * With capacity: ecs the worker runs on the host too (no ECS task), so the same group-level
 * protection applies; ECS task scale-in protection would only matter for a worker run as a task.
 */
import type { AwsCredentialIdentity, Provider } from '@smithy/types';
import { AutoScaling, AutoScalingError } from '../aws/autoscaling.js';
import type { AwsSettings } from '../aws/clients.js';
import { Imds } from './imds.js';

/** Options of the guard. */
export interface ScaleInGuardOptions {
  readonly settings: AwsSettings;
  /** The credentials of the worker's other clients (the instance role on a host). */
  readonly credentials: AwsCredentialIdentity | Provider<AwsCredentialIdentity>;
  /** IMDS base URL. @default - CORRAL_IMDS_ENDPOINT, else http://169.254.169.254 */
  readonly imdsEndpoint?: string;
  readonly log: (line: string) => void;
}

/** What an idle worker should do. */
export type Leave = 'terminated' | 'stay';

/** Protection and self-termination of the worker's host through its Auto Scaling group. */
export class ScaleInGuard {
  private readonly api: AutoScaling;
  private instanceId: string | undefined;
  private group: string | undefined;
  private protectedNow = false;

  constructor(private readonly o: ScaleInGuardOptions) {
    this.api = new AutoScaling(o.settings, o.credentials);
  }

  /** Finds the host's instance id (IMDSv2) and group; logs and retries on the next call if it cannot. */
  private async where(): Promise<{ instanceId: string; group: string } | undefined> {
    if (this.instanceId && this.group) return { instanceId: this.instanceId, group: this.group };
    try {
      this.instanceId ??= await new Imds({ endpoint: this.o.imdsEndpoint }).get(
        '/latest/meta-data/instance-id',
      );
      if (!this.instanceId) throw new Error('IMDS has no instance-id');
      this.group = await this.api.groupOf(this.instanceId);
      if (!this.group) throw new Error(`instance ${this.instanceId} is in no Auto Scaling group`);
      this.o.log(`instance ${this.instanceId} of Auto Scaling group ${this.group}`);
      return { instanceId: this.instanceId, group: this.group };
    } catch (err) {
      this.o.log(`cannot find this host's Auto Scaling group (${(err as Error).message})`);
      return undefined;
    }
  }

  /** Protects the host from scale-in (busy) or lifts the protection (idle); errors are logged. */
  async busy(on: boolean): Promise<void> {
    if (on === this.protectedNow) return;
    const w = await this.where();
    if (!w) return;
    try {
      await this.api.setProtection(w.group, w.instanceId, on);
      this.protectedNow = on;
      this.o.log(on ? 'scale-in protection on (holding work)' : 'scale-in protection off (idle)');
    } catch (err) {
      this.o.log(`scale-in protection ${on ? 'on' : 'off'} failed: ${(err as Error).message}`);
    }
  }

  /**
   * Idle: terminates the host through its group with a decrement while desired > min; `stay` at
   * the minimum (Auto Scaling refuses a decrement below it too) or when the API cannot be reached.
   */
  async leave(): Promise<Leave> {
    await this.busy(false);
    const w = await this.where();
    if (!w) return 'stay';
    try {
      const s = await this.api.sizes(w.group);
      if (s.desired <= s.min) {
        this.o.log(`idle at the group's minimum (desired ${s.desired}, min ${s.min}); staying up`);
        return 'stay';
      }
      await this.api.terminateWithDecrement(w.instanceId);
      this.o.log(
        `idle: terminating instance ${w.instanceId} through group ${w.group} (desired ${s.desired} -> ${s.desired - 1})`,
      );
      return 'terminated';
    } catch (err) {
      const atMin = err instanceof AutoScalingError && err.code === 'ValidationError';
      this.o.log(
        atMin
          ? `idle, but the group refused to shrink (${err.message}); staying up`
          : `idle, but cannot leave through the group (${(err as Error).message}); staying up`,
      );
      return 'stay';
    }
  }
}
