/**
 * Autoscaling that never kills a busy worker (issue 20), against local peers: fauxqs (SQS + S3),
 * a fake IMDSv2 and, for the Auto Scaling API, the query peer (aws-query-peer.ts). Workers are
 * real: `runClusterWorker` running real task processes, or `corral worker` processes.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { BACKLOG_EXPRESSION } from '../src/infra/worker-pool.js';
import { loadJobFile } from '../src/spec/job.js';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import { startQueryPeer } from './aws-query-peer.js';
import {
  createCluster,
  type FakeImds,
  PEER_ENV,
  type Peer,
  startFakeImds,
  startPeer,
} from './cluster-peer.js';
import { runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';
import { evaluate } from './metric-math.js';

let peer: Peer;
let imds: FakeImds;
before(async () => {
  peer = await startPeer();
  imds = await startFakeImds();
});
after(async () => {
  await imds.stop();
  await peer.stop();
});

for (const bundled of [false, true])
  test(`a spot rebalance recommendation stops claiming but finishes the held tasks; nothing is handed back nor run twice (issue 20, item 4)${bundled ? ': tasks 3 to a message, the bundle started is finished whole, the other handed back' : ''}`, async (t) => {
    const name = bundled ? 'rebalb' : 'rebal';
    if (bundled) process.env.CORRAL_TASKS_PER_MESSAGE = '3';
    t.after(() => {
      delete process.env.CORRAL_TASKS_PER_MESSAGE;
    });
    const dir = tempDir(t);
    // an IMDS of its own: a recommendation, once set, is served for good
    const imds = await startFakeImds();
    t.after(() => imds.stop());
    const marks = path.join(dir, 'marks');
    mkdirSync(marks);
    const files: Record<string, string> = {
      'job.yaml': `name: ${name}
tasks:
  map: { glob: "in/*.txt" }
  command: 'touch "${marks}/{input.stem}.$W.$$"; sleep 1; tr a-z A-Z < {input}'
outputs: out/{input.stem}.txt
lease: 20s
`,
    };
    for (let i = 0; i < 6; i++) files[`in/t${i}.txt`] = `task ${i}\n`;
    writeFiles(dir, files);
    const target = await createCluster(peer, name);
    const run = runClusterJob(loadJobFile(path.join(dir, 'job.yaml')), target, {
      stateDir: path.join(dir, '.corral'),
      endpointUrl: peer.endpoint,
      tickMs: 200,
    });
    await waitFor(() => (peer.requests.get('sqs:SendMessageBatch') ?? 0) > 0, 60_000);
    const lines: string[] = [];
    const common = { ...target, endpointUrl: peer.endpoint, idleExitMs: 5000, spotIntervalMs: 100 };
    process.env.W = 'w1';
    const first = runClusterWorker({
      ...common,
      id: 'w1',
      prefetch: 2,
      cacheDir: path.join(dir, 'w1'),
      imdsEndpoint: imds.endpoint,
      log: (l) => lines.push(l),
    });
    // the recommendation while w1 runs its first task
    await waitFor(() => readdirSync(marks).length > 0, 60_000);
    imds.rebalance();
    const r1 = await first;
    assert.equal(r1.reason, 'rebalance', lines.join('\n'));
    assert.match(lines.join('\n'), /spot rebalance recommendation; claiming no new task/);
    const ranOnW1 = readdirSync(marks).filter((f) => f.split('.')[1] === 'w1');
    assert.ok(ranOnW1.length >= 1 && ranOnW1.length < 6, `w1 ran ${ranOnW1.length} task(s)`);
    // a bundle is committed whole: the one w1 started, it finished, and it took no other
    if (bundled) assert.equal(ranOnW1.length, 3, `w1 ran its bundle: ${ranOnW1.join(' ')}`);
    assert.equal(r1.ran, ranOnW1.length, 'every task w1 started, it finished');
    // the rest runs on another worker; no task ran twice (nothing held was handed back)
    process.env.W = 'w2';
    const r2 = await runClusterWorker({
      ...common,
      id: 'w2',
      spot: false,
      cacheDir: path.join(dir, 'w2'),
      log: () => {},
    });
    delete process.env.W;
    const summary = await run;
    assert.equal(summary.status, 'succeeded');
    assert.equal(r1.ran + r2.ran, 6);
    const stems = readdirSync(marks).map((f) => f.split('.')[0]);
    assert.equal(new Set(stems).size, 6);
    assert.equal(stems.length, 6, `each task ran once: ${stems.sort().join(' ')}`);
    for (let i = 0; i < 6; i++)
      assert.equal(readFileSync(path.join(dir, 'out', `t${i}.txt`), 'utf8'), `TASK ${i}\n`);
    assert.equal(imds.tokenless, 0, 'IMDSv2 only');
  });

test('corral worker protects its host while it holds work; idle, it terminates it through the group with a decrement, and at the minimum it stays up (issue 20, item 2); over the recorded queue timeline, no scale-in decision of the metric math selects a busy host (item 5)', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  const ends = path.join(dir, 'ends');
  mkdirSync(marks);
  mkdirSync(ends);
  const files: Record<string, string> = {
    'job.yaml': `name: prot
tasks:
  map: { glob: "in/*.txt" }
  command: 'touch "${marks}/{input.stem}.$CORRAL_TEST_WORKER"; sleep 1; tr a-z A-Z < {input}; touch "${ends}/{input.stem}.$CORRAL_TEST_WORKER"'
outputs: out/{input.stem}.txt
lease: 20s
`,
  };
  for (let i = 0; i < 4; i++) files[`in/t${i}.txt`] = `task ${i}\n`;
  writeFiles(dir, files);
  const { queueUrl, dlqUrl } = await peer.createQueues('prot');
  await peer.createBucket('prot-bucket');
  // the Auto Scaling API on its own peer, which forwards SQS and S3 to fauxqs: one endpoint
  const asg = await startQueryPeer({ upstream: peer.endpoint });
  const ids = [asg.addInstance({}), asg.addInstance({})];
  const group = asg.addGroup('corral-prot-cpu', { min: 1, max: 4, instances: ids });
  const hosts = await Promise.all(ids.map((instanceId) => startFakeImds({ instanceId })));
  t.after(async () => {
    for (const h of hosts) await h.stop();
    await asg.stop();
  });
  const target = {
    name: 'prot',
    queueUrl,
    deadLetterQueueUrl: dlqUrl,
    bucket: 'prot-bucket',
    region: 'us-east-1',
  };
  const run = runClusterJob(loadJobFile(path.join(dir, 'job.yaml')), target, {
    stateDir: path.join(dir, '.corral'),
    endpointUrl: peer.endpoint,
    tickMs: 200,
  });
  await waitFor(() => (peer.requests.get('sqs:SendMessageBatch') ?? 0) > 0, 60_000);
  const workers = ['w1', 'w2'].map((w, i) => {
    const c = startCli(
      [
        'worker',
        '--queue-url',
        queueUrl,
        '--dlq-url',
        dlqUrl,
        '--bucket',
        'prot-bucket',
        '--endpoint-url',
        asg.endpoint,
        '--cache-dir',
        path.join(dir, w),
        '--idle-exit',
        '2',
        '--prefetch',
        '1',
        '--auto-scaling',
      ],
      { cwd: dir, env: { ...PEER_ENV, CORRAL_TEST_WORKER: w, CORRAL_IMDS_ENDPOINT: hosts[i]!.endpoint } },
    );
    let err = '';
    c.stderr!.on('data', (d) => {
      err += d;
    });
    return Object.assign(c, { w, instanceId: ids[i]!, err: () => err });
  });
  t.after(() => {
    for (const c of workers) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  // the timeline: the queue's visible and in-flight counts and the group's instances with their
  // protection, sampled every 100 ms from the peers until the pool has settled
  const timeline: Array<{ at: number; visible: number; inFlight: number; instances: Map<string, boolean> }> =
    [];
  let recording = true;
  const recorder = (async () => {
    for (let i = 0; i < 3000 && recording; i++) {
      const a = await peer.sqs.send(
        new GetQueueAttributesCommand({
          QueueUrl: queueUrl,
          AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
        }),
      );
      timeline.push({
        at: Date.now(),
        visible: Number(a.Attributes?.ApproximateNumberOfMessages),
        inFlight: Number(a.Attributes?.ApproximateNumberOfMessagesNotVisible),
        instances: new Map([...group.instances].map(([id, i]) => [id, i.protected])),
      });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();

  // busy: a worker's host is protected while its task runs (a marker is written as a task starts)
  let finished = false;
  const ended = run.finally(() => {
    finished = true;
  });
  const seen = new Set<string>();
  for (let i = 0; i < 1200 && !finished; i++) {
    for (const f of readdirSync(marks)) {
      const w = workers.find((c) => c.w === f.split('.')[1])!;
      if (seen.has(w.w)) continue;
      seen.add(w.w);
      assert.equal(group.instances.get(w.instanceId)?.protected, true, `${w.w} busy and protected`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(seen.size >= 1, 'a worker ran a task');
  const summary = await ended;
  assert.equal(summary.status, 'succeeded');

  // idle: one leaves through the group (2 > min 1), the other stays up at the minimum
  const gone = await waitFor(() => workers.find((c) => c.exitCode !== null), 60_000);
  const stays = workers.find((c) => c !== gone)!;
  const r = await gone.result;
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stderr,
    new RegExp(
      `idle: terminating instance ${gone.instanceId} through group corral-prot-cpu \\(desired 2 -> 1\\)`,
    ),
  );
  await waitFor(() => /staying up/.test(stays.err()), 30_000);
  await new Promise((res) => setTimeout(res, 3000));
  assert.equal(stays.exitCode, null, `the worker at the minimum is still running: ${stays.err()}`);
  assert.equal(group.desired, 1);
  assert.deepEqual([...group.instances.keys()], [stays.instanceId]);
  assert.equal(group.instances.get(stays.instanceId)!.protected, false, 'idle: not protected');
  const terminations = asg
    .callsOf('TerminateInstanceInAutoScalingGroup')
    .filter((c) => !/Refused/.test(c.action));
  assert.ok(terminations.length >= 1 && terminations.length <= 2, JSON.stringify(terminations));
  for (const c of terminations) assert.equal(c.params.ShouldDecrementDesiredCapacity, 'true');
  // protection was lifted before the host left, and every change was a real change
  for (const w of workers) {
    const changes = asg
      .callsOf('SetInstanceProtection')
      .filter((c) => c.params['InstanceIds.member.1'] === w.instanceId)
      .map((c) => c.params.ProtectedFromScaleIn);
    for (let i = 0; i < changes.length; i++) assert.equal(changes[i], i % 2 === 0 ? 'true' : 'false');
    assert.equal(changes.length % 2, 0, `${w.w}: protection lifted when idle: ${changes}`);
  }
  stays.kill('SIGTERM');
  assert.equal((await stays.result).code, 0);
  for (const h of hosts) assert.equal(h.tokenless, 0, 'IMDSv2 only');

  // item 5: a small simulator of target tracking over the recorded timeline, with the pool's
  // metric math (BACKLOG_EXPRESSION, the one the template holds: infra-constructs.test.ts) and a
  // target of 1 task per instance so that it scales in often. Each scale-in decision removes
  // unprotected instances, as Auto Scaling does; none may be busy (running a task) then.
  recording = false;
  await recorder;
  const busy = readdirSync(marks).map((f) => {
    const [, w] = f.split('.');
    return {
      instanceId: workers.find((c) => c.w === w)!.instanceId,
      from: statSync(path.join(marks, f)).mtimeMs,
      to: statSync(path.join(ends, f)).mtimeMs,
    };
  });
  const isBusy = (id: string, at: number) =>
    busy.some((b) => b.instanceId === id && b.from <= at && at <= b.to);
  const metric = evaluate(
    BACKLOG_EXPRESSION,
    {
      m1: timeline.map((p) => p.visible),
      m3: timeline.map((p) => p.inFlight),
      m2: timeline.map((p) => p.instances.size),
    },
    timeline.length,
  );
  let decisions = 0;
  let busySamples = 0;
  timeline.forEach((p, i) => {
    for (const [id, prot] of p.instances) {
      if (!isBusy(id, p.at)) continue;
      busySamples++;
      assert.ok(prot, `sample ${i}: ${id} busy but not protected`);
    }
    const desired = Math.max(group.min, Math.ceil((p.instances.size * metric[i]!) / 1));
    const out = p.instances.size - desired;
    if (out <= 0) return;
    decisions++;
    const chosen = [...p.instances].filter(([, prot]) => !prot).slice(0, out);
    for (const [id] of chosen) assert.ok(!isBusy(id, p.at), `sample ${i}: scale-in selected busy ${id}`);
  });
  assert.ok(busySamples > 0 && decisions > 0, `${busySamples} busy samples, ${decisions} scale-in decisions`);
  t.diagnostic(
    `timeline: ${timeline.length} samples, ${busySamples} busy host-samples, ${decisions} scale-in decisions`,
  );
});

test('two pools: each step of a workflow runs only on the workers of its pool, each reading its own queue; an unknown pool is exit 2 naming the pools (issue 20, item 3)', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  mkdirSync(marks);
  const mark = (step: string, id: string) => `touch "${marks}/${step}.${id}.$CORRAL_TEST_WORKER"`;
  const files: Record<string, string> = {
    'job.yaml': `name: routed
pool: cpu
steps:
  - name: prep
    map: { glob: "in/*.txt" }
    command: '${mark('prep', '{input.stem}')}; tr a-z A-Z < {input}'
    outputs: out/prep/{input.stem}.txt
  - name: render
    pool: gpu
    map: { outputsOf: prep }
    command: '${mark('render', '{index}')}; rev < {input}'
    outputs: out/render/{index}.txt
  - name: total
    reduce: render
    command: '${mark('total', '0')}; cat {inputs}'
    outputs: out/total.txt
`,
  };
  for (let i = 0; i < 3; i++) files[`in/t${i}.txt`] = `task ${i}\n`;
  writeFiles(dir, files);
  const cpu = await peer.createQueues('routed-cpu');
  const gpu = await peer.createQueues('routed-gpu');
  await peer.createBucket('routed-bucket');
  const outputs = {
    QueueUrl: cpu.queueUrl,
    DeadLetterQueueUrl: cpu.dlqUrl,
    BucketName: 'routed-bucket',
    Region: 'us-east-1',
    PoolQueues: JSON.stringify([
      { pool: 'cpu', queueUrl: cpu.queueUrl, deadLetterQueueUrl: cpu.dlqUrl },
      { pool: 'gpu', queueUrl: gpu.queueUrl, deadLetterQueueUrl: gpu.dlqUrl },
    ]),
  };
  writeFiles(dir, { 'outputs.json': JSON.stringify(outputs) });
  const env = { ...PEER_ENV, CORRAL_CLUSTER_TICK_MS: '200' };
  const cluster = [
    '--cluster',
    'two',
    '--outputs',
    path.join(dir, 'outputs.json'),
    '--endpoint-url',
    peer.endpoint,
  ];

  // an unknown pool is refused before anything is sent, naming the field and the pools there are
  writeFiles(dir, {
    'bad.yaml': files['job.yaml']!.replace('pool: gpu', 'pool: tpu').replace('name: routed', 'name: badpool'),
  });
  const bad = await runCli(['run', 'bad.yaml', ...cluster], { cwd: dir, env });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(
    bad.stderr,
    /^corral: error: steps\[1\]\.pool: cluster two has no pool tpu \(fix: name one of its pools: cpu, gpu\)$/m,
  );

  const coordinator = startCli(['run', 'job.yaml', ...cluster, '--state-dir', path.join(dir, 'state')], {
    cwd: dir,
    env,
  });
  const workers = [
    ['cpu', cpu],
    ['gpu', gpu],
  ].map(([w, q]) =>
    startCli(
      [
        'worker',
        '--queue-url',
        (q as typeof cpu).queueUrl,
        '--dlq-url',
        (q as typeof cpu).dlqUrl,
        '--bucket',
        'routed-bucket',
        '--endpoint-url',
        peer.endpoint,
        '--cache-dir',
        path.join(dir, `w-${w}`),
        '--idle-exit',
        '60',
        '--no-spot',
      ],
      { cwd: dir, env: { ...env, CORRAL_TEST_WORKER: w as string } },
    ),
  );
  t.after(() => {
    for (const c of [coordinator, ...workers])
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  const r = await coordinator.result;
  for (const w of workers) w.kill('SIGTERM');
  await Promise.all(workers.map((w) => w.result));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /job routed: pool cpu: prep, total/);
  assert.match(r.stderr, /job routed: pool gpu: render/);
  const ran = readdirSync(marks).map((f) => f.split('.') as [string, string, string]);
  assert.equal(ran.length, 7, ran.join(' '));
  for (const [step, , worker] of ran)
    assert.equal(worker, step === 'render' ? 'gpu' : 'cpu', `${step} ran on ${worker}`);
  assert.equal(
    readFileSync(path.join(dir, 'out', 'total.txt'), 'utf8'),
    ['0', '1', '2'].map((i) => `${i} KSAT\n`).join(''),
  );
});
