import type { Command } from 'commander';
import { Option } from 'commander';
import { resolveStateDir } from '../../engine/state-dir.js';
import { TASK_STATES, type TaskFilter, type TaskStateName } from '../../engine/task-list.js';
import { inputToOutput, printJson } from '../output.js';

interface TasksFlags {
  stateDir?: string;
  state?: TaskStateName;
  step?: string;
  json?: boolean;
  joblog?: boolean;
}

/** Cuts a table cell to `n` characters. */
function cell(v: string, n: number): string {
  const one = v.replace(/\s+/g, ' ');
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}

/** `corral tasks JOB`: every task with its state and input; `--joblog` prints GNU parallel's job log instead. */
export function register(program: Command): void {
  program
    .command('tasks')
    .description("list a job's tasks: key, step, state, attempts, input → output, last error")
    .argument('<JOB>', 'job name')
    .option('--state-dir <DIR>', 'where job state lives (env CORRAL_STATE_DIR)')
    .addOption(
      new Option(
        '--state <STATE>',
        'only tasks in this state (failed: every task with a failed attempt, dead or retried)',
      ).choices(TASK_STATES),
    )
    .option('--step <NAME>', 'only tasks of this step')
    .option('--json', 'print JSON on stdout')
    .option('--joblog', "print every attempt as GNU parallel's --joblog (TSV), like corral joblog")
    .addHelpText('after', '\nExample: corral tasks my-job --state dead')
    .action(async (name: string, flags: TasksFlags) => {
      const { listTasks, jobLog } = await import('../../engine/task-list.js');
      const stateDir = resolveStateDir(flags.stateDir);
      const filter: TaskFilter = { state: flags.state, step: flags.step };
      if (flags.joblog) {
        process.stdout.write(jobLog(stateDir, name, filter));
        return;
      }
      const tasks = listTasks(stateDir, name, filter);
      if (flags.json) {
        printJson(tasks);
        return;
      }
      const out = process.stdout;
      if (tasks.length === 0) {
        out.write(
          `no tasks${flags.state ? ` ${flags.state}` : ''}${flags.step ? ` in step ${flags.step}` : ''}\n`,
        );
        return;
      }
      const kw = Math.min(24, Math.max(4, ...tasks.map((t) => t.key.length)));
      const sw = Math.min(16, Math.max(4, ...tasks.map((t) => t.step.length)));
      out.write(`${'TASK'.padEnd(kw)}  ${'STEP'.padEnd(sw)}  ${'STATE'.padEnd(8)}  TRIES  INPUT → OUTPUT\n`);
      for (const t of tasks) {
        const io = inputToOutput(t.input, t.output);
        const why = t.state === 'dead' && t.error ? `  (${cell(t.error, 60)})` : '';
        const on = t.worker ? `  [${t.worker}]` : '';
        out.write(
          `${t.key.padEnd(kw)}  ${cell(t.step, sw).padEnd(sw)}  ${t.state.padEnd(8)}  ${String(t.attempts).padStart(5)}  ${cell(io, 100)}${why}${on}\n`,
        );
      }
    });
}
