import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';

/** A marker secret: it must appear in no output, log, report or error of corral. */
const SECRET = 'CORRAL_TEST_SECRET_7f3a9c2e51d04b8a';

/** Every file below `dir` except the state: the database and job.json (the resolved spec, env included). */
function filesBelow(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesBelow(p));
    else if (!/^state\.db|^job\.json$/.test(e.name)) out.push(p);
  }
  return out;
}

test('a secret in the task env, the process env and a dashboard token appears in no output, log, report or error', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': 'a\nb\nc\nfail\n',
    // tasks use the secret without printing it; one fails every attempt (its error is reported)
    'job.yaml': `name: secrets
tasks:
  map: { lines: items.txt }
  command: 'test -n "$API_KEY" || exit 9; if [ {input} = fail ]; then echo "task failed on purpose" >&2; exit 3; fi; echo {input}'
  env:
    API_KEY: ${SECRET}
outputs: out/{index}
retries: { maxAttempts: 2, backoff: { initial: 50ms } }
concurrency: 2
`,
  });
  const env = { CORRAL_TEST_PASSWORD: SECRET, AWS_SECRET_ACCESS_KEY: SECRET, CORRAL_LOG_FORMAT: 'json' };
  const seen: Array<[string, string]> = [];
  const run = await runCli(['run', 'job.yaml', '--json'], { cwd: dir, env });
  assert.equal(run.code, 1, run.stderr + run.stdout);
  assert.match(run.stdout, /exit(ed)? (code )?3|status 3|code 3/i, 'the failure is reported');
  seen.push(['run --json', run.stdout + run.stderr]);
  const plain = await runCli(['run', 'job.yaml'], { cwd: dir, env: { ...env, CORRAL_LOG_FORMAT: 'pretty' } });
  seen.push(['run (resumed)', plain.stdout + plain.stderr]);
  for (const args of [
    ['status', '--json'],
    ['status', 'secrets', '--json'],
    ['status', 'secrets'],
    ['logs', 'secrets'],
    ['logs', 'secrets', '3'],
    ['logs', 'secrets', '0'],
    ['report', 'secrets', '-o', 'report.html'],
  ]) {
    const r = await runCli(args, { cwd: dir, env });
    seen.push([args.join(' '), r.stdout + r.stderr]);
  }
  // the task's log holds what it printed (its own business): it printed no secret
  assert.ok(statSync(path.join(dir, 'report.html')).size > 0);
  for (const f of [...filesBelow(path.join(dir, '.corral')), path.join(dir, 'report.html')]) {
    seen.push([path.relative(dir, f), readFileSync(f, 'latin1')]);
  }
  // a dashboard with the secret as its token: the token is never printed (nor in its pages' errors)
  const dash = startCli(['dashboard', 'secrets', '--port', '0', '--token', SECRET], { cwd: dir, env });
  let out = '';
  dash.stdout!.on('data', (d) => {
    out += d;
  });
  dash.stderr!.on('data', (d) => {
    out += d;
  });
  const url = await waitFor(() => /http:\/\/127\.0\.0\.1:\d+/.exec(out)?.[0], 30_000);
  const denied = await fetch(`${url}/`, { headers: { authorization: 'Bearer wrong' } });
  seen.push(['dashboard 401 body', `${denied.status} ${await denied.text()}`]);
  dash.kill('SIGINT');
  await dash.result;
  seen.push(['dashboard output', out]);
  // a bad spec with the secret in a field: the error names the field, not the value
  writeFiles(dir, {
    'bad.yaml': `name: bad\ntasks:\n  map: { lines: items.txt }\n  command: "true"\n  env:\n    API_KEY: { nested: ${SECRET} }\n`,
  });
  const bad = await runCli(['run', 'bad.yaml'], { cwd: dir, env });
  assert.equal(bad.code, 2);
  seen.push(['bad spec error', bad.stderr + bad.stdout]);
  const leaks = seen.filter(([, text]) => text.includes(SECRET)).map(([where]) => where);
  assert.deepEqual(leaks, [], 'the secret leaked');
  assert.ok(seen.length >= 12);
});

test('a secret in a cluster spec (alarm email, tag) is not echoed by a plan error', async (t) => {
  const dir = tempDir(t);
  const email = `${SECRET.toLowerCase()}@example.com`;
  writeFiles(dir, {
    'c.yaml': `name: demo\nregion: us-east-1\nnetwork:\n  azs: [us-east-1a]\nmonitoring:\n  alarmEmail: ${email}\ntags:\n  token: ${SECRET}\nbudget:\n  maxHourly: -1\n`,
  });
  const r = await runCli(['plan', 'c.yaml', '--json'], { cwd: dir });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /budget\.maxHourly/);
  assert.ok(!(r.stdout + r.stderr).toLowerCase().includes(SECRET.toLowerCase()), r.stderr);
});
