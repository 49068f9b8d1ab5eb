/**
 * The four EC2 Auto Scaling calls a worker makes about its own host: which group it is in,
 * instance scale-in protection on and off, the group's sizes, and terminating itself with a
 * decrement of the desired capacity. Made with @aws-sdk/client-auto-scaling, with the credentials
 * of the worker's other clients (the default provider chain: the instance role through IMDSv2 on
 * a host); nothing else is read, stored or printed.
 */
import {
  AutoScalingClient,
  DescribeAutoScalingGroupsCommand,
  DescribeAutoScalingInstancesCommand,
  SetInstanceProtectionCommand,
  TerminateInstanceInAutoScalingGroupCommand,
} from '@aws-sdk/client-auto-scaling';
import type { AwsCredentialIdentity, Provider } from '@smithy/types';
import type { AwsSettings } from './clients.js';

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

/** The Auto Scaling calls of a worker, with the service's errors as {@link AutoScalingError}. */
export class AutoScaling {
  private readonly client: AutoScalingClient;

  constructor(settings: AwsSettings, credentials: AwsCredentialIdentity | Provider<AwsCredentialIdentity>) {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client = new AutoScalingClient({
      region: settings.region,
      ...(settings.endpointUrl ? { endpoint: settings.endpointUrl } : {}),
      credentials,
      maxAttempts: 3,
    });
  }

  private async send<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
      throw new AutoScalingError(e.name ?? 'Error', e.message ?? '', e.$metadata?.httpStatusCode ?? 0);
    }
  }

  /** The group an instance belongs to; undefined when it is in none. */
  async groupOf(instanceId: string): Promise<string | undefined> {
    const r = await this.send(() =>
      this.client.send(new DescribeAutoScalingInstancesCommand({ InstanceIds: [instanceId] })),
    );
    return r.AutoScalingInstances?.[0]?.AutoScalingGroupName;
  }

  /** Sets or clears the instance's scale-in protection. */
  async setProtection(group: string, instanceId: string, on: boolean): Promise<void> {
    await this.send(() =>
      this.client.send(
        new SetInstanceProtectionCommand({
          AutoScalingGroupName: group,
          InstanceIds: [instanceId],
          ProtectedFromScaleIn: on,
        }),
      ),
    );
  }

  /** The group's minimum, maximum and desired capacity. */
  async sizes(group: string): Promise<GroupSizes> {
    const r = await this.send(() =>
      this.client.send(new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [group] })),
    );
    const g = r.AutoScalingGroups?.[0];
    if (!g) throw new AutoScalingError('ValidationError', `no group ${group}`, 400);
    return { min: g.MinSize ?? 0, max: g.MaxSize ?? 0, desired: g.DesiredCapacity ?? 0 };
  }

  /** Terminates the instance through its group and lowers the desired capacity by one. */
  async terminateWithDecrement(instanceId: string): Promise<void> {
    await this.send(() =>
      this.client.send(
        new TerminateInstanceInAutoScalingGroupCommand({
          InstanceId: instanceId,
          ShouldDecrementDesiredCapacity: true,
        }),
      ),
    );
  }

  /** Closes the client's connections. */
  destroy(): void {
    this.client.destroy();
  }
}
