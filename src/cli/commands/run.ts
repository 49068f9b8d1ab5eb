import path from 'node:path';
import type { Command } from 'commander';
import { resolveStateDir } from '../../engine/state-dir.js';
import { formatSeconds, parsePositiveInt, printJson } from '../output.js';
import { createProgressView } from '../progress.js';

interface RunFlags {
  stateDir?: string;
  concurrency?: number;
  fresh?: boolean;
  json?: boolean;
  quiet?: boolean;
}

/** `corral run FILE`: runs a job on this machine, resuming it if it was interrupted. */
export function register(program: Command): void {
  program
    .command('run')
    .description('run a job (map of tasks) on this machine; run it again to resume after any interruption')
    .argument('<FILE>', 'job spec (YAML)')
    .option('--state-dir <DIR>', 'where job state lives (env CORRAL_STATE_DIR)', '.corral')
    .option(
      '-c, --concurrency <N>',
      "tasks at once (overrides the spec's concurrency)",
      parsePositiveInt('--concurrency'),
    )
    .option(
      '--fresh',
      'forget earlier state of this job and plan its tasks again (committed outputs still count)',
    )
    .option('--json', 'print the summary as JSON on stdout')
    .option('-q, --quiet', 'no progress output')
    .addHelpText(
      'after',
      '\nExit codes: 0 all tasks done, 1 some tasks failed (dead letters), 2 bad input, 130 interrupted.\nExample: corral run examples/checksums/job.yaml',
    )
    .action(async (file: string, flags: RunFlags) => {
      const { loadJobFile } = await import('../../spec/job.js');
      const { runJob } = await import('../../engine/coordinator.js');
      const job = loadJobFile(file);
      const stateDir = resolveStateDir(flags.stateDir === '.corral' ? undefined : flags.stateDir);
      const view = createProgressView({
        tty: Boolean(process.stderr.isTTY) && !flags.json,
        quiet: flags.quiet,
      });
      const ac = new AbortController();
      const onSignal = () => ac.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      if (!flags.quiet && !flags.json)
        process.stderr.write(`corral: running job ${job.spec.name} from ${file}\n`);
      let summary: Awaited<ReturnType<typeof runJob>>;
      try {
        summary = await runJob(job, {
          stateDir,
          fresh: flags.fresh,
          concurrency: flags.concurrency,
          onProgress: (p) => view.update(p),
          signal: ac.signal,
        });
      } finally {
        view.stop();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      if (flags.json) printJson(summary);
      else {
        const c = summary.counts;
        const out = process.stdout;
        out.write(
          `job ${summary.job} ${summary.status}: ${c.done}/${c.total} tasks done, ${c.dead} failed in ${formatSeconds(summary.seconds)}${summary.resumed ? ' (resumed)' : ''}\n`,
        );
        if (summary.outputs) out.write(`results: ${path.relative(process.cwd(), summary.outputs) || '.'}/\n`);
        if (summary.deadLetters.length > 0) {
          out.write('failed tasks (dead letters):\n');
          for (const d of summary.deadLetters.slice(0, 20)) {
            out.write(
              `  task ${d.key}: ${d.error} after ${d.attempts} attempt(s)${d.logPath ? `; log: ${path.relative(process.cwd(), d.logPath)}` : ''}\n`,
            );
          }
          if (c.dead > 20) out.write(`  … and ${c.dead - 20} more: corral status ${summary.job} --json\n`);
        }
        if (summary.status === 'interrupted')
          out.write(`interrupted: run the same command again to resume\n`);
        out.write(
          `state: ${path.relative(process.cwd(), summary.stateDir)} (corral status ${summary.job}, corral logs ${summary.job})\n`,
        );
      }
      process.exitCode = summary.status === 'succeeded' ? 0 : summary.status === 'interrupted' ? 130 : 1;
    });
}
