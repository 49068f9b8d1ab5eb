import { createReadStream, existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { jobPaths, resolveStateDir, taskLogName } from '../../engine/state-dir.js';
import { UsageError } from '../../spec/errors.js';
import { addClusterOptions, type ClusterFlags, logsOnCluster } from './cluster.js';

interface LogsFlags {
  stateDir?: string;
  raw?: boolean;
  follow?: boolean;
}

/** `corral logs JOB [TASK]`: the job's event log, or one task's log (every attempt); `-f` follows it while the job runs. */
export function register(program: Command): void {
  program
    .command('logs')
    .description("print a job's event log, or the log of one task (stdout and stderr of every attempt)")
    .argument('<JOB>', 'job name')
    .argument(
      '[TASK]',
      'task key (its index for map jobs, step/index in a workflow) or its input (file, line)',
    )
    .option('--state-dir <DIR>', 'where job state lives (env CORRAL_STATE_DIR)')
    .option('--raw', 'print the event log as JSON lines')
    .option('-f, --follow', 'keep printing new lines until the job is no longer running')
    .action(async (name: string, task: string | undefined, flags: LogsFlags) => {
      if ((flags as ClusterFlags).cluster) return logsOnCluster(name, task, flags as ClusterFlags);
      const { openJob, readState } = await import('../../engine/job-state.js');
      const { formatEvent } = await import('../../observe/log.js');
      const stateDir = resolveStateDir(flags.stateDir);
      const q = openJob(stateDir, name);
      const paths = jobPaths(stateDir, name);
      let file = paths.events;
      let pretty = !flags.raw;
      try {
        if (task !== undefined) {
          // its key, the label the summaries print (`3 (data/d.txt)`), or its input alone
          const { findTask } = await import('../../engine/task-list.js');
          const key = findTask(stateDir, name, task);
          const row = readState(stateDir, name, () =>
            q.db.prepare('SELECT key, state, attempts FROM tasks WHERE key = ?').get(key ?? task),
          ) as { key: string; state: string; attempts: number } | undefined;
          if (!row)
            throw new UsageError(
              'TASK',
              `job ${name} has no task "${task}"`,
              `pass a task key or input as listed by corral tasks ${name}`,
            );
          file = path.join(paths.logs, taskLogName(row.key));
          pretty = false;
          if (!existsSync(file) && !flags.follow) {
            process.stdout.write(
              `task ${row.key} (${row.state}, ${row.attempts} attempt(s)) wrote no log output\n`,
            );
            return;
          }
        }
      } finally {
        await q.close();
      }
      const print = (line: string) => process.stdout.write(`${pretty ? formatEvent(line) : line}\n`);
      if (flags.follow) {
        const { followFile } = await import('../../observe/follow.js');
        const ac = new AbortController();
        const stop = () => ac.abort();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        try {
          await followFile(file, { onLine: print, running: () => existsSync(paths.lock), signal: ac.signal });
        } finally {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
        }
        return;
      }
      if (!existsSync(file)) return;
      if (!pretty) {
        await new Promise<void>((resolve, reject) => {
          const rs = createReadStream(file);
          rs.on('error', reject);
          rs.on('end', resolve);
          rs.pipe(process.stdout, { end: false });
        });
        return;
      }
      const rl = createInterface({ input: createReadStream(file), crlfDelay: Number.POSITIVE_INFINITY });
      for await (const line of rl) print(line);
    });
  addClusterOptions(program.commands.find((c) => c.name() === 'logs')!);
}
