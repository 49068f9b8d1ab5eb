/**
 * What hosts say in the cluster's log group: the readiness line `corral worker --check` writes,
 * and the excerpts a failing bootstrap (or a worker that gave up) ships to streams
 * `failure/INSTANCE-ID`, which `corral up` prints while it waits for the hosts.
 */
import os from 'node:os';
import type { CloudWatchLogsClient } from '@aws-sdk/client-cloudwatch-logs';

/** Log stream prefix of the failure excerpts (the same as the bootstrap's, src/infra/user-data.ts). */
export const FAILURE_STREAM_PREFIX = 'failure/';

/**
 * Proves the log group takes this host's lines: writes one line to stream `ready/HOST`. Throws
 * the UsageError naming `log group` when it cannot.
 */
export async function checkLogGroup(
  logs: CloudWatchLogsClient,
  logGroupName: string,
  line: string,
  host = os.hostname(),
): Promise<void> {
  const { CreateLogStreamCommand, PutLogEventsCommand } = await import('@aws-sdk/client-cloudwatch-logs');
  const logStreamName = `ready/${host}`;
  const abortSignal = AbortSignal.timeout(10_000);
  try {
    try {
      await logs.send(new CreateLogStreamCommand({ logGroupName, logStreamName }), { abortSignal });
    } catch (err) {
      if ((err as { name?: string }).name !== 'ResourceAlreadyExistsException') throw err;
    }
    await logs.send(
      new PutLogEventsCommand({
        logGroupName,
        logStreamName,
        logEvents: [{ timestamp: Date.now(), message: line }],
      }),
      { abortSignal },
    );
  } catch (err) {
    const name = (err as { name?: string }).name;
    if (name === 'ResourceNotFoundException') {
      const { UsageError } = await import('../spec/errors.js');
      throw new UsageError(
        'log group',
        `log group ${logGroupName} does not exist`,
        'check the cluster outputs (LogGroupName) or run corral up',
      );
    }
    // (loaded here: user data renders with this module's constants, and needs no AWS SDK)
    const { usageErrorOf } = await import('./preflight.js');
    throw usageErrorOf(err, { field: 'log group', name: logGroupName }) ?? err;
  }
}

/** One line a host shipped. */
export interface HostLogLine {
  /** The stream's host part (an instance id). */
  readonly host: string;
  readonly timestamp: number;
  readonly message: string;
}

/**
 * The failure excerpts in a log group since `startTime` (ms), oldest first, skipping the event
 * ids in `seen` (which it extends). A missing log group gives none.
 */
export async function failureLines(
  logs: CloudWatchLogsClient,
  logGroupName: string,
  startTime: number,
  seen: Set<string> = new Set(),
): Promise<HostLogLine[]> {
  const { FilterLogEventsCommand } = await import('@aws-sdk/client-cloudwatch-logs');
  const out: HostLogLine[] = [];
  let nextToken: string | undefined;
  for (let page = 0; page < 20; page++) {
    let r: import('@aws-sdk/client-cloudwatch-logs').FilterLogEventsCommandOutput;
    try {
      r = await logs.send(
        new FilterLogEventsCommand({
          logGroupName,
          logStreamNamePrefix: FAILURE_STREAM_PREFIX,
          startTime,
          nextToken,
        }),
      );
    } catch (err) {
      if ((err as { name?: string }).name === 'ResourceNotFoundException') return out;
      throw err;
    }
    for (const e of r.events ?? []) {
      const id = e.eventId ?? `${e.logStreamName}/${e.timestamp}/${e.message}`;
      if (seen.has(id)) continue;
      seen.add(id);
      out.push({
        host: (e.logStreamName ?? '').slice(FAILURE_STREAM_PREFIX.length),
        timestamp: e.timestamp ?? 0,
        message: e.message ?? '',
      });
    }
    nextToken = r.nextToken;
    if (!nextToken) break;
  }
  return out.sort((a, b) => a.timestamp - b.timestamp);
}

/** A running watch of the failure excerpts. */
export interface HostFailureWatch {
  /** Lines seen so far. */
  readonly lines: HostLogLine[];
  /** Polls one last time, then stops. */
  stop(): Promise<void>;
}

/**
 * Polls a log group for failure excerpts every `intervalMs` and hands each new line to `onLine`,
 * until stopped: what `corral up` shows while CloudFormation waits for the hosts. Errors of a poll
 * (the log group not created yet, a throttle) are ignored until the next.
 */
export function watchHostFailures(o: {
  readonly logs: CloudWatchLogsClient;
  readonly logGroupName: string;
  /** Epoch ms: older events are not shown. */
  readonly since: number;
  readonly onLine: (line: HostLogLine) => void;
  /** @default 10000 */
  readonly intervalMs?: number;
}): HostFailureWatch {
  const seen = new Set<string>();
  const lines: HostLogLine[] = [];
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const poll = async () => {
    try {
      for (const l of await failureLines(o.logs, o.logGroupName, o.since, seen)) {
        lines.push(l);
        o.onLine(l);
      }
    } catch {
      // the next poll tries again
    }
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = poll().then(schedule);
    }, o.intervalMs ?? 10_000);
  };
  schedule();
  return {
    lines,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearTimeout(timer);
      await running;
      await poll();
    },
  };
}
