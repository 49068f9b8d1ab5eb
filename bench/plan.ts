/**
 * Target 5: `corral plan --json` of a 1,000-worker, 3-AZ, 3-peer cluster spec, cdk-nag included,
 * offline. Reports the wall time and the CloudFormation limits the plan checks (resources per
 * stack, template size). The peer is the plan of the smallest cluster (1 worker, 1 AZ, no peer)
 * in the same run: how much the size of the cluster costs over the fixed cost of a synthesis.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { type Bench, CLI, fmtMs, fmtX, interleaved, type Row, scratch, timeRun } from './lib.js';

const BIG = `name: bench-1000
region: us-west-2
network:
  cidr: 10.0.0.0/16
  azs: [us-west-2a, us-west-2b, us-west-2c]
pools:
  - name: cpu
    instanceTypes: [c6i.xlarge, c5.xlarge, m6i.xlarge]
    min: 0
    max: 1000
    desired: 10
    spot: { onDemandBase: 1, onDemandAbovePercent: 20 }
bucket:
  versioned: true
peering:
  - vpcId: vpc-0a1b2c3d4e5f60718
    cidr: 172.31.0.0/16
    routeTableIds: [rtb-0a1b2c3d4e5f60718, rtb-0a1b2c3d4e5f60719]
  - vpcId: vpc-0f1e2d3c4b5a69788
    cidr: 192.168.0.0/20
    region: us-east-1
    ports: [443]
  - vpcId: vpc-0123456789abcdef0
    cidr: 10.50.0.0/16
    routeTableIds: [rtb-0123456789abcdef0]
monitoring:
  alarmEmail: ops@example.com
`;

const SMALL = `name: bench-1
region: us-west-2
network:
  cidr: 10.0.0.0/16
  azs: [us-west-2a]
pools:
  - name: cpu
    instanceTypes: [c6i.xlarge]
    min: 0
    max: 1
`;

interface PlanJson {
  ok: boolean;
  problems: string[];
  resources: { total: number };
  limits: { resources: { used: number; max: number }; templateBytes: { used: number; max: number } };
  nag: { errors: number; warnings: number; suppressed: number };
}

export const run: Bench = async (ctx) => {
  const dir = scratch(ctx, 'plan');
  writeFileSync(path.join(dir, 'big.yaml'), BIG);
  writeFileSync(path.join(dir, 'small.yaml'), SMALL);
  const plan = async (file: string) => {
    const r = await timeRun(process.execPath, [CLI, 'plan', file, '--json'], {
      cwd: dir,
      timeoutMs: 300_000,
    });
    let json: PlanJson | undefined;
    try {
      json = JSON.parse(r.stdout) as PlanJson;
    } catch {
      throw new Error(`corral plan ${file} printed no JSON (exit ${r.code})\n${r.stderr.slice(-2000)}`);
    }
    ctx.log(`  plan ${file}: ${fmtMs(r.ms)}, ${json.resources.total} resources`);
    return { ...r, json };
  };
  const reps = ctx.size === 'full' ? ctx.reps : 1;
  ctx.log(`plan: 1,000-worker 3-AZ 3-peer spec vs 1-worker spec × ${reps}`);
  const res = await interleaved(
    reps,
    { small: () => plan('small.yaml'), big: () => plan('big.yaml') },
    (v) => v.ms,
  );
  const b = res.big.best;
  const s = res.small.best;
  const lim = b.json.limits;
  const cmd = 'corral plan big.yaml --json (pool max 1000, 3 AZs, 3 peers; cdk-nag AwsSolutions)';
  const rows: Row[] = [
    {
      id: '5a',
      what: 'plan of a 1,000-worker, 3-AZ, 3-peer cluster (synth + cdk-nag)',
      corral: fmtMs(b.ms),
      peer: `plan of a 1-worker, 1-AZ cluster: ${fmtMs(s.ms)}`,
      ratio: `${fmtX(b.ms / s.ms)} the smallest plan's time`,
      target: '<5 s',
      status: b.ms < 5000 ? 'met' : 'missed',
      command: cmd,
      note: `plan ok: ${b.json.ok}${b.json.problems.length ? ` (${b.json.problems.join('; ')})` : ''}; nag ${b.json.nag.errors} errors, ${b.json.nag.warnings} warnings, ${b.json.nag.suppressed} suppressed`,
    },
    {
      id: '5b',
      what: 'CloudFormation resources per stack',
      corral: String(lim.resources.used),
      peer: `limit ${lim.resources.max}`,
      ratio: `${fmtX(lim.resources.used / lim.resources.max)} of the limit`,
      target: `≤${lim.resources.max}`,
      status: lim.resources.used <= lim.resources.max ? 'met' : 'missed',
      command: cmd,
    },
    {
      id: '5c',
      what: 'CloudFormation template size',
      corral: `${(lim.templateBytes.used / 1024).toFixed(1)} KiB`,
      peer: `limit ${(lim.templateBytes.max / 1000).toFixed(0)} kB (S3 upload)`,
      ratio: `${fmtX(lim.templateBytes.used / lim.templateBytes.max)} of the limit`,
      target: `≤${lim.templateBytes.max} bytes`,
      status: lim.templateBytes.used <= lim.templateBytes.max ? 'met' : 'missed',
      command: cmd,
    },
  ];
  return rows;
};
