import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { ROOT } from './helpers.js';

/**
 * The package's two entry points, imported by name from the built package as a user's code would
 * (`corral` and `corral/cluster`), in a child process of its own.
 */
function runAsUser(code: string): unknown {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', code], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, CDK_VALIDATION: 'false' },
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

describe('package API', () => {
  it('corral/cluster: a CDK app holds a corral cluster beside its own stack; plan, up, down and the cluster run are exported', () => {
    const result = runAsUser(`
      import { App, Stack } from 'aws-cdk-lib';
      import * as sqs from 'aws-cdk-lib/aws-sqs';
      import * as cluster from 'corral/cluster';
      const app = new App({ outdir: (await import('node:fs')).mkdtempSync((await import('node:os')).tmpdir() + '/corral-api-') });
      const mine = new Stack(app, 'mine', { env: { account: '123456789012', region: 'us-east-1' } });
      new sqs.Queue(mine, 'Inbox', { enforceSSL: true });
      const spec = cluster.defineCluster({
        name: 'api', region: 'us-east-1', account: '123456789012',
        network: { azs: ['us-east-1a', 'us-east-1b'] },
        pools: [{ name: 'cpu', instanceTypes: ['c6i.large'], max: 2 }],
      });
      const stack = new cluster.ClusterStack(app, 'corral-api', { spec });
      const assembly = app.synth();
      const t = assembly.getStackByName(stack.stackName).template;
      const types = Object.values(t.Resources).map((r) => r.Type);
      const plan = cluster.planCluster(spec);
      console.log(JSON.stringify({
        stacks: assembly.stacks.map((s) => s.stackName).sort(),
        groups: types.filter((x) => x === 'AWS::AutoScaling::AutoScalingGroup').length,
        planOk: plan.ok,
        fns: ['up', 'down', 'runClusterJob', 'resolveClusterTarget', 'estimateCost'].filter((f) => typeof cluster[f] === 'function'),
        constructs: ['Network', 'WorkerPool', 'StaticInstances', 'JobQueue', 'ClusterBucket', 'InstanceRole', 'Monitoring'].filter((c) => typeof cluster[c] === 'function'),
      }));
    `);
    assert.deepEqual(result, {
      stacks: ['corral-api', 'mine'],
      groups: 1,
      planOk: true,
      fns: ['up', 'down', 'runClusterJob', 'resolveClusterTarget', 'estimateCost'],
      constructs: [
        'Network',
        'WorkerPool',
        'StaticInstances',
        'JobQueue',
        'ClusterBucket',
        'InstanceRole',
        'Monitoring',
      ],
    });
  });

  it('corral: the job API, without the cluster surface', () => {
    const result = runAsUser(`
      import * as corral from 'corral';
      console.log(JSON.stringify({ runJob: typeof corral.runJob, defineJob: typeof corral.defineJob, up: typeof corral.up }));
    `);
    assert.deepEqual(result, { runJob: 'function', defineJob: 'function', up: 'undefined' });
  });
});
