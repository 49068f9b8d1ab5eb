import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import type * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { BOOTSTRAP_FAILED, WORKER_GAVE_UP } from './user-data.js';

/** Properties of the cluster monitoring. */
export interface MonitoringProps {
  /** Cluster name (alarm prefix; the dashboard is `corral-NAME-REGION`, as dashboards are global to the account). */
  readonly clusterName: string;
  /** Job queue. */
  readonly queue: sqs.IQueue;
  /** Dead-letter queue. */
  readonly deadLetterQueue: sqs.IQueue;
  /** Cluster log group (shown on the dashboard). */
  readonly logGroup: logs.ILogGroup;
  /**
   * Named instances, by name.
   * @default - none
   */
  readonly instances?: ReadonlyMap<string, ec2.Instance>;
  /**
   * Worker pools' Auto Scaling groups, by pool name.
   * @default - none
   */
  readonly pools?: ReadonlyMap<string, autoscaling.IAutoScalingGroup>;
  /**
   * Alarm when the oldest message is older than this many milliseconds.
   * @default 3600000 (1 hour)
   */
  readonly queueAgeAlarmMs?: number;
  /**
   * Topic the alarms notify.
   * @default - alarms without notification
   */
  readonly topic?: sns.ITopic;
  /**
   * Email subscribed to the topic.
   * @default - no subscription
   */
  readonly alarmEmail?: string;
  /**
   * Create the CloudWatch dashboard.
   * @default true
   */
  readonly dashboard?: boolean;
}

/** Alarms (queue age, dead letters, instance health), an optional SNS email topic and a dashboard. */
export class Monitoring extends Construct {
  /** Every alarm, by short name. */
  readonly alarms = new Map<string, cloudwatch.Alarm>();
  /** Alarm topic. */
  readonly topic?: sns.ITopic;
  /** The dashboard, when enabled. */
  readonly dashboard?: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    this.topic = props.topic;
    if (props.alarmEmail) {
      if (!this.topic) throw new Error('Monitoring: alarmEmail needs a topic');
      this.topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    }
    const five = Duration.minutes(5);
    const age = props.queue.metric('ApproximateAgeOfOldestMessage', { statistic: 'Maximum', period: five });
    const dead = props.deadLetterQueue.metric('ApproximateNumberOfMessagesVisible', {
      statistic: 'Maximum',
      period: five,
    });
    this.addAlarm('QueueAge', {
      metric: age,
      threshold: Math.round((props.queueAgeAlarmMs ?? 3_600_000) / 1000),
      evaluationPeriods: 1,
      alarmDescription: `${props.clusterName}: the oldest queued task waits longer than expected`,
    });
    this.addAlarm('DeadLetters', {
      metric: dead,
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      alarmDescription: `${props.clusterName}: tasks reached the dead-letter queue`,
    });
    // A bootstrap that failed, or a worker that failed too often to be restarted, says so in the
    // log group (stream failure/INSTANCE-ID): one line is an alarm.
    const hostFailures = new logs.MetricFilter(this, 'HostFailuresFilter', {
      logGroup: props.logGroup,
      filterPattern: logs.FilterPattern.literal(`?"${BOOTSTRAP_FAILED}" ?"${WORKER_GAVE_UP}"`),
      metricNamespace: 'Corral',
      metricName: `HostFailures-${props.clusterName}`,
      metricValue: '1',
    });
    this.addAlarm('HostFailures', {
      metric: hostFailures.metric({ statistic: 'Sum', period: five }),
      threshold: 1,
      evaluationPeriods: 1,
      alarmDescription: `${props.clusterName}: a host could not start its worker, or its worker kept failing (see the log group's failure/ streams)`,
    });
    for (const [name, instance] of props.instances ?? []) {
      this.addAlarm(`Health-${name}`, {
        metric: new cloudwatch.Metric({
          namespace: 'AWS/EC2',
          metricName: 'StatusCheckFailed',
          dimensionsMap: { InstanceId: instance.instanceId },
          statistic: 'Maximum',
          period: Duration.minutes(1),
        }),
        threshold: 1,
        evaluationPeriods: 2,
        alarmDescription: `${props.clusterName}: instance ${name} fails its status checks`,
      });
    }
    for (const [name, group] of props.pools ?? []) {
      this.addAlarm(`Health-pool-${name}`, {
        metric: new cloudwatch.Metric({
          namespace: 'AWS/EC2',
          metricName: 'StatusCheckFailed',
          dimensionsMap: { AutoScalingGroupName: group.autoScalingGroupName },
          statistic: 'Maximum',
          period: Duration.minutes(1),
        }),
        threshold: 1,
        evaluationPeriods: 3,
        alarmDescription: `${props.clusterName}: instances of pool ${name} fail their status checks`,
      });
    }
    if (props.dashboard ?? true) {
      this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
        dashboardName: `corral-${props.clusterName}-${Stack.of(this).region}`,
        defaultInterval: Duration.hours(3),
      });
      this.dashboard.addWidgets(
        new cloudwatch.GraphWidget({
          title: 'Queue',
          left: [
            props.queue.metric('ApproximateNumberOfMessagesVisible', { statistic: 'Maximum', period: five }),
          ],
          right: [age],
        }),
        new cloudwatch.GraphWidget({ title: 'Dead letters', left: [dead] }),
        new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: [...this.alarms.values()] }),
      );
      const pools = [...(props.pools ?? [])];
      if (pools.length > 0) {
        this.dashboard.addWidgets(
          new cloudwatch.GraphWidget({
            title: 'Pool instances in service',
            left: pools.map(
              ([name, g]) =>
                new cloudwatch.Metric({
                  namespace: 'AWS/AutoScaling',
                  metricName: 'GroupInServiceInstances',
                  dimensionsMap: { AutoScalingGroupName: g.autoScalingGroupName },
                  statistic: 'Average',
                  period: five,
                  label: name,
                }),
            ),
          }),
        );
      }
    }
  }

  private addAlarm(name: string, props: Omit<cloudwatch.AlarmProps, 'treatMissingData'>): void {
    const alarm = new cloudwatch.Alarm(this, name, {
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      ...props,
    });
    if (this.topic) alarm.addAlarmAction(new actions.SnsAction(this.topic));
    this.alarms.set(name, alarm);
  }
}

/** Removal policy of the cluster log group: destroyed with the stack, so `down` leaves no orphan. */
export const LOG_GROUP_REMOVAL = RemovalPolicy.DESTROY;
