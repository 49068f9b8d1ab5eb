import { createReadStream, existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { jobPaths, resolveStateDir, taskLogName } from '../../engine/state-dir.js';
import { UsageError } from '../../spec/errors.js';

/** `corral logs JOB [TASK]`: the job's event log, or one task's log (every attempt). */
export function register(program: Command): void {
  program
    .command('logs')
    .description("print a job's event log, or the log of one task (stdout and stderr of every attempt)")
    .argument('<JOB>', 'job name')
    .argument('[TASK]', 'task key (its index for map jobs)')
    .option('--state-dir <DIR>', 'where job state lives (env CORRAL_STATE_DIR)')
    .option('--raw', 'print the event log as JSON lines')
    .action(async (name: string, task: string | undefined, flags: { stateDir?: string; raw?: boolean }) => {
      const { openJob } = await import('../../engine/job-state.js');
      const stateDir = resolveStateDir(flags.stateDir);
      const q = openJob(stateDir, name);
      const paths = jobPaths(stateDir, name);
      try {
        if (task !== undefined) {
          const row = q.db.prepare('SELECT key, state, attempts FROM tasks WHERE key = ?').get(task) as
            | { key: string; state: string; attempts: number }
            | undefined;
          if (!row)
            throw new UsageError(
              'TASK',
              `job ${name} has no task "${task}"`,
              'pass a task key as shown by corral status',
            );
          const file = path.join(paths.logs, taskLogName(row.key));
          if (!existsSync(file)) {
            process.stdout.write(
              `task ${row.key} (${row.state}, ${row.attempts} attempt(s)) wrote no log output\n`,
            );
            return;
          }
          await new Promise<void>((resolve, reject) => {
            const rs = createReadStream(file);
            rs.on('error', reject);
            rs.on('end', resolve);
            rs.pipe(process.stdout, { end: false });
          });
          return;
        }
        if (!existsSync(paths.events)) return;
        const rl = createInterface({
          input: createReadStream(paths.events),
          crlfDelay: Number.POSITIVE_INFINITY,
        });
        for await (const line of rl) {
          if (flags.raw) {
            process.stdout.write(`${line}\n`);
            continue;
          }
          try {
            const e = JSON.parse(line) as {
              time: number;
              level: number;
              msg?: string;
              event?: string;
              [k: string]: unknown;
            };
            const { time, level, msg, event, pid: _p, hostname: _h, job: _j, ...rest } = e;
            const lvl = level >= 50 ? 'ERROR' : level >= 40 ? 'WARN ' : 'INFO ';
            const extra = Object.entries(rest)
              .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
              .join(' ');
            process.stdout.write(
              `${new Date(time).toISOString()} ${lvl} ${msg ?? event ?? ''}${extra ? ` ${extra}` : ''}\n`,
            );
          } catch {
            process.stdout.write(`${line}\n`);
          }
        }
      } finally {
        await q.close();
      }
    });
}
