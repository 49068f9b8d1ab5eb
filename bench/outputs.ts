/**
 * Target 9 (issue 24, item 2): durable outputs at the speed of the disk. corral runs N tasks that
 * each write a small output (`outputs: out/{index}.json`), as a module function (9a; 9c: one that
 * returns the value, for corral to write) and as a shell command whose stdout is the output (9b),
 * 2 workers; every output is on disk before its task counts as done. The peer is bench/peers/group-commit-loop.mjs: a bare Node loop that writes
 * and hard-links each file and syncs the file system once per 256 files, on the same disk,
 * interleaved with corral, best of N.
 */
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  type Bench,
  type BenchContext,
  corralRun,
  fmtMs,
  fmtRate,
  fmtX,
  interleaved,
  mustSucceed,
  ROOT,
  type Row,
  scratch,
  type Timed,
  timeRun,
  writeLines,
} from './lib.js';

/**
 * How a task makes its output: a module function that writes `ctx.output` with fs/promises (9a),
 * one that returns the value for corral to write (9c, the README's first way: one synchronous
 * write, as the loop does), or a shell command whose stdout is the output (9b).
 */
type Kind = 'module' | 'shell' | 'module-return';

const ROW_ID: Record<Kind, string> = { module: '9a', shell: '9b', 'module-return': '9c' };

/** Writes a map job of `n` tasks with outputs in `dir`. */
function writeOutputsJob(dir: string, name: string, n: number, kind: Kind): void {
  writeLines(path.join(dir, 'lines.txt'), n);
  writeFileSync(
    path.join(dir, 'w.mjs'),
    kind === 'module-return'
      ? 'export default function (ctx) {\n  return { i: ctx.index };\n}\n'
      : "import { writeFile } from 'node:fs/promises';\nexport default async function (ctx) {\n  await writeFile(ctx.output, JSON.stringify({ i: ctx.index }) + '\\n');\n}\n",
  );
  writeFileSync(
    path.join(dir, 'job.yaml'),
    [
      `name: ${name}`,
      'tasks:',
      '  map:',
      '    lines: lines.txt',
      kind === 'shell' ? '  command: echo {input}' : '  module: ./w.mjs',
      'outputs: out/{index}.json',
      'concurrency: 2',
      '',
    ].join('\n'),
  );
}

async function runPeer(ctx: BenchContext, dir: string, n: number): Promise<Timed> {
  const d = path.join(dir, `peer-${Date.now()}`);
  const r = mustSucceed(
    'group-commit loop',
    await timeRun(process.execPath, [path.join(ROOT, 'bench/peers/group-commit-loop.mjs'), d, String(n)], {
      cwd: dir,
    }),
  );
  ctx.log(`  peer ${fmtMs(r.ms)}`);
  return r;
}

export const run: Bench = async (ctx) => {
  const n = ctx.size === 'full' ? 5000 : 500;
  const rows: Row[] = [];
  for (const kind of ['module', 'module-return', 'shell'] as const) {
    const dir = scratch(ctx, `outputs-${kind}`);
    writeOutputsJob(dir, `outputs-${kind}`, n, kind);
    ctx.log(`outputs (${kind}): ${n} tasks with outputs × ${ctx.reps} reps, peer and corral interleaved`);
    const trash = path.join(dir, 'trash');
    mkdirSync(trash, { recursive: true });
    let reps = 0;
    const res = await interleaved(
      ctx.reps,
      {
        peer: () => runPeer(ctx, dir, n),
        corral: async () => {
          // committed outputs count as done on a --fresh run: without this, reps after the first
          // would run nothing. Moved aside, not removed: on ext4 without a journal (this bench's
          // VM) a new inode is never one freed in the last minute, and each create scans past the
          // freed ones of its group, so 5,000 files removed just before the rep cost each of its
          // 5,000 creates ~0.2 ms more CPU (the peer never removes anything before its rep)
          if (existsSync(path.join(dir, 'out')))
            renameSync(path.join(dir, 'out'), path.join(trash, `out-${reps++}`));
          const r = mustSucceed('corral run', await corralRun(dir, 'job.yaml'));
          ctx.log(`  corral ${fmtMs(r.ms)}`);
          return r;
        },
      },
      (v) => v.ms,
    );
    rmSync(trash, { recursive: true, force: true });
    const c = res.corral.best.ms;
    const p = res.peer.best.ms;
    const x = p / c;
    rows.push({
      id: ROW_ID[kind],
      what:
        kind === 'module-return'
          ? `${n} module tasks returning their output (corral writes it), durable (outputs: out/{index}.json), end to end: what 9a costs without the task's own fs/promises calls`
          : `${n} ${kind} tasks, each writing a durable output (outputs: out/{index}.json), end to end`,
      corral: `${fmtMs(c)} (${fmtRate((n * 1000) / c)})`,
      peer: `Node loop: write + link each file, syncfs once per 256 files: ${fmtMs(p)} (${fmtRate((n * 1000) / p)})`,
      ratio: `${fmtX(x)} loop throughput`,
      target: kind === 'module-return' ? '– (diagnostic of 9a)' : '≥0.5× loop',
      status: kind === 'module-return' ? 'info' : x >= 0.5 ? 'met' : 'missed',
      command: `corral run job.yaml (${n} tasks, ${
        kind === 'module'
          ? 'module: ./w.mjs writes ctx.output with fs/promises writeFile'
          : kind === 'module-return'
            ? 'module: ./w.mjs returns { i: index }'
            : 'command: echo {input} (stdout is the output)'
      }, concurrency 2)`,
      note: 'corral includes Node start, planning and the state file; the loop only writes, links and syncs',
    });
  }
  return rows;
};
