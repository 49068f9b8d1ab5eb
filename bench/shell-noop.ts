/**
 * Target 1: N no-op shell tasks (`true`), two at a time. Like with like: corral runs each task as
 * `/bin/sh -c true` in a process group of its own; the peers run one `/bin/sh -c true` per input
 * line too: `xargs -P2 -n1 sh -c true` and `SHELL=/bin/sh parallel -j2 true` (GNU parallel always
 * runs the command line through $SHELL). Two more measurements bound 1a from above: corral's own
 * forker fed the commands with nothing behind it (no Node, no state; bench/peers/fork-exec.pl, a
 * perl loop, where the C forker is not built) and corral's fixed cost (the same job with 2 tasks,
 * end to end).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { escapeField } from '../src/worker/shell-runner.js';
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
  writeLines,
} from './lib.js';

/** corral's C forker, as `npm run build` made it (absent without a C compiler: the perl one is used then). */
const NATIVE_FORKER = [path.join(ROOT, 'dist/native/corral-forker')].find((f) => existsSync(f));

/** Installs GNU parallel from Debian if it is missing; returns why not when it cannot. */
function ensureParallel(log: (s: string) => void): string | undefined {
  if (onPath('parallel')) return undefined;
  if (process.getuid?.() !== 0)
    return 'GNU parallel is not installed and the bench is not root (apt-get install -y parallel)';
  log('installing GNU parallel (apt-get install -y parallel)…');
  try {
    execFileSync('apt-get', ['install', '-y', 'parallel'], {
      stdio: 'ignore',
      timeout: 180_000,
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  } catch (err) {
    return `apt-get install -y parallel failed: ${(err as Error).message.split('\n')[0]}`;
  }
  return onPath('parallel') ? undefined : 'GNU parallel is still not on PATH after apt-get';
}

export const run: Bench = async (ctx) => {
  const n = ctx.size === 'full' ? 2000 : 50;
  const dir = scratch(ctx, 'shell-noop');
  writeLines(path.join(dir, 'lines.txt'), n);
  const input = Array.from({ length: n }, (_, i) => `${i + 1}\n`).join('');
  writeFileSync(
    path.join(dir, 'job.yaml'),
    [
      'name: shell-noop',
      'tasks:',
      '  map:',
      '    lines: lines.txt',
      '  command: "true"',
      'concurrency: 2',
      '',
    ].join('\n'),
  );
  const fixedDir = path.join(dir, 'fixed');
  mkdirSync(fixedDir);
  writeLines(path.join(fixedDir, 'lines.txt'), 2);
  copyFileSync(path.join(dir, 'job.yaml'), path.join(fixedDir, 'job.yaml'));
  const noParallel = ensureParallel(ctx.log);
  // each forker gets half the tasks, as a worker's two lanes do: cwd, stdin, stdout, log, command
  for (const lane of [1, 2]) {
    const lines: string[] = [];
    for (let i = lane - 1; i < n; i += 2)
      lines.push([dir, '', '', path.join(dir, `part-${i}`), 'true'].map(escapeField).join('\t'));
    writeFileSync(path.join(dir, `cmds-${lane}`), `${lines.join('\n')}\n`);
  }
  const env = { SHELL: '/bin/sh' };
  const contenders = {
    xargs: () => timeRun('xargs', ['-P2', '-n1', 'sh', '-c', 'true'], { cwd: dir, input, env }),
    nodeSpawn: () =>
      timeRun(process.execPath, [path.join(ROOT, 'bench/peers/node-spawn.mjs'), String(n), '2'], {
        cwd: dir,
      }),
    // the floor of corral's design: its own forker, fed the commands, with no Node behind it
    forker: () =>
      NATIVE_FORKER
        ? timeRun(
            'sh',
            ['-c', `"$0" < cmds-1 > /dev/null & "$0" < cmds-2 > /dev/null; wait`, NATIVE_FORKER],
            {
              cwd: dir,
            },
          )
        : timeRun(
            'perl',
            [path.join(ROOT, 'bench/peers/fork-exec.pl'), String(n), '2', path.join(dir, 'part')],
            {
              cwd: dir,
            },
          ),
    fixed: async () => mustSucceed('corral run (2 tasks)', await corralRun(fixedDir, 'job.yaml')),
    corral: async () => {
      const r = mustSucceed('corral run', await corralRun(dir, 'job.yaml'));
      const w = execWindow(path.join(dir, '.corral/jobs/shell-noop/state.db'));
      if (w.done !== n) throw new Error(`corral finished ${w.done}/${n} tasks`);
      return { ...r, execMs: w.ms };
    },
    ...(noParallel
      ? {}
      : { parallel: () => timeRun('parallel', ['--will-cite', '-j2', 'true'], { cwd: dir, input, env }) }),
  } as Record<string, () => Promise<{ ms: number; code: number | null; execMs?: number }>>;
  ctx.log(
    `shell-noop: ${n} tasks × ${ctx.size === 'full' ? Math.max(ctx.reps, 8) : ctx.reps} reps of ${Object.keys(contenders).join(', ')}`,
  );
  // each rep takes seconds, and these runs are the most sensitive to the machine's neighbours:
  // a full run takes the best of at least 8 (the peers' too)
  const reps = ctx.size === 'full' ? Math.max(ctx.reps, 8) : ctx.reps;
  const res = await interleaved(reps, contenders, (v) => v.ms);
  for (const [k, v] of Object.entries(res))
    for (const r of v.all) if (r.code !== 0) throw new Error(`${k} exited with ${r.code}`);
  const corral = res.corral!.best;
  const xargs = res.xargs!.best;
  const rate = (ms: number) => (n * 1000) / ms;
  const cmd = `corral run job.yaml (${n} × \`true\` via /bin/sh -c, lines map, concurrency 2)`;
  const rows: Row[] = [
    {
      id: '1a',
      what: `${n} no-op shell tasks, end to end`,
      corral: `${fmtMs(corral.ms)} (${fmtRate(rate(corral.ms))})`,
      peer: `xargs -P2 -n1 sh -c true: ${fmtMs(xargs.ms)} (${fmtRate(rate(xargs.ms))})`,
      ratio: `${fmtX(xargs.ms / corral.ms)} xargs throughput`,
      target: '≥0.8× xargs',
      status: xargs.ms / corral.ms >= 0.8 ? 'met' : 'missed',
      command: cmd,
      note: `best of ${reps}; wall clock from \`node dist/cli/main.js run\` to its exit, including Node start, the state file, starting the workers and draining; execution window (first task start to last finish) ${fmtMs(corral.execMs ?? 0)}`,
    },
  ];
  const floor = res.nodeSpawn!.best;
  rows.push({
    id: '1c',
    what: `${n} no-op shell tasks vs the Node spawn floor`,
    corral: `${fmtMs(corral.ms)} (${fmtRate(rate(corral.ms))})`,
    peer: `2 Node processes doing only spawn(/bin/sh -c true): ${fmtMs(floor.ms)} (${fmtRate(rate(floor.ms))}); that floor is ${fmtX(xargs.ms / floor.ms)} xargs`,
    ratio: `${fmtX(floor.ms / corral.ms)} floor throughput`,
    target: '– (floor of 1a)',
    status: 'info',
    command: 'node bench/peers/node-spawn.mjs N 2',
    note: 'bounds any runner whose workers spawn each task from Node; corral starts tasks through its own forker instead (1d)',
  });
  const forker = res.forker!.best;
  const fixed = res.fixed!.best;
  const bound = forker.ms + fixed.ms;
  rows.push({
    id: '1d',
    what: `${n} no-op shell tasks vs the floor of corral's design`,
    corral: `${fmtMs(corral.ms)} (${fmtRate(rate(corral.ms))})`,
    peer: `${NATIVE_FORKER ? "2 of corral's C forkers fed the commands, no Node behind them" : '2 perl loops doing only fork+exec(/bin/sh -c true) as the perl forker does'}: ${fmtMs(forker.ms)}, plus corral's fixed cost (the job with 2 tasks): ${fmtMs(fixed.ms)}; together ${fmtMs(bound)}, ${fmtX(xargs.ms / bound)} xargs`,
    ratio: `${fmtX(bound / corral.ms)} floor throughput`,
    target: '– (floor of 1a)',
    status: 'info',
    command: NATIVE_FORKER
      ? `dist/native/corral-forker < cmds-1 & dist/native/corral-forker < cmds-2 (${n / 2} tasks each); corral run job.yaml with 2 tasks`
      : `perl bench/peers/fork-exec.pl ${n} 2; corral run job.yaml with 2 tasks`,
    note: `a run cannot start a task before the CLI and its workers are up, nor end before it drains, nor fork faster than its bare forker, so it takes about the forker's time plus its fixed cost (they overlap a little: the workers start while the tasks are planned); on this machine that bound is ${fmtX(xargs.ms / bound)} xargs`,
  });
  const par = res.parallel?.best;
  rows.push(
    par
      ? {
          id: '1b',
          what: `${n} no-op shell tasks, end to end`,
          corral: `${fmtMs(corral.ms)} (${fmtRate(rate(corral.ms))})`,
          peer: `SHELL=/bin/sh parallel -j2 true: ${fmtMs(par.ms)} (${fmtRate(rate(par.ms))})`,
          ratio: `${fmtX(par.ms / corral.ms)} GNU parallel throughput`,
          target: '≥4× GNU parallel',
          status: par.ms / corral.ms >= 4 ? 'met' : 'missed',
          command: cmd,
        }
      : {
          id: '1b',
          what: `${n} no-op shell tasks vs GNU parallel`,
          corral: `${fmtMs(corral.ms)}`,
          peer: 'GNU parallel: not run',
          ratio: '–',
          target: '≥4× GNU parallel',
          status: 'skipped',
          command: cmd,
          note: noParallel,
        },
  );
  return rows.sort((a, b) => a.id.localeCompare(b.id));
};
