import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { runCli, tempDir } from './helpers.js';

let peer: Peer;
let queueUrl: string;
before(async () => {
  peer = await startPeer();
  ({ queueUrl } = await peer.createQueues('cli'));
  await peer.createBucket('cli-bucket');
});
after(async () => {
  await peer.stop();
});

test('corral worker: unreachable endpoint, missing bucket, no credentials → clear error, exit 2', async (t) => {
  const cwd = tempDir(t);
  const unreachable = await runCli(
    ['worker', '--bucket', 'cli-bucket', '--queue-url', queueUrl, '--endpoint-url', 'http://127.0.0.1:9'],
    {
      cwd,
      env: PEER_ENV,
    },
  );
  assert.equal(unreachable.code, 2, unreachable.stderr);
  assert.match(unreachable.stderr, /--endpoint-url: cannot reach http:\/\/127\.0\.0\.1:9 .*fix:/);

  const missing = await runCli(
    ['worker', '--bucket', 'no-such-bucket', '--queue-url', queueUrl, '--endpoint-url', peer.endpoint],
    {
      cwd,
      env: PEER_ENV,
    },
  );
  assert.equal(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /bucket: bucket no-such-bucket does not exist/);

  const noCreds = await runCli(
    ['worker', '--bucket', 'cli-bucket', '--queue-url', queueUrl, '--endpoint-url', peer.endpoint],
    {
      cwd,
      env: {
        AWS_ACCESS_KEY_ID: '',
        AWS_SECRET_ACCESS_KEY: '',
        AWS_PROFILE: '',
        AWS_REGION: 'us-east-1',
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_SHARED_CREDENTIALS_FILE: `${cwd}/none`,
        AWS_CONFIG_FILE: `${cwd}/none`,
        HOME: cwd,
      },
    },
  );
  assert.equal(noCreds.code, 2, noCreds.stderr);
  assert.match(noCreds.stderr, /credentials: no AWS credentials found/);
  assert.doesNotMatch(noCreds.stderr + missing.stderr, /corral-test-secret/, 'no secret printed');
});
