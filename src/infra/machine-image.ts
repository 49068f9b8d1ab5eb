import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { type Architecture, architectureOf } from '../spec/cluster.js';

/**
 * The one CPU architecture of a list of instance types (a launch template has one AMI).
 * Throws when the list is empty or mixes x86_64 and arm64 types; the spec refuses such a pool
 * first, with a fix.
 */
export function archOf(types: readonly string[]): Architecture {
  if (types.length === 0) throw new Error('archOf: no instance types');
  const arm = types.filter((t) => architectureOf(t) === 'arm64');
  if (arm.length === 0) return 'x86_64';
  if (arm.length === types.length) return 'arm64';
  const x86 = types.filter((t) => architectureOf(t) === 'x86_64');
  throw new Error(`instance types mix x86_64 (${x86.join(', ')}) and arm64 (${arm.join(', ')})`);
}

/**
 * The Amazon Linux 2023 image for instances of these types, resolved from SSM at deploy time:
 * - `gpu`: the ECS GPU-optimized AL2023 (NVIDIA drivers; x86_64 only, so arm64 throws);
 * - `ecs`: the ECS-optimized AL2023, standard (x86_64) or ARM64;
 * - otherwise plain AL2023, x86_64 or arm64.
 */
export function machineImageFor(o: {
  readonly instanceTypes: readonly string[];
  readonly gpu?: boolean;
  readonly ecs?: boolean;
}): ec2.IMachineImage {
  const arch = archOf(o.instanceTypes);
  if (o.gpu) {
    if (arch === 'arm64') {
      throw new Error(
        `no GPU-optimized Amazon Linux 2023 AMI exists for arm64 (${o.instanceTypes.join(', ')}); use x86_64 GPU types such as g5.xlarge`,
      );
    }
    return ecs.EcsOptimizedImage.amazonLinux2023(ecs.AmiHardwareType.GPU);
  }
  if (o.ecs) {
    return ecs.EcsOptimizedImage.amazonLinux2023(
      arch === 'arm64' ? ecs.AmiHardwareType.ARM : ecs.AmiHardwareType.STANDARD,
    );
  }
  return ec2.MachineImage.latestAmazonLinux2023({
    cpuType: arch === 'arm64' ? ec2.AmazonLinuxCpuType.ARM_64 : ec2.AmazonLinuxCpuType.X86_64,
  });
}
