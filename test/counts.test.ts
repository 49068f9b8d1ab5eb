/** Issue 22, item 5: skipped and waiting tasks are counted everywhere, steps in workflow order. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';
import { inputs, mosaic } from './hyperflow-mosaic.js';
import { hasChromium, launchBrowser } from './observe-browser.js';

const noBrowser = hasChromium ? false : 'needs Debian chromium at /usr/bin/chromium (installed by .ci/run)';

/**
 * zfetch fails on one input, so parse skips one task, collect (a reduce of parse, listed before
 * it in the file) skips its one task, and gather (a file map behind collect) is skipped whole.
 * Workflow order zfetch, parse, collect, gather; alphabetical would be collect, gather, parse, zfetch.
 */
async function failedWorkflow(t: { after: (fn: () => void) => void }): Promise<string> {
  const dir = tempDir(t);
  writeFiles(dir, {
    'xs.txt': 'a\nbad\nc\n',
    'job.yaml': `name: counts
retries: { maxAttempts: 1 }
steps:
  - name: zfetch
    map: { lines: xs.txt }
    command: '[ {input} != bad ] && echo {input}'
    outputs: f/{index}
  - name: collect
    reduce: parse
    command: 'cat {inputs}'
    outputs: all.txt
  - name: parse
    map: { outputsOf: zfetch }
    command: 'cat {input}'
    outputs: p/{index}
  - name: gather
    needs: [collect]
    map: { glob: 'p/*' }
    command: 'cat {input}'
    outputs: g/{input.name}
`,
  });
  const r = await runCli(['run', 'job.yaml', '--quiet'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr + r.stdout);
  return dir;
}

const ORDER = ['zfetch', 'parse', 'collect', 'gather'];

test('status: the counts add up (skipped and waiting shown), a skipped step reads skipped, steps in workflow order', async (t) => {
  const dir = await failedWorkflow(t);
  const text = await runCli(['status', 'counts'], { cwd: dir });
  assert.equal(text.code, 0, text.stderr);
  const totals = /^tasks: (\d+) total, (.*)$/m.exec(text.stdout);
  assert.ok(totals, text.stdout);
  const parts = Object.fromEntries(
    totals[2]!.split(', ').map((p) => {
      const [n, ...what] = p.split(' ');
      return [what.join(' '), Number(n)];
    }),
  );
  assert.deepEqual(parts, { done: 4, running: 0, pending: 0, waiting: 0, failed: 1, skipped: 2 });
  assert.equal(
    Object.values(parts).reduce((a, b) => a + b, 0),
    Number(totals[1]),
  );
  const steps = [...text.stdout.matchAll(/^ {2}step (\S+): (.*)$/gm)].map((m) => [m[1], m[2]]);
  assert.deepEqual(
    steps.map(([name]) => name),
    ORDER,
  );
  const line = Object.fromEntries(steps);
  assert.equal(line.zfetch, '2/3 done, 1 failed');
  assert.equal(line.parse, '2/3 done, 1 skipped');
  assert.match(line.collect!, /^skipped/);
  assert.match(line.gather!, /^skipped/);
  const json = JSON.parse((await runCli(['status', 'counts', '--json'], { cwd: dir })).stdout);
  assert.deepEqual(Object.keys(json.steps), ORDER);
  assert.deepEqual(json.skippedSteps, ['gather']);
  const c = json.counts;
  assert.equal(c.done + c.leased + c.pending + c.blocked + c.dead + c.skipped, c.total);
});

test('report: skipped tasks are not counted as retries', async (t) => {
  const dir = await failedWorkflow(t);
  const r = await runCli(['report', 'counts', '-o', 'r.html'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const html = readFileSync(path.join(dir, 'r.html'), 'utf8');
  const retries = html.slice(html.indexOf('id="retries"'), html.indexOf('id="cost"'));
  assert.match(retries, /no task was retried/, retries);
  assert.match(html, /2\/3 \(1 skipped\)/);
});

test('dashboard: cards add up with skipped, skipped steps read skipped, steps in workflow order', {
  skip: noBrowser,
  timeout: 90_000,
}, async (t) => {
  const dir = await failedWorkflow(t);
  const dash = startCli(['dashboard', 'counts'], { cwd: dir });
  t.after(() => {
    dash.kill('SIGKILL');
  });
  let stderr = '';
  dash.stderr!.on('data', (d) => {
    stderr += d;
  });
  const url = (await waitFor(() => /at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stderr), 20_000))[1]!;
  const browser = await launchBrowser(t);
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('status')!.dataset.status === 'failed', null, {
    timeout: 20_000,
  });
  const cards = await page.evaluate(() =>
    Object.fromEntries(
      ['total', 'done', 'leased', 'pending', 'blocked', 'dead', 'skipped'].map((k) => [
        k,
        Number(document.getElementById(k)?.dataset.count ?? Number.NaN),
      ]),
    ),
  );
  assert.deepEqual(cards, { total: 7, done: 4, leased: 0, pending: 0, blocked: 0, dead: 1, skipped: 2 });
  const nodes = await page.evaluate(() =>
    [...document.querySelectorAll('#dag g[data-step]')].map((g) => [
      g.getAttribute('data-step'),
      g.getAttribute('data-state'),
      g.querySelectorAll('text')[1]?.textContent,
    ]),
  );
  assert.deepEqual(
    nodes.map((n) => n[0]),
    ORDER,
  );
  const byName = Object.fromEntries(nodes.map(([n, state, text]) => [n, { state, text }]));
  assert.deepEqual(byName.collect, { state: 'skipped', text: 'skipped' });
  assert.deepEqual(byName.gather, { state: 'skipped', text: 'skipped' });
  assert.equal(byName.parse!.text, '2/3 done');
  dash.kill('SIGINT');
  assert.equal((await dash.result).code, 0);
});

test('dashboard: HyperFlow processes are drawn with the edges between them', {
  skip: noBrowser,
  timeout: 90_000,
}, async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, { ...inputs(), 'workflow.json': JSON.stringify(mosaic('name')) });
  const r = await runCli(['run', 'workflow.json', '--var', 'scale=2', '--quiet'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const dash = startCli(['dashboard', 'mosaic'], { cwd: dir });
  t.after(() => {
    dash.kill('SIGKILL');
  });
  let stderr = '';
  dash.stderr!.on('data', (d) => {
    stderr += d;
  });
  const url = (await waitFor(() => /at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stderr), 20_000))[1]!;
  const view = await (await fetch(`${url}api/view`)).json();
  const needs = (view.steps as { name: string; needs: string[] }[]).flatMap((s) =>
    s.needs.map((n) => `${n}->${s.name}`),
  );
  assert.ok(needs.length > 0, `no edge between HyperFlow processes: ${JSON.stringify(view.steps)}`);
  // workflow order: every process after the ones it reads signals from
  const pos = new Map((view.steps as { name: string }[]).map((s, i) => [s.name, i]));
  for (const e of needs) {
    const [a, b] = e.split('->');
    assert.ok(pos.get(a!)! < pos.get(b!)!, `${a} listed after ${b}`);
  }
  const browser = await launchBrowser(t);
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForSelector('#dag g[data-step]', { timeout: 20_000 });
  const drawn = await page.evaluate(() =>
    [...document.querySelectorAll('#dag path[data-edge]')].map((p) => p.getAttribute('data-edge')),
  );
  assert.deepEqual([...drawn].sort(), [...needs].sort());
  dash.kill('SIGINT');
  assert.equal((await dash.result).code, 0);
});

test('dashboard: the ETA reads -- until tasks finish at some rate, then a time with its unit', {
  skip: noBrowser,
  timeout: 90_000,
}, async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: 30 }, (_, i) => `item-${i}`).join('\n')}\n`,
    'job.yaml': `name: eta
tasks:
  map: { lines: items.txt }
  command: "sleep 0.2; echo {input}"
concurrency: 2
`,
  });
  const browser = await launchBrowser(t);
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
  const seen = new Set<string>();
  const deadline = Date.now() + 60_000;
  while (run.exitCode === null && Date.now() < deadline) {
    const text = await page.evaluate(() => document.getElementById('eta')?.textContent ?? '');
    if (text) seen.add(text);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal((await run.result).code, 0);
  assert.ok(seen.size > 0, 'no ETA shown while the job ran');
  for (const s of seen) assert.match(s, /^ETA (--|\d+(\.\d)?s|\d+m\d\ds|\d+h\d\dm)$/, s);
  assert.ok(
    [...seen].some((s) => /\d/.test(s)),
    `the ETA never showed a time: ${[...seen].join(', ')}`,
  );
});
