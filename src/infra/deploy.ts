import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { type ClusterSpec, stackNameOf } from '../spec/cluster.js';
import { CommandFailed, UsageError } from '../spec/errors.js';
import { ClusterStack, imageOutputKeyOf, interfaceEndpointsOf, logGroupNameOf } from './cluster-stack.js';
import { databaseIdentifierOf } from './database.js';
import { type PlanReport, planCluster } from './plan.js';
import { type CostEstimate, estimateCost } from './prices.js';

/** Where `up` and `down` look for AWS credentials, and how they report. */
export interface AwsCallOptions {
  /**
   * Environment variables to read credentials and region from.
   * @default process.env
   */
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Home folder holding ~/.aws.
   * @default os.homedir()
   */
  readonly home?: string;
  /**
   * Where progress lines go.
   * @default - standard error
   */
  readonly log?: (line: string) => void;
}

/** Options of `up`. */
export interface UpOptions extends AwsCallOptions {
  /**
   * Folder relative paths of the spec are resolved from.
   * @default - the spec file's folder
   */
  readonly baseDir?: string;
  /**
   * Deploy even if the plan has unsuppressed cdk-nag errors.
   * @default false
   */
  readonly ignorePlanErrors?: boolean;
  /**
   * The plan of this spec, if the caller made it already (to show it): spares synthesizing and
   * checking the stack again before the deployment's own synthesis.
   * @default - planned here
   */
  readonly plan?: PlanReport;
  /**
   * Move named instances without `ami` to the latest image (replacing them and their disks).
   * @default false - they keep the image of the deployed stack
   */
  readonly updateImages?: boolean;
  /**
   * The deployed stack's outputs, when the caller read them already.
   * @default - read with CloudFormation DescribeStacks
   */
  readonly deployedOutputs?: Readonly<Record<string, string>> | null;
}

/**
 * The images named instances keep: each instance without `ami` whose deployed stack has its
 * `<Name>ImageId` output keeps that image.
 */
export function keptImages(
  spec: ClusterSpec,
  deployedOutputs: Readonly<Record<string, string>> | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const i of spec.instances) {
    const kept = deployedOutputs?.[imageOutputKeyOf(i.name)];
    if (!i.ami && kept && /^ami-[0-9a-f]{8,17}$/.test(kept)) out[i.name] = kept;
  }
  return out;
}

/**
 * Refuses an `up` that would replace the database: a cluster deployed by an earlier corral
 * has a database whose identifier CloudFormation generated (the first label of its
 * `DatabaseEndpoint` output); this corral names it `corral-NAME` (so that its exported logs'
 * log group can be made first), and a new name replaces the instance, and its data with it.
 */
export function checkDeployedDatabase(
  spec: ClusterSpec,
  deployedOutputs: Readonly<Record<string, string>> | undefined,
): void {
  const endpoint = deployedOutputs?.DatabaseEndpoint;
  if (!spec.database || !endpoint) return;
  const deployed = endpoint.split('.')[0]!;
  const wanted = databaseIdentifierOf(spec.name);
  if (deployed.toLowerCase() === wanted) return;
  throw new UsageError(
    'database',
    `the deployed database ${deployed} was named by CloudFormation; this corral names it ${wanted}, and the update would replace the instance and lose its data`,
    `dump it first (pg_dump -h ${endpoint}), then corral down and corral up, and restore; or keep the corral that deployed it`,
  );
}

/** What `up` returns. */
export interface UpResult {
  readonly stackName: string;
  /** Stack outputs: QueueUrl, DeadLetterQueueUrl, BucketName, Region, LogGroupName… */
  readonly outputs: Readonly<Record<string, string>>;
  readonly plan: PlanReport;
}

/** Options of `down`. */
export interface DownOptions extends AwsCallOptions {
  /**
   * Region of the cluster.
   * @default - AWS_REGION, else AWS_DEFAULT_REGION
   */
  readonly region?: string;
}

/**
 * Finds where AWS credentials would come from, without any network call: environment keys,
 * a profile, web identity, container credentials, or ~/.aws files. Undefined when none.
 * Instance-profile (IMDS) credentials are not probed; on EC2 set AWS_PROFILE or
 * CORRAL_AWS_IMDS=1 to declare them.
 */
export function findCredentialSource(opts: AwsCallOptions = {}): string | undefined {
  const env = opts.env ?? process.env;
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) return 'environment (AWS_ACCESS_KEY_ID)';
  if (env.AWS_PROFILE) return `profile ${env.AWS_PROFILE}`;
  if (env.AWS_WEB_IDENTITY_TOKEN_FILE && env.AWS_ROLE_ARN)
    return 'web identity (AWS_WEB_IDENTITY_TOKEN_FILE)';
  if (env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI || env.AWS_CONTAINER_CREDENTIALS_FULL_URI)
    return 'container credentials';
  if (env.CORRAL_AWS_IMDS === '1') return 'instance profile (CORRAL_AWS_IMDS=1)';
  const home = opts.home ?? os.homedir();
  const files = [
    env.AWS_SHARED_CREDENTIALS_FILE ?? path.join(home, '.aws', 'credentials'),
    env.AWS_CONFIG_FILE ?? path.join(home, '.aws', 'config'),
  ];
  const found = files.find((f) => existsSync(f));
  return found ? `file ${found}` : undefined;
}

/** Throws the `credentials` UsageError when no credentials can be found. */
export function requireCredentials(opts: AwsCallOptions = {}): string {
  const source = findCredentialSource(opts);
  if (!source) {
    throw new UsageError('credentials', 'no AWS credentials found', 'run aws configure or set AWS_PROFILE');
  }
  return source;
}

/** Throws the `budget.maxHourly` UsageError when the expected cost at full scale is above the budget. */
export function checkBudget(spec: ClusterSpec): CostEstimate {
  const cost = estimateCost(spec, interfaceEndpointsOf(spec).length);
  const max = spec.budget?.maxHourly;
  if (max === undefined) return cost;
  if (cost.unpriced.some((u) => !u.startsWith('region'))) {
    throw new UsageError(
      'budget.maxHourly',
      `cannot check the budget: no price for ${cost.unpriced.join(', ')}`,
      'use instance types from the price table (docs/cluster.md) or remove the budget',
    );
  }
  if (cost.peakHourly.expected > max) {
    throw new UsageError(
      'budget.maxHourly',
      `the cluster may cost $${cost.peakHourly.expected.toFixed(3)}/h at full scale (every pool at max on its most expensive type, expected spot), above the budget of $${max}/h`,
      'lower pools[].max, use cheaper instance types or more spot, or raise budget.maxHourly',
    );
  }
  return cost;
}

type ToolkitLib = typeof import('@aws-cdk/toolkit-lib');

async function toolkitOf(log: (line: string) => void) {
  const lib: ToolkitLib = await import('@aws-cdk/toolkit-lib');
  const toolkit = new lib.Toolkit({
    ioHost: {
      async notify(msg) {
        if (msg.level === 'error' || msg.level === 'warn' || msg.level === 'result' || msg.level === 'info') {
          log(msg.message);
        }
      },
      async requestResponse(msg) {
        // corral asks for confirmation itself (--yes) before calling the toolkit.
        return msg.defaultResponse;
      },
    },
    emojis: false,
    color: false,
  });
  return { lib, toolkit };
}

/**
 * Creates or updates the cluster stack. Checks the budget and the credentials before any
 * call to AWS, refuses a failing plan, then deploys with @aws-cdk/toolkit-lib.
 */
export async function up(spec: ClusterSpec, opts: UpOptions = {}): Promise<UpResult> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  checkBudget(spec);
  requireCredentials(opts);
  const plan = opts.plan ?? planCluster(spec, { baseDir: opts.baseDir });
  if (!plan.ok && !opts.ignorePlanErrors) {
    throw new UsageError(
      'suppressions',
      `the plan fails: ${plan.problems[0]}${plan.problems.length > 1 ? ` (and ${plan.problems.length - 1} more)` : ''}`,
      'run corral plan FILE, then fix the spec or add a suppression with a reason',
    );
  }
  const stackName = stackNameOf(spec.name);
  const deployedOutputs =
    opts.deployedOutputs === undefined
      ? await deployedOutputsOf(spec, opts)
      : (opts.deployedOutputs ?? undefined);
  checkDeployedDatabase(spec, deployedOutputs);
  const pinnedImages = opts.updateImages ? {} : keptImages(spec, deployedOutputs);
  for (const [name, image] of Object.entries(pinnedImages))
    log(`instance ${name} keeps image ${image} (up --update-images moves it to the latest)`);
  const { lib, toolkit } = await toolkitOf(log);
  const cx = await toolkit.fromAssemblyBuilder(
    async (props) => {
      const app = new App({ outdir: props.outdir, context: props.context, analyticsReporting: false });
      new ClusterStack(app, stackName, {
        spec,
        baseDir: opts.baseDir,
        pinnedImages,
        env: { account: spec.account ?? props.env.CDK_DEFAULT_ACCOUNT, region: spec.region },
      });
      return app.synth();
    },
    { clobberEnv: false },
  );
  // While CloudFormation waits for the hosts' readiness signals, show what failing hosts shipped.
  const { createLogsClient, resolveAwsSettings } = await import('../aws/clients.js');
  const { watchHostFailures } = await import('../aws/host-logs.js');
  const logs = await createLogsClient(resolveAwsSettings({ region: spec.region, env: opts.env }));
  const logGroupName = logGroupNameOf(spec.name);
  const watch = watchHostFailures({
    logs,
    logGroupName,
    since: Date.now() - 60_000,
    onLine: (l) => log(`host ${l.host}: ${l.message}`),
  });
  let result: Awaited<ReturnType<typeof toolkit.deploy>> | undefined;
  let failure: unknown;
  try {
    result = await toolkit.deploy(cx, {
      stacks: { strategy: lib.StackSelectionStrategy.PATTERN_MUST_MATCH, patterns: [stackName] },
    });
  } catch (err) {
    failure = err;
  } finally {
    await watch.stop();
    logs.destroy();
  }
  if (!result) throw new CommandFailed(deployFailure(stackName, logGroupName, failure, watch.lines.length));
  const deployed = result.stacks.find((s) => s.stackName === stackName);
  return { stackName, outputs: { ...(deployed?.outputs ?? {}) }, plan };
}

/** The outputs of the deployed cluster stack (CloudFormation DescribeStacks), undefined when it does not exist yet. */
export async function deployedOutputsOf(
  spec: ClusterSpec,
  opts: AwsCallOptions,
): Promise<Readonly<Record<string, string>> | undefined> {
  const { createCloudFormationClient, resolveAwsSettings } = await import('../aws/clients.js');
  const { describeClusterStack, stackLookupError } = await import('../aws/stacks.js');
  const settings = resolveAwsSettings({ region: spec.region, env: opts.env });
  const cfn = await createCloudFormationClient(settings);
  try {
    return (await describeClusterStack(cfn, spec.name))?.outputs;
  } catch (err) {
    throw stackLookupError(err, spec.name, settings.endpointUrl) ?? err;
  } finally {
    cfn.destroy();
  }
}

/** The one-line message of a deployment that failed, with where the hosts' reasons are. */
export function deployFailure(
  stackName: string,
  logGroupName: string,
  err: unknown,
  hostLines: number,
): string {
  const why = ((err as Error)?.message ?? String(err)).split('\n')[0];
  const hosts =
    hostLines > 0
      ? `; the hosts' bootstrap lines are printed above (log group ${logGroupName}, streams failure/INSTANCE-ID)`
      : `; if hosts did not report ready, see log group ${logGroupName} (streams failure/INSTANCE-ID) and the stack events`;
  const bootstrap = /bootstrap|has not been bootstrapped|CDKToolkit|SSM parameter \/cdk-bootstrap/i.test(why)
    ? `; the account needs the CDK's assets bucket once: npx cdk bootstrap aws://ACCOUNT/REGION`
    : '';
  return `up failed: stack ${stackName} was not deployed: ${why}${hosts}${bootstrap}`;
}

/**
 * Deletes the cluster stack `corral-<name>` and everything in it; the bucket is emptied and
 * deleted unless the spec asked to retain it.
 */
export async function down(name: string, opts: DownOptions = {}): Promise<void> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  if (!/^[a-z][a-z0-9-]{0,31}$/.test(name)) {
    throw new UsageError(
      'NAME',
      `"${name}" is not a cluster name`,
      'pass the name field of the cluster spec',
    );
  }
  const region = opts.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  if (!region) throw new UsageError('--region', 'no region given', 'pass --region or set AWS_REGION');
  requireCredentials(opts);
  const { lib, toolkit } = await toolkitOf(log);
  const stackName = stackNameOf(name);
  const cx = await toolkit.fromAssemblyBuilder(
    async (props) => {
      // Destroy needs only the stack's name and environment, not the spec.
      const app = new App({ outdir: props.outdir, context: props.context, analyticsReporting: false });
      new Stack(app, stackName, { stackName, env: { account: props.env.CDK_DEFAULT_ACCOUNT, region } });
      return app.synth();
    },
    { clobberEnv: false },
  );
  await toolkit.destroy(cx, {
    stacks: { strategy: lib.StackSelectionStrategy.PATTERN_MUST_MATCH, patterns: [stackName] },
  });
}
