import assert from 'node:assert/strict';
import { cpSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { ROOT, runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';
import { hasChromium, launchBrowser, parseProm } from './observe-browser.js';

const noBrowser = hasChromium ? false : 'needs Debian chromium at /usr/bin/chromium (installed by .ci/run)';

function sleepyJob(dir: string, name: string, n: number, sleep: string): void {
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: n }, (_, i) => `item-${i}`).join('\n')}\n`,
    'job.yaml': `name: ${name}
tasks:
  map: { lines: items.txt }
  command: "sleep ${sleep}; echo {input}"
concurrency: 2
`,
  });
}

test('run --ui: the dashboard shows the done count rise to the total, live', {
  skip: noBrowser,
  timeout: 90_000,
}, async (t) => {
  const dir = tempDir(t);
  const total = 36;
  sleepyJob(dir, 'live', total, '0.15');
  const browser = await launchBrowser(t); // ready before the run starts
  const page = await browser.newPage();
  const run = startCli(['run', 'job.yaml', '--ui', '--quiet'], { cwd: dir });
  t.after(() => {
    run.kill('SIGKILL');
  });
  let stderr = '';
  run.stderr!.on('data', (d) => {
    stderr += d;
  });
  const url = (await waitFor(() => /dashboard at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stderr), 20_000))[1]!;
  await page.goto(url);

  // Metrics during the run agree with the plan.
  const metrics = parseProm(await (await fetch(`${url}metrics`)).text());
  const planned = metrics.filter((s) => s.name === 'corral_tasks').reduce((n, s) => n + s.value, 0);
  assert.ok(planned === 0 || planned === total, `corral_tasks sums to ${planned}`);

  const seen: number[] = [];
  let sawWorkerWithTask = false;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const [done, shownTotal, busy] = await page.evaluate(() => [
      Number(document.getElementById('done')!.dataset.count ?? -1),
      Number(document.getElementById('total')!.dataset.count ?? -1),
      [...document.querySelectorAll('#workers tr[data-worker] td:last-child')].some((td) =>
        /\d/.test(td.textContent ?? ''),
      ),
    ]);
    sawWorkerWithTask ||= busy as boolean;
    if (done >= 0 && seen.at(-1) !== done) seen.push(done as number);
    if (shownTotal === total && done === total) break;
    assert.ok(Date.now() < deadline, `the page never showed ${total}/${total}; it showed ${seen.join(', ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const r = await run.result;
  assert.equal(r.code, 0, r.stderr);
  assert.ok(seen.length >= 3, `the done count did not rise live: ${seen.join(', ')}`);
  assert.deepEqual(
    seen,
    [...seen].sort((a, b) => a - b),
    `the done count went down: ${seen.join(', ')}`,
  );
  assert.ok(sawWorkerWithTask, 'no worker was shown with its current task');
  // The last view (pushed when the run ended) shows the finished job, its step and the throughput.
  await page.waitForFunction(() => document.getElementById('status')!.dataset.status === 'succeeded', null, {
    timeout: 10_000,
  });
  const step = await page.getAttribute('#dag [data-step="map"]', 'data-done');
  assert.equal(step, String(total));
  const bars = await page
    .locator('#chart rect[data-ok]')
    .evaluateAll((els) => els.reduce((n, e) => n + Number(e.getAttribute('data-ok')), 0));
  assert.equal(bars, total, 'the throughput chart does not add up to the tasks');
});

test('/metrics matches the job counts; the token is checked; bad flags exit 2', {
  timeout: 90_000,
}, async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: 12 }, (_, i) => `x${i}`).join('\n')}\n`,
    // task 3 always fails (dead letter); task 5 fails on its first attempt only
    'job.yaml': `name: flaky
tasks:
  map: { lines: items.txt }
  command: "if [ {index} = 3 ]; then echo boom >&2; exit 4; fi; if [ {index} = 5 ] && [ {attempt} = 1 ]; then exit 1; fi; echo {input}"
concurrency: 2
retries: { maxAttempts: 2, backoff: { initial: 100ms } }
`,
  });
  const r = await runCli(['run', 'job.yaml', '--quiet'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr);
  const status = JSON.parse((await runCli(['status', 'flaky', '--json'], { cwd: dir })).stdout);

  const token = 'test-token-0123456789';
  const dash = startCli(['dashboard', 'flaky', '--port', '0', '--token', token], { cwd: dir });
  t.after(() => {
    dash.kill('SIGKILL');
  });
  let stderr = '';
  dash.stderr!.on('data', (d) => {
    stderr += d;
  });
  const url = (await waitFor(() => /at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stderr), 20_000))[1]!;
  assert.ok(!stderr.includes(token), 'the token was printed');
  assert.equal((await fetch(`${url}metrics`)).status, 401);
  assert.equal((await fetch(`${url}?token=wrong-token-000000`)).status, 401);
  const res = await fetch(`${url}metrics`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
  const samples = parseProm(await res.text());
  const value = (name: string, labels: Record<string, string> = {}) =>
    samples
      .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      .reduce((n, s) => n + s.value, 0);
  for (const state of ['pending', 'leased', 'done', 'dead'] as const) {
    assert.equal(
      value('corral_tasks', { corral_job: 'flaky', step: 'map', state }),
      status.counts[state],
      state,
    );
  }
  assert.equal(value('corral_dead_letters', { corral_job: 'flaky' }), 1);
  assert.equal(value('corral_queue_depth', { corral_job: 'flaky' }), 0);
  assert.equal(value('corral_workers_active', { corral_job: 'flaky' }), 0);
  assert.equal(value('corral_job_running', { corral_job: 'flaky' }), 0);
  // Attempts, retries and durations agree with the state file's attempts table.
  const db = new Database(`${dir}/.corral/jobs/flaky/state.db`, { readonly: true });
  const attempts = db.prepare('SELECT outcome, count(*) AS n FROM attempts GROUP BY outcome').all() as {
    outcome: string;
    n: number;
  }[];
  db.close();
  const byOutcome = Object.fromEntries(attempts.map((a) => [a.outcome, a.n]));
  assert.equal(byOutcome.dead, 1);
  assert.equal(value('corral_task_retries_total'), (byOutcome.failed ?? 0) + (byOutcome.expired ?? 0));
  assert.equal(value('corral_task_retries_total'), 2); // task 3 once, task 5 once
  for (const [outcome, n] of Object.entries(byOutcome)) {
    assert.equal(value('corral_task_attempts_total', { outcome }), n, outcome);
    assert.equal(value('corral_task_duration_seconds_count', { outcome }), n, outcome);
  }
  const inf = value('corral_task_duration_seconds_bucket', { outcome: 'ok', le: '+Inf' });
  assert.equal(inf, byOutcome.ok);
  // The JSON view names the dead letter with the end of its log.
  const view = await (await fetch(`${url}api/view?token=${token}`)).json();
  const failure = view.failures.find((f: { key: string }) => f.key === '3');
  assert.ok(failure, JSON.stringify(view.failures));
  assert.equal(failure.state, 'dead');
  assert.equal(failure.input, 'line 4 "x3"'); // what it ran on, beside its key (issue 22, item 1)
  assert.ok(failure.logTail.includes('boom'), failure.logTail.join('|'));
  dash.kill('SIGINT');
  assert.equal((await dash.result).code, 0);

  // Bad input exits 2 before anything listens or runs.
  const open = await runCli(['dashboard', 'flaky', '--host', '0.0.0.0'], { cwd: dir });
  assert.equal(open.code, 2);
  assert.match(open.stderr, /--host.*--token/);
  const ui = await runCli(['run', 'job.yaml', '--ui', '--ui-host', '0.0.0.0', '--fresh'], { cwd: dir });
  assert.equal(ui.code, 2);
  assert.match(ui.stderr, /--ui-host/);
  const unknown = await runCli(['dashboard', 'nope'], { cwd: dir });
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /no job named "nope".*flaky/);
  const port = await runCli(['dashboard', 'flaky', '--port', '70000'], { cwd: dir });
  assert.equal(port.code, 2);
});

test('workflow: the view has each step with its needs and its own counts', { timeout: 60_000 }, async (t) => {
  const dir = tempDir(t);
  cpSync(path.join(ROOT, 'examples/wordcount'), path.join(dir, 'wordcount'), { recursive: true });
  cpSync(path.join(ROOT, 'examples/checksums/data'), path.join(dir, 'checksums/data'), { recursive: true });
  const cwd = path.join(dir, 'wordcount');
  const r = await runCli(['run', 'job.yaml', '--quiet'], { cwd });
  assert.equal(r.code, 0, r.stderr);
  const dash = startCli(['dashboard', 'wordcount'], { cwd });
  t.after(() => {
    dash.kill('SIGKILL');
  });
  let stderr = '';
  dash.stderr!.on('data', (d) => {
    stderr += d;
  });
  const url = (await waitFor(() => /at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stderr), 20_000))[1]!;
  const view = await (await fetch(`${url}api/view`)).json();
  const steps = Object.fromEntries(
    view.steps.map((s: { name: string; needs: string[]; counts: { done: number; total: number } }) => [
      s.name,
      { needs: s.needs, done: s.counts.done === s.counts.total && s.counts.total > 0 },
    ]),
  );
  assert.deepEqual(steps, {
    count: { needs: [], done: true },
    merge: { needs: ['count'], done: true },
    top: { needs: ['merge'], done: true },
  });
  dash.kill('SIGINT');
  assert.equal((await dash.result).code, 0);
});
