/**
 * The bootstrap rehearsal: the user data of a pool and of a coordinator instance, taken from the
 * synthesized CloudFormation template (every Ref and Fn::Sub resolved to this peer's queue,
 * buckets and log group), run as root in a throwaway host (test/sandbox.ts: mount namespace,
 * overlays, stand-ins for dnf, systemctl, shutdown, useradd and cfn-signal only). The artifact
 * `corral up` would publish is uploaded to the CDK assets bucket of the peer; the hosts fetch it
 * with the real AWS CLI, check its sha256 and install it; the pool's worker then runs a job that
 * `corral run --cluster` submits from the coordinator, and both hosts signal success. A tampered
 * artifact and an unreachable queue make a host signal failure and ship the log lines that
 * `corral up` prints. A GPU pool with an ECR image logs in, pulls its image before it signals
 * ready and writes CORRAL_IMAGE and CORRAL_GPUS; an image that cannot be pulled fails the host.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { createLogsClient } from '../src/aws/clients.js';
import { failureLines } from '../src/aws/host-logs.js';
import { RETRY_TRIES } from '../src/infra/user-data.js';
import type { Peer } from './cluster-peer.js';
import { tempDir } from './helpers.js';
import {
  ACCOUNT,
  ASSETS_BUCKET,
  INSTANCE_ID,
  LOG_GROUP,
  REGION,
  REHEARSAL_SPEC,
  type Rehearsal,
  startRehearsal,
} from './rehearsal.js';
import { makeSandbox, recorded } from './sandbox.js';

describe('bootstrap rehearsal', () => {
  let r: Rehearsal;
  before(async () => {
    r = await startRehearsal();
  });
  after(async () => {
    await r?.stop();
  });

  it('the synthesized user data names the artifact by its sha256 and installs nothing from a package registry', () => {
    for (const type of ['AWS::EC2::LaunchTemplate', 'AWS::EC2::Instance'] as const) {
      const script = r.userDataOf(type);
      assert.ok(
        script.includes(`s3://${ASSETS_BUCKET}/${r.artifactKey}`),
        `${type}: fetches the artifact asset`,
      );
      assert.ok(script.includes(`${r.artifact.sha256}  `), `${type}: the sha256 is checked`);
      assert.doesNotMatch(
        script,
        /npm (install|i) |npx |pip install|curl [^\n]*https?:\/\/(?!\$CORRAL_IMDS)/,
      );
      assert.doesNotMatch(script, /AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|corral-test/, 'no credentials');
    }
  });

  it('a pool host and a coordinator boot from the artifact; the coordinator runs a job the pool worker does', async (t) => {
    const pool = makeSandbox(tempDir(t, 'corral-host-pool-'));
    const coord = makeSandbox(tempDir(t, 'corral-host-coord-'));
    t.after(() => pool.stopServices());
    const poolScript = path.join(pool.root, 'user-data');
    writeFileSync(poolScript, r.userDataOf('AWS::EC2::LaunchTemplate'));
    const started = Date.now();
    const booted = await pool.run(['bash', poolScript], { env: r.hostEnv });
    assert.equal(booted.code, 0, booted.output);
    const ms = Date.now() - started;
    t.diagnostic(`pool bootstrap: ${ms} ms`);
    const poolRecord = recorded(pool.root);
    const asg = r.logicalIdOf('AWS::AutoScaling::AutoScalingGroup');
    assert.ok(
      poolRecord.includes(
        `cfn-signal -e 0 --stack corral-rehearsal --resource ${asg} --region ${REGION} --reason corral worker started`,
      ),
      poolRecord.join('\n'),
    );
    assert.ok(poolRecord.includes('systemctl enable --now corral-worker.service'));
    // The worker runs the installed artifact, not any other corral of this machine.
    const release = path.join(pool.root, 'up/opt/corral', r.artifact.sha256.slice(0, 16));
    assert.ok(existsSync(path.join(release, 'dist/cli/main.js')), 'artifact unpacked');
    assert.match(
      readFileSync(path.join(pool.root, 'up/usr/local/bin/corral'), 'utf8'),
      /\/opt\/corral\/current\//,
    );
    const ready = r.peer.logStreams(LOG_GROUP);
    assert.ok(
      ready && [...ready.keys()].some((s) => s.startsWith('ready/')),
      'the check wrote its ready line',
    );

    const coordScript = path.join(coord.root, 'user-data');
    writeFileSync(coordScript, r.userDataOf('AWS::EC2::Instance'));
    const cBooted = await coord.run(['bash', coordScript], { env: r.hostEnv });
    assert.equal(cBooted.code, 0, cBooted.output);
    const instance = r.logicalIdOf('AWS::EC2::Instance');
    assert.ok(
      recorded(coord.root).includes(
        `cfn-signal -e 0 --stack corral-rehearsal --resource ${instance} --region ${REGION} --reason coordinator ready`,
      ),
      recorded(coord.root).join('\n'),
    );

    // Right after boot, on the coordinator, from any folder: corral run FILE --cluster NAME.
    const work = tempDir(t, 'corral-job-');
    writeFileSync(path.join(work, 'a.txt'), 'rehearsed\n');
    writeFileSync(
      path.join(work, 'job.yaml'),
      'name: rehearsal-job\ntasks:\n  map: { glob: "*.txt" }\n  command: "tr a-z A-Z < {input}"\noutputs: out/{input.stem}.upper\n',
    );
    const { AWS_REGION: _region, ...noRegion } = r.hostEnv;
    const job = await coord.run(['corral', 'run', 'job.yaml', '--cluster', 'rehearsal'], {
      env: noRegion,
      cwd: work,
      timeoutMs: 90_000,
    });
    assert.equal(job.code, 0, job.output);
    assert.equal(readFileSync(path.join(work, 'out/a.upper'), 'utf8'), 'REHEARSED\n');

    // A clean stop of the worker does not power the host off: an idle worker leaves through its
    // Auto Scaling group (issue 20), and a stopped instance would only be replaced by the group.
    const unit = pool.servicePid('corral-worker.service')!;
    const worker = execFileSync('pgrep', ['-P', String(unit)], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map(Number);
    for (const pid of worker) process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 300 && !recorded(pool.root).includes('unit corral-worker.service exited 0'); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(
      recorded(pool.root).includes('unit corral-worker.service exited 0'),
      recorded(pool.root).join('\n'),
    );
    assert.ok(!recorded(pool.root).some((l) => l.startsWith('shutdown')), recorded(pool.root).join('\n'));
  });

  it('a tampered artifact is refused: failure signalled, no worker, the reason shipped for corral up', async (t) => {
    const bucket = 'tampered-assets';
    await r.peer.createBucket(bucket);
    const bytes = Buffer.from(readFileSync(r.artifact.file));
    bytes[bytes.length - 100]! ^= 0xff;
    await r.upload(bucket, r.artifactKey, bytes);
    const { host, lines } = await bootFails(
      t,
      r,
      r.userDataOf('AWS::EC2::LaunchTemplate').replaceAll(ASSETS_BUCKET, bucket),
    );
    assert.ok(!existsSync(path.join(host.root, 'up/usr/local/bin/corral')), 'nothing installed');
    assert.ok(
      lines.some((l) => l.host === INSTANCE_ID && /is not the artifact corral up published/.test(l.message)),
    );
    assert.ok(lines.some((l) => /corral bootstrap failed/.test(l.message)));
  });

  it('an unreachable queue fails the readiness check: failure signalled with the log excerpt corral up prints', async (t) => {
    const missing = `${r.peer.endpoint}/000000000000/no-such-queue`;
    const { lines } = await bootFails(
      t,
      r,
      r.userDataOf('AWS::EC2::LaunchTemplate').replaceAll(r.refs.get(mainQueueIdOf(r))!, missing),
    );
    assert.ok(
      lines.some((l) => /queue .*no-such-queue.* does not exist/.test(l.message)),
      lines.map((l) => l.message).join('\n'),
    );
  });
});

/** Boots a host that must fail: it signals failure and starts no worker. What it shipped comes back. */
async function bootFails(t: TestContext, r: Rehearsal, userData: string, env: NodeJS.ProcessEnv = r.hostEnv) {
  const host = makeSandbox(tempDir(t, 'corral-host-failing-'));
  t.after(() => host.stopServices());
  const script = path.join(host.root, 'user-data');
  writeFileSync(script, userData);
  const since = Date.now() - 1000;
  const res = await host.run(['bash', script], { env });
  assert.notEqual(res.code, 0, res.output);
  const rec = recorded(host.root);
  assert.ok(
    rec.some((l) => l.startsWith('cfn-signal -e 1 ')),
    rec.join('\n'),
  );
  assert.ok(!rec.some((l) => l.startsWith('cfn-signal -e 0 ')), 'no success signal');
  assert.ok(!rec.includes('systemctl enable --now corral-worker.service'), 'no worker started');
  return { host, rec, lines: await shipped(r.peer, since) };
}

function mainQueueIdOf(r: Rehearsal): string {
  return Object.entries(r.resources).find(
    ([, x]) => x.Type === 'AWS::SQS::Queue' && x.Properties?.RedrivePolicy,
  )![0];
}

/** What `corral up` reads back from the log group: the failure excerpts hosts shipped. */
async function shipped(peer: Peer, since: number) {
  const logs = await createLogsClient({ region: REGION, endpointUrl: peer.endpoint });
  try {
    return await failureLines(logs, LOG_GROUP, since);
  } finally {
    logs.destroy();
  }
}

/**
 * ECR's GetAuthorizationToken (JSON 1.1), which the test peer has not: one token, the base64 of
 * `AWS:PASSWORD`, as `aws ecr get-login-password` decodes it. The AWS CLI reaches it through
 * AWS_ENDPOINT_URL_ECR.
 */
async function startFakeEcr(
  password: string,
): Promise<{ endpoint: string; calls: string[]; stop(): Promise<void> }> {
  const calls: string[] = [];
  const server = http.createServer((req, res) => {
    const target = String(req.headers['x-amz-target'] ?? '');
    calls.push(target.split('.').pop() ?? '');
    req.resume();
    req.on('end', () => {
      if (target !== 'AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken') {
        res.writeHead(400, { 'content-type': 'application/x-amz-json-1.1' });
        res.end(JSON.stringify({ __type: 'InvalidAction', message: `${target} is not served here` }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(
        JSON.stringify({
          authorizationData: [
            {
              authorizationToken: Buffer.from(`AWS:${password}`).toString('base64'),
              expiresAt: Math.floor(Date.now() / 1000) + 12 * 3600,
              proxyEndpoint: `https://${ACCOUNT}.dkr.ecr.${REGION}.amazonaws.com`,
            },
          ],
        }),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/**
 * A GPU pool whose tasks run in an ECR image: the same rehearsal (test/rehearsal.ts) with docker
 * as a recording stand-in (test/sandbox.ts) and ECR's token served by a fake answering the real
 * AWS CLI. The image is pulled, after a login with the instance role's token, before the worker
 * starts and the host signals ready; an image that cannot be pulled fails the host.
 */
describe('bootstrap rehearsal: a GPU pool with an ECR image', () => {
  const REGISTRY = `${ACCOUNT}.dkr.ecr.${REGION}.amazonaws.com`;
  const IMAGE = `${REGISTRY}/lab/train:2.1`;
  const PASSWORD = 'ecr-token-of-the-rehearsal';
  let r: Rehearsal;
  let ecr: Awaited<ReturnType<typeof startFakeEcr>>;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    r = await startRehearsal({
      ...REHEARSAL_SPEC,
      instances: [],
      pools: [{ name: 'train', instanceTypes: ['g5.xlarge'], image: IMAGE, min: 1, max: 2 }],
    });
    ecr = await startFakeEcr(PASSWORD);
    env = { ...r.hostEnv, AWS_ENDPOINT_URL_ECR: ecr.endpoint };
  });
  after(async () => {
    await ecr?.stop();
    await r?.stop();
  });

  it('logs in to ECR, pulls the image, starts the worker with CORRAL_IMAGE and CORRAL_GPUS, then signals ready', async (t) => {
    const host = makeSandbox(tempDir(t, 'corral-host-image-'));
    t.after(() => host.stopServices());
    const script = path.join(host.root, 'user-data');
    writeFileSync(script, r.userDataOf('AWS::EC2::LaunchTemplate'));
    const booted = await host.run(['bash', script], { env });
    assert.equal(booted.code, 0, booted.output);
    const rec = recorded(host.root);
    const at = (line: string) => {
      const i = rec.indexOf(line);
      assert.ok(i >= 0, `not recorded: ${line}\n${rec.join('\n')}`);
      return i;
    };
    const asg = r.logicalIdOf('AWS::AutoScaling::AutoScalingGroup');
    const order = [
      at(`docker login --username AWS --password-stdin ${REGISTRY}`),
      at(`docker login read the password ${PASSWORD}`),
      at(`docker pull ${IMAGE}`),
      at(`docker logout ${REGISTRY}`),
      at('usermod -aG docker corral'),
      at('systemctl enable --now corral-worker.service'),
      at(
        `cfn-signal -e 0 --stack corral-rehearsal --resource ${asg} --region ${REGION} --reason corral worker started`,
      ),
    ];
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
      rec.join('\n'),
    );
    assert.deepEqual(ecr.calls, ['GetAuthorizationToken'], 'one token, from the instance role');
    const workerEnv = readFileSync(path.join(host.root, 'up/etc/corral/worker.env'), 'utf8');
    assert.match(workerEnv, new RegExp(`^CORRAL_IMAGE=${IMAGE.replace(/\./g, '\\.')}$`, 'm'));
    assert.match(workerEnv, /^CORRAL_GPUS=all$/m);
  });

  it('a registry not reachable yet (the network comes up after boot): the pull is retried, then the host is ready', async (t) => {
    const late = `${REGISTRY}/lab/late-network:1`;
    const host = makeSandbox(tempDir(t, 'corral-host-late-'));
    t.after(() => host.stopServices());
    const script = path.join(host.root, 'user-data');
    writeFileSync(script, r.userDataOf('AWS::EC2::LaunchTemplate').replaceAll(IMAGE, late));
    const booted = await host.run(['bash', script], { env });
    assert.equal(booted.code, 0, booted.output);
    const rec = recorded(host.root);
    assert.equal(rec.filter((l) => l === `docker pull ${late}`).length, 3, rec.join('\n'));
    assert.deepEqual(
      rec.filter((l) => l.startsWith('sleep ')),
      ['sleep 2', 'sleep 4'],
    );
    assert.ok(
      rec.some((l) => l.startsWith('cfn-signal -e 0 ')),
      rec.join('\n'),
    );
  });

  it('an image that cannot be pulled fails the host: failure signalled, no worker, the registry error shipped for corral up', async (t) => {
    const missing = `${REGISTRY}/lab/no-such-image:1`;
    const { rec, lines } = await bootFails(
      t,
      r,
      r.userDataOf('AWS::EC2::LaunchTemplate').replaceAll(IMAGE, missing),
      env,
    );
    assert.equal(rec.filter((l) => l === `docker pull ${missing}`).length, RETRY_TRIES, rec.join('\n'));
    assert.ok(
      lines.some((l) => l.host === INSTANCE_ID && /manifest unknown/.test(l.message)),
      lines.map((l) => l.message).join('\n'),
    );
    assert.ok(lines.some((l) => /corral bootstrap failed .*docker pull/.test(l.message)));
  });
});
