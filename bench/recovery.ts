/**
 * Target 6 (local part): a worker is SIGKILLed while it runs a task; how long until that task
 * finished on another worker, against the lease time (the bound a lease-expiry-only design would
 * give). Each task is `sleep 0.2`, so the figure includes running the task again (0.2 s).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { type Bench, corralRun, fmtMs, fmtX, type Row, scratch } from './lib.js';

const LEASE_S = 30;
const TASK_S = 0.2;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** One run: kills the worker of the first running task; returns kill → that task done, in ms. */
async function once(dir: string): Promise<number> {
  const db = path.join(dir, '.corral/jobs/recovery/state.db');
  let victim: { id: number; pid: number; killedAt: number } | undefined;
  let finishedAt: number | undefined;
  const watch = async () => {
    // bounded: 60 s of 20 ms polls
    for (let i = 0; i < 3000 && finishedAt === undefined; i++) {
      await sleep(20);
      let h: Database.Database | undefined;
      try {
        h = new Database(db, { readonly: true, fileMustExist: true });
        if (!victim) {
          const r = h
            .prepare(
              `SELECT t.id, w.pid FROM tasks t JOIN workers w ON w.id = t.owner
               WHERE t.state = 'leased' AND w.state = 'running' AND t.started_at <= ? ORDER BY t.id LIMIT 1`,
            )
            .get(Date.now() - 50) as { id: number; pid: number } | undefined;
          if (r) {
            process.kill(r.pid, 'SIGKILL');
            victim = { ...r, killedAt: Date.now() };
          }
        } else {
          const t = h
            .prepare("SELECT finished_at FROM tasks WHERE id = ? AND state = 'done'")
            .get(victim.id) as { finished_at: number } | undefined;
          if (t) finishedAt = t.finished_at;
        }
      } catch {
        // the state file is not there yet
      } finally {
        h?.close();
      }
    }
  };
  const [r] = await Promise.all([corralRun(dir, 'job.yaml', { timeoutMs: 120_000 }), watch()]);
  if (r.code !== 0) throw new Error(`corral run exited with ${r.code}\n${r.stderr.slice(-2000)}`);
  if (!victim || finishedAt === undefined)
    throw new Error('no worker was killed, or its task never finished');
  return finishedAt - victim.killedAt;
}

export const run: Bench = async (ctx) => {
  const dir = scratch(ctx, 'recovery');
  const n = 12;
  writeFileSync(path.join(dir, 'lines.txt'), Array.from({ length: n }, (_, i) => `${i}\n`).join(''));
  writeFileSync(
    path.join(dir, 'job.yaml'),
    [
      'name: recovery',
      'tasks:',
      '  map:',
      '    lines: lines.txt',
      `  command: "sleep ${TASK_S}"`,
      'concurrency: 2',
      `lease: ${LEASE_S}s`,
      'retries:',
      '  maxAttempts: 3',
      '  backoff: { initial: 0s }',
      '',
    ].join('\n'),
  );
  const reps = ctx.size === 'full' ? ctx.reps : 1;
  const all: number[] = [];
  for (let i = 0; i < reps; i++) {
    all.push(await once(dir));
    ctx.log(`  recovery: ${fmtMs(all.at(-1)!)}`);
  }
  const best = Math.min(...all);
  const worst = Math.max(...all);
  const rows: Row[] = [
    {
      id: '6a',
      what: 'SIGKILL of a local worker → its task finished on another worker',
      corral: `${fmtMs(best)} (worst of ${reps}: ${fmtMs(worst)})`,
      peer: `lease ${LEASE_S} s`,
      ratio: `${fmtX(worst / (LEASE_S * 1000))} of the lease`,
      target: '≪ lease',
      status: worst < LEASE_S * 1000 ? 'met' : 'missed',
      command: `corral run job.yaml (${n} × sleep ${TASK_S}, concurrency 2, lease ${LEASE_S}s), kill -9 of the worker holding the first running task`,
      note: `includes running the ${TASK_S} s task again and starting the replacement worker; the coordinator sees the worker exit and expires its leases at once`,
    },
  ];
  return rows;
};
