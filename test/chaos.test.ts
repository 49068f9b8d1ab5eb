import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { LANES_PER_PROCESS } from '../src/compute/local/local-compute.js';
import { PIPELINE_DEPTH } from '../src/worker/agent.js';
import { rng, runCli, startCli, tempDir, writeFiles } from './helpers.js';

/** Tasks in the chaos job: 2,000 in the suite, `CORRAL_CHAOS_TASKS` (10,000 in `npm run chaos`) otherwise. */
const TASKS = Number(process.env.CORRAL_CHAOS_TASKS ?? 2000);

/** Pids of the direct children of `pid` (the local workers of a coordinator). */
function childrenOf(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .map((s) => Number(s.trim()))
      .filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when there is none
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Files below `dir` (relative paths), recursively. */
function filesBelow(dir: string, rel = ''): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...filesBelow(path.join(dir, e.name), r));
    else out.push(r);
  }
  return out;
}

function chaosJob(name: string, n: number, extra = ''): Record<string, string> {
  return {
    'items.txt': Array.from({ length: n }, (_, i) => `t${i}`).join('\n'),
    // every execution appends one mark; the output is the index (written to the staging path)
    'job.yaml': `name: ${name}
tasks:
  map: { lines: items.txt }
  command: 'echo x >> marks/{index}; echo {index} {input} > {output}'
outputs: out/{index}
retries: { maxAttempts: 20, backoff: { initial: 50ms, factor: 2, max: 1s } }
concurrency: 2
lease: 3s
${extra}`,
    'marks/.keep': '',
  };
}

/**
 * Every output exists once with its exact content and nothing else is in out/ (no partial or
 * staging file is ever visible there). Returns the attempts left in `.corral-staging/` by killed
 * workers (hidden, not outputs; see the report: nothing sweeps them yet).
 */
function assertOutputs(dir: string, n: number): number {
  const outs = readdirSync(path.join(dir, 'out')).sort();
  assert.equal(outs.length, n, `outputs: ${outs.length}/${n}`);
  for (let i = 0; i < n; i++) {
    assert.equal(readFileSync(path.join(dir, 'out', String(i)), 'utf8'), `${i} t${i}\n`, `out/${i}`);
  }
  return filesBelow(path.join(dir, '.corral-staging')).length;
}

test(`chaos (sqlite): ${TASKS} tasks, a random worker SIGKILLed every 200–800 ms; each output committed exactly once`, async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, chaosJob('chaos', TASKS));
  const seed = Number(process.env.CORRAL_CHAOS_SEED ?? Date.now() % 1_000_000);
  const rand = rng(seed);
  t.diagnostic(`seed ${seed}`);
  const run = startCli(['run', 'job.yaml', '--json'], { cwd: dir });
  let done = false;
  void run.result.then(() => {
    done = true;
  });
  let kills = 0;
  // bounded: at most 2,000 kills (≥ 200 ms apart), and it stops when the run ends
  for (let i = 0; i < 2000 && !done; i++) {
    await sleep(200 + Math.floor(rand() * 600));
    const workers = childrenOf(run.pid!);
    if (done || workers.length === 0) continue;
    const victim = workers[Math.floor(rand() * workers.length)]!;
    try {
      process.kill(victim, 'SIGKILL');
      kills++;
    } catch {
      // it had already exited
    }
  }
  const r = await run.result;
  t.diagnostic(`${kills} workers killed`);
  assert.equal(r.code, 0, `seed ${seed}: ${r.stderr}${r.stdout}`);
  assert.ok(kills >= 3, `only ${kills} kills`);
  const summary = JSON.parse(r.stdout) as { counts: Record<string, number>; deadLetters?: unknown[] };
  assert.equal(summary.counts.done, TASKS, r.stdout);
  assert.equal(summary.counts.dead ?? 0, 0, r.stdout);
  // what killed workers staged is cleared when the job ends
  assert.equal(assertOutputs(dir, TASKS), 0, 'staging files of killed attempts were left behind');
  // At-least-once execution: every task ran at least once. A kill re-runs, per worker of the killed
  // process, at most what its forker had run or was running and it had not committed yet (the
  // pipeline's depth and one); how many that is depends on how far the forker ran ahead, so on
  // the machine's load (20-30 per kill on an idle machine, ~90 seen on a busy one).
  const bound = Math.min(LANES_PER_PROCESS, 2) * (PIPELINE_DEPTH + 1);
  let executions = 0;
  for (let i = 0; i < TASKS; i++) {
    const marks = readFileSync(path.join(dir, 'marks', String(i)), 'utf8').split('\n').length - 1;
    assert.ok(marks >= 1, `task ${i} never ran`);
    executions += marks;
  }
  t.diagnostic(`${executions} executions for ${TASKS} tasks`);
  t.diagnostic(`${((executions - TASKS) / kills).toFixed(1)} re-executions per kill (bound ${bound})`);
  assert.ok(executions - TASKS <= kills * bound, `${executions - TASKS} re-executions for ${kills} kills`);
});

/** Waits (bounded) until none of `pids` is alive. */
async function allExited(pids: number[]): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (
      !pids.some((p) => {
        try {
          process.kill(p, 0);
          return true;
        } catch {
          return false;
        }
      })
    )
      return;
    await sleep(25);
  }
  throw new Error(`processes ${pids.join(',')} still alive`);
}

function countMarks(dir: string, i: number): number {
  const f = path.join(dir, 'marks', String(i));
  return existsSync(f) ? readFileSync(f, 'utf8').split('\n').length - 1 : 0;
}

test('coordinator SIGKILLed at 5 random points of one job: outputs byte-identical to a clean run, 0 completed tasks re-run', async (t) => {
  const n = 300;
  const files = chaosJob('resume5', n);
  // a little work per task, so the job is still running at each kill
  files['job.yaml'] = files['job.yaml']!.replace(
    'echo x >> marks/{index};',
    'echo x >> marks/{index}; sleep 0.02;',
  );
  const clean = tempDir(t);
  writeFiles(clean, files);
  // the clean run, in a folder of its own, runs while the other is killed (it mostly waits on fsync)
  const cleanRun = runCli(['run', 'job.yaml'], { cwd: clean });

  const dir = tempDir(t);
  writeFiles(dir, files);
  const seed = Number(process.env.CORRAL_CHAOS_SEED ?? Date.now() % 1_000_000);
  const rand = rng(seed);
  t.diagnostic(`seed ${seed}`);
  /** task → its executions when it was seen committed after a kill */
  const committedAt = new Map<number, number>();
  const outDir = path.join(dir, 'out');
  const committed = () => (existsSync(outDir) ? readdirSync(outDir).length : 0);
  for (let k = 0; k < 5; k++) {
    const before = committed();
    // kill after a random number (4..40) of further commits
    const target = Math.min(n - 1, before + 4 + Math.floor(rand() * 37));
    const run = startCli(['run', 'job.yaml'], { cwd: dir });
    let ended = false;
    void run.result.then(() => {
      ended = true;
    });
    for (let i = 0; i < 2000 && !ended && committed() < target; i++) await sleep(5);
    const workers = childrenOf(run.pid!);
    run.kill('SIGKILL');
    const r = await run.result;
    assert.equal(r.signal, 'SIGKILL', `kill ${k + 1} came after the end: ${r.stdout}`);
    await allExited(workers);
    for (const f of readdirSync(outDir)) {
      const i = Number(f);
      if (!committedAt.has(i)) committedAt.set(i, countMarks(dir, i));
    }
    t.diagnostic(`kill ${k + 1}: ${committedAt.size}/${n} committed`);
  }
  assert.ok(committedAt.size < n, 'the job finished before the last kill');
  const c = await cleanRun;
  assert.equal(c.code, 0, c.stderr + c.stdout);
  const last = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(last.code, 0, last.stderr + last.stdout);
  assert.match(last.stdout, new RegExp(`${n}/${n} tasks done, 0 failed .*\\(resumed\\)`));
  for (let i = 0; i < n; i++) {
    assert.ok(
      readFileSync(path.join(dir, 'out', String(i))).equals(readFileSync(path.join(clean, 'out', String(i)))),
      `out/${i}`,
    );
  }
  assert.deepEqual(readdirSync(outDir).sort(), readdirSync(path.join(clean, 'out')).sort());
  let reruns = 0;
  for (const [i, m] of committedAt) if (countMarks(dir, i) !== m) reruns++;
  assert.equal(reruns, 0, 'completed tasks re-run');
});

test('store fault: the output folder turns into a file for 2 s mid-run; tasks retry, no partial output is visible, the job finishes', async (t) => {
  const n = 200;
  const dir = tempDir(t);
  const body = (i: number) => `${i}\n${Array.from({ length: 3000 }, (_, k) => k + 1).join('\n')}\n`;
  writeFiles(dir, {
    'items.txt': Array.from({ length: n }, (_, i) => `t${i}`).join('\n'),
    // the output is written in many small pieces: a partial one would be visible if it ever leaked
    'job.yaml': `name: storefault
tasks:
  map: { lines: items.txt }
  command: '{ echo {index}; seq 1 3000; } > {output}; sleep 0.03'
outputs: out/{index}
retries: { maxAttempts: 30, backoff: { initial: 100ms, factor: 1.5, max: 1s } }
concurrency: 2
`,
  });
  const outDir = path.join(dir, 'out');
  /** every file in out/ is complete; returns how many there are (or -1 while out/ is not a folder) */
  const check = (): number => {
    let names: string[];
    try {
      if (!statSync(outDir).isDirectory()) return -1;
      names = readdirSync(outDir);
    } catch {
      return -1;
    }
    for (const f of names) {
      let content: string;
      try {
        content = readFileSync(path.join(outDir, f), 'utf8');
      } catch {
        continue; // the folder was swapped while listing
      }
      assert.equal(content, body(Number(f)), `partial or wrong output out/${f}`);
    }
    return names.length;
  };
  const run = startCli(['run', 'job.yaml', '--json'], { cwd: dir });
  let ended = false;
  void run.result.then(() => {
    ended = true;
  });
  for (let i = 0; i < 2000 && !ended && check() < 20; i++) await sleep(10);
  assert.ok(!ended, 'the job ended before the fault');
  const { renameSync, writeFileSync } = await import('node:fs');
  renameSync(outDir, `${outDir}.away`);
  writeFileSync(outDir, 'not a folder');
  for (let i = 0; i < 40; i++) {
    await sleep(50);
    check();
  }
  const { rmSync } = await import('node:fs');
  rmSync(outDir);
  renameSync(`${outDir}.away`, outDir);
  for (let i = 0; i < 6000 && !ended; i++) {
    check();
    await sleep(10);
  }
  const r = await run.result;
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const summary = JSON.parse(r.stdout) as { counts: Record<string, number> };
  assert.equal(summary.counts.done, n);
  assert.equal(check(), n);
  const events = await runCli(['logs', 'storefault'], { cwd: dir });
  // a failed commit is a failed attempt, retried with backoff; the worker lives on
  assert.doesNotMatch(events.stdout, /lost/, 'a worker died of a store fault');
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(path.join(dir, '.corral/jobs/storefault/state.db'), { readonly: true });
  const failed = db.prepare("SELECT count(*) AS n FROM attempts WHERE error LIKE 'could not %'").get() as {
    n: number;
  };
  db.close();
  assert.ok(failed.n > 0, 'no attempt failed during the fault');
});
