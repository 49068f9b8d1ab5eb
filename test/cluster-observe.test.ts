/**
 * Cluster runs are observable (issue 22, item 7): `run --cluster --ui` serves the dashboard while
 * the run goes on, and `dashboard`/`report --cluster NAME` read what the coordinator tracked (its
 * ledger), with the same /api/view and /metrics as a local run. SQS + S3 on fauxqs, workers in
 * this process.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import { loadJob } from '../src/workflow/load-job.js';
import { PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';

let peer: Peer;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

/** Sum of the samples of a Prometheus series with these labels. */
function metric(text: string, name: string, labels: Record<string, string>): number {
  let n = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) n += Number(m[3]);
  }
  return n;
}

async function dashboardUrl(child: ReturnType<typeof startCli>): Promise<string> {
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr += d;
  });
  try {
    return (await waitFor(() => /dashboard.* at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stderr), 30_000))[1]!;
  } catch (err) {
    throw new Error(`${(err as Error).message}; stderr: ${stderr}`);
  }
}

test('cluster map job: run --ui serves /api/view and /metrics while it runs; dashboard and report --cluster after', {
  timeout: 180_000,
}, async (t) => {
  const dir = tempDir(t);
  const n = 6;
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: n }, (_, i) => `x${i}`).join('\n')}\n`,
    'job.yaml': `name: seen
tasks:
  map: { lines: items.txt }
  command: "sleep 0.3; if [ {index} = 2 ]; then exit 3; fi; echo {input}"
outputs: out/{index}.txt
retries: { maxAttempts: 1 }
`,
  });
  const { queueUrl, dlqUrl } = await peer.createQueues('cobs');
  await peer.createBucket('cobs-bucket');
  const where = [
    '--queue-url',
    queueUrl,
    '--dlq-url',
    dlqUrl,
    '--bucket',
    'cobs-bucket',
    '--endpoint-url',
    peer.endpoint,
    '--state-dir',
    path.join(dir, 'state'),
  ];
  const env = { ...PEER_ENV, CORRAL_CLUSTER_TICK_MS: '200' };
  const coordinator = startCli(['run', 'job.yaml', '--cluster', 'cobs', '--ui', ...where], { cwd: dir, env });
  t.after(() => {
    if (coordinator.exitCode === null && coordinator.signalCode === null) coordinator.kill('SIGKILL');
  });
  const url = await dashboardUrl(coordinator);
  // Before any worker runs: the dashboard shows the planned job as running, every task pending.
  const live = await waitFor(async () => {
    const r = await fetch(`${url}api/view`);
    if (r.status !== 200) return undefined;
    const v = (await r.json()) as { status: string; counts: { total: number; pending: number } };
    return v.counts.total === n ? v : undefined;
  }, 30_000);
  assert.equal(live.status, 'running');
  assert.equal(live.counts.pending, n);
  const liveMetrics = await (await fetch(`${url}metrics`)).text();
  assert.equal(metric(liveMetrics, 'corral_tasks', { corral_job: 'seen', step: 'map', state: 'pending' }), n);
  assert.equal(metric(liveMetrics, 'corral_job_running', { corral_job: 'seen' }), 1);

  const ac = new AbortController();
  const worker = runClusterWorker(
    {
      name: 'cobs',
      queueUrl,
      deadLetterQueueUrl: dlqUrl,
      bucket: 'cobs-bucket',
      region: 'us-east-1',
      endpointUrl: peer.endpoint,
      id: 'w0',
      cacheDir: path.join(dir, 'w0'),
      idleExitMs: 60_000,
      spot: false,
      log: () => {},
    },
    ac.signal,
  );
  // Progress shows on the dashboard as the bucket records it.
  await waitFor(async () => {
    const v = (await (await fetch(`${url}api/view`)).json()) as { counts: { done: number } };
    return v.counts.done > 0 ? v : undefined;
  }, 60_000);
  const res = await coordinator.result;
  ac.abort();
  await worker;
  assert.equal(res.code, 1, res.stderr);

  // After the run: corral dashboard JOB --cluster NAME reads the same ledger.
  const dash = startCli(['dashboard', 'seen', '--cluster', 'cobs', '--state-dir', path.join(dir, 'state')], {
    cwd: dir,
  });
  t.after(() => {
    dash.kill('SIGKILL');
  });
  const url2 = await dashboardUrl(dash);
  const view = (await (await fetch(`${url2}api/view`)).json()) as {
    status: string;
    counts: { done: number; dead: number; total: number };
    steps: { name: string; counts: { done: number } }[];
    workers: { id: string }[];
  };
  assert.equal(view.status, 'failed');
  assert.deepEqual([view.counts.done, view.counts.dead, view.counts.total], [n - 1, 1, n]);
  assert.deepEqual(
    view.steps.map((s) => [s.name, s.counts.done]),
    [['map', n - 1]],
  );
  // the workers are those that committed results (named in the bucket's commit markers)
  assert.deepEqual(
    view.workers.map((w) => w.id),
    ['w0'],
  );
  const m = await (await fetch(`${url2}metrics`)).text();
  assert.equal(metric(m, 'corral_tasks', { corral_job: 'seen', step: 'map', state: 'done' }), n - 1);
  assert.equal(metric(m, 'corral_tasks', { corral_job: 'seen', step: 'map', state: 'dead' }), 1);
  assert.equal(metric(m, 'corral_job_running', { corral_job: 'seen' }), 0);
  dash.kill('SIGINT');
  assert.equal((await dash.result).code, 0);

  // corral report JOB --cluster NAME writes the report of the cluster run.
  const out = path.join(dir, 'r.html');
  const rep = await runCli(
    ['report', 'seen', '--cluster', 'cobs', '--state-dir', path.join(dir, 'state'), '-o', out],
    { cwd: dir },
  );
  assert.equal(rep.code, 0, rep.stderr);
  const html = readFileSync(out, 'utf8');
  assert.match(html, /data-field="status">failed</);
  assert.match(html, new RegExp(`data-field="tasks">${n} total: ${n - 1} done, 1 failed`));
  // the failed task with its input and the error from its failure marker
  assert.match(
    html,
    /<div class="failure" data-task="2"><strong>task 2 \(line 3 &#34;x2&#34;\)<\/strong> · step map · 1 attempt\(s\) · <span class="err">exited with code 3</,
  );
  // without an instance type the report says what it would need to price the run
  assert.match(html, /a run on a cluster: .*--instance-type/);
  // with one: the workers seen committing × the run's wall time, labelled an estimate
  const priced = await runCli(
    [
      'report',
      'seen',
      '--cluster',
      'cobs',
      '--state-dir',
      path.join(dir, 'state'),
      '--instance-type',
      't3.small',
      '-o',
      '-',
    ],
    { cwd: dir },
  );
  assert.equal(priced.code, 0, priced.stderr);
  assert.match(priced.stdout, /<td>1 × t3\.small in us-east-1<\/td>/);
  assert.match(priced.stdout, /an estimate: 1 worker\(s\) seen committing results × the run/);
  // 1 worker × the run's wall time (meta runs of the ledger)
  const db = new Database(path.join(dir, 'state/cluster/cobs/jobs/seen/state.db'), { readonly: true });
  const runs = JSON.parse((db.prepare("SELECT v FROM meta WHERE k = 'runs'").get() as { v: string }).v) as [
    number,
    number,
  ][];
  db.close();
  const wall = runs.reduce((a, [s0, e]) => a + (e - s0), 0) / 1000;
  assert.ok(wall > 1, `wall ${wall}`);
  assert.match(priced.stdout, new RegExp(`<th>instance-hours</th><td>${(wall / 3600).toFixed(3)}</td>`));

  // A cluster name that is not one exits 2, and nothing is written.
  const bad = await runCli(['report', 'seen', '--cluster', '../x', '-o', path.join(dir, 'bad.html')], {
    cwd: dir,
  });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /^corral: error: --cluster: .*fix: /m);
  assert.equal(existsSync(path.join(dir, 'bad.html')), false);
});

test('cluster workflow: dashboard --cluster shows each step with its needs and counts from the DAG ledger', {
  timeout: 120_000,
}, async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/a.txt': 'alpha\n',
    'in/b.txt': 'beta\n',
    'job.yaml': `name: cwo
steps:
  - name: up
    map: { glob: "in/*.txt" }
    command: 'tr a-z A-Z < {input}'
    outputs: out/up/{input.stem}.txt
  - name: total
    reduce: up
    command: 'cat {inputs}'
    outputs: out/total.txt
`,
  });
  const { queueUrl, dlqUrl } = await peer.createQueues('cwo');
  await peer.createBucket('cwo-bucket');
  const target = {
    name: 'cwo',
    queueUrl,
    deadLetterQueueUrl: dlqUrl,
    bucket: 'cwo-bucket',
    region: 'us-east-1',
  };
  const ac = new AbortController();
  const worker = runClusterWorker(
    {
      ...target,
      endpointUrl: peer.endpoint,
      id: 'w1',
      cacheDir: path.join(dir, 'w1'),
      idleExitMs: 60_000,
      spot: false,
      log: () => {},
    },
    ac.signal,
  );
  let summary: Awaited<ReturnType<typeof runClusterJob>>;
  try {
    summary = await runClusterJob(loadJob(path.join(dir, 'job.yaml'), { forCluster: true }), target, {
      stateDir: path.join(dir, 'state', 'cluster', 'cwo'),
      endpointUrl: peer.endpoint,
      tickMs: 150,
    });
  } finally {
    ac.abort();
    await worker;
  }
  assert.equal(summary.status, 'succeeded');
  const dash = startCli(['dashboard', 'cwo', '--cluster', 'cwo', '--state-dir', path.join(dir, 'state')], {
    cwd: dir,
  });
  t.after(() => {
    dash.kill('SIGKILL');
  });
  const url = await dashboardUrl(dash);
  const view = (await (await fetch(`${url}api/view`)).json()) as {
    status: string;
    counts: { done: number; total: number };
    steps: { name: string; needs: string[]; counts: { done: number; total: number } }[];
    workers: { id: string }[];
  };
  assert.equal(view.status, 'succeeded');
  assert.deepEqual([view.counts.done, view.counts.total], [3, 3]);
  assert.deepEqual(
    view.steps.map((s) => [s.name, s.needs, s.counts.done, s.counts.total]),
    [
      ['up', [], 2, 2],
      ['total', ['up'], 1, 1],
    ],
  );
  assert.deepEqual(
    view.workers.map((w) => w.id),
    ['w1'],
  );
  const m = await (await fetch(`${url}metrics`)).text();
  assert.equal(metric(m, 'corral_tasks', { corral_job: 'cwo', step: 'total', state: 'done' }), 1);
  dash.kill('SIGINT');
  assert.equal((await dash.result).code, 0);
});
