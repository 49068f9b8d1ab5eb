/*
 * Startup scripts as pure functions of their inputs, so they can be tested without synthesis.
 * Values may be CDK tokens (strings); the caller wraps the text in `UserData.custom`.
 */
import path from 'node:path';
import { FAILURE_STREAM_PREFIX } from '../aws/host-logs.js';
import { isEcrImage, partitionOf } from '../spec/cluster.js';

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
  /** The corral the host runs: the worker artifact `corral up` published, pinned by its sha256. */
  readonly artifact: ArtifactLocation;
  /**
   * Where the host reports readiness (cfn-signal) once the worker checked the queue, the bucket
   * and the log group.
   * @default - no signal (nothing waits for the host)
   */
  readonly signal?: SignalTarget;
  /**
   * ECS cluster the host joins (capacity: ecs, on the ECS-optimized AMI): its ECS agent registers
   * it, so the host is listed there, but no ECS task is ever placed on it. The corral worker runs
   * on the host under systemd all the same.
   * @default - none
   */
  readonly ecsClusterName?: string;
  /** URL of the dead-letter queue. @default - none (the redrive policy still applies) */
  readonly deadLetterQueueUrl?: string;
  /**
   * The pool's image: the worker runs each task in it with `docker run` (CORRAL_IMAGE). The
   * bootstrap installs docker if the AMI has none, logs in to ECR for an ECR image, and pulls the
   * image before the host reports ready, so an image that cannot be pulled fails the host.
   * @default - tasks run on the host
   */
  readonly image?: string;
  /**
   * GPUs each task's container gets (`docker run --gpus`; CORRAL_GPUS), with an image: `all` on a
   * GPU pool (the ECS GPU AMI has the NVIDIA container toolkit).
   * @default - none
   */
  readonly gpus?: string;
  /**
   * The cluster database, for the tasks (CORRAL_DB_HOST, CORRAL_DB_PORT, CORRAL_DB_NAME,
   * CORRAL_DB_SECRET_ARN): the worker reads the secret itself, and no password is ever written here.
   * @default - none
   */
  readonly database?: DatabaseEndpoint;
}

/** Where the cluster database is: what tasks are told (its secret's ARN, never its value). */
export interface DatabaseEndpoint {
  /** Endpoint address. */
  readonly host: string;
  /** TCP port (a token of the stack, hence a string). */
  readonly port: string;
  /** Database name. */
  readonly name: string;
  /** ARN of the secret with the username and password. */
  readonly secretArn: string;
}

/** The worker's variables of a database. */
export function databaseEnvOf(d: DatabaseEndpoint): Record<string, string> {
  return {
    CORRAL_DB_HOST: d.host,
    CORRAL_DB_PORT: d.port,
    CORRAL_DB_NAME: d.name,
    CORRAL_DB_SECRET_ARN: d.secretArn,
  };
}

/** An image in a private Amazon ECR repository, in parts. */
export interface EcrImage {
  /** Registry host, `ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]`: what `docker login` takes. */
  readonly registry: string;
  readonly account: string;
  readonly region: string;
  readonly partition: string;
  /** Repository name (without the tag or digest), e.g. `lab/tools`. */
  readonly repository: string;
  /** ARN of the repository, what the pull rights are scoped to. */
  readonly repositoryArn: string;
}

/** The parts of an ECR image (`isEcrImage` in src/spec/cluster.ts), or undefined for any other image. */
export function ecrImageOf(image: string): EcrImage | undefined {
  if (!isEcrImage(image)) return undefined;
  const slash = image.indexOf('/');
  const registry = image.slice(0, slash);
  const [account, , , region] = registry.split('.') as [string, string, string, string];
  // NAME[:TAG][@DIGEST]: a tag is after the last colon of the last path segment
  const repository = image
    .slice(slash + 1)
    .replace(/@.*$/, '')
    .replace(/:[^/]*$/, '');
  const partition = registry.endsWith('.cn') ? 'aws-cn' : partitionOf(region);
  return {
    registry,
    account,
    region,
    partition,
    repository,
    repositoryArn: `arn:${partition}:ecr:${region}:${account}:repository/${repository}`,
  };
}

/**
 * `docker login` to the registry of an ECR image with a token of the instance role (valid for
 * 12 hours), for the pull that follows; nothing for an image of any other registry.
 */
function ecrLogin(image: string): string[] {
  const ecr = ecrImageOf(image);
  if (!ecr) return [];
  const login = `aws ecr get-login-password --region ${shellQuote(ecr.region)} | docker login --username AWS --password-stdin ${shellQuote(ecr.registry)}`;
  return [`corral_retry bash -o pipefail -c ${shellQuote(login)}`];
}

/** Tries of {@link RETRY_FUNCTION} before a step that needs the network fails the bootstrap. */
export const RETRY_TRIES = 20;

/**
 * `corral_retry CMD…`: runs a command that needs the network until it succeeds, up to
 * {@link RETRY_TRIES} tries 2, 4, 8, 16 then 30 s apart (about 8 minutes): a host's network may
 * come up after its script starts (an Elastic IP is associated after boot). A command in an
 * `until` condition does not trip `set -e` or the ERR trap; the last failure does.
 */
const RETRY_FUNCTION = [
  'corral_retry() {',
  '  local n=1 d=2',
  '  until "$@"; do',
  `    if [ "$n" -ge ${RETRY_TRIES} ]; then echo "corral: gave up after $n tries: $*" >&2; CORRAL_GAVE_UP="$*"; return 1; fi`,
  '    echo "corral: try $n failed, again in $d seconds: $*" >&2',
  '    sleep "$d"; n=$((n + 1)); d=$((d < 16 ? d * 2 : 30))',
  '  done',
  '}',
];

/** Forgets the ECR token `ecrLogin` stored (the image is on the host; runs do not pull). */
function ecrLogout(image: string): string[] {
  const ecr = ecrImageOf(image);
  return ecr ? [`docker logout ${shellQuote(ecr.registry)}`] : [];
}

/** Where hosts fetch the worker artifact (src/infra/worker-artifact.ts) from. */
export interface ArtifactLocation {
  /** Bucket holding the artifact (the CDK assets bucket). */
  readonly bucket: string;
  /** Object key. */
  readonly key: string;
  /** Hex sha256 of the artifact: a host refuses any other bytes. */
  readonly sha256: string;
}

/** The CloudFormation resource a host signals (cfn-signal), with a creation or update policy. */
export interface SignalTarget {
  /** Stack name. */
  readonly stackName: string;
  /** Logical id of the Auto Scaling group or the instance. */
  readonly resource: string;
}

/** Quotes a value for a POSIX shell (single quotes). */
export function shellQuote(v: string): string {
  return `'${v.replace(/'/g, `'"'"'`)}'`;
}

/** The worker's own log on a host (its stdout and stderr), shipped to the cluster's log group. */
export const WORKER_LOG_FILE = '/var/log/corral/worker.log';
/** The bootstrap's own log on a host; its last lines are shipped when it fails. */
export const BOOTSTRAP_LOG_FILE = '/var/log/corral/bootstrap.log';
/** The line a host logs when its worker failed too often to be restarted again. */
export const WORKER_GAVE_UP = 'corral-worker gave up';
/** The line a failing bootstrap logs first. */
export const BOOTSTRAP_FAILED = 'corral bootstrap failed';
/** Where corral is unpacked on a host (one folder per artifact, `current` links to the running one). */
export const CORRAL_HOME = '/opt/corral';
/** Starts of the worker unit allowed within the interval before systemd gives up on it. */
export const WORKER_START_BURST = 5;
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
          collect_list: [file(WORKER_LOG_FILE, 'worker'), file(BOOTSTRAP_LOG_FILE, 'bootstrap')],
        },
      },
    },
  };
}

/** JSON events of CloudWatch Logs from lines on stdin (escaped with sed, wrapped with awk). */
const TO_LOG_EVENTS = String.raw`tr '\t' ' ' | tr -d '\000-\010\013-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | awk -v ts="$(date +%s)000" 'NF { printf "%s{\"timestamp\":%s,\"message\":\"%s\"}", (n++ ? "," : "["), ts, $0 } END { printf "%s", (n ? "]" : "[]") }'`;

/**
 * Shell functions: `corral_iid` (the instance id from IMDSv2; `CORRAL_IMDS_ENDPOINT` overrides its
 * address, for tests) and `corral_ship FILE` (the file's last 40 lines to the log group, stream
 * `failure/INSTANCE-ID`, with the AWS CLI every Amazon Linux has).
 */
function shipFunctions(region: string, logGroupName: string): string[] {
  const r = shellQuote(region);
  const g = shellQuote(logGroupName);
  return [
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion
    'CORRAL_IMDS="${CORRAL_IMDS_ENDPOINT:-http://169.254.169.254}"',
    'corral_iid() {',
    '  local t',
    '  t=$(curl -sf -m 5 -X PUT "$CORRAL_IMDS/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300") &&',
    '    curl -sf -m 5 -H "X-aws-ec2-metadata-token: $t" "$CORRAL_IMDS/latest/meta-data/instance-id" || hostname',
    '}',
    'corral_ship() {',
    `  local stream="${FAILURE_STREAM_PREFIX}$(corral_iid)" events`,
    `  events=$(tail -n 40 "$1" | ${TO_LOG_EVENTS})`,
    '  [ "$events" != "[]" ] || return 0',
    `  aws logs create-log-stream --region ${r} --log-group-name ${g} --log-stream-name "$stream" >/dev/null 2>&1 || true`,
    `  aws logs put-log-events --region ${r} --log-group-name ${g} --log-stream-name "$stream" --log-events "$events" >/dev/null || echo "corral: could not ship $1 to the log group" >&2`,
    '}',
  ];
}

/** Options of the part of a bootstrap shared by pools and the coordinator. */
interface PreludeOptions {
  readonly title: string;
  readonly region: string;
  readonly logGroupName: string;
  readonly signal?: SignalTarget;
}

/**
 * The start of every corral bootstrap: its output to {@link BOOTSTRAP_LOG_FILE} (and the console,
 * which cloud-init keeps), and an ERR trap that, whatever fails, ships the log's last lines to the
 * log group at once (stream `failure/INSTANCE-ID`, with the AWS CLI every Amazon Linux has, so it
 * needs nothing the bootstrap installs), signals failure to CloudFormation, and exits. The
 * instance id comes from IMDSv2 (`CORRAL_IMDS_ENDPOINT` overrides its address, for tests). A host
 * that signals gets the cfn-signal tool (aws-cfn-bootstrap) first.
 */
function prelude(o: PreludeOptions): string[] {
  const r = shellQuote(o.region);
  const signal = o.signal
    ? `/opt/aws/bin/cfn-signal -e "$1" --stack ${shellQuote(o.signal.stackName)} --resource ${shellQuote(o.signal.resource)} --region ${r} --reason "$2" || echo "corral: cfn-signal failed" >&2`
    : ': no CloudFormation signal for this host';
  return [
    '#!/bin/bash',
    'set -euo pipefail',
    `# ${o.title} (generated; see src/infra/user-data.ts)`,
    `mkdir -p ${path.posix.dirname(BOOTSTRAP_LOG_FILE)}`,
    `exec > >(tee -a ${BOOTSTRAP_LOG_FILE}) 2>&1`,
    'corral_signal() {',
    `  ${signal}`,
    '}',
    'CORRAL_GAVE_UP=',
    ...RETRY_FUNCTION,
    ...shipFunctions(o.region, o.logGroupName),
    'corral_failed() {',
    '  local rc=$1 line=$2 cmd=$3',
    '  [ -z "$CORRAL_GAVE_UP" ] || cmd=$CORRAL_GAVE_UP',
    '  trap - ERR',
    '  set +e',
    `  echo "${BOOTSTRAP_FAILED} at line $line (exit $rc): $cmd" >&2`,
    `  corral_ship ${BOOTSTRAP_LOG_FILE}`,
    `  corral_signal 1 "${BOOTSTRAP_FAILED} (exit $rc): $cmd"`,
    '  exit "$rc"',
    '}',
    `trap 'corral_failed $? $LINENO "$BASH_COMMAND"' ERR`,
    `echo "corral bootstrap: start ($(date -u +%FT%TZ))"`,
    ...(o.signal
      ? ['command -v /opt/aws/bin/cfn-signal >/dev/null || dnf install -y aws-cfn-bootstrap']
      : []),
  ];
}

/**
 * Installs the corral of {@link ArtifactLocation} and links `/usr/local/bin/corral` to it: Node 20
 * from the distribution's repositories (Amazon Linux serves them from S3, so no NAT is needed),
 * the artifact from S3 through the gateway endpoint with the AWS CLI, refused unless its sha256
 * is the pinned one, unpacked into {@link CORRAL_HOME}/SHA. When its native parts were built for
 * another platform or Node ABI (an arm64 host, or a `corral up` from a Mac), the C forker and
 * better-sqlite3 are compiled here with the distribution's compilers.
 */
function installCorral(a: ArtifactLocation, region: string): string[] {
  const release = `${CORRAL_HOME}/${a.sha256.slice(0, 16)}`;
  const tgz = '/var/lib/corral-boot/corral.tgz';
  return [
    '# Node 20, from the distribution (no registry, no NAT)',
    'command -v node >/dev/null || dnf install -y nodejs20 || dnf install -y nodejs',
    'command -v node >/dev/null || ln -sf "$(command -v node-20)" /usr/local/bin/node',
    '# corral: the artifact corral up published, pinned by its sha256',
    `mkdir -p ${path.posix.dirname(tgz)} ${CORRAL_HOME}`,
    `aws s3 cp --region ${shellQuote(region)} --only-show-errors ${shellQuote(`s3://${a.bucket}/${a.key}`)} ${tgz}`,
    `if ! echo ${shellQuote(`${a.sha256}  ${tgz}`)} | sha256sum -c --status; then`,
    `  echo "corral bootstrap: ${tgz} is not the artifact corral up published (sha256 $(sha256sum ${tgz} | cut -d' ' -f1), expected ${a.sha256}); refusing it" >&2`,
    '  false',
    'fi',
    `rm -rf ${release}.tmp && mkdir -p ${release}.tmp`,
    `tar -xzf ${tgz} -C ${release}.tmp --strip-components=1 --no-same-owner`,
    `corral_native=$(node -p 'process.platform + "-" + process.arch + "-" + process.versions.modules')`,
    `if [ "$corral_native" != "$(cat ${release}.tmp/native-platform)" ]; then`,
    `  echo "corral bootstrap: native parts built for $(cat ${release}.tmp/native-platform), this host is $corral_native: compiling them here"`,
    '  dnf install -y gcc gcc-c++ make python3 nodejs20-devel || dnf install -y gcc gcc-c++ make python3 nodejs-devel',
    `  cc -O2 -o ${release}.tmp/dist/native/corral-forker ${release}.tmp/src/worker/forker.c`,
    `  (cd ${release}.tmp && "$(command -v npm || command -v npm-20)" rebuild better-sqlite3 --build-from-source --offline)`,
    'fi',
    `rm -rf ${release} && mv ${release}.tmp ${release}`,
    `ln -sfn ${release} ${CORRAL_HOME}/current`,
    "cat > /usr/local/bin/corral <<'CORRAL_BIN'",
    '#!/bin/sh',
    `exec node ${CORRAL_HOME}/current/dist/cli/main.js "$@"`,
    'CORRAL_BIN',
    'chmod 755 /usr/local/bin/corral',
    `echo "corral bootstrap: corral $(corral --version) from ${a.sha256.slice(0, 16)}"`,
  ];
}

/** The CloudWatch agent: the worker's and the bootstrap's logs to the log group (the host runs without it). */
function cloudWatchAgent(logGroupName: string): string[] {
  return [
    "# the worker's log and this script's output to CloudWatch Logs (the host works without it)",
    `mkdir -p ${path.posix.dirname(CW_AGENT_CONFIG)} ${path.posix.dirname(WORKER_LOG_FILE)}`,
    `cat > ${CW_AGENT_CONFIG} <<'CORRAL_CWAGENT'`,
    JSON.stringify(cloudWatchAgentConfig(logGroupName), null, 2),
    'CORRAL_CWAGENT',
    `if ! { dnf install -y amazon-cloudwatch-agent && /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c file:${CW_AGENT_CONFIG}; }; then`,
    `  echo "corral: the CloudWatch agent did not start; logs stay in ${path.posix.dirname(WORKER_LOG_FILE)}" >&2`,
    'fi',
  ];
}

/**
 * The worker bootstrap (EC2 user data of a pool). In order: the failure trap and the cfn-signal
 * tool ({@link prelude}),
 * `/etc/corral/worker.env` from the stack outputs, `/etc/ecs/ecs.config` with capacity: ecs (the
 * host joins the pool's ECS cluster, and nothing else of ECS), the AWS CLI
 * and tar (the ECS-optimized AMIs of GPU and ECS pools may lack them), Node and the pinned
 * corral ({@link installCorral}), `corral worker --check` (the queue, the bucket and the log group
 * are reachable with the instance role), with an image: docker, an ECR login for an ECR image and
 * `docker pull IMAGE` (an image that cannot be pulled fails the host before it reports ready),
 * the CloudWatch agent, and `corral worker` under systemd
 * (`corral-worker.service`: restarted on failure at most {@link WORKER_START_BURST} times in
 * 10 minutes, then `corral-worker-failed.service` ships the worker's log and logs
 * {@link WORKER_GAVE_UP}, which raises an alarm; the worker protects the host from scale-in while
 * busy and, idle, terminates it through the group with a decrement while desired > min: the host
 * is never powered off, which the group would answer with a replacement). Only then does it signal success. Any failure
 * ships the log, signals failure and stops. No credential is written: the instance role is used
 * through IMDSv2.
 */
export function workerUserData(o: WorkerUserDataOptions): string {
  const env = [
    `CORRAL_CLUSTER=${o.clusterName}`,
    `CORRAL_POOL=${o.poolName}`,
    `AWS_REGION=${o.region}`,
    `CORRAL_QUEUE_URL=${o.queueUrl}`,
    ...(o.deadLetterQueueUrl ? [`CORRAL_DLQ_URL=${o.deadLetterQueueUrl}`] : []),
    `CORRAL_BUCKET=${o.bucketName}`,
    `CORRAL_LOG_GROUP=${o.logGroupName}`,
    `CORRAL_IDLE_EXIT_SECONDS=${o.idleExitSeconds}`,
    // the host is in the pool's Auto Scaling group: protected while busy, leaves through the group
    'CORRAL_AUTOSCALING=1',
    ...(o.image ? [`CORRAL_IMAGE=${o.image}`] : []),
    ...(o.image && o.gpus ? [`CORRAL_GPUS=${o.gpus}`] : []),
    ...Object.entries(o.database ? databaseEnvOf(o.database) : {}).map(([k, v]) => `${k}=${v}`),
  ];
  const lines = [
    ...prelude({
      title: `corral worker bootstrap: pool ${o.poolName} of cluster ${o.clusterName}`,
      region: o.region,
      logGroupName: o.logGroupName,
      signal: o.signal,
    }),
    'mkdir -p /etc/corral',
    "cat > /etc/corral/worker.env <<'CORRAL_ENV'",
    ...env,
    'CORRAL_ENV',
    'chmod 644 /etc/corral/worker.env',
  ];
  if (o.ecsClusterName) {
    lines.push(
      '# capacity: ecs: the ECS agent registers this host in the pool ECS cluster (listed there); no ECS task runs on it',
      'mkdir -p /etc/ecs',
      `echo ECS_CLUSTER=${o.ecsClusterName} >> /etc/ecs/ecs.config`,
    );
  }
  lines.push(
    '# the ECS-optimized AMIs are built on the minimal Amazon Linux 2023, which may lack these',
    'command -v aws >/dev/null || dnf install -y awscli-2',
    'command -v tar >/dev/null || dnf install -y tar gzip',
    ...installCorral(o.artifact, o.region),
    '# the queue, the bucket and the log group answer (with the instance role) before the host is ready',
    '(set -a; . /etc/corral/worker.env; set +a; corral worker --check)',
  );
  if (o.image) {
    lines.push(
      '# the pool image: docker (the ECS-optimized AMIs have it), the image pulled before the host is ready',
      'command -v docker >/dev/null || corral_retry dnf install -y docker',
      'systemctl enable --now docker',
      ...ecrLogin(o.image),
      `corral_retry docker pull ${shellQuote(o.image)}`,
      ...ecrLogout(o.image),
    );
  }
  lines.push(
    ...cloudWatchAgent(o.logGroupName),
    'id corral >/dev/null 2>&1 || useradd --system --home-dir /var/lib/corral --shell /sbin/nologin corral',
    ...(o.image ? ['usermod -aG docker corral'] : []),
    "cat > /usr/local/bin/corral-report-failure <<'CORRAL_REPORT'",
    '#!/bin/bash',
    ...shipFunctions(o.region, o.logGroupName),
    `echo "${WORKER_GAVE_UP} after ${WORKER_START_BURST} failed starts in 10 minutes; it is not restarted (see ${WORKER_LOG_FILE})" >> ${WORKER_LOG_FILE}`,
    `corral_ship ${WORKER_LOG_FILE}`,
    'CORRAL_REPORT',
    'chmod 755 /usr/local/bin/corral-report-failure',
    "cat > /etc/systemd/system/corral-worker-failed.service <<'CORRAL_UNIT'",
    '[Unit]',
    'Description=report that corral-worker gave up',
    '[Service]',
    'Type=oneshot',
    'ExecStart=/usr/local/bin/corral-report-failure',
    'CORRAL_UNIT',
    "cat > /etc/systemd/system/corral-worker.service <<'CORRAL_UNIT'",
    '[Unit]',
    'Description=corral worker',
    'After=network-online.target',
    'Wants=network-online.target',
    'StartLimitIntervalSec=600',
    `StartLimitBurst=${WORKER_START_BURST}`,
    'OnFailure=corral-worker-failed.service',
    '[Service]',
    'User=corral',
    'StateDirectory=corral',
    'LogsDirectory=corral',
    `StandardOutput=append:${WORKER_LOG_FILE}`,
    `StandardError=append:${WORKER_LOG_FILE}`,
    'EnvironmentFile=/etc/corral/worker.env',
    'Environment=CORRAL_CACHE_DIR=/var/lib/corral/cache',
    'ExecStart=/usr/local/bin/corral worker',
    'Restart=on-failure',
    'RestartSec=5',
    'RestartPreventExitStatus=0',
    'KillSignal=SIGTERM',
    'TimeoutStopSec=120',
    '[Install]',
    'WantedBy=multi-user.target',
    'CORRAL_UNIT',
    'systemctl daemon-reload',
    'systemctl enable --now corral-worker.service',
    'corral_signal 0 "corral worker started"',
    'echo "corral bootstrap: ready"',
  );
  return `${lines.join('\n')}\n`;
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
   * Container image started with docker (restart always, host network); for an ECR image docker
   * logs in to its registry first, with the instance role.
   * @default - none
   */
  readonly image?: string;
  /**
   * The corral a coordinator installs (required for `coordinator`).
   * @default - none
   */
  readonly artifact?: ArtifactLocation;
  /**
   * The cluster's stack outputs (QueueUrl, BucketName, Region, LogGroupName…), written on a
   * coordinator for `corral run --cluster` (required for `coordinator`).
   * @default - none
   */
  readonly outputs?: Readonly<Record<string, string>>;
  /**
   * The queue of each pool, in the spec's order, written on a coordinator as the outputs'
   * `PoolQueues` list (a list, not the stack output's JSON text: that text holds quotes a
   * deploy-time value cannot escape inside the file's JSON).
   * @default - none (one queue)
   */
  readonly poolQueues?: ReadonlyArray<{
    readonly pool: string;
    readonly queueUrl: string;
    readonly deadLetterQueueUrl: string;
  }>;
  /**
   * Where a coordinator reports readiness (cfn-signal).
   * @default - no signal
   */
  readonly signal?: SignalTarget;
}

/**
 * The startup script of a named instance. A `coordinator` gets the worker bootstrap's failure
 * trap, the pinned corral ({@link installCorral}), `/etc/corral/coordinator.env`, the cluster's
 * outputs in `/etc/corral/clusters/NAME.json` (so `corral run FILE --cluster NAME` works at once,
 * from any folder, for any user), `corral worker --check` against them, then signals readiness.
 * Then docker and the container if an image is set, then the user's script; a coordinator
 * signals success after those.
 */
export function instanceUserData(o: InstanceUserDataOptions): string {
  const coordinator = o.role === 'coordinator';
  if (coordinator && (!o.artifact || !o.outputs)) {
    throw new Error(`instance ${o.name}: a coordinator needs the artifact and the cluster outputs`);
  }
  const region = o.outputs?.Region ?? '';
  const lines = coordinator
    ? prelude({
        title: `corral instance ${o.name} (coordinator) of cluster ${o.clusterName}`,
        region,
        logGroupName: o.outputs!.LogGroupName ?? '',
        signal: o.signal,
      })
    : [
        '#!/bin/bash',
        'set -euo pipefail',
        `# corral instance ${o.name} of cluster ${o.clusterName}`,
        ...(o.image ? RETRY_FUNCTION : []),
      ];
  if (coordinator) {
    lines.push(
      'mkdir -p /etc/corral/clusters',
      "cat > /etc/corral/coordinator.env <<'CORRAL_ENV'",
      ...Object.entries(o.env ?? {}).map(([k, v]) => `${k}=${v}`),
      'CORRAL_ENV',
      `cat > /etc/corral/clusters/${o.clusterName}.json <<'CORRAL_OUTPUTS'`,
      JSON.stringify(
        { outputs: { ...o.outputs, ...(o.poolQueues ? { PoolQueues: o.poolQueues } : {}) } },
        null,
        2,
      ),
      'CORRAL_OUTPUTS',
      'chmod 644 /etc/corral/coordinator.env /etc/corral/clusters/*.json',
      "cat > /etc/profile.d/corral.sh <<'CORRAL_PROFILE'",
      `export AWS_REGION=${region}`,
      `export CORRAL_CLUSTER=${o.clusterName}`,
      'CORRAL_PROFILE',
      ...installCorral(o.artifact!, region),
      '# the queue, the bucket and the log group answer (with the instance role) before it is ready',
      `(export AWS_REGION=${shellQuote(region)}; corral worker --check --cluster ${shellQuote(o.clusterName)})`,
    );
  }
  if (o.image) {
    lines.push(
      '# the network may come up after boot (an Elastic IP is associated later): retry what needs it',
      "command -v docker >/dev/null || if command -v dnf >/dev/null; then corral_retry dnf install -y docker; else corral_retry sh -c 'apt-get update && apt-get install -y docker.io'; fi",
      'systemctl enable --now docker',
      ...ecrLogin(o.image),
      `corral_retry docker pull ${shellQuote(o.image)}`,
      `docker run -d --restart always --network host --name ${shellQuote(o.name)} ${shellQuote(o.image)}`,
      ...ecrLogout(o.image),
    );
  }
  if (o.script) {
    // The user's script runs as written, from its own file, so its shebang and `set` options apply.
    const body = o.script.endsWith('\n') ? o.script : `${o.script}\n`;
    lines.push(
      "cat > /var/lib/corral-startup.sh <<'CORRAL_SCRIPT'",
      body.slice(0, -1),
      'CORRAL_SCRIPT',
      'chmod 700 /var/lib/corral-startup.sh',
      `${body.startsWith('#!') ? '' : '/bin/bash '}/var/lib/corral-startup.sh`,
    );
  }
  if (coordinator) lines.push('corral_signal 0 "coordinator ready"', 'echo "corral bootstrap: ready"');
  return `${lines.join('\n')}\n`;
}
