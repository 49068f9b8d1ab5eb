/**
 * Target 10 (issue 24, item 5): the tools users would pick instead, run side by side where Debian
 * serves them (`apt-get install snakemake python3-distributed`; not needed by CI: a row whose
 * peer is missing says so and is skipped).
 *
 * 11a: Snakemake on a fan-out/fan-in of shell tasks (a rule per item that echoes it to
 * out/{i}.txt, then one rule that cats them all), against the same workflow in corral (a map step
 * and a reduce over its outputs), both with 2 jobs at once, end to end (wall clock of the command).
 * Snakemake runs with `--scheduler greedy`: its default ILP scheduler solves a linear program
 * every time it picks jobs, and was slower still (this row gives the peer its best).
 *
 * 11b: Dask distributed (LocalCluster, 2 worker processes of 1 thread) on no-op function calls
 * (bench/peers/dask-noop.py), against corral's no-op module tasks (2 local workers), throughput
 * of execution: Dask from the first submit to the last result at the client (its cluster's start
 * excluded, results in memory only); corral from the first task's start to the last completion
 * in the state file (every completion durable).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { writeFunctionJob } from './functions.js';
import {
  type Bench,
  corralRun,
  execWindow,
  fmtMs,
  fmtRate,
  fmtX,
  interleaved,
  mustSucceed,
  onPath,
  ROOT,
  type Row,
  scratch,
  timeRun,
} from './lib.js';

/** Debian's python3 (python3-distributed installs there), not a python3 of PATH (pyenv, venv). */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
/** Largest repetition count of these rows: the peers take tens of seconds each. */
const MAX_REPS = 2;

function skipped(id: string, what: string, target: string, command: string, reason: string): Row {
  return {
    id,
    what,
    corral: '–',
    peer: '–',
    ratio: '–',
    target,
    status: 'skipped',
    command,
    note: `skipped: ${reason}`,
  };
}

/** Why a peer cannot run here, or undefined. */
function missingDask(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import distributed'], { encoding: 'utf8' });
  return r.status === 0
    ? undefined
    : `Dask distributed is not installed (${PYTHON} -c 'import distributed' failed; apt-get install python3-distributed)`;
}

async function snakemakeRow(ctx: Parameters<Bench>[0]): Promise<Row> {
  const n = ctx.size === 'full' ? 1000 : 20;
  const what = `fan-out/fan-in of ${n.toLocaleString('en-US')} shell tasks + 1 reduce, 2 at a time, end to end`;
  const target = '≥10× Snakemake';
  const command = `corral run fan.yaml (map: echo {input} > {output}, ${n} lines; reduce: cat {inputs} > {output}; concurrency 2)`;
  if (!onPath('snakemake'))
    return skipped('11a', what, target, command, 'snakemake is not installed (apt-get install snakemake)');
  const dir = scratch(ctx, 'snakemake');
  writeFileSync(path.join(dir, 'items.txt'), Array.from({ length: n }, (_, i) => `${i}\n`).join(''));
  writeFileSync(
    path.join(dir, 'fan.yaml'),
    `name: fan
steps:
  - name: map
    map: { lines: items.txt }
    command: 'echo {input} > {output}'
    outputs: out/{index}.txt
  - name: reduce
    reduce: map
    command: 'cat {inputs} > {output}'
    outputs: all.txt
concurrency: 2
`,
  );
  writeFileSync(
    path.join(dir, 'Snakefile'),
    `N = ${n}
rule all:
    input: "all.txt"
rule map:
    output: "out/{i}.txt"
    shell: "echo {wildcards.i} > {output}"
rule reduce:
    input: expand("out/{i}.txt", i=range(N))
    output: "all.txt"
    shell: "cat {input} > {output}"
`,
  );
  const clean = () => {
    for (const f of ['out', 'all.txt', '.snakemake'])
      rmSync(path.join(dir, f), { recursive: true, force: true });
  };
  const check = (who: string) => {
    const lines = readFileSync(path.join(dir, 'all.txt'), 'utf8').trim().split('\n');
    if (lines.length !== n) throw new Error(`${who}: all.txt has ${lines.length}/${n} lines`);
  };
  ctx.log(`snakemake: ${n} shell tasks + reduce × ${Math.min(ctx.reps, MAX_REPS)} reps, interleaved`);
  const r = await interleaved(
    Math.min(ctx.reps, MAX_REPS),
    {
      snakemake: async () => {
        clean();
        const t = mustSucceed(
          'snakemake',
          await timeRun('snakemake', ['-j', '2', '--scheduler', 'greedy', '--quiet', 'all'], { cwd: dir }),
        );
        check('snakemake');
        ctx.log(`  snakemake ${fmtMs(t.ms)}`);
        return t;
      },
      corral: async () => {
        clean();
        const t = mustSucceed('corral run fan.yaml', await corralRun(dir, 'fan.yaml'));
        check('corral');
        ctx.log(`  corral ${fmtMs(t.ms)}`);
        return t;
      },
    },
    (v) => v.ms,
  );
  const c = r.corral.best.ms;
  const s = r.snakemake.best.ms;
  return {
    id: '11a',
    what,
    corral: fmtMs(c),
    peer: `snakemake -j 2 --scheduler greedy: ${fmtMs(s)}`,
    ratio: `${fmtX(s / c)} Snakemake's speed`,
    target,
    status: s / c >= 10 ? 'met' : 'missed',
    command,
    note: `wall clock of each command from start to exit, outputs removed before each run; Snakemake ${snakemakeVersion()} (Debian), a rule per item and a rule that cats them; its default ILP scheduler is slower still`,
  };
}

function snakemakeVersion(): string {
  return spawnSync('snakemake', ['--version'], { encoding: 'utf8' }).stdout?.trim() ?? '?';
}

async function daskRow(ctx: Parameters<Bench>[0]): Promise<Row> {
  const n = ctx.size === 'full' ? 20_000 : 200;
  const what = `${n.toLocaleString('en-US')} no-op function calls, execution throughput (corral durable, Dask in memory)`;
  const target = '≥1× Dask';
  const command = `corral run job.yaml (${n} tasks, module: ./noop.mjs, lines map, concurrency 2)`;
  const missing = missingDask();
  if (missing) return skipped('11b', what, target, command, missing);
  const dir = scratch(ctx, 'dask');
  writeFunctionJob(dir, 'dask', n);
  ctx.log(`dask: ${n} no-op calls × ${Math.min(ctx.reps, MAX_REPS)} reps, interleaved`);
  const r = await interleaved(
    Math.min(ctx.reps, MAX_REPS),
    {
      dask: async () => {
        const t = mustSucceed(
          'dask',
          await timeRun(PYTHON, [path.join(ROOT, 'bench/peers/dask-noop.py'), String(n), '2'], { cwd: dir }),
        );
        const j = JSON.parse(t.stdout.trim().split('\n').pop() ?? '{}') as { execMs: number; done: number };
        if (j.done !== n) throw new Error(`dask finished ${j.done}/${n} calls`);
        ctx.log(`  dask ${fmtMs(t.ms)} (exec ${fmtMs(j.execMs)})`);
        return { ms: t.ms, execMs: j.execMs };
      },
      corral: async () => {
        const t = mustSucceed('corral run', await corralRun(dir, 'job.yaml'));
        const w = execWindow(path.join(dir, '.corral/jobs/dask/state.db'));
        if (w.done !== n) throw new Error(`corral finished ${w.done}/${n} tasks`);
        ctx.log(`  corral ${fmtMs(t.ms)} (exec ${fmtMs(w.ms)})`);
        return { ms: t.ms, execMs: w.ms };
      },
    },
    (v) => v.execMs,
  );
  const c = r.corral.best;
  const d = r.dask.best;
  const x = d.execMs / c.execMs;
  return {
    id: '11b',
    what,
    corral: `${fmtRate((n * 1000) / c.execMs)} (end to end ${fmtMs(c.ms)})`,
    peer: `Dask LocalCluster, 2 processes: ${fmtRate((n * 1000) / d.execMs)} (end to end ${fmtMs(d.ms)})`,
    ratio: `${fmtX(x)} Dask's throughput`,
    target,
    status: x >= 1 ? 'met' : 'missed',
    command,
    note: `corral: first task start → last completion in the state file; Dask ${daskVersion()} (Debian python3-distributed): client.map of a no-op over range(N), first submit → every result back (bench/peers/dask-noop.py), its cluster's start excluded, nothing durable`,
  };
}

function daskVersion(): string {
  return (
    spawnSync(PYTHON, ['-c', 'import distributed; print(distributed.__version__)'], {
      encoding: 'utf8',
    }).stdout?.trim() || '?'
  );
}

export const run: Bench = async (ctx) => [await snakemakeRow(ctx), await daskRow(ctx)];
