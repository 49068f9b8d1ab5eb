/**
 * Target 7: a host's bootstrap in the rehearsal of test/bootstrap.test.ts: the pool user data of
 * a synthesized stack, run as root in a throwaway host (mount namespace, overlays; dnf, systemctl
 * and cfn-signal are stand-ins, so no package is installed), from the start of the script to the
 * worker started and the success signal: the artifact's fetch with the AWS CLI from the local
 * peer, its sha256 check, unpacking, `corral worker --check`, the systemd unit. The peer is the
 * floor of the same work: `aws s3 cp` + `sha256sum -c` + `tar -xzf` of the same artifact, alone.
 * On EC2 add the dnf installs (Node 20, aws-cfn-bootstrap, the CloudWatch agent) and the real
 * network, which the rehearsal cannot measure.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';

const run$ = promisify(execFile);

import path from 'node:path';
import { ASSETS_BUCKET, REGION, startRehearsal } from '../test/rehearsal.js';
import { makeSandbox } from '../test/sandbox.js';
import { type Bench, fmtMs, fmtX, interleaved, scratch } from './lib.js';

const TARGET_MS = 30_000;

export const run: Bench = async (ctx) => {
  const dir = scratch(ctx, 'bootstrap');
  const r = await startRehearsal();
  try {
    const script = path.join(dir, 'user-data');
    writeFileSync(script, r.userDataOf('AWS::EC2::LaunchTemplate'));
    let n = 0;
    const reps = ctx.size === 'full' ? ctx.reps : 1;
    ctx.log(`bootstrap: pool user data in a throwaway host vs fetch + check + unpack alone × ${reps}`);
    const res = await interleaved(
      reps,
      {
        corral: async () => {
          const host = makeSandbox(path.join(dir, `host-${++n}`));
          const t0 = performance.now();
          const out = await host.run(['bash', script], { env: r.hostEnv });
          const ms = performance.now() - t0;
          await host.stopServices();
          if (out.code !== 0)
            throw new Error(`the bootstrap failed (exit ${out.code})\n${out.output.slice(-3000)}`);
          ctx.log(`  bootstrap: ${fmtMs(ms)}`);
          return ms;
        },
        floor: async () => {
          const work = path.join(dir, `floor-${++n}`);
          mkdirSync(work, { recursive: true });
          const tgz = path.join(work, 'corral.tgz');
          const t0 = performance.now();
          const sh = [
            `aws s3 cp --region ${REGION} --only-show-errors s3://${ASSETS_BUCKET}/${r.artifactKey} ${tgz}`,
            `echo '${r.artifact.sha256}  ${tgz}' | sha256sum -c --status`,
            `tar -xzf ${tgz} -C ${work} --strip-components=1 --no-same-owner`,
          ].join(' && ');
          // (asynchronously: the peer answers from this process)
          await run$('bash', ['-c', sh], { env: { ...process.env, ...r.hostEnv } });
          const ms = performance.now() - t0;
          ctx.log(`  fetch + check + unpack: ${fmtMs(ms)}`);
          rmSync(work, { recursive: true, force: true });
          return ms;
        },
      },
      (ms) => ms,
    );
    const corral = res.corral.best;
    const floor = res.floor.best;
    const mib = (r.artifact.bytes / 2 ** 20).toFixed(1);
    return [
      {
        id: '7',
        what: `host bootstrap in the rehearsal: start → artifact (${mib} MiB) fetched, checked, unpacked → worker checked and started`,
        corral: fmtMs(corral),
        peer: `${fmtMs(floor)} (aws s3 cp + sha256sum + tar of the same artifact)`,
        ratio: `${fmtX(corral / floor)} the fetch + unpack floor`,
        target: `≤ ${TARGET_MS / 1000} s`,
        status: corral <= TARGET_MS ? 'met' : 'missed',
        command: 'node --import tsx bench/run.ts --only 7',
        note: 'dnf installs stubbed (packages already on the machine); on EC2 add Node, aws-cfn-bootstrap and the CloudWatch agent from the regional repositories',
      },
    ];
  } finally {
    await r.stop();
  }
};
