import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { App } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { type ClusterSpec, stackNameOf } from '../spec/cluster.js';
import { ClusterStack, interfaceEndpointsOf } from './cluster-stack.js';
import { type CostEstimate, estimateCost } from './prices.js';

/** Account used when synthesizing offline for a plan (no credentials are read). */
export const PLAN_ACCOUNT = '123456789012';

/** CloudFormation quotas a plan checks. */
export const CFN_LIMITS = {
  /** Resources per stack. */
  resources: 500,
  /** Template body size when uploaded through S3 (the toolkit does this above 50 KiB). */
  templateBytes: 1_000_000,
  /** Outputs per stack. */
  outputs: 200,
  /** Parameters per stack. */
  parameters: 200,
} as const;

/** Options of a synthesis. */
export interface SynthOptions {
  /**
   * Account of the stack environment.
   * @default - spec.account, else PLAN_ACCOUNT
   */
  readonly account?: string;
  /**
   * Folder relative paths of the spec are resolved from.
   * @default - the spec file's folder
   */
  readonly baseDir?: string;
  /**
   * Images named instances keep (see ClusterStackProps.pinnedImages).
   * @default - none
   */
  readonly pinnedImages?: Readonly<Record<string, string>>;
  /**
   * Folder the cloud assembly is synthesized into and kept, as `cdk synth` leaves it: the stack's
   * template as `<stackName>.template.json`, its file assets (`asset.*`), `manifest.json` and
   * `tree.json`. Created if missing; files already in it are overwritten, others are left alone.
   * @default - a temporary folder, removed once synthesized
   */
  readonly outdir?: string;
}

/** A synthesized cluster: the construct tree and its template. */
export interface SynthesizedCluster {
  readonly app: App;
  readonly stack: ClusterStack;
  /** The CloudFormation template as JSON. */
  readonly template: CfnTemplate;
  /**
   * Path of the template file in `SynthOptions.outdir`.
   * @default - none: synthesized into a temporary folder, already removed
   */
  readonly templateFile?: string;
  /** Warnings and errors the CDK attached to constructs. */
  readonly messages: readonly { level: string; path: string; text: string }[];
}

/** The parts of a CloudFormation template a plan reads. */
export interface CfnTemplate {
  Resources: Record<string, { Type: string; Properties?: Record<string, unknown>; Metadata?: unknown }>;
  Outputs?: Record<string, unknown>;
  Parameters?: Record<string, unknown>;
  [key: string]: unknown;
}

/**
 * Synthesizes the cluster stack in-process, offline, into `opts.outdir` or a temporary folder.
 *
 * aws-cdk-lib's own CloudFormation schema validation (a WASM validator run on every synth unless
 * CDK_VALIDATION=false) is skipped here unless CDK_VALIDATION is set: it was 5 s of CPU of a 6 s
 * plan, and nothing it reports reaches the plan (cdk-nag and the limits are checked below).
 * `corral up` still runs it when it synthesizes the stack it deploys.
 */
export function synthCluster(spec: ClusterSpec, opts: SynthOptions = {}): SynthesizedCluster {
  const outdir = opts.outdir ?? mkdtempSync(path.join(os.tmpdir(), 'corral-synth-'));
  const validation = process.env.CDK_VALIDATION;
  if (validation === undefined) process.env.CDK_VALIDATION = 'false';
  try {
    const app = new App({ outdir, analyticsReporting: false });
    const stack = new ClusterStack(app, stackNameOf(spec.name), {
      spec,
      baseDir: opts.baseDir,
      pinnedImages: opts.pinnedImages,
      env: { account: opts.account ?? spec.account ?? PLAN_ACCOUNT, region: spec.region },
    });
    const assembly = app.synth();
    const artifact = assembly.getStackByName(stack.stackName);
    const messages = artifact.messages.map((m) => ({
      level: String(m.level),
      path: m.id,
      text: typeof m.entry.data === 'string' ? m.entry.data : JSON.stringify(m.entry.data),
    }));
    return {
      app,
      stack,
      template: artifact.template as CfnTemplate,
      templateFile: opts.outdir === undefined ? undefined : artifact.templateFullPath,
      messages,
    };
  } finally {
    if (validation === undefined) delete process.env.CDK_VALIDATION;
    if (opts.outdir === undefined) rmSync(outdir, { recursive: true, force: true });
  }
}

/** One inbound rule of a security group. */
export interface IngressRule {
  /** Logical id of the security group. */
  readonly group: string;
  readonly protocol: string;
  readonly fromPort?: number;
  readonly toPort?: number;
  /** `cidr:<block>` or `sg:<logical id>` (`sg:self` for the group itself). */
  readonly source: string;
  readonly description?: string;
}

/** One statement of an IAM policy (identity) or a resource policy. */
export interface IamStatement {
  /** `identity` for role policies, `resource` for bucket, queue and topic policies. */
  readonly kind: 'identity' | 'resource';
  /** Logical id of the policy, role or resource policy. */
  readonly policy: string;
  readonly effect: string;
  readonly actions: readonly string[];
  readonly resources: readonly string[];
  readonly principals?: readonly string[];
  readonly condition?: unknown;
}

/** One cdk-nag AwsSolutions finding. */
export interface NagFinding {
  /** Rule id, e.g. `AwsSolutions-IAM5`. */
  readonly ruleId: string;
  /** Finding detail of rules that report several, e.g. `Resource::*`. */
  readonly detail?: string;
  readonly level: 'error' | 'warning';
  /** Construct path of the resource. */
  readonly resourcePath: string;
  readonly description: string;
  readonly suppressed: boolean;
  /** Why it is accepted, when suppressed. */
  readonly reason?: string;
  /** Who accepted it: the spec's suppressions, or corral itself. */
  readonly suppressedBy?: 'spec' | 'corral';
}

/** What `corral plan` reports. */
export interface PlanReport {
  readonly cluster: string;
  readonly stackName: string;
  readonly region: string;
  readonly account: string;
  /** False when the plan fails: unsuppressed cdk-nag errors, exceeded limits or CDK errors. */
  readonly ok: boolean;
  /** Why the plan fails, one line each. */
  readonly problems: readonly string[];
  readonly resources: { readonly total: number; readonly byType: Readonly<Record<string, number>> };
  readonly ingress: readonly IngressRule[];
  readonly iam: readonly IamStatement[];
  readonly nag: {
    readonly errors: number;
    readonly warnings: number;
    readonly suppressed: number;
    readonly findings: readonly NagFinding[];
  };
  readonly limits: {
    readonly resources: { readonly used: number; readonly max: number };
    readonly templateBytes: { readonly used: number; readonly max: number };
    readonly outputs: { readonly used: number; readonly max: number };
    readonly parameters: { readonly used: number; readonly max: number };
  };
  readonly cost: CostEstimate;
  /** Names of the stack outputs. */
  readonly outputs: readonly string[];
  /** CDK warnings attached to constructs. */
  readonly warnings: readonly string[];
  /**
   * The image of each named instance: its `ami`, or the public parameter it is resolved from at
   * first `up` (then kept: `up --update-images` moves it).
   */
  readonly images: Readonly<Record<string, { readonly ami?: string; readonly parameter?: string }>>;
  /** The corral every host installs (`up` uploads it as a CDK file asset), pinned by its sha256. */
  readonly workerArtifact: {
    readonly version: string;
    readonly sha256: string;
    readonly bytes: number;
    /** Platform of its native parts (`linux-x64-115`); other hosts compile them at boot. */
    readonly nativePlatform: string;
  };
}

/** A cdk-nag suppression: a rule id, a reason, and optionally which findings or paths it covers. */
export interface NagSuppression {
  readonly id: string;
  readonly reason: string;
  /** Finding details (exact) or construct-path substrings; strings or patterns. */
  readonly appliesTo?: readonly (string | RegExp)[];
  /** Only resources whose construct path matches. */
  readonly path?: RegExp;
}

/**
 * Findings corral accepts for every cluster, each for a resource corral itself shapes that way.
 * They are reported as suppressed, with the reason, so nothing is hidden.
 */
export const BUILTIN_SUPPRESSIONS: readonly NagSuppression[] = [
  {
    id: 'AwsSolutions-IAM5',
    appliesTo: ['Resource::*'],
    path: /\/SessionManager\/Resource$/,
    reason:
      'SSM Session Manager actions and ecr:GetAuthorizationToken (hosts of an ECR image) support no resource-level permissions',
  },
  {
    id: 'AwsSolutions-IAM5',
    appliesTo: [
      /^Resource::<StorageBucket[A-F0-9]{8}\.Arn>\/\*$/,
      /^Resource::<StorageBucket[A-F0-9]{8}\.Arn>\/jobs\/\*\/attempts\/\*$/,
      /^Resource::<StorageBucket[A-F0-9]{8}\.Arn>\/detached\/\*$/,
    ],
    path: /\/ClusterData\/Resource$/,
    reason:
      'workers read and write any object key of their own cluster bucket, and nothing else; they delete only attempt uploads (jobs/*/attempts/*) and the records of detached runs they ended (detached/*)',
  },
  {
    id: 'AwsSolutions-IAM5',
    appliesTo: [/^Resource::arn:aws[a-z-]*:s3:::[a-z0-9.-]+\/([^*?]+\/)?\*$/],
    path: /\/DataBuckets\/Resource$/,
    reason:
      'workers only read (s3:GetObject) the objects below each bucket or key prefix the spec lists in dataBuckets',
  },
  {
    id: 'AwsSolutions-IAM5',
    appliesTo: ['Resource::*', /^Action::ecs:/],
    path: /\/PoolRole-[^/]+\/Role\/DefaultPolicy\/Resource$/,
    reason:
      'the ECS agent of a capacity: ecs host registers and polls its own cluster (conditioned on it where ECS allows) and discovers its endpoint, which has no resource',
  },
  {
    id: 'AwsSolutions-IAM5',
    appliesTo: [
      'Resource::*',
      /^Resource::arn:<AWS::Partition>:autoscaling:[^:]+:[^:]+:autoScalingGroup:\*:autoScalingGroupName\/<Pool[A-Za-z0-9]+GroupASG[A-F0-9]{8}>$/,
    ],
    path: /\/Pool-[^/]+\/ScaleIn\/Resource$/,
    reason:
      "a pool's worker sets scale-in protection on its host and terminates it through its own Auto Scaling group, named in the ARN (the group's id is its `*`); the describes it needs first support no resource-level permissions",
  },
  {
    id: 'AwsSolutions-EC29',
    path: /\/Instances\/[^/]+\/Resource$/,
    reason:
      'named instances are declared in the spec and must stay deletable by corral down, so no termination protection',
  },
  {
    id: 'AwsSolutions-EC26',
    path: /\/Pool-[^/]+\/Group\/ASG$/,
    reason:
      'the launch template encrypts the root volume; cdk-nag does not follow a MixedInstancesPolicy launch template',
  },
];

function matches(
  s: NagSuppression,
  ruleId: string,
  detail: string | undefined,
  resourcePath: string,
): boolean {
  if (s.id !== ruleId && s.id !== (detail ? `${ruleId}[${detail}]` : ruleId)) return false;
  if (s.path && !s.path.test(resourcePath)) return false;
  if (!s.appliesTo) return true;
  return s.appliesTo.some((a) =>
    typeof a === 'string'
      ? a === detail || resourcePath.includes(a)
      : a.test(detail ?? '') || a.test(resourcePath),
  );
}

/** Runs the cdk-nag AwsSolutions pack over the stack and classifies each finding. */
export function nagFindings(stack: ClusterStack, spec: ClusterSpec): NagFinding[] {
  const report = new AwsSolutionsChecks().validateScope(stack);
  const out: NagFinding[] = [];
  for (const v of report.violations) {
    const m = /^([^[]+)(?:\[(.*)\])?$/.exec(v.ruleName)!;
    const ruleId = m[1]!;
    const detail = m[2];
    for (const r of v.violatingResources) {
      const resourcePath = r.constructPath ?? '';
      const fromSpec = spec.suppressions.find((s) => matches(s, ruleId, detail, resourcePath));
      const builtin = fromSpec
        ? undefined
        : BUILTIN_SUPPRESSIONS.find((s) => matches(s, ruleId, detail, resourcePath));
      const by = fromSpec ?? builtin;
      out.push({
        ruleId,
        detail,
        level: v.severity === 'error' ? 'error' : 'warning',
        resourcePath,
        description: v.description,
        suppressed: by !== undefined,
        reason: by?.reason,
        suppressedBy: fromSpec ? 'spec' : builtin ? 'corral' : undefined,
      });
    }
  }
  return out.sort((a, b) => Number(a.suppressed) - Number(b.suppressed) || a.ruleId.localeCompare(b.ruleId));
}

/** Renders a CloudFormation value (with intrinsics) as a short string: `<Logical.Attr>`, `<Logical>`. */
export function renderValue(v: unknown): string {
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return v.map(renderValue).join(',');
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if ('Ref' in o) return `<${String(o.Ref)}>`;
    if ('Fn::GetAtt' in o) return `<${(o['Fn::GetAtt'] as unknown[]).map(String).join('.')}>`;
    if ('Fn::Join' in o) {
      const [sep, parts] = o['Fn::Join'] as [string, unknown[]];
      return parts.map(renderValue).join(sep);
    }
    if ('Fn::ImportValue' in o) return `<import ${renderValue(o['Fn::ImportValue'])}>`;
  }
  return JSON.stringify(v);
}

const list = (v: unknown): unknown[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** Every inbound rule of every security group in a template. */
export function ingressRules(template: CfnTemplate): IngressRule[] {
  const out: IngressRule[] = [];
  const push = (group: string, r: Record<string, unknown>) => {
    const srcSg = r.SourceSecurityGroupId as unknown;
    let source: string;
    if (r.CidrIp !== undefined) source = `cidr:${renderValue(r.CidrIp)}`;
    else if (r.CidrIpv6 !== undefined) source = `cidr:${renderValue(r.CidrIpv6)}`;
    else if (srcSg !== undefined) {
      const id = renderValue(srcSg)
        .replace(/^<|>$/g, '')
        .replace(/\.GroupId$/, '');
      source = id === group ? 'sg:self' : `sg:${id}`;
    } else if (r.SourcePrefixListId !== undefined)
      source = `prefix-list:${renderValue(r.SourcePrefixListId)}`;
    else source = 'unknown';
    out.push({
      group,
      protocol: String(r.IpProtocol),
      fromPort: r.FromPort as number | undefined,
      toPort: r.ToPort as number | undefined,
      source,
      description: r.Description as string | undefined,
    });
  };
  for (const [id, res] of Object.entries(template.Resources)) {
    if (res.Type === 'AWS::EC2::SecurityGroup') {
      for (const r of list(res.Properties?.SecurityGroupIngress)) push(id, r as Record<string, unknown>);
    } else if (res.Type === 'AWS::EC2::SecurityGroupIngress') {
      const p = res.Properties ?? {};
      const group = renderValue(p.GroupId)
        .replace(/^<|>$/g, '')
        .replace(/\.GroupId$/, '');
      push(group, p);
    }
  }
  return out;
}

/** Every statement of every identity and resource policy in a template. */
export function iamStatements(template: CfnTemplate): IamStatement[] {
  const out: IamStatement[] = [];
  const add = (kind: IamStatement['kind'], policy: string, doc: unknown) => {
    for (const s of list((doc as { Statement?: unknown })?.Statement)) {
      const st = s as Record<string, unknown>;
      const principal = st.Principal as Record<string, unknown> | string | undefined;
      out.push({
        kind,
        policy,
        effect: String(st.Effect),
        actions: list(st.Action).map(renderValue),
        resources: list(st.Resource).map(renderValue),
        principals:
          principal === undefined
            ? undefined
            : typeof principal === 'string'
              ? [principal]
              : Object.entries(principal).flatMap(([k, v]) => list(v).map((x) => `${k}:${renderValue(x)}`)),
        condition: st.Condition,
      });
    }
  };
  for (const [id, res] of Object.entries(template.Resources)) {
    const p = res.Properties ?? {};
    if (res.Type === 'AWS::IAM::Policy' || res.Type === 'AWS::IAM::ManagedPolicy')
      add('identity', id, p.PolicyDocument);
    else if (res.Type === 'AWS::IAM::Role') {
      for (const pol of list(p.Policies))
        add(
          'identity',
          `${id}/${(pol as { PolicyName: string }).PolicyName}`,
          (pol as { PolicyDocument: unknown }).PolicyDocument,
        );
      for (const arn of list(p.ManagedPolicyArns)) {
        out.push({
          kind: 'identity',
          policy: id,
          effect: 'Allow',
          actions: [`managed:${renderValue(arn)}`],
          resources: [],
        });
      }
    } else if (
      ['AWS::S3::BucketPolicy', 'AWS::SQS::QueuePolicy', 'AWS::SNS::TopicPolicy'].includes(res.Type)
    ) {
      add('resource', id, p.PolicyDocument);
    }
  }
  return out;
}

/** Builds the plan report of an already synthesized cluster (so tests can share one synthesis). */
export function planFromSynth(spec: ClusterSpec, synth: SynthesizedCluster): PlanReport {
  const { template, stack } = synth;
  const byType: Record<string, number> = {};
  for (const r of Object.values(template.Resources)) byType[r.Type] = (byType[r.Type] ?? 0) + 1;
  const total = Object.keys(template.Resources).length;
  const templateBytes = Buffer.byteLength(JSON.stringify(template));
  const outputs = Object.keys(template.Outputs ?? {});
  const parameters = Object.keys(template.Parameters ?? {}).length;
  const findings = nagFindings(stack, spec);
  const open = findings.filter((f) => !f.suppressed);
  const errors = open.filter((f) => f.level === 'error');
  const problems: string[] = [];
  for (const f of errors) {
    problems.push(
      `cdk-nag ${f.ruleId}${f.detail ? `[${f.detail}]` : ''} on ${f.resourcePath}: ${f.description}`,
    );
  }
  if (total > CFN_LIMITS.resources)
    problems.push(`${total} resources, more than the CloudFormation limit of ${CFN_LIMITS.resources}`);
  if (templateBytes > CFN_LIMITS.templateBytes)
    problems.push(`template is ${templateBytes} bytes, more than ${CFN_LIMITS.templateBytes}`);
  if (outputs.length > CFN_LIMITS.outputs)
    problems.push(`${outputs.length} outputs, more than ${CFN_LIMITS.outputs}`);
  if (parameters > CFN_LIMITS.parameters)
    problems.push(`${parameters} parameters, more than ${CFN_LIMITS.parameters}`);
  for (const m of synth.messages) if (m.level === 'error') problems.push(`CDK error on ${m.path}: ${m.text}`);
  const a = stack.workerArtifactInfo;
  const images: Record<string, { ami?: string; parameter?: string }> = {};
  for (const [name, id] of stack.staticInstances?.imageIds ?? []) {
    const ref = stack.resolve(id) as { Ref?: string } | string;
    const param = typeof ref === 'object' && ref.Ref ? template.Parameters?.[ref.Ref] : undefined;
    images[name] =
      typeof ref === 'string'
        ? { ami: ref }
        : { parameter: String((param as { Default?: unknown })?.Default ?? ref.Ref) };
  }
  return {
    images,
    workerArtifact: {
      version: a.version,
      sha256: a.sha256,
      bytes: a.bytes,
      nativePlatform: a.nativePlatform,
    },
    cluster: spec.name,
    stackName: stack.stackName,
    region: stack.region,
    account: stack.account,
    ok: problems.length === 0,
    problems,
    resources: { total, byType },
    ingress: ingressRules(template),
    iam: iamStatements(template),
    nag: {
      errors: errors.length,
      warnings: open.filter((f) => f.level === 'warning').length,
      suppressed: findings.length - open.length,
      findings,
    },
    limits: {
      resources: { used: total, max: CFN_LIMITS.resources },
      templateBytes: { used: templateBytes, max: CFN_LIMITS.templateBytes },
      outputs: { used: outputs.length, max: CFN_LIMITS.outputs },
      parameters: { used: parameters, max: CFN_LIMITS.parameters },
    },
    cost: estimateCost(spec, interfaceEndpointsOf(spec).length),
    outputs,
    warnings: synth.messages.filter((m) => m.level === 'warning').map((m) => `${m.path}: ${m.text}`),
  };
}

/**
 * Synthesizes offline (no credentials), runs cdk-nag, checks limits and prices the spec. With
 * `opts.outdir`, the cloud assembly (template included) is kept in that folder.
 */
export function planCluster(spec: ClusterSpec, opts: SynthOptions = {}): PlanReport {
  return planFromSynth(spec, synthCluster(spec, opts));
}

const usd = (v: number) => `$${v < 10 ? v.toFixed(3) : v.toFixed(2)}`;

/** Renders a plan for humans. */
export function formatPlan(r: PlanReport): string {
  const out: string[] = [];
  out.push(`corral plan: cluster ${r.cluster} → stack ${r.stackName} in ${r.region}`);
  const w = r.workerArtifact;
  out.push(
    `Hosts install corral ${w.version} from the worker artifact: ${(w.bytes / 2 ** 20).toFixed(1)} MiB, sha256 ${w.sha256}, native parts for ${w.nativePlatform} (up uploads it to the CDK assets bucket)`,
  );
  for (const [name, i] of Object.entries(r.images)) {
    out.push(
      i.ami
        ? `Instance ${name} runs image ${i.ami}`
        : `Instance ${name} runs the image ${i.parameter} names at its first up, then keeps it (up --update-images moves it to the latest)`,
    );
  }
  out.push('', `Resources (${r.resources.total}):`);
  for (const [type, n] of Object.entries(r.resources.byType).sort(([a], [b]) => a.localeCompare(b))) {
    out.push(`  ${String(n).padStart(4)}  ${type}`);
  }
  out.push('', 'Security: inbound rules');
  for (const i of r.ingress) {
    const ports =
      i.fromPort === undefined
        ? 'all'
        : i.fromPort === i.toPort
          ? `${i.fromPort}`
          : `${i.fromPort}-${i.toPort}`;
    out.push(
      `  ${i.group}  ${i.protocol}/${ports}  from ${i.source}${i.description ? `  (${i.description})` : ''}`,
    );
  }
  out.push('', 'Security: IAM statements');
  for (const s of r.iam) {
    const who = s.principals ? `  principals ${s.principals.join(', ')}` : '';
    const cond = s.condition ? `  if ${JSON.stringify(s.condition)}` : '';
    out.push(
      `  [${s.kind}] ${s.policy}: ${s.effect} ${s.actions.join(', ')} on ${s.resources.join(', ') || '-'}${who}${cond}`,
    );
  }
  out.push(
    '',
    `cdk-nag AwsSolutions: ${r.nag.errors} errors, ${r.nag.warnings} warnings, ${r.nag.suppressed} suppressed`,
  );
  for (const f of r.nag.findings) {
    const id = `${f.ruleId}${f.detail ? `[${f.detail}]` : ''}`;
    const state = f.suppressed ? `suppressed by ${f.suppressedBy}: ${f.reason}` : f.description;
    out.push(
      `  ${f.suppressed ? 'ok  ' : f.level === 'error' ? 'ERR ' : 'warn'} ${id}  ${f.resourcePath}  — ${state}`,
    );
  }
  const l = r.limits;
  out.push(
    '',
    'CloudFormation limits:',
    `  resources ${l.resources.used}/${l.resources.max}, template ${l.templateBytes.used}/${l.templateBytes.max} bytes, outputs ${l.outputs.used}/${l.outputs.max}, parameters ${l.parameters.used}/${l.parameters.max}`,
  );
  const c = r.cost;
  out.push('', `Cost (${c.region}, ${c.source}, ${c.date}):`);
  for (const line of c.lines) {
    out.push(
      `  ${usd(line.onDemandHourly).padStart(9)}/h on-demand  ${usd(line.expectedHourly).padStart(9)}/h expected  ${line.item}`,
    );
  }
  out.push(
    `  hourly:  ${usd(c.hourly.onDemand)} on-demand, ${usd(c.hourly.expected)} expected with spot`,
    `  monthly: ${usd(c.monthly.onDemand)} on-demand, ${usd(c.monthly.expected)} expected with spot`,
    `  at max:  ${usd(c.peakHourly.expected)}/h expected, ${usd(c.peakHourly.onDemand)}/h worst case (every pool at max, on its most expensive type, all on-demand)`,
    `  idle:    ${usd(c.idleHourly.expected)}/h expected with no work (pools at min, plus endpoints, NAT, named instances, database)`,
  );
  if (c.unpriced.length) out.push(`  not priced: ${c.unpriced.join(', ')}`);
  out.push('  (usage-based S3, SQS, data transfer and CloudWatch charges are not included)');
  if (r.warnings.length) {
    out.push('', 'CDK warnings:');
    for (const w of r.warnings) out.push(`  ${w}`);
  }
  out.push('', r.ok ? 'Plan OK.' : `Plan FAILED:\n${r.problems.map((p) => `  - ${p}`).join('\n')}`);
  return `${out.join('\n')}\n`;
}
