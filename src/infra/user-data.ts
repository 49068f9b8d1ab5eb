/*
 * Startup scripts as pure functions of their inputs, so they can be tested without synthesis.
 * Values may be CDK tokens (strings); the caller wraps the text in `UserData.custom`.
 */
import path from 'node:path';

/** Where a worker finds its cluster: the values of the stack outputs. */
export interface WorkerUserDataOptions {
  /** Cluster name. */
  readonly clusterName: string;
  /** Pool name. */
  readonly poolName: string;
  /** AWS region. */
  readonly region: string;
  /** URL of the job queue. */
  readonly queueUrl: string;
  /** Name of the cluster bucket. */
  readonly bucketName: string;
  /** Name of the cluster log group. */
  readonly logGroupName: string;
  /** Idle time, in seconds, after which the worker exits. */
  readonly idleExitSeconds: number;
  /**
   * Version of corral installed from npm.
   * @default 'latest'
   */
  readonly corralVersion?: string;
  /**
   * ECS cluster to join (capacity: ecs); the corral worker is then not started on the host.
   * @default - none (the corral worker runs on the host under systemd)
   */
  readonly ecsClusterName?: string;
  /** URL of the dead-letter queue. @default - none (the redrive policy still applies) */
  readonly deadLetterQueueUrl?: string;
  /** Run each task in this image (`docker run`). @default - on the host */
  readonly image?: string;
}

/** Quotes a value for a POSIX shell (single quotes). */
export function shellQuote(v: string): string {
  return `'${v.replace(/'/g, `'"'"'`)}'`;
}

/** The worker's own log on a host (its stdout and stderr), shipped to the cluster's log group. */
export const WORKER_LOG_FILE = '/var/log/corral/worker.log';
/** Where the worker bootstrap puts the CloudWatch agent's configuration. */
const CW_AGENT_CONFIG = '/opt/aws/amazon-cloudwatch-agent/etc/corral.json';

/**
 * The CloudWatch agent's configuration on a worker host: the worker's log and the bootstrap's
 * output go to the cluster's log group, in streams `INSTANCE-ID/worker` and `INSTANCE-ID/bootstrap`.
 */
export function cloudWatchAgentConfig(logGroupName: string): object {
  const file = (filePath: string, stream: string) => ({
    file_path: filePath,
    log_group_name: logGroupName,
    log_stream_name: `{instance_id}/${stream}`,
  });
  return {
    agent: { run_as_user: 'root' },
    logs: {
      logs_collected: {
        files: {
          collect_list: [
            file(WORKER_LOG_FILE, 'worker'),
            file('/var/log/cloud-init-output.log', 'bootstrap'),
          ],
        },
      },
    },
  };
}

/** Marks the agent part of the worker bootstrap (what runs the worker, without installing anything). */
export const AGENT_BEGIN = '# >>> corral agent';
export const AGENT_END = '# <<< corral agent';

/**
 * The worker bootstrap (EC2 user data of a pool): writes `$CORRAL_ETC_DIR/worker.env` (default
 * /etc/corral) from the stack outputs, installs Node 20 and corral from npm, and starts
 * `corral worker` under systemd (`corral-worker.service`, Restart=on-failure; a clean exit after
 * the idle time powers the instance off, which is how the pool scales in). Its log
 * ({@link WORKER_LOG_FILE}) and the bootstrap's output go to the cluster's log group through the
 * CloudWatch agent. No credential is written: the worker uses the instance role through IMDSv2.
 *
 * `CORRAL_BOOTSTRAP_SKIP_INSTALL=1` in the environment skips installation and systemd and runs
 * the worker in the foreground (`corral` must be on PATH): the agent part between
 * {@link AGENT_BEGIN} and {@link AGENT_END}, which is how the bootstrap is tested off EC2.
 */
export function workerUserData(o: WorkerUserDataOptions): string {
  const version = o.corralVersion ?? 'latest';
  const env = [
    `CORRAL_CLUSTER=${o.clusterName}`,
    `CORRAL_POOL=${o.poolName}`,
    `AWS_REGION=${o.region}`,
    `CORRAL_QUEUE_URL=${o.queueUrl}`,
    ...(o.deadLetterQueueUrl ? [`CORRAL_DLQ_URL=${o.deadLetterQueueUrl}`] : []),
    `CORRAL_BUCKET=${o.bucketName}`,
    `CORRAL_LOG_GROUP=${o.logGroupName}`,
    `CORRAL_IDLE_EXIT_SECONDS=${o.idleExitSeconds}`,
    ...(o.image ? [`CORRAL_IMAGE=${o.image}`] : []),
  ];
  const lines = [
    '#!/bin/bash',
    'set -euo pipefail',
    '# corral worker bootstrap (generated; see src/infra/user-data.ts)',
    '# CORRAL_BOOTSTRAP_SKIP_INSTALL=1: no install, no systemd, the worker runs in the foreground',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion
    'CORRAL_ETC_DIR="${CORRAL_ETC_DIR:-/etc/corral}"',
    'mkdir -p "$CORRAL_ETC_DIR"',
    'cat > "$CORRAL_ETC_DIR/worker.env" <<\'CORRAL_ENV\'',
    ...env,
    'CORRAL_ENV',
    'chmod 644 "$CORRAL_ETC_DIR/worker.env"',
  ];
  if (o.ecsClusterName) {
    lines.push(
      '# capacity: ecs — this host only runs ECS tasks',
      'mkdir -p /etc/ecs',
      `echo ECS_CLUSTER=${o.ecsClusterName} >> /etc/ecs/ecs.config`,
      'echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config',
    );
    return `${lines.join('\n')}\n`;
  }
  lines.push(
    AGENT_BEGIN,
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion
    'if [ "${CORRAL_BOOTSTRAP_SKIP_INSTALL:-}" = 1 ]; then',
    '  set -a',
    '  . "$CORRAL_ETC_DIR/worker.env"',
    '  set +a',
    '  exec corral worker',
    'fi',
    AGENT_END,
    '# Node 20 and corral',
    'dnf install -y nodejs20 nodejs20-npm || dnf install -y nodejs npm',
    'command -v node >/dev/null || ln -sf "$(command -v node-20)" /usr/local/bin/node',
    'command -v npm >/dev/null || ln -sf "$(command -v npm-20)" /usr/local/bin/npm',
    `npm install -g ${shellQuote(`corral@${version}`)}`,
    "# the worker's log and this script's output to CloudWatch Logs (the worker runs without it)",
    `mkdir -p ${path.posix.dirname(CW_AGENT_CONFIG)} ${path.posix.dirname(WORKER_LOG_FILE)}`,
    `cat > ${CW_AGENT_CONFIG} <<'CORRAL_CWAGENT'`,
    JSON.stringify(cloudWatchAgentConfig(o.logGroupName), null, 2),
    'CORRAL_CWAGENT',
    `if ! { dnf install -y amazon-cloudwatch-agent && /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c file:${CW_AGENT_CONFIG}; }; then`,
    `  echo "corral: the CloudWatch agent did not start; the worker's log stays in ${WORKER_LOG_FILE}" >&2`,
    'fi',
    'id corral >/dev/null 2>&1 || useradd --system --home-dir /var/lib/corral --shell /sbin/nologin corral',
    ...(o.image
      ? [
          '(command -v docker >/dev/null) || dnf install -y docker',
          'systemctl enable --now docker',
          'usermod -aG docker corral',
        ]
      : []),
    "cat > /etc/systemd/system/corral-worker.service <<'CORRAL_UNIT'",
    '[Unit]',
    'Description=corral worker',
    'After=network-online.target',
    'Wants=network-online.target',
    '[Service]',
    'User=corral',
    'StateDirectory=corral',
    'LogsDirectory=corral',
    `StandardOutput=append:${WORKER_LOG_FILE}`,
    `StandardError=append:${WORKER_LOG_FILE}`,
    'EnvironmentFile=/etc/corral/worker.env',
    'Environment=CORRAL_CACHE_DIR=/var/lib/corral/cache',
    'ExecStart=/usr/bin/env corral worker',
    'Restart=on-failure',
    'RestartSec=5',
    'RestartPreventExitStatus=0',
    // PermissionsStartOnly is gone; `+` runs the power-off as root.
    'ExecStopPost=+/bin/sh -c \'[ "$EXIT_STATUS" = 0 ] && shutdown -h now || true\'',
    'KillSignal=SIGTERM',
    'TimeoutStopSec=120',
    '[Install]',
    'WantedBy=multi-user.target',
    'CORRAL_UNIT',
    'systemctl daemon-reload',
    'systemctl enable --now corral-worker.service',
  );
  return `${lines.join('\n')}\n`;
}

/** The agent part of a rendered worker bootstrap (between the markers), or undefined. */
export function agentPart(text: string): string | undefined {
  const a = text.indexOf(AGENT_BEGIN);
  const b = text.indexOf(AGENT_END);
  return a >= 0 && b > a ? text.slice(a, b + AGENT_END.length) : undefined;
}

/** What a named instance runs at first boot. */
export interface InstanceUserDataOptions {
  /** Instance name. */
  readonly name: string;
  /** Cluster name. */
  readonly clusterName: string;
  /** `coordinator` also gets /etc/corral/coordinator.env. */
  readonly role: 'coordinator' | 'custom';
  /**
   * Environment for the coordinator (queue URL, bucket…).
   * @default {}
   */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * The user's startup script (inline text or the content of `script`).
   * @default - none
   */
  readonly script?: string;
  /**
   * Container image started with docker (restart always, host network).
   * @default - none
   */
  readonly image?: string;
}

/** The startup script of a named instance: docker + container if an image is set, then the user's script. */
export function instanceUserData(o: InstanceUserDataOptions): string {
  const lines = [
    '#!/bin/bash',
    'set -euo pipefail',
    `# corral instance ${o.name} of cluster ${o.clusterName}`,
  ];
  if (o.role === 'coordinator') {
    lines.push('mkdir -p /etc/corral', "cat > /etc/corral/coordinator.env <<'CORRAL_ENV'");
    for (const [k, v] of Object.entries(o.env ?? {})) lines.push(`${k}=${v}`);
    lines.push('CORRAL_ENV');
  }
  if (o.image) {
    lines.push(
      '(command -v docker >/dev/null) || dnf install -y docker || (apt-get update && apt-get install -y docker.io)',
      'systemctl enable --now docker',
      `docker run -d --restart always --network host --name ${shellQuote(o.name)} ${shellQuote(o.image)}`,
    );
  }
  let text = `${lines.join('\n')}\n`;
  if (o.script) {
    // The user's script runs as written, from its own file, so its shebang and `set` options apply.
    const body = o.script.endsWith('\n') ? o.script : `${o.script}\n`;
    text +=
      "cat > /var/lib/corral-startup.sh <<'CORRAL_SCRIPT'\n" +
      body +
      'CORRAL_SCRIPT\n' +
      'chmod 700 /var/lib/corral-startup.sh\n' +
      `${body.startsWith('#!') ? '' : '/bin/bash '}/var/lib/corral-startup.sh\n`;
  }
  return text;
}
