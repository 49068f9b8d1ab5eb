import { Duration } from 'aws-cdk-lib';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

/** Properties of the job queue. */
export interface JobQueueProps {
  /**
   * How long a claimed message stays invisible (the lease), in milliseconds.
   * @default 300000 (5 minutes)
   */
  readonly visibilityTimeoutMs?: number;
  /**
   * How long an unclaimed message is kept, in milliseconds.
   * @default 345600000 (4 days)
   */
  readonly retentionMs?: number;
  /**
   * Receives before a message moves to the dead-letter queue.
   * @default 5
   */
  readonly maxReceiveCount?: number;
}

/** The SQS job queue of the AWS runtime and its dead-letter queue; SSE and TLS-only. */
export class JobQueue extends Construct {
  /** Queue of pending tasks. */
  readonly queue: sqs.Queue;
  /** Tasks that failed `maxReceiveCount` times. */
  readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: JobQueueProps = {}) {
    super(scope, id);
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: Duration.millis(props.visibilityTimeoutMs ?? 300_000),
      retentionPeriod: Duration.millis(props.retentionMs ?? 345_600_000),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: props.maxReceiveCount ?? 5 },
    });
  }
}
