/**
 * Target 8 (issue 22, item 4): a workflow streams. Time from the first task's start to the first
 * final output (a task of the last step finished) of a 3-step workflow (fetch → parse → publish,
 * each task a short sleep, each step a map over the outputs of the one before), against the same
 * steps run one after another (each step a file map over what the step before wrote, listed once
 * that step has finished: a stage barrier, as a runner without streaming would do). Both are
 * corral, in the same run, interleaved.
 */
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { type Bench, corralRun, fmtMs, fmtX, interleaved, mustSucceed, type Row, scratch } from './lib.js';

const TASK_S = 0.2;

function job(name: string, staged: boolean): string {
  // staged: each step is a file map over what the step before wrote, listed once that step has
  // finished (its `needs`); streaming: a map over the step's outputs, task by task
  const from = (step: string, folder: string) =>
    staged ? `map: { glob: "${folder}/*" }\n    needs: [${step}]` : `map: { outputsOf: ${step} }`;
  const out = staged ? '{input.name}' : '{index}';
  return `name: ${name}
steps:
  - name: fetch
    map: { lines: urls.txt }
    command: 'sleep ${TASK_S}; echo {input}'
    outputs: fetched/{index}
  - name: parse
    ${from('fetch', 'fetched')}
    command: 'sleep ${TASK_S}; tr 0-9 a-j < {input}'
    outputs: parsed/${out}
  - name: publish
    ${from('parse', 'parsed')}
    command: 'sleep ${TASK_S}; cat {input}'
    outputs: published/${out}
concurrency: 2
`;
}

/** First task start → first publish task finished, and → last task finished (ms). */
function firstOutput(dir: string, name: string): { first: number; all: number } {
  const db = new Database(path.join(dir, `.corral/jobs/${name}/state.db`), {
    readonly: true,
    fileMustExist: true,
  });
  try {
    const r = db
      .prepare(
        `SELECT min(started_at) AS t0, max(finished_at) AS t1,
           (SELECT min(finished_at) FROM tasks WHERE step = 'publish' AND state = 'done') AS out
         FROM tasks`,
      )
      .get() as { t0: number; t1: number; out: number };
    return { first: r.out - r.t0, all: r.t1 - r.t0 };
  } finally {
    db.close();
  }
}

export const run: Bench = async (ctx) => {
  const n = ctx.size === 'full' ? 40 : 8;
  const dir = scratch(ctx, 'streaming');
  writeFileSync(path.join(dir, 'urls.txt'), Array.from({ length: n }, (_, i) => `${i}\n`).join(''));
  writeFileSync(path.join(dir, 'stream.yaml'), job('stream', false));
  writeFileSync(path.join(dir, 'staged.yaml'), job('staged', true));
  const measure = async (name: string) => {
    // committed outputs count as done even with --fresh: each run starts from none
    for (const d of ['fetched', 'parsed', 'published'])
      rmSync(path.join(dir, d), { recursive: true, force: true });
    mustSucceed(`corral run ${name}.yaml`, await corralRun(dir, `${name}.yaml`, { timeoutMs: 300_000 }));
    return firstOutput(dir, name);
  };
  const r = await interleaved(
    ctx.reps,
    { stream: () => measure('stream'), staged: () => measure('staged') },
    (v) => v.first,
  );
  const s = r.stream.best;
  const b = r.staged.best;
  ctx.log(`  streaming: first output ${fmtMs(s.first)} (staged ${fmtMs(b.first)})`);
  const rows: Row[] = [
    {
      id: '8',
      what: `3-step workflow (${n} tasks per step, sleep ${TASK_S} s each, 2 workers): first final output`,
      corral: `${fmtMs(s.first)} (all done ${fmtMs(s.all)})`,
      peer: `the same steps one after another (stage barriers): ${fmtMs(b.first)} (all done ${fmtMs(b.all)})`,
      ratio: `${fmtX(s.first / b.first)} the staged time to first output`,
      target: '< staged',
      status: s.first < b.first ? 'met' : 'missed',
      command: `corral run stream.yaml vs staged.yaml (fetch → parse → publish: maps over outputsOf; staged: file maps over the folder the step before wrote, with needs), concurrency 2`,
      note: 'from the first task start to the first publish task finished, read back from the state file; ready tasks of later steps are claimed first, so the first fetch result goes through parse and publish while fetch still runs',
    },
  ];
  rows.push(await wide(ctx));
  return rows;
};

/**
 * Row 8b (issue 24, item 4): map → map over its outputs → reduce, 1,000 short tasks per map step
 * (a few ms each: echo, tr), streaming against the same steps with stage barriers. From the first
 * task's start: the second step's first output, and the end of the run.
 */
function wideJob(name: string, staged: boolean): string {
  const from = staged ? 'map: { glob: "fetched/*" }\n    needs: [fetch]' : 'map: { outputsOf: fetch }';
  return `name: ${name}
steps:
  - name: fetch
    map: { lines: items.txt }
    command: 'echo {input}'
    outputs: fetched/{index}
  - name: parse
    ${from}
    command: 'tr 0-9 a-j < {input}'
    outputs: parsed/${staged ? '{input.name}' : '{index}'}
  - name: merge
    reduce: parse
    command: 'cat {inputs}'
    outputs: merged.txt
concurrency: 2
`;
}

async function wide(ctx: Parameters<Bench>[0]): Promise<Row> {
  const n = ctx.size === 'full' ? 1000 : 50;
  const dir = scratch(ctx, 'streaming-wide');
  writeFileSync(path.join(dir, 'items.txt'), Array.from({ length: n }, (_, i) => `${i}\n`).join(''));
  writeFileSync(path.join(dir, 'stream.yaml'), wideJob('stream', false));
  writeFileSync(path.join(dir, 'staged.yaml'), wideJob('staged', true));
  const measure = async (name: string) => {
    for (const d of ['fetched', 'parsed', 'merged.txt'])
      rmSync(path.join(dir, d), { recursive: true, force: true });
    mustSucceed(`corral run ${name}.yaml`, await corralRun(dir, `${name}.yaml`, { timeoutMs: 300_000 }));
    const db = new Database(path.join(dir, `.corral/jobs/${name}/state.db`), {
      readonly: true,
      fileMustExist: true,
    });
    try {
      const r = db
        .prepare(
          `SELECT min(started_at) AS t0, max(finished_at) AS t1, sum(state = 'done') AS done,
             (SELECT min(finished_at) FROM tasks WHERE step = 'parse' AND state = 'done') AS out
           FROM tasks`,
        )
        .get() as { t0: number; t1: number; out: number; done: number };
      if (r.done !== 2 * n + 1) throw new Error(`${name}: ${r.done}/${2 * n + 1} tasks done`);
      const first = r.out - r.t0;
      const all = r.t1 - r.t0;
      ctx.log(`  ${name}: second step's first output ${fmtMs(first)}, end ${fmtMs(all)}`);
      return { first, all, score: name === 'stream' ? first / all : all };
    } finally {
      db.close();
    }
  };
  ctx.log(`streaming (wide): 2 × ${n} tasks + reduce × ${ctx.reps} reps, streaming and staged interleaved`);
  const r = await interleaved(
    ctx.reps,
    { stream: () => measure('stream'), staged: () => measure('staged') },
    (v) => v.score,
  );
  // the second step's first output: the run where it came soonest as a share of that run; the
  // end: the soonest end of each (each its own best of N)
  const s = r.stream.best;
  const b = { ...r.staged.best, all: Math.min(...r.staged.all.map((v) => v.all)) };
  const streamEnd = Math.min(...r.stream.all.map((v) => v.all));
  const frac = s.first / s.all;
  return {
    id: '8b',
    what: `3-step workflow (map → map over its outputs → reduce, ${n} short shell tasks per map step, 2 workers): second step's first output, and the end`,
    corral: `first output at ${fmtMs(s.first)} = ${(100 * frac).toFixed(1)} % of the run; end ${fmtMs(streamEnd)}`,
    peer: `the same steps one after another (stage barriers): first output ${fmtMs(b.first)}, end ${fmtMs(b.all)}`,
    ratio: `${fmtX(streamEnd / b.all)} the staged run's time`,
    target: '≤5 % of the run; end ≤ staged',
    status: frac <= 0.05 && streamEnd <= b.all ? 'met' : 'missed',
    command:
      'corral run stream.yaml vs staged.yaml (fetch: echo {input}; parse: tr < {input}, a map over outputsOf fetch (staged: a file map over fetched/* with needs); merge: reduce, cat {inputs}), concurrency 2',
    note: "times from the first task start, read back from the state file (the second step's first output: its first task finished)",
  };
}
