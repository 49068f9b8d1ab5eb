import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { UsageError } from '../spec/errors.js';

/** Where a cluster's queue and bucket are: the stack outputs the runtime needs. */
export interface ClusterTarget {
  readonly name: string;
  readonly queueUrl: string;
  readonly deadLetterQueueUrl?: string;
  readonly bucket: string;
  readonly region?: string;
  readonly logGroupName?: string;
}

/** Flags that can stand in for the stack outputs. */
export interface ClusterTargetFlags {
  /** A JSON file of stack outputs (what `corral up --json` prints). */
  readonly outputs?: string;
  readonly queueUrl?: string;
  readonly dlqUrl?: string;
  readonly bucket?: string;
  readonly region?: string;
}

function fromOutputs(name: string, raw: unknown, where: string): ClusterTarget {
  const obj = (raw as { outputs?: Record<string, string> })?.outputs ?? (raw as Record<string, string>);
  const q = obj?.QueueUrl;
  const b = obj?.BucketName;
  if (typeof q !== 'string' || typeof b !== 'string') {
    throw new UsageError(
      '--outputs',
      `${where} has no QueueUrl and BucketName`,
      'save the output of corral up FILE --json there',
    );
  }
  return {
    name,
    queueUrl: q,
    bucket: b,
    deadLetterQueueUrl: obj.DeadLetterQueueUrl,
    region: obj.Region,
    logGroupName: obj.LogGroupName,
  };
}

/**
 * The target of `--cluster NAME`: flags `--queue-url` + `--bucket`, else an outputs file
 * (`--outputs FILE`, else `<state dir>/clusters/NAME.json`).
 */
export function resolveClusterTarget(
  name: string,
  flags: ClusterTargetFlags,
  stateDir: string,
): ClusterTarget {
  if (flags.queueUrl || flags.bucket) {
    if (!flags.queueUrl || !flags.bucket) {
      throw new UsageError(
        flags.queueUrl ? '--bucket' : '--queue-url',
        'is needed with the other',
        'pass both --queue-url and --bucket',
      );
    }
    return {
      name,
      queueUrl: flags.queueUrl,
      bucket: flags.bucket,
      deadLetterQueueUrl: flags.dlqUrl,
      region: flags.region,
    };
  }
  const file = flags.outputs ?? path.join(stateDir, 'clusters', `${name}.json`);
  if (!existsSync(file)) {
    throw new UsageError(
      '--cluster',
      `no stack outputs for cluster ${name} (looked for ${file})`,
      `run corral up CLUSTER.yaml --json > ${path.join(stateDir, 'clusters', `${name}.json`)}, or pass --outputs FILE or --queue-url and --bucket`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UsageError(
      '--outputs',
      `${file} is not JSON (${(err as Error).message})`,
      'save the output of corral up FILE --json there',
    );
  }
  const t = fromOutputs(name, raw, file);
  return { ...t, region: flags.region ?? t.region, deadLetterQueueUrl: flags.dlqUrl ?? t.deadLetterQueueUrl };
}
