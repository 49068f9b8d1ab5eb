import type { Command } from 'commander';
import { resolveStateDir } from '../../engine/state-dir.js';

/** `corral joblog JOB`: every attempt of the job, as GNU parallel's `--joblog` (TSV). */
export function register(program: Command): void {
  program
    .command('joblog')
    .description(
      "print every attempt of a job as GNU parallel's --joblog: TSV of Seq, Host, Starttime, JobRuntime, Send, Receive, Exitval, Signal, Command",
    )
    .argument('<JOB>', 'job name')
    .option('--state-dir <DIR>', 'where job state lives (env CORRAL_STATE_DIR)')
    .addHelpText('after', '\nExample: corral joblog my-job > joblog.tsv')
    .action(async (name: string, flags: { stateDir?: string }) => {
      const { jobLog } = await import('../../engine/task-list.js');
      process.stdout.write(jobLog(resolveStateDir(flags.stateDir), name));
    });
}
