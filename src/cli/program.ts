/** The corral command line: its commands, and how errors become exit codes. */
import { Command, CommanderError } from 'commander';
import { isUsageError, UsageError } from '../spec/errors.js';
import { register as registerDashboard } from './commands/dashboard.js';
import { register as registerDown } from './commands/down.js';
import { register as registerGc } from './commands/gc.js';
import { register as registerInit } from './commands/init.js';
import { register as registerLogs } from './commands/logs.js';
import { register as registerPlan } from './commands/plan.js';
import { register as registerReport } from './commands/report.js';
import { register as registerRun } from './commands/run.js';
import { register as registerStatus } from './commands/status.js';
import { register as registerUp } from './commands/up.js';
import { register as registerWorker } from './commands/worker.js';

/** Exit code for an error inside corral itself (not bad input, not a failed job). */
const EXIT_INTERNAL = 70;

function buildProgram(): Command {
  const program = new Command('corral')
    .description(
      'Run embarrassingly parallel jobs on this machine or on a private AWS cluster, from one typed spec.',
    )
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .option(
      '--log-format <FORMAT>',
      "also print the coordinator's events on stderr: json or pretty (env CORRAL_LOG_FORMAT)",
    )
    .option(
      '--log-level <LEVEL>',
      'least level logged: trace, debug, info, warn, error, fatal, silent (env CORRAL_LOG_LEVEL)',
    )
    .hook('preAction', async (cmd) => {
      const flags = cmd.opts<{ logFormat?: string; logLevel?: string }>();
      if (flags.logFormat === undefined && flags.logLevel === undefined) return; // spare loading pino
      const { applyLogFlags } = await import('../observe/log.js');
      applyLogFlags(flags);
    })
    .exitOverride();
  for (const register of [
    registerInit,
    registerRun,
    registerStatus,
    registerLogs,
    registerDashboard,
    registerReport,
    registerPlan,
    registerUp,
    registerDown,
    registerWorker,
    registerGc,
  ])
    register(program);
  for (const c of program.commands) c.exitOverride();
  // commander's own refusals read like every other bad input: `corral: error: …`
  const outputError = (str: string, write: (s: string) => void) =>
    write(str.replace(/^error: /, 'corral: error: '));
  const prefixErrors = (c: Command): void => {
    c.configureOutput({ outputError });
    for (const sub of c.commands) prefixErrors(sub);
  };
  prefixErrors(program);
  return program;
}

/** Runs the command line `argv` (as `process.argv`); sets `process.exitCode`. */
export async function main(argv: string[]): Promise<void> {
  // `corral … | head` closes stdout early: that is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version exit 0; anything commander refuses is bad input
      process.exitCode = err.exitCode === 0 ? 0 : UsageError.EXIT_CODE;
      return;
    }
    if (isUsageError(err)) {
      process.stderr.write(`corral: error: ${err.message}\n`);
      process.exitCode = UsageError.EXIT_CODE;
      return;
    }
    process.stderr.write(`corral: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = EXIT_INTERNAL;
  }
}
