/**
 * Detached cluster runs (issue 23), against fauxqs on 127.0.0.1 (test/cluster-peer.ts, which adds
 * S3's conditional writes) with `corral worker` processes (the built CLI): `run --detach` returns
 * and a worker coordinates; the coordinating worker is SIGKILLed 5 times and another takes over;
 * `corral cancel` mid-run leaves a bucket that a later run resumes. Leases are 2 s here
 * (CORRAL_COORDINATOR_LEASE_MS), looks at `detached/` every 300 ms (CORRAL_COORDINATOR_CHECK_MS).
 * Task commands append the start time (ns) of each execution to `marks/<step>-<n>`.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startQueryPeer } from './aws-query-peer.js';
import { committedText, PEER_ENV, type Peer, startFakeImds, startPeer } from './cluster-peer.js';
import { rng, runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';

let peer: Peer;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

const LEASE_MS = 2000;

/** A 3-step workflow of `n` inputs: upper-case, reverse, concatenate; each task sleeps `sleepS`. */
function workflow(dir: string, name: string, n: number, sleepS: number): void {
  const files: Record<string, string> = {
    'job.yaml': `name: ${name}
steps:
  - name: first
    map: { glob: "in/*.txt" }
    command: 'echo $(date +%s%N) >> "$MARK/first-{input.stem}"; sleep ${sleepS}; tr a-z A-Z < {input}'
    outputs: out/first/{input.stem}.txt
  - name: second
    map: { outputsOf: first }
    command: 'echo $(date +%s%N) >> "$MARK/second-{index}"; sleep ${sleepS}; rev < {input}'
    outputs: out/second/{index}.txt
  - name: all
    reduce: second
    command: 'echo $(date +%s%N) >> "$MARK/all-0"; cat {inputs}'
    outputs: out/all.txt
lease: 3s
retries: { maxAttempts: 10, backoff: { initial: 50ms, factor: 2, max: 500ms } }
`,
  };
  for (let i = 0; i < n; i++) files[`in/t${i}.txt`] = `task ${i}\n`;
  writeFiles(dir, files);
  mkdirSync(path.join(dir, 'marks'));
}

/** A cluster (queues + bucket) on the peer and the flags that name it. */
async function cluster(name: string) {
  const { queueUrl, dlqUrl } = await peer.createQueues(name, { visibility: 3 });
  const bucket = `${name}-bucket`;
  await peer.createBucket(bucket);
  const where = [
    '--queue-url',
    queueUrl,
    '--dlq-url',
    dlqUrl,
    '--bucket',
    bucket,
    '--endpoint-url',
    peer.endpoint,
  ];
  return { bucket, where };
}

/** Environment of every corral process of these tests. */
const envOf = (marks: string) => ({
  ...PEER_ENV,
  NODE_EXTRA_CA_CERTS: undefined,
  MARK: marks,
  CORRAL_CLUSTER_TICK_MS: '200',
  CORRAL_COORDINATOR_LEASE_MS: String(LEASE_MS),
  CORRAL_COORDINATOR_CHECK_MS: '300',
});

/** Starts a `corral worker`; killed at the end of the test if still running. */
function worker(
  t: { after: (fn: () => void) => void },
  dir: string,
  where: string[],
  env: NodeJS.ProcessEnv,
  id: string,
) {
  const w = startCli(
    ['worker', ...where, '--cache-dir', path.join(dir, id), '--idle-exit', '60', '--no-spot'],
    {
      cwd: dir,
      env,
    },
  );
  t.after(() => {
    if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
  });
  return w;
}

/** Start times (ns) of each task's executions, by mark name (`first-t3`, `second-0`, `all-0`). */
function executions(marks: string): Map<string, bigint[]> {
  const m = new Map<string, bigint[]>();
  for (const f of readdirSync(marks))
    m.set(
      f,
      readFileSync(path.join(marks, f), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => BigInt(l)),
    );
  return m;
}

/** The mark name of a committed output key (`out/first/t3.txt` → `first-t3`). */
function markOf(out: string): string {
  if (out === 'out/all.txt') return 'all-0';
  const [, step, rest] = /^out\/(first|second)\/(.*)\.txt$/.exec(out) ?? [];
  return `${step}-${rest}`;
}

/** Commit time (ms) of each output of a job, from its commit markers. */
function commits(bucket: string, job: string): Map<string, number> {
  const m = new Map<string, number>();
  const prefix = `jobs/${job}/committed/`;
  for (const k of peer.objectKeys(bucket, prefix)) {
    if (k.startsWith('.tasks/')) continue;
    const marker = JSON.parse(peer.readObject(bucket, `${prefix}${k}`)!.toString('utf8')) as {
      committedAt: string;
    };
    m.set(k, Date.parse(marker.committedAt));
  }
  return m;
}

/** Every output of the workflow, as a local run writes it. */
function localOutputs(dir: string): Map<string, Buffer> {
  const m = new Map<string, Buffer>();
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.posix.join(rel, e.name);
      if (e.isDirectory()) walk(r);
      else m.set(r, readFileSync(path.join(dir, r)));
    }
  };
  walk('out');
  return m;
}

const detachedKeys = (bucket: string) => peer.objectKeys(bucket, 'detached/');

test('run --detach: the submitter exits at once, a worker coordinates, attach and run again fetch outputs byte-identical to a local run', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  workflow(dir, 'det', 4, 0.2);
  const local = tempDir(t);
  cpSync(path.join(dir, 'in'), path.join(local, 'in'), { recursive: true });
  cpSync(path.join(dir, 'job.yaml'), path.join(local, 'job.yaml'));
  mkdirSync(path.join(local, 'marks'));
  const env = envOf(marks);
  const l = await runCli(['run', 'job.yaml', '--json'], {
    cwd: local,
    env: { ...env, MARK: path.join(local, 'marks') },
  });
  assert.equal(l.code, 0, l.stderr);

  const { bucket, where } = await cluster('det');
  const ws = [worker(t, dir, where, env, 'w1'), worker(t, dir, where, env, 'w2')];
  const t0 = Date.now();
  const sub = await runCli(['run', 'job.yaml', '--cluster', 'det', ...where, '--detach', '--json'], {
    cwd: dir,
    env,
  });
  assert.equal(sub.code, 0, sub.stderr);
  const submitted = JSON.parse(sub.stdout) as { job: string; status: string };
  assert.deepEqual([submitted.job, submitted.status], ['det', 'detached']);
  assert.deepEqual(detachedKeys(bucket), ['det.json'], 'the detached record is written');
  const commitsAtExit = commits(bucket, 'det').size;
  assert.ok(
    commitsAtExit < 9,
    `the submitter returned before the workflow ended (${commitsAtExit} of 9 committed)`,
  );

  // the workflow completes with no process of the user's running
  await waitFor(() => detachedKeys(bucket).length === 0, 90_000, 200);
  const result = JSON.parse(peer.readObject(bucket, 'jobs/det/detached-result.json')!.toString('utf8')) as {
    status: string;
    coordinator: string;
  };
  assert.equal(result.status, 'succeeded');
  t.diagnostic(
    `detached run: ${Date.now() - t0} ms from submit to end; coordinated by ${result.coordinator}`,
  );

  // status from "any machine": a fresh state folder, only the bucket
  const st = await runCli(
    ['status', '--cluster', 'det', 'det', ...where, '--state-dir', path.join(dir, 'other'), '--json'],
    {
      cwd: dir,
      env,
    },
  );
  assert.equal(st.code, 0, st.stderr);
  assert.equal((JSON.parse(st.stdout) as { jobs: { done: number }[] }).jobs[0]!.done, 9);

  const logs = await runCli(['logs', 'det', '--cluster', 'det', ...where], { cwd: dir, env });
  assert.equal(logs.code, 0, logs.stderr);
  // attach downloads the outputs into a folder of its own
  const into = path.join(dir, 'fetched');
  const elsewhere = path.join(dir, 'elsewhere');
  const at = await runCli(
    ['attach', 'det', '--cluster', 'det', ...where, '--into', into, '--state-dir', elsewhere, '--json'],
    { cwd: dir, env },
  );
  assert.equal(at.code, 0, at.stderr);
  assert.equal((JSON.parse(at.stdout) as { status: string }).status, 'succeeded');
  const expected = localOutputs(local);
  assert.equal(expected.size, 9);
  assert.deepEqual(localOutputs(into), expected, 'attach: byte-identical to the local run');
  // attach brought the coordinating worker's ledger: report --cluster reads it on this machine
  const rep = await runCli(['report', 'det', '--cluster', 'det', '--state-dir', elsewhere, '-o', '-'], {
    cwd: dir,
    env,
  });
  assert.equal(rep.code, 0, rep.stderr);
  assert.match(rep.stdout, /<html/i);
  assert.match(rep.stdout, /succeeded/);

  // run again in the job folder: follows nothing (the run ended), sends nothing, downloads the outputs
  const again = await runCli(['run', 'job.yaml', '--cluster', 'det', ...where, '--json'], { cwd: dir, env });
  assert.equal(again.code, 0, again.stderr);
  assert.equal((JSON.parse(again.stdout) as { status: string }).status, 'succeeded');
  assert.deepEqual(localOutputs(dir), expected, 'run again: byte-identical to the local run');
  for (const [task, runs] of executions(marks)) assert.equal(runs.length, 1, `${task} ran once`);
  assert.equal(executions(marks).size, 9);
  for (const w of ws) w.kill('SIGTERM');
  await Promise.all(ws.map((w) => w.result));
});

test('the coordinating worker SIGKILLed at random points 5 times: another takes over, every task commits once, no committed task runs again', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  // long enough for 5 kills on an idle machine: each costs a takeover (~lease) plus a random wait
  const n = 10;
  workflow(dir, 'dkill', n, 1.5);
  const env = envOf(marks);
  const { bucket, where } = await cluster('dkill');
  const ws = new Map<number, ReturnType<typeof worker>>();
  let started = 0;
  const spawnWorker = () => {
    const w = worker(t, dir, where, env, `w${++started}`);
    ws.set(w.pid!, w);
  };
  for (let i = 0; i < 3; i++) spawnWorker();
  const sub = await runCli(['run', 'job.yaml', '--cluster', 'dkill', ...where, '--detach', '--json'], {
    cwd: dir,
    env,
  });
  assert.equal(sub.code, 0, sub.stderr);

  const random = rng(Number(process.env.CORRAL_CHAOS_SEED ?? 23));
  const leaseOf = () => {
    const b = peer.readObject(bucket, 'jobs/dkill/coordinator.lease');
    return b ? (JSON.parse(b.toString('utf8')) as { owner: string; released?: boolean }) : undefined;
  };
  const killed: string[] = [];
  const takeovers: number[] = [];
  for (let k = 0; k < 5; k++) {
    // a live coordinator not killed yet holds the lease
    const since = Date.now();
    const holder = await waitFor(
      () => {
        const l = leaseOf();
        return l && !l.released && !killed.includes(l.owner) ? l.owner : undefined;
      },
      60_000,
      50,
    );
    if (k > 0) takeovers.push(Date.now() - since);
    assert.ok(detachedKeys(bucket).length === 1, `the workflow still runs at kill ${k + 1}`);
    await new Promise((r) => setTimeout(r, 200 + Math.floor(random() * 1000)));
    // the holder now (on a loaded machine a starved holder may have lost the lease meanwhile)
    const now = leaseOf();
    const current = now && !now.released ? now.owner : holder;
    const pid = Number(/-(\d+)-[0-9a-f]+$/.exec(current)?.[1]);
    const w = ws.get(pid);
    assert.ok(w, `the holder ${current} is one of this test's workers`);
    w.kill('SIGKILL');
    await w.result;
    ws.delete(pid);
    killed.push(current);
    spawnWorker(); // the Auto Scaling group replaces a lost instance
  }
  await waitFor(() => detachedKeys(bucket).length === 0, 120_000, 200);
  const result = JSON.parse(peer.readObject(bucket, 'jobs/dkill/detached-result.json')!.toString('utf8')) as {
    status: string;
  };
  assert.equal(result.status, 'succeeded');
  const expectedAll = Array.from({ length: n }, (_, i) => `${i} KSAT\n`).join('');
  assert.equal(committedText(peer, bucket, 'jobs/dkill/committed/out/all.txt'), expectedAll);

  // every task has exactly one commit (one accepted conditional write of its marker)
  const committed = commits(bucket, 'dkill');
  assert.equal(committed.size, 2 * n + 1);
  for (const out of committed.keys()) {
    const c = peer.conditionalPuts.get(`/${bucket}/jobs/dkill/committed/${out}`);
    assert.equal(c?.accepted, 1, `${out}: one commit`);
  }
  // committed tasks re-run: no execution of a task started after its result was committed
  const runs = executions(marks);
  let rerun = 0;
  for (const [out, at] of committed) {
    for (const ns of runs.get(markOf(out)) ?? []) if (Number(ns / 1_000_000n) > at) rerun++;
  }
  assert.equal(rerun, 0, 'committed tasks re-run');
  const total = [...runs.values()].reduce((a, r) => a + r.length, 0);
  t.diagnostic(
    `5 coordinators killed; takeovers seen after ${takeovers.join(', ')} ms; ${total} executions for ${2 * n + 1} tasks; committed tasks re-run: ${rerun}`,
  );
  for (const w of ws.values()) w.kill('SIGTERM');
  await Promise.all([...ws.values()].map((w) => w.result));
});

test('corral cancel mid-run: nothing new is sent, it says what is left, and a later run of the same job resumes from the bucket', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  const n = 6;
  workflow(dir, 'dcan', n, 0.5);
  const env = envOf(marks);
  const { bucket, where } = await cluster('dcan');
  const unknown = await runCli(['cancel', 'ghost', '--cluster', 'dcan', ...where], { cwd: dir, env });
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^corral: error: JOB: cluster dcan has no job "ghost" \(fix: /);
  assert.doesNotMatch(unknown.stderr, /\n\s+at /);

  const w1 = worker(t, dir, where, env, 'w1');
  const sub = await runCli(['run', 'job.yaml', '--cluster', 'dcan', ...where, '--detach'], { cwd: dir, env });
  assert.equal(sub.code, 0, sub.stderr);
  assert.match(sub.stdout, /job dcan detached on cluster dcan/);
  // cancel once some tasks of the first step are committed, before the second is sent
  await waitFor(() => commits(bucket, 'dcan').size >= 2, 60_000, 50);
  const c = await runCli(['cancel', 'dcan', '--cluster', 'dcan', ...where, '--json'], { cwd: dir, env });
  assert.equal(c.code, 0, c.stderr);
  const left = JSON.parse(c.stdout) as { done: number; left: number; total: number };
  assert.ok(left.left > 0, `something is left (${c.stdout})`);
  assert.equal(left.done + left.left + 0, left.total, c.stdout);
  assert.deepEqual(detachedKeys(bucket), [], 'no coordinator has the job');
  const result = JSON.parse(peer.readObject(bucket, 'jobs/dcan/detached-result.json')!.toString('utf8')) as {
    status: string;
  };
  assert.equal(result.status, 'cancelled');
  // tasks already sent finish; nothing new is sent: the reduce never runs
  await new Promise((r) => setTimeout(r, 4000));
  const atRest = commits(bucket, 'dcan');
  assert.ok(!atRest.has('out/all.txt'), 'the last step was not sent after the cancel');
  // the bucket is consistent: every commit marker holds its output (or names an object that exists)
  for (const out of atRest.keys()) {
    assert.ok(committedText(peer, bucket, `jobs/dcan/committed/${out}`), `${out}: its output is whole`);
  }
  const runsAtRest = executions(marks);
  // attach after a cancel says so
  const again = await runCli(['run', 'job.yaml', '--cluster', 'dcan', ...where, '--json'], {
    cwd: dir,
    env,
    timeoutMs: 120_000,
  });
  assert.equal(again.code, 0, again.stderr);
  const summary = JSON.parse(again.stdout) as { status: string; resumed: boolean; counts: { done: number } };
  assert.equal(summary.status, 'succeeded');
  assert.equal(summary.resumed, true);
  assert.equal(summary.counts.done, 2 * n + 1);
  const expectedAll = Array.from({ length: n }, (_, i) => `${i} KSAT\n`).join('');
  assert.equal(readFileSync(path.join(dir, 'out/all.txt'), 'utf8'), expectedAll);
  // what was committed before the later run did not run again
  const runs = executions(marks);
  for (const out of atRest.keys())
    assert.equal(runs.get(markOf(out))?.length, runsAtRest.get(markOf(out))?.length, `${out} ran again`);
  t.diagnostic(again.stderr);
  t.diagnostic(
    `cancelled with ${left.done}/${left.total} done, ${left.left} left; ${atRest.size} committed at rest`,
  );
  w1.kill('SIGTERM');
  await w1.result;
});

test('corral cancel --abandon with no worker up: cancel ends the run itself, and workers drop the queued tasks instead of running them', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  const n = 5;
  workflow(dir, 'dab', n, 0.1);
  const env = envOf(marks);
  const { bucket, where } = await cluster('dab');
  // no worker: the submitter's pass sends the first step; nobody coordinates yet
  const sub = await runCli(['run', 'job.yaml', '--cluster', 'dab', ...where, '--detach', '--json'], {
    cwd: dir,
    env,
  });
  assert.equal(sub.code, 0, sub.stderr);
  assert.equal((JSON.parse(sub.stdout) as { status: string }).status, 'detached');
  const c = await runCli(['cancel', 'dab', '--cluster', 'dab', ...where, '--abandon'], { cwd: dir, env });
  assert.equal(c.code, 0, c.stderr);
  assert.match(
    c.stdout,
    /^job dab cancelled on cluster dab: 0\/11 done, 0 failed, 11 left; queued tasks are dropped/,
  );
  assert.deepEqual(detachedKeys(bucket), []);
  assert.equal(
    (
      JSON.parse(peer.readObject(bucket, 'jobs/dab/detached-result.json')!.toString('utf8')) as {
        status: string;
      }
    ).status,
    'cancelled',
  );
  // a second cancel: nothing runs detached any more
  const twice = await runCli(['cancel', 'dab', '--cluster', 'dab', ...where], { cwd: dir, env });
  assert.equal(twice.code, 2);
  assert.match(
    twice.stderr,
    /^corral: error: JOB: job "dab" has no detached run going on on cluster dab \(fix: /,
  );
  const w = worker(t, dir, where, env, 'w1');
  const { GetQueueAttributesCommand } = await import('@aws-sdk/client-sqs');
  const queueUrl = where[where.indexOf('--queue-url') + 1]!;
  await waitFor(
    async () => {
      const a = (
        await peer.sqs.send(
          new GetQueueAttributesCommand({
            QueueUrl: queueUrl,
            AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
          }),
        )
      ).Attributes!;
      return Number(a.ApproximateNumberOfMessages) + Number(a.ApproximateNumberOfMessagesNotVisible) === 0;
    },
    60_000,
    200,
  );
  assert.equal(executions(marks).size, 0, 'no abandoned task ran');
  assert.equal(commits(bucket, 'dab').size, 0);
  w.kill('SIGTERM');
  await w.result;
});

test('a worker holding a coordinator lease stays up and protected from scale-in while idle, and leaves through its group once the run ends', async (t) => {
  const dir = tempDir(t);
  const marks = path.join(dir, 'marks');
  workflow(dir, 'dprot', 3, 0.1);
  const env = envOf(marks);
  const { bucket, where } = await cluster('dprot');
  // the worker reads another queue of the same bucket: it has no task of the job, only its coordinator
  const other = await peer.createQueues('dprot-other');
  const asg = await startQueryPeer({ upstream: peer.endpoint });
  const id = asg.addInstance({});
  const group = asg.addGroup('corral-dprot-cpu', { min: 0, max: 2, instances: [id] });
  const host = await startFakeImds({ instanceId: id });
  t.after(async () => {
    await host.stop();
    await asg.stop();
  });
  const sub = await runCli(['run', 'job.yaml', '--cluster', 'dprot', ...where, '--detach'], {
    cwd: dir,
    env,
  });
  assert.equal(sub.code, 0, sub.stderr);
  const w = startCli(
    [
      'worker',
      '--queue-url',
      other.queueUrl,
      '--bucket',
      bucket,
      '--endpoint-url',
      asg.endpoint,
      '--cache-dir',
      path.join(dir, 'w'),
      '--idle-exit',
      '1',
      '--auto-scaling',
    ],
    { cwd: dir, env: { ...env, CORRAL_IMDS_ENDPOINT: host.endpoint } },
  );
  t.after(() => {
    if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
  });
  await waitFor(
    () => {
      const b = peer.readObject(bucket, 'jobs/dprot/coordinator.lease');
      return b && !(JSON.parse(b.toString('utf8')) as { released?: boolean }).released;
    },
    60_000,
    100,
  );
  // idle (no task in its queue) for several times its idle exit, it stays: it coordinates
  await new Promise((r) => setTimeout(r, 4000));
  assert.equal(w.exitCode, null, 'the coordinating worker is still up');
  assert.equal(group.instances.get(id)?.protected, true, 'protected from scale-in while it holds the lease');
  assert.equal(group.desired, 1);
  const c = await runCli(['cancel', 'dprot', '--cluster', 'dprot', ...where], { cwd: dir, env });
  assert.equal(c.code, 0, c.stderr);
  const r = await w.result;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /coordinating detached job dprot/);
  assert.match(r.stderr, new RegExp(`idle: terminating instance ${id} through group corral-dprot-cpu`));
  assert.equal(group.desired, 0);
  assert.equal(host.tokenless, 0, 'IMDSv2 only');
});
