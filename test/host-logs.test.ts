/**
 * What hosts say in the cluster's log group, against the local peer: `corral worker --check`
 * (queue, bucket, log group), and the watch `corral up` keeps on the failure excerpts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateLogStreamCommand, PutLogEventsCommand } from '@aws-sdk/client-cloudwatch-logs';
import { createLogsClient } from '../src/aws/clients.js';
import { type HostLogLine, watchHostFailures } from '../src/aws/host-logs.js';
import { deployFailure } from '../src/infra/deploy.js';
import { PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { runCli, tempDir } from './helpers.js';

let peer: Peer;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

describe('host logs', () => {
  it('corral worker --check passes when the queue, bucket and log group answer, and names the one that does not', async (t) => {
    const dir = tempDir(t);
    const { queueUrl } = await peer.createQueues('check');
    await peer.createBucket('check-bucket');
    peer.createLogGroup('/corral/check');
    const env = { ...PEER_ENV, AWS_ENDPOINT_URL: peer.endpoint };
    const args = ['worker', '--check', '--queue-url', queueUrl, '--bucket', 'check-bucket'];
    const ok = await runCli([...args, '--log-group', '/corral/check'], { cwd: dir, env });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^corral worker --check: ok/);
    const streams = peer.logStreams('/corral/check')!;
    const ready = [...streams.entries()].find(([name]) => name.startsWith('ready/'));
    assert.ok(ready && /ready/.test(ready[1][0]!.message));

    const noGroup = await runCli([...args, '--log-group', '/corral/none'], { cwd: dir, env });
    assert.equal(noGroup.code, 2);
    assert.equal(noGroup.stderr.trim().split('\n').length, 1, noGroup.stderr);
    assert.match(noGroup.stderr, /log group: log group \/corral\/none does not exist/);
    const noQueue = await runCli(
      [
        'worker',
        '--check',
        '--queue-url',
        `${peer.endpoint}/000000000000/gone`,
        '--bucket',
        'check-bucket',
        '--log-group',
        '/corral/check',
      ],
      { cwd: dir, env },
    );
    assert.equal(noQueue.code, 2);
    assert.match(noQueue.stderr, /queue .*gone.* does not exist/);
    const noName = await runCli(args, { cwd: dir, env: { ...env, CORRAL_LOG_GROUP: '' } });
    assert.equal(noName.code, 2);
    assert.match(noName.stderr, /--log-group: no log group given/);
  });

  it('the watch of corral up shows each failure line once, and no ready lines', async () => {
    peer.createLogGroup('/corral/watch');
    const logs = await createLogsClient({ region: 'us-east-1', endpointUrl: peer.endpoint });
    const seen: HostLogLine[] = [];
    const watch = watchHostFailures({
      logs,
      logGroupName: '/corral/watch',
      since: Date.now() - 1000,
      intervalMs: 50,
      onLine: (l) => seen.push(l),
    });
    const put = async (stream: string, message: string) => {
      await logs
        .send(new CreateLogStreamCommand({ logGroupName: '/corral/watch', logStreamName: stream }))
        .catch(() => {});
      await logs.send(
        new PutLogEventsCommand({
          logGroupName: '/corral/watch',
          logStreamName: stream,
          logEvents: [{ timestamp: Date.now(), message }],
        }),
      );
    };
    await put('ready/host-1', 'corral worker ready');
    await put('failure/i-1', 'corral bootstrap failed at line 40 (exit 1): aws s3 cp');
    for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    await put('failure/i-2', 'corral bootstrap failed at line 52 (exit 2): corral worker --check');
    await watch.stop();
    logs.destroy();
    assert.deepEqual(
      seen.map((l) => [l.host, l.message]),
      [
        ['i-1', 'corral bootstrap failed at line 40 (exit 1): aws s3 cp'],
        ['i-2', 'corral bootstrap failed at line 52 (exit 2): corral worker --check'],
      ],
    );
    const msg = deployFailure(
      'corral-x',
      '/corral/x',
      new Error('Resource handler returned: Received 0 SUCCESS signal(s) out of 1\nmore'),
      2,
    );
    assert.doesNotMatch(msg, /\n/);
    assert.match(
      msg,
      /stack corral-x was not deployed: .*0 SUCCESS signal.*printed above \(log group \/corral\/x/,
    );
    assert.match(
      deployFailure(
        'corral-x',
        '/corral/x',
        new Error('corral-x: This CDK deployment requires bootstrap stack version 6'),
        0,
      ),
      /npx cdk bootstrap aws:\/\/ACCOUNT\/REGION/,
    );
  });
});
