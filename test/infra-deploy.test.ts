import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { checkBudget, down, findCredentialSource, up } from '../src/infra/deploy.js';
import { planCluster } from '../src/infra/plan.js';
import { defineCluster } from '../src/spec/cluster.js';
import { UsageError } from '../src/spec/errors.js';

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
