import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  checkBudget,
  checkDeployedDatabase,
  deployedOutputsOf,
  down,
  findCredentialSource,
  keptImages,
  up,
} from '../src/infra/deploy.js';
import { type CfnTemplate, planCluster, synthCluster } from '../src/infra/plan.js';
import { EC2_ON_DEMAND, estimateCost } from '../src/infra/prices.js';
import { defineCluster } from '../src/spec/cluster.js';
import { UsageError } from '../src/spec/errors.js';
import { startQueryPeer } from './aws-query-peer.js';

const spec = defineCluster({
  name: 'nocreds',
  region: 'us-east-1',
  network: { azs: ['us-east-1a'] },
  pools: [{ name: 'cpu', instanceTypes: ['c6i.large'], max: 4 }],
});

function emptyHome(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'corral-home-'));
}

describe('up / down without AWS', () => {
  it('up without credentials throws the credentials UsageError and creates nothing', async () => {
    // GIVEN an environment with no AWS variables and an empty HOME
    const home = emptyHome();
    const cwd = process.cwd();
    const before = readdirSync(os.tmpdir()).filter((f) => f.startsWith('corral-synth-')).length;
    // WHEN
    const err = await up(spec, { env: { HOME: home }, home, log: () => {} }).catch((e: unknown) => e);
    // THEN
    assert.ok(err instanceof UsageError, String(err));
    assert.equal(err.field, 'credentials');
    assert.equal(err.problem, 'no AWS credentials found');
    assert.equal(err.fix, 'run aws configure or set AWS_PROFILE');
    assert.equal(existsSync(path.join(cwd, 'cdk.out')), false);
    assert.equal(readdirSync(home).length, 0);
    assert.equal(readdirSync(os.tmpdir()).filter((f) => f.startsWith('corral-synth-')).length, before);
  });

  it('down without credentials throws the same UsageError', async () => {
    const home = emptyHome();
    const err = await down('nocreds', {
      env: { HOME: home, AWS_REGION: 'us-east-1' },
      home,
      log: () => {},
    }).catch((e: unknown) => e);
    assert.ok(err instanceof UsageError);
    assert.equal(err.field, 'credentials');
  });

  it('down refuses a bad name and a missing region before looking for credentials', async () => {
    const home = emptyHome();
    const bad = await down('Bad_Name', { env: { HOME: home }, home }).catch((e: unknown) => e);
    assert.ok(bad instanceof UsageError && bad.field === 'NAME');
    const noRegion = await down('ok', { env: { HOME: home }, home }).catch((e: unknown) => e);
    assert.ok(noRegion instanceof UsageError && noRegion.field === '--region');
  });

  it('finds credentials in env, profile and ~/.aws files, offline', () => {
    const home = emptyHome();
    assert.equal(findCredentialSource({ env: {}, home }), undefined);
    assert.match(
      findCredentialSource({ env: { AWS_ACCESS_KEY_ID: 'AKIA', AWS_SECRET_ACCESS_KEY: 'x' }, home })!,
      /environment/,
    );
    assert.match(findCredentialSource({ env: { AWS_PROFILE: 'dev' }, home })!, /profile dev/);
    mkdirSync(path.join(home, '.aws'));
    writeFileSync(path.join(home, '.aws', 'credentials'), '[default]\n');
    assert.match(findCredentialSource({ env: {}, home })!, /credentials/);
  });

  it('up refuses a spec whose expected cost at full scale is above the budget, before anything else', async () => {
    // GIVEN a budget far below 4 × c6i.large
    const tight = defineCluster({
      name: 'tight',
      region: 'us-east-1',
      network: { azs: ['us-east-1a'] },
      pools: [{ name: 'cpu', instanceTypes: ['c6i.large'], max: 40, spot: { onDemandAbovePercent: 100 } }],
      budget: { maxHourly: 0.5 },
    });
    // WHEN / THEN
    assert.throws(
      () => checkBudget(tight),
      (e: unknown) => e instanceof UsageError && e.field === 'budget.maxHourly',
    );
    const err = await up(tight, { env: { AWS_PROFILE: 'x' }, log: () => {} }).catch((e: unknown) => e);
    assert.ok(err instanceof UsageError && err.field === 'budget.maxHourly', String(err));
    // A generous budget passes.
    const ok = defineCluster({ ...tight, budget: { maxHourly: 100 } } as never);
    assert.ok(checkBudget(ok).peakHourly.expected < 100);
  });

  it('the budget prices each pool on its most expensive allowed type, not its first', () => {
    // GIVEN a pool that may launch c6i.4xlarge, listed after t3.micro
    const mixed = defineCluster({
      name: 'mixed',
      region: 'us-east-1',
      network: { azs: ['us-east-1a'] },
      pools: [{ name: 'cpu', instanceTypes: ['t3.micro', 'c6i.4xlarge'], max: 10 }],
      budget: { maxHourly: 1 },
    });
    // WHEN / THEN: 10 × c6i.4xlarge at expected spot is far above $1/h
    assert.throws(
      () => checkBudget(mixed),
      (e: unknown) =>
        e instanceof UsageError && e.field === 'budget.maxHourly' && /most expensive type/.test(e.message),
    );
    const cost = estimateCost(mixed);
    const peak = cost.peakLines.find((l) => l.item.startsWith('pool cpu'));
    assert.match(peak?.item ?? '', /c6i\.4xlarge/);
    assert.ok(cost.peakHourly.onDemand >= 10 * EC2_ON_DEMAND['c6i.4xlarge']!);
    // and a type the table lacks makes the budget uncheckable, wherever it is listed
    const unknown = defineCluster({
      ...mixed,
      pools: [{ name: 'cpu', instanceTypes: ['t3.micro', 'zz9.huge'], max: 1 }],
    } as never);
    assert.throws(
      () => checkBudget(unknown),
      (e: unknown) => e instanceof UsageError && /no price for instance type zz9\.huge/.test(e.message),
    );
  });
  it('up deploys nothing when the plan it is given (the one corral up showed) fails; it does not plan again', async () => {
    const spec = defineCluster({ name: 'shown', region: 'us-east-1', network: { azs: ['us-east-1a'] } });
    const shown = planCluster(spec);
    assert.equal(shown.ok, true, shown.problems.join('; '));
    // the plan as shown, but failing: up must judge by it, not by a plan of its own (which passes)
    const failing = { ...shown, ok: false, problems: ['AwsSolutions-X1: a finding shown to the user'] };
    const err = await up(spec, { env: { AWS_PROFILE: 'x' }, plan: failing, log: () => {} }).catch(
      (e: unknown) => e,
    );
    assert.ok(err instanceof UsageError && err.field === 'suppressions', String(err));
    assert.match(err.message, /AwsSolutions-X1/);
  });
});

describe('a database deployed by an earlier corral', () => {
  it('up refuses to replace it: its identifier was generated, this corral names it corral-NAME', async () => {
    const spec = defineCluster({
      name: 'olddb',
      region: 'us-east-1',
      network: { azs: ['us-east-1a', 'us-east-1b'] },
      database: {},
    });
    // (the findings cdk-nag has on a database without suppressions are not what is tested)
    const generated = { DatabaseEndpoint: 'co1a2b3c4d5e6f.abcdefghijkl.us-east-1.rds.amazonaws.com' };
    const err = await up(spec, {
      env: { AWS_PROFILE: 'x' },
      deployedOutputs: generated,
      ignorePlanErrors: true,
      log: () => {},
    }).catch((e: unknown) => e);
    assert.ok(err instanceof UsageError && err.field === 'database', String(err));
    assert.match(err.message, /co1a2b3c4d5e6f .*corral-olddb.*replace the instance/);
    assert.match(err.fix ?? '', /pg_dump/);
    // the database this corral deployed, a cluster without one, a first up: nothing to refuse
    checkDeployedDatabase(spec, {
      DatabaseEndpoint: 'corral-olddb.abcdefghijkl.us-east-1.rds.amazonaws.com',
    });
    checkDeployedDatabase(spec, undefined);
    const noDatabase = defineCluster({
      name: 'olddb',
      region: 'us-east-1',
      network: { azs: ['us-east-1a', 'us-east-1b'] },
    });
    checkDeployedDatabase(noDatabase, generated);
  });
});

describe('named instances keep their image', () => {
  const spec = defineCluster({
    name: 'pinned',
    region: 'us-east-1',
    network: { azs: ['us-east-1a'] },
    instances: [{ name: 'head-node' }, { name: 'fixed', ami: 'ami-0fedcba9876543210' }, { name: 'new-one' }],
  });
  const instanceImage = (t: CfnTemplate, logicalPrefix: string) =>
    Object.entries(t.Resources).find(
      ([id, r]) => r.Type === 'AWS::EC2::Instance' && id.startsWith(logicalPrefix),
    )![1].Properties!.ImageId;

  it('the first up resolves the latest image and outputs it; the next up keeps the deployed one', async () => {
    // GIVEN a deployed stack (a CloudFormation peer) whose outputs hold the image head-node runs
    const query = await startQueryPeer();
    // the SDK reads credentials from the process environment (any will do for the peer)
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = 'peer';
    process.env.AWS_SECRET_ACCESS_KEY = 'peer';
    try {
      query.putStack('corral-pinned', {
        outputs: { HeadNodeImageId: 'ami-0123456789abcdef0', FixedImageId: 'ami-0fedcba9876543210' },
      });
      const env = {
        AWS_REGION: 'us-east-1',
        AWS_ENDPOINT_URL: query.endpoint,
        AWS_ACCESS_KEY_ID: 'x',
        AWS_SECRET_ACCESS_KEY: 'y',
      };
      // WHEN
      const deployed = await deployedOutputsOf(spec, { env });
      const kept = keptImages(spec, deployed);
      // THEN only an instance without ami and with a deployed image keeps it
      assert.deepEqual(kept, { 'head-node': 'ami-0123456789abcdef0' });
      assert.equal(
        await deployedOutputsOf(defineCluster({ ...spec, name: 'fresh' } as never), { env }),
        undefined,
      );
      // and the stack synthesized with it runs that image; the first up's follows the public parameter
      const first = synthCluster(spec).template;
      const next = synthCluster(spec, { pinnedImages: kept }).template;
      assert.deepEqual(
        instanceImage(first, 'Instancesheadnode') as object,
        first.Outputs!.HeadNodeImageId && (first.Outputs!.HeadNodeImageId as { Value: unknown }).Value,
      );
      assert.match(JSON.stringify(instanceImage(first, 'Instancesheadnode')), /"Ref":"SsmParameterValue/);
      assert.equal(instanceImage(next, 'Instancesheadnode'), 'ami-0123456789abcdef0');
      assert.equal((next.Outputs!.HeadNodeImageId as { Value: unknown }).Value, 'ami-0123456789abcdef0');
      assert.equal(instanceImage(next, 'Instancesfixed'), 'ami-0fedcba9876543210');
      assert.match(JSON.stringify(instanceImage(next, 'Instancesnewone')), /"Ref":"SsmParameterValue/);
      // plan says which image each instance runs
      const plan = planCluster(spec);
      assert.match(
        plan.images['head-node']!.parameter ?? '',
        /^\/aws\/service\/ami-amazon-linux-latest\/al2023/,
      );
      assert.deepEqual(plan.images.fixed, { ami: 'ami-0fedcba9876543210' });
    } finally {
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
      await query.stop();
    }
  });
});
