/**
 * Target 2: in-process function tasks (a module whose default export does nothing) with durable
 * completion: a task counts once its `done` row is in the sqlite file. corral runs the job with
 * 2 local workers; the peer is bench/peers/sqlite-loop.mjs (2 processes, claim 256 with one
 * UPDATE … RETURNING, one UPDATE per completed task, same pragmas).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  type Bench,
  type BenchContext,
  corralRun,
  execWindow,
  fmtMs,
  fmtRate,
  fmtX,
  interleaved,
  mustSucceed,
  ROOT,
  scratch,
  type Timed,
  timeRun,
  writeLines,
} from './lib.js';

/** Writes a map job of `n` no-op function tasks in `dir`. */
export function writeFunctionJob(dir: string, name: string, n: number): void {
  writeLines(path.join(dir, 'lines.txt'), n);
  writeFileSync(path.join(dir, 'noop.mjs'), 'export default function noop() {}\n');
  writeFileSync(
    path.join(dir, 'job.yaml'),
    [
      `name: ${name}`,
      'tasks:',
      '  map:',
      '    lines: lines.txt',
      '  module: ./noop.mjs',
      'concurrency: 2',
      '',
    ].join('\n'),
  );
}

export interface PeerResult extends Timed {
  readonly insertMs: number;
  readonly execMs: number;
}

/** Runs the sqlite-loop peer over `dir/lines.txt` as its own process. */
export async function runPeer(ctx: BenchContext, dir: string, n: number): Promise<PeerResult> {
  const db = path.join(dir, `peer-${Date.now()}.db`);
  const r = mustSucceed(
    'peer',
    await timeRun(
      process.execPath,
      [path.join(ROOT, 'bench/peers/sqlite-loop.mjs'), 'run', db, path.join(dir, 'lines.txt'), '2'],
      {
        cwd: dir,
        hwmEveryMs: 100,
      },
    ),
  );
  const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as {
    done: number;
    insertMs: number;
    execMs: number;
  };
  if (j.done !== n) throw new Error(`peer finished ${j.done}/${n} tasks`);
  for (const ext of ['', '-wal', '-shm']) writeFileSync(`${db}${ext}`, ''); // keep the scratch folder small
  ctx.log(`  peer ${fmtMs(r.ms)} (exec ${fmtMs(j.execMs)})`);
  return { ...r, insertMs: j.insertMs, execMs: j.execMs };
}

export const run: Bench = async (ctx) => {
  const n = ctx.size === 'full' ? 200_000 : 2000;
  const dir = scratch(ctx, 'functions');
  writeFunctionJob(dir, 'functions', n);
  ctx.log(`functions: ${n} no-op function tasks × ${ctx.reps} reps, peer and corral interleaved`);
  const res = await interleaved(
    ctx.reps,
    {
      peer: () => runPeer(ctx, dir, n),
      corral: async () => {
        const r = mustSucceed('corral run', await corralRun(dir, 'job.yaml'));
        const w = execWindow(path.join(dir, '.corral/jobs/functions/state.db'));
        if (w.done !== n) throw new Error(`corral finished ${w.done}/${n} tasks`);
        ctx.log(`  corral ${fmtMs(r.ms)} (exec ${fmtMs(w.ms)})`);
        return { ...r, execMs: w.ms };
      },
    },
    (v) => v.execMs,
  );
  const c = res.corral.best;
  const p = res.peer.best;
  const execRate = (n * 1000) / c.execMs;
  const cmd = `corral run job.yaml (${n} tasks, module: ./noop.mjs, lines map, concurrency 2)`;
  return [
    {
      id: '2a',
      what: `${n} no-op function tasks, execution (first start → last durable finish)`,
      corral: fmtRate(execRate),
      peer: `sqlite-loop peer: ${fmtRate((n * 1000) / p.execMs)}`,
      ratio: `${fmtX(p.execMs / c.execMs)} peer throughput`,
      target: '≥20,000 tasks/s',
      status: execRate >= 20_000 ? 'met' : 'missed',
      command: cmd,
      note: 'window read back from the state file: min(started_at) to max(finished_at) of the tasks',
    },
    {
      id: '2b',
      what: `${n} no-op function tasks, end to end`,
      corral: `${fmtMs(c.ms)} (${fmtRate((n * 1000) / c.ms)})`,
      peer: `sqlite-loop peer: ${fmtMs(p.ms)} (${fmtRate((n * 1000) / p.ms)})`,
      ratio: `${fmtX(p.ms / c.ms)} peer throughput`,
      target: '– (reported)',
      status: 'info',
      command: cmd,
      note: 'includes Node start, planning the tasks into the state file (peer: its inserts), workers and drain',
    },
  ];
};
