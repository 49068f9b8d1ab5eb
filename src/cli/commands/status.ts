import path from 'node:path';
import type { Command } from 'commander';
import { resolveStateDir } from '../../engine/state-dir.js';
import type { TaskCounts } from '../../queue/queue.js';
import { printJson } from '../output.js';
import { addClusterOptions, type ClusterFlags, statusOnCluster } from './cluster.js';

/** One step's counts: `skipped` for a step none of whose tasks will run, else done of total and each other state there is. */
function stepLine(c: TaskCounts, skippedWhole: boolean): string {
  if (skippedWhole) return 'skipped (a step it needs failed; no task planned)';
  if (c.total === 0) return 'not planned yet';
  if (c.skipped === c.total) return `skipped (all ${c.total} task(s): what they need failed)`;
  const rest = [
    [c.leased, 'running'],
    [c.pending, 'pending'],
    [c.blocked, 'waiting'],
    [c.dead, 'failed'],
    [c.skipped, 'skipped'],
  ] as const;
  return [
    `${c.done}/${c.total} done`,
    ...rest.filter(([n]) => n > 0).map(([n, what]) => `${n} ${what}`),
  ].join(', ');
}

/** `corral status [JOB]`: jobs in the state folder, or one job's counts, workers and failures. */
export function register(program: Command): void {
  program
    .command('status')
    .description("show the jobs in the state folder, or one job's progress, workers and failed tasks")
    .argument('[JOB]', 'job name')
    .option('--state-dir <DIR>', 'where job state lives (env CORRAL_STATE_DIR)')
    .option('--json', 'print JSON on stdout')
    .action(async (name: string | undefined, flags: { stateDir?: string; json?: boolean }) => {
      if ((flags as ClusterFlags).cluster) return statusOnCluster(name, flags as ClusterFlags);
      const { listJobs, readJobStatus } = await import('../../engine/job-state.js');
      const { isUsageError } = await import('../../spec/errors.js');
      const stateDir = resolveStateDir(flags.stateDir);
      const out = process.stdout;
      if (name === undefined) {
        // a job whose state cannot be read is listed as such, with the reason; the others as usual
        const jobs = await Promise.all(
          listJobs(stateDir).map((j) =>
            readJobStatus(stateDir, j).catch((err: unknown) => {
              if (!isUsageError(err)) throw err;
              return { job: j, status: 'unreadable', error: `${err.problem} (fix: ${err.fix})` };
            }),
          ),
        );
        if (flags.json) {
          printJson(jobs.map((j) => ('error' in j ? j : { job: j.job, status: j.status, counts: j.counts })));
          return;
        }
        if (jobs.length === 0) out.write(`no jobs in ${stateDir}\n`);
        for (const j of jobs) {
          if ('error' in j) {
            out.write(`${j.job.padEnd(24)} ${j.status.padEnd(12)} ${j.error}\n`);
            continue;
          }
          const c = j.counts;
          const more = [
            ...(c.blocked ? [`${c.blocked} waiting`] : []),
            ...(c.skipped ? [`${c.skipped} skipped`] : []),
          ];
          out.write(
            `${j.job.padEnd(24)} ${j.status.padEnd(12)} ${c.done}/${c.total} done, ${c.leased} running, ${c.dead} failed${more.map((m) => `, ${m}`).join('')}\n`,
          );
        }
        return;
      }
      const s = await readJobStatus(stateDir, name);
      if (flags.json) {
        printJson(s);
        return;
      }
      const c = s.counts;
      out.write(`job ${s.job}: ${s.status}\n`);
      // every state is shown, so the parts add up to the total
      out.write(
        `tasks: ${c.total} total, ${c.done} done, ${c.leased} running, ${c.pending} pending, ${c.blocked} waiting, ${c.dead} failed, ${c.skipped} skipped\n`,
      );
      if (Object.keys(s.steps).length > 1) {
        for (const [step, sc] of Object.entries(s.steps))
          out.write(`  step ${step}: ${stepLine(sc, s.skippedSteps.includes(step))}\n`);
      }
      if (s.startedAt)
        out.write(`started: ${s.startedAt}${s.finishedAt ? `  finished: ${s.finishedAt}` : ''}\n`);
      const live = s.workers.filter((w) => w.state === 'running');
      if (live.length) {
        out.write('workers:\n');
        for (const w of live)
          out.write(`  ${w.id} pid ${w.pid} on ${w.host}, last heartbeat ${w.lastHeartbeat}\n`);
      }
      if (s.deadLetters.length) {
        out.write('failed tasks (dead letters):\n');
        for (const d of s.deadLetters) {
          out.write(
            `  task ${d.key}${d.input ? ` (${d.input})` : ''}: ${d.error} after ${d.attempts} attempt(s)${d.logPath ? `; log: ${path.relative(process.cwd(), d.logPath)}` : ''}\n`,
          );
        }
      }
    });
  addClusterOptions(program.commands.find((c) => c.name() === 'status')!);
}
