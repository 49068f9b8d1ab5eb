/**
 * The state file under stress (issue 17, items 1, 3, 4 and 5): a plan cut short by kill -9, an
 * error found once work has run, a full disk, a corrupt or read-only state. Each must end in a
 * clear outcome and leave a state that the next run resumes.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { CLI, runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';

/** Rows in a state file that is being written, or 0 while it has no tasks table yet. */
function taskRows(db: string): number {
  if (!existsSync(db)) return 0;
  let conn: Database.Database | undefined;
  try {
    conn = new Database(db, { readonly: true, fileMustExist: true });
    conn.pragma('busy_timeout = 100');
    return (conn.prepare('SELECT count(*) AS n FROM tasks').get() as { n: number }).n;
  } catch {
    return 0;
  } finally {
    conn?.close();
  }
}

/** Runs a read-only query on a job's state file. */
function query<T>(db: string, sql: string): T[] {
  const conn = new Database(db, { readonly: true, fileMustExist: true });
  try {
    return conn.prepare(sql).all() as T[];
  } finally {
    conn.close();
  }
}

test('kill -9 while the plan is written: the next run finishes it, every task done once', async (t) => {
  const dir = tempDir(t);
  const n = 60_000;
  writeFiles(dir, {
    'lines.txt': `${Array.from({ length: n }, (_, i) => String(i + 1)).join('\n')}\n`,
    'noop.mjs': 'export default async () => {};\n',
    'job.yaml': 'name: bigplan\ntasks:\n  map: { lines: lines.txt }\n  module: ./noop.mjs\nconcurrency: 2\n',
  });
  const db = path.join(dir, '.corral/jobs/bigplan/state.db');
  const first = startCli(['run', 'job.yaml', '-q'], { cwd: dir });
  // the plan is written in transactions of 5,000 rows: kill it once the first one is committed
  await waitFor(() => taskRows(db) > 0, 60_000, 5);
  first.kill('SIGKILL');
  await first.result;
  const planned = taskRows(db);
  const steps = query<{ name: string; state: string }>(db, 'SELECT name, state FROM steps');
  assert.ok(planned > 0 && planned < n, `killed mid-plan (${planned} of ${n} rows written)`);
  assert.deepEqual(steps, [], 'the step was not marked planned');

  const r = await runCli(['run', 'job.yaml', '-q'], { cwd: dir, timeoutMs: 300_000 });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout, new RegExp(`job bigplan succeeded: ${n}/${n} tasks done, 0 failed`));
  const [once] = query<{ tasks: number; attempts: number; rows: number }>(
    db,
    "SELECT count(DISTINCT task_id) AS tasks, count(*) AS attempts, (SELECT count(*) FROM tasks) AS rows FROM attempts WHERE outcome = 'ok'",
  );
  assert.deepEqual(once, { tasks: n, attempts: n, rows: n }, 'each task ran once');
});

test('a needs step whose glob matches nothing once the step before ran: the job fails, its state is kept and resumes', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'job.yaml': `name: midrun
steps:
  - name: make
    command: "mkdir -p out && echo hi > out/a.txt && echo ran >> made.log"
  - name: count
    needs: [make]
    map: { glob: "out/*.csv" }
    command: "wc -l < {input}"
    outputs: counts/{input.stem}
  - name: total
    needs: [count]
    command: "cat counts/* > total.txt"
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr + r.stdout);
  assert.doesNotMatch(r.stderr, /corral: error:|internal error|\n\s+at /);
  assert.match(r.stdout, /job midrun failed: 1\/1 tasks done/);
  assert.match(r.stdout, /step count: steps\[1\]\.map\.glob: "out\/\*\.csv" matches no file/);
  assert.match(r.stdout, /step total: not planned/);
  assert.ok(existsSync(path.join(dir, '.corral/jobs/midrun/state.db')), 'the state is kept');
  const status = await runCli(['status', 'midrun'], { cwd: dir });
  assert.match(status.stdout, /job midrun: failed/);

  // again without the input: the same failure, and the step that ran does not run again
  const again = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(again.code, 1, again.stderr + again.stdout);
  assert.match(again.stdout, /\(resumed\)/);

  writeFileSync(path.join(dir, 'out/x.csv'), 'a\nb\n');
  const fixed = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(fixed.code, 0, fixed.stderr + fixed.stdout);
  assert.match(fixed.stdout, /job midrun succeeded: 3\/3 tasks done/);
  assert.equal(readFileSync(path.join(dir, 'made.log'), 'utf8'), 'ran\n', 'make ran once');
  assert.equal(readFileSync(path.join(dir, 'total.txt'), 'utf8').trim(), '2');
});

test('disk full in the state folder: the run stops with one line, cleans up, and resumes once space is back', async (t) => {
  const dir = tempDir(t);
  const n = 200;
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: n }, (_, i) => `t${i}`).join('\n')}\n`,
    'job.yaml': `name: full
tasks:
  map: { lines: items.txt }
  command: "echo {input}; echo a line for the task log >&2"
outputs: out/{index}.txt
concurrency: 2
`,
    '.corral/.keep': '',
  });
  // A 16 MiB tmpfs on the state folder (a mount namespace of our own, as test/sandbox.ts does),
  // filled but for ~0.9 MiB; the filler goes before the second run. The namespace, and the
  // mount with it, last as long as this script.
  const node = JSON.stringify(process.execPath);
  const cli = JSON.stringify(CLI);
  const script = `set -u
mount -t tmpfs -o size=16m tmpfs .corral || exit 9
head -c 15800000 /dev/zero > .corral/filler
${node} ${cli} run job.yaml -q > run1.out 2> run1.err; echo $? > run1.code
${node} ${cli} status full --json > status1.json 2> status1.err
ls -A .corral/jobs/full/logs > logs1.txt
rm .corral/filler
${node} ${cli} run job.yaml -q > run2.out 2> run2.err; echo $? > run2.code
`;
  const sh = spawn('unshare', ['-rm', 'sh', '-c', script], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  sh.stderr.on('data', (d) => {
    err += d;
  });
  const code = await new Promise<number | null>((resolve) => sh.on('close', resolve));
  assert.equal(code, 0, `the namespace script failed: ${err}`);
  const read = (f: string) => readFileSync(path.join(dir, f), 'utf8');

  assert.equal(read('run1.code').trim(), '1', read('run1.err'));
  assert.match(
    read('run1.err'),
    /^corral: job full stopped: no space left on the device of \S+\/\.corral\/jobs\/full \(.+\); its state is kept: free some space and run the same command again to resume\n$/,
  );
  assert.ok(!existsSync(path.join(dir, '.corral-staging')), 'no staging files are left');
  assert.doesNotMatch(read('logs1.txt'), /\.forker-|\.part/, 'no scratch log parts are left');
  const s1 = JSON.parse(read('status1.json')) as { counts: { done: number; dead: number } };
  assert.equal(s1.counts.dead, 0, 'no task was charged for the full disk');
  assert.ok(s1.counts.done < n, 'the disk filled before the end');

  assert.equal(read('run2.code').trim(), '0', read('run2.err') + read('run2.out'));
  assert.match(
    read('run2.out'),
    new RegExp(`job full succeeded: ${n}/${n} tasks done, 0 failed .*\\(resumed\\)`),
  );
  const outs = readdirSync(path.join(dir, 'out'));
  assert.equal(outs.length, n);
  for (let i = 0; i < n; i++) assert.equal(read(`out/${i}.txt`), `t${i}\n`);
});

/**
 * Every file below a folder with a digest of its content: what "unchanged" compares. sqlite's
 * -wal and -shm files are left out: any reader of a WAL file may create them (empty of data).
 */
function files(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = path.join(rel, e.name);
    if (e.isDirectory()) out.push(...files(dir, r));
    else if (!/-(wal|shm)$/.test(r))
      out.push(
        `${r} ${createHash('sha1')
          .update(readFileSync(path.join(dir, r)))
          .digest('hex')}`,
      );
  }
  return out.sort();
}

const ONE_LINE_STATE_ERROR =
  /^corral: error: JOB: the state of job bad cannot be read: \.corral\/jobs\/bad\/state\.db: .+ \(SQLITE_\w+\) \(fix: run the job again with --fresh .*or remove \.corral\/jobs\/bad\)\n$/;

for (const damage of ['garbage', 'half a file'] as const) {
  test(`a corrupt state.db (${damage}): one-line errors that say what to do, the other jobs unaffected, --fresh recovers`, async (t) => {
    const dir = tempDir(t);
    writeFiles(dir, {
      'items.txt': 'a\nb\nc\n',
      'good.yaml':
        'name: good\ntasks:\n  map: { lines: items.txt }\n  command: "echo {input}"\noutputs: good/{index}\n',
      'bad.yaml':
        'name: bad\ntasks:\n  map: { lines: items.txt }\n  command: "echo {input}; echo log >&2"\noutputs: bad/{index}\n',
    });
    for (const j of ['good', 'bad']) {
      const r = await runCli(['run', `${j}.yaml`, '-q'], { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
    }
    const db = path.join(dir, '.corral/jobs/bad/state.db');
    if (damage === 'garbage') writeFileSync(db, Buffer.alloc(20_000, 'garbage '));
    else truncateSync(db, Math.floor(readFileSync(db).length / 2));
    const state = path.join(dir, '.corral/jobs/bad');
    const before = files(state);

    const run = await runCli(['run', 'bad.yaml'], { cwd: dir });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /corral: running job bad from bad\.yaml\ncorral: error: JOB: the state of job bad cannot be read/,
    );
    assert.match(run.stderr.split('\n').slice(1).join('\n'), ONE_LINE_STATE_ERROR);
    assert.deepEqual(files(state), before, 'the state folder is unchanged');

    const all = await runCli(['status'], { cwd: dir });
    assert.equal(all.code, 0, all.stderr);
    assert.match(
      all.stdout,
      /^bad\s+unreadable\s+the state of job bad cannot be read: .*\(SQLITE_\w+\) \(fix: run the job again with --fresh/m,
    );
    assert.match(all.stdout, /^good\s+succeeded\s+3\/3 done/m);
    const json = await runCli(['status', '--json'], { cwd: dir });
    assert.deepEqual(
      (JSON.parse(json.stdout) as Array<{ job: string; status: string }>).map((j) => [j.job, j.status]),
      [
        ['bad', 'unreadable'],
        ['good', 'succeeded'],
      ],
    );
    for (const args of [
      ['status', 'bad'],
      ['logs', 'bad', '0'],
      ['report', 'bad', '-o', 'r.html'],
    ]) {
      const r = await runCli(args, { cwd: dir });
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, ONE_LINE_STATE_ERROR, args.join(' '));
    }
    assert.deepEqual(files(state), before, 'the readers changed nothing');

    const fresh = await runCli(['run', 'bad.yaml', '--fresh', '-q'], { cwd: dir });
    assert.equal(fresh.code, 0, fresh.stderr);
    assert.match(fresh.stdout, /job bad succeeded: 3\/3 tasks done/);
  });
}

test('a read-only state folder: status, logs and report read it', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'items.txt': 'a\nb\n',
    'job.yaml':
      'name: ro\ntasks:\n  map: { lines: items.txt }\n  command: "echo {input}; echo said {input} >&2"\noutputs: out/{index}\n',
  });
  const r = await runCli(['run', 'job.yaml', '-q'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  // a read-only bind mount of the state folder, in a mount namespace of our own
  const node = JSON.stringify(process.execPath);
  const cli = JSON.stringify(CLI);
  const cmds = [
    ['status'],
    ['status', 'ro'],
    ['logs', 'ro'],
    ['logs', 'ro', '1'],
    ['report', 'ro', '-o', '-'],
  ];
  const script = `mount --bind .corral .corral && mount -o remount,bind,ro .corral || exit 9
touch .corral/probe 2>/dev/null && exit 8
${cmds.map((c, i) => `${node} ${cli} ${c.join(' ')} > out${i}.txt 2> err${i}.txt; echo $? > code${i}.txt`).join('\n')}
`;
  const sh = spawn('unshare', ['-rm', 'sh', '-c', script], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  sh.stderr.on('data', (d) => {
    err += d;
  });
  const code = await new Promise<number | null>((resolve) => sh.on('close', resolve));
  assert.equal(code, 0, `the namespace script failed (${code}): ${err}`);
  const read = (f: string) => readFileSync(path.join(dir, f), 'utf8');
  cmds.forEach((c, i) => {
    assert.equal(read(`code${i}.txt`).trim(), '0', `${c.join(' ')}: ${read(`err${i}.txt`)}`);
    assert.equal(read(`err${i}.txt`), '', c.join(' '));
  });
  assert.match(read('out0.txt'), /^ro\s+succeeded\s+2\/2 done/m);
  assert.match(read('out1.txt'), /job ro: succeeded\ntasks: 2 total, 2 done/);
  assert.match(read('out2.txt'), /job succeeded/);
  assert.match(read('out3.txt'), /said b/);
  assert.match(read('out4.txt'), /<html/i);
});
