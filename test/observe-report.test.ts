import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';
import { hasChromium, launchBrowser } from './observe-browser.js';

const noBrowser = hasChromium ? false : 'needs Debian chromium at /usr/bin/chromium (installed by .ci/run)';

test('report: a self-contained HTML file whose timeline has one bar per task, grouped by worker', {
  skip: noBrowser,
  timeout: 90_000,
}, async (t) => {
  const dir = tempDir(t);
  const total = 20;
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: total }, (_, i) => `item-${i}`).join('\n')}\n`,
    'job.yaml': `name: timeline
tasks:
  map: { lines: items.txt }
  command: "sleep 0.05; echo {input}"
concurrency: 2
`,
  });
  assert.equal((await runCli(['run', 'job.yaml', '--quiet'], { cwd: dir })).code, 0);
  const r = await runCli(['report', 'timeline', '-o', 'out/report.html'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const file = path.join(dir, 'out/report.html');
  const html = readFileSync(file, 'utf8');
  assert.doesNotMatch(
    html,
    /<script|(src|href)=["']?https?:/i,
    'the report needs the network or runs scripts',
  );

  const browser = await launchBrowser(t);
  const requests: string[] = [];
  browser.on('request', (req) => requests.push(req.url()));
  const page = await browser.newPage();
  await page.goto(pathToFileURL(file).href);
  assert.deepEqual(
    requests.filter((u) => !u.startsWith('file:')),
    [],
    'opening the report made network requests',
  );
  const bars = await page.locator('#gantt rect.bar').evaluateAll((els) =>
    els.map((e) => ({
      task: e.getAttribute('data-task'),
      worker: e.getAttribute('data-worker'),
      outcome: e.getAttribute('data-outcome'),
      start: Number(e.getAttribute('data-start')),
      end: Number(e.getAttribute('data-end')),
      visible: (e as SVGGraphicsElement).getBBox().width > 0,
    })),
  );
  assert.equal(bars.length, total);
  assert.deepEqual(
    new Set(bars.map((b) => b.task)),
    new Set(Array.from({ length: total }, (_, i) => String(i))),
  );
  assert.ok(bars.every((b) => b.outcome === 'ok' && b.end >= b.start && b.visible));
  // bars sit in the group of the worker that ran them: two workers (concurrency 2)
  const groups = await page.locator('#gantt g.worker').evaluateAll((els) =>
    els.map((g) => ({
      worker: g.getAttribute('data-worker'),
      bars: g.querySelectorAll('rect.bar').length,
    })),
  );
  assert.equal(groups.length, 2);
  assert.equal(
    groups.reduce((n, g) => n + g.bars, 0),
    total,
  );
  for (const g of groups) assert.ok(bars.filter((b) => b.worker === g.worker).length === g.bars);
  assert.equal(await page.textContent('#steps [data-step="map"] td:nth-child(3)'), `${total}/${total}`);
  assert.match((await page.textContent('#summary'))!, /20 total: 20 done/);
  assert.match((await page.textContent('#cost'))!, /local run/);
});

test('report: a re-run that did nothing keeps the times of the run that did the work', {
  timeout: 60_000,
}, async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': 'a\nb\nc\nd\n',
    'job.yaml':
      'name: times\ntasks:\n  map: { lines: items.txt }\n  command: "sleep 0.4; echo {input}"\noutputs: out/{index}.txt\nconcurrency: 2\n',
  });
  const field = async (name: string) => {
    const r = await runCli(['report', 'times', '-o', 'r.html'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const html = readFileSync(path.join(dir, 'r.html'), 'utf8');
    return new RegExp(`data-field="${name}">([^<]*)<`).exec(html)?.[1];
  };
  assert.equal((await runCli(['run', 'job.yaml', '--quiet'], { cwd: dir })).code, 0);
  const wall = await field('wall time');
  const busy = await field('task time');
  // WHEN the same command runs again and finds everything done
  const again = await runCli(['run', 'job.yaml', '--json'], { cwd: dir });
  assert.equal(JSON.parse(again.stdout).counts.done, 4);
  // THEN the report still covers the run that did the work: its wall time, at most 2 tasks at once
  assert.equal(await field('wall time'), wall);
  assert.equal(await field('task time'), busy);
  const running = Number(/([\d.]+) tasks running on average/.exec(busy ?? '')?.[1]);
  assert.ok(running > 0 && running <= 2.05, `${busy} (wall ${wall})`);
});

test('report: failures with their log, retries and a cost estimate', { timeout: 60_000 }, async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': 'a\nb\nc\nd\n',
    'job.yaml': `name: broken
tasks:
  map: { lines: items.txt }
  command: "if [ {index} = 1 ]; then echo 'the <b>input</b> is bad' >&2; exit 4; fi; if [ {index} = 2 ] && [ {attempt} = 1 ]; then exit 1; fi; echo {input}"
concurrency: 2
retries: { maxAttempts: 2, backoff: { initial: 100ms } }
`,
  });
  assert.equal((await runCli(['run', 'job.yaml', '--quiet'], { cwd: dir })).code, 1);
  const r = await runCli(['report', 'broken', '-o', '-', '--instance-type', 'c5.large', '--spot'], {
    cwd: dir,
  });
  assert.equal(r.code, 0, r.stderr);
  const html = r.stdout;
  const failures = html.slice(html.indexOf('id="failures"'), html.indexOf('id="retries"'));
  assert.match(failures, /task 1 \(line 2 &#34;b&#34;\)<\/strong>/);
  assert.match(failures, /the &#60;b&#62;input&#60;\/b&#62; is bad/, 'log lines are escaped');
  const retries = html.slice(html.indexOf('id="retries"'), html.indexOf('id="cost"'));
  assert.match(retries, /<td>2<\/td><td>map<\/td><td>done<\/td><td class="num">2<\/td><td>failed → ok<\/td>/);
  assert.match(retries, /failed → dead/);
  assert.match(html, /data-field="cost"><strong>\$\d+\.\d{4}<\/strong>/);
  assert.match(html, /c5\.large \(spot\)/);
  assert.equal((html.match(/class="bar"/g) ?? []).length, 6); // 4 tasks, 2 of them twice

  const bad = await runCli(['report', 'broken', '--instance-type', 'z9.huge'], { cwd: dir });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--instance-type/);
  const unknown = await runCli(['report', 'nope'], { cwd: dir });
  assert.equal(unknown.code, 2);
  assert.ok(!existsSync(path.join(dir, 'report.html')));
});

test('logs -f follows the events log and stops when the run ends; --log-format json prints events on stderr', {
  timeout: 60_000,
}, async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: 16 }, (_, i) => `i${i}`).join('\n')}\n`,
    'job.yaml': `name: follow
tasks:
  map: { lines: items.txt }
  command: "sleep 0.1; echo {input}"
concurrency: 2
`,
  });
  const run = startCli(['--log-format', 'json', 'run', 'job.yaml', '--quiet'], { cwd: dir });
  t.after(() => {
    run.kill('SIGKILL');
  });
  await waitFor(() => existsSync(path.join(dir, '.corral/jobs/follow/coordinator.pid')), 20_000);
  const follow = await runCli(['logs', 'follow', '-f'], { cwd: dir, timeoutMs: 40_000 });
  assert.equal(follow.code, 0, follow.stderr);
  assert.match(follow.stdout, /INFO {2}job started/);
  assert.match(follow.stdout, /INFO {2}job succeeded/);
  const r = await run.result;
  assert.equal(r.code, 0);
  const events = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  assert.ok(events.some((e) => e.event === 'finished' && e.status === 'succeeded' && e.job === 'follow'));
  // a task's log, followed after the job ended, prints and returns at once
  const task = await runCli(['logs', 'follow', '3', '-f'], { cwd: dir, timeoutMs: 20_000 });
  assert.equal(task.code, 0);
  const bad = await runCli(['--log-level', 'loud', 'status'], { cwd: dir });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--log-level/);
});
