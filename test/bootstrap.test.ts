/**
 * The worker bootstrap of a pool, rendered by src/infra/user-data.ts and run with bash off EC2:
 * CORRAL_BOOTSTRAP_SKIP_INSTALL=1 skips the install and systemd and runs the agent part (write
 * worker.env from the stack outputs, `corral worker` in the foreground) against fauxqs until the
 * job's task is done and the worker exits idle.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { runClusterJob } from '../src/engine/cluster-run.js';
import { agentPart, WORKER_LOG_FILE, workerUserData } from '../src/infra/user-data.js';
import { loadJobFile } from '../src/spec/job.js';
import { PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { CLI, tempDir, writeFiles } from './helpers.js';

/** The part of the CloudWatch agent's configuration the bootstrap writes. */
interface CwConfig {
  logs: {
    logs_collected: {
      files: { collect_list: { file_path: string; log_group_name: string; log_stream_name: string }[] };
    };
  };
}

let peer: Peer;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

test('the worker bootstrap: worker.env from the stack outputs, no credentials, systemd unit; its agent part runs a task', async (t) => {
  const dir = tempDir(t);
  const { queueUrl, dlqUrl } = await peer.createQueues('boot');
  await peer.createBucket('boot-bucket');
  const script = workerUserData({
    clusterName: 'boot',
    poolName: 'default',
    region: 'us-east-1',
    queueUrl,
    deadLetterQueueUrl: dlqUrl,
    bucketName: 'boot-bucket',
    logGroupName: '/corral/boot',
    idleExitSeconds: 2,
  });
  assert.match(script, /^#!\/bin\/bash\nset -euo pipefail\n/);
  assert.match(script, /dnf install -y nodejs20/);
  assert.match(script, /npm install -g 'corral@latest'/);
  assert.match(
    script,
    /\[Service\][\s\S]*EnvironmentFile=\/etc\/corral\/worker\.env[\s\S]*Restart=on-failure/,
  );
  assert.match(script, /systemctl enable --now corral-worker\.service/);
  // the worker's log goes to a file the CloudWatch agent ships to the cluster's log group
  assert.match(script, new RegExp(`StandardOutput=append:${WORKER_LOG_FILE}\n`));
  assert.match(script, new RegExp(`StandardError=append:${WORKER_LOG_FILE}\n`));
  const cw = /cat > (\S+) <<'CORRAL_CWAGENT'\n([\s\S]*?)\nCORRAL_CWAGENT\n/.exec(script);
  assert.ok(cw, 'no CloudWatch agent configuration');
  assert.match(script, new RegExp(`amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c file:${cw[1]}`));
  const shipped = (JSON.parse(cw[2]!) as CwConfig).logs.logs_collected.files.collect_list;
  assert.deepEqual(
    shipped.map((f) => [f.file_path, f.log_group_name, f.log_stream_name]),
    [
      [WORKER_LOG_FILE, '/corral/boot', '{instance_id}/worker'],
      ['/var/log/cloud-init-output.log', '/corral/boot', '{instance_id}/bootstrap'],
    ],
  );
  assert.doesNotMatch(
    script,
    /AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|corral-test/,
    'no credentials',
  );
  const agent = agentPart(script);
  assert.ok(agent && /exec corral worker/.test(agent), 'marked agent part');

  writeFiles(dir, {
    'bin/corral': `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} "$@"\n`,
    'bootstrap.sh': script,
    'job/in/x.txt': 'bootstrapped\n',
    'job/job.yaml': `name: boot
tasks:
  map: { glob: "in/*.txt" }
  command: 'tr a-z A-Z < {input}'
outputs: out/{input.stem}.txt
`,
  });
  chmodSync(path.join(dir, 'bin/corral'), 0o755);
  const etc = path.join(dir, 'etc');
  // Only dummy credentials, from the environment (what the instance role gives on EC2).
  const child = spawn('bash', [path.join(dir, 'bootstrap.sh')], {
    cwd: dir,
    env: {
      ...process.env,
      ...PEER_ENV,
      PATH: `${path.join(dir, 'bin')}:${process.env.PATH}`,
      CORRAL_BOOTSTRAP_SKIP_INSTALL: '1',
      CORRAL_ETC_DIR: etc,
      CORRAL_ENDPOINT_URL: peer.endpoint,
      CORRAL_CACHE_DIR: path.join(dir, 'cache'),
      CORRAL_SPOT_INTERVAL_MS: '60000',
      CORRAL_IMDS_ENDPOINT: 'http://127.0.0.1:9',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  t.after(() => clearTimeout(killer));

  const summary = await runClusterJob(
    loadJobFile(path.join(dir, 'job/job.yaml')),
    { name: 'boot', queueUrl, deadLetterQueueUrl: dlqUrl, bucket: 'boot-bucket', region: 'us-east-1' },
    { stateDir: path.join(dir, 'state'), endpointUrl: peer.endpoint, tickMs: 200 },
  );
  assert.equal(summary.status, 'succeeded');
  assert.equal(readFileSync(path.join(dir, 'job/out/x.txt'), 'utf8'), 'BOOTSTRAPPED\n');
  assert.equal(await exited, 0, stderr);
  assert.match(stderr, /exiting \(idle\) after 1 task/);
  const env = readFileSync(path.join(etc, 'worker.env'), 'utf8');
  assert.match(env, new RegExp(`^CORRAL_QUEUE_URL=${queueUrl}$`, 'm'));
  assert.match(env, /^CORRAL_BUCKET=boot-bucket$/m);
  assert.match(env, /^AWS_REGION=us-east-1$/m);
  assert.match(env, /^CORRAL_LOG_GROUP=\/corral\/boot$/m);
  assert.doesNotMatch(env, /AWS_ACCESS_KEY_ID|SECRET/);
});
