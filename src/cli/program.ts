/** The corral command line: its commands, and how errors become exit codes. */
import { Command, CommanderError } from 'commander';
import { CommandFailed, isUsageError, UsageError } from '../spec/errors.js';

type Register = (program: Command) => void;

/**
 * Each command's module, in the order of the help. A command line naming one loads only that one
 * (the others' modules cost a start ~10 ms); anything else (help, an unknown command) loads all.
 */
const COMMANDS: ReadonlyArray<readonly [string, () => Promise<{ register: Register }>]> = [
  ['init', () => import('./commands/init.js')],
  ['run', () => import('./commands/run.js')],
  ['status', () => import('./commands/status.js')],
  ['tasks', () => import('./commands/tasks.js')],
  ['joblog', () => import('./commands/joblog.js')],
  ['logs', () => import('./commands/logs.js')],
  ['dashboard', () => import('./commands/dashboard.js')],
  ['report', () => import('./commands/report.js')],
  ['dag', () => import('./commands/dag.js')],
  ['plan', () => import('./commands/plan.js')],
  ['up', () => import('./commands/up.js')],
  ['down', () => import('./commands/down.js')],
  ['worker', () => import('./commands/worker.js')],
  ['gc', () => import('./commands/gc.js')],
  ['attach', () => import('./commands/attach.js')],
  ['cancel', () => import('./commands/cancel.js')],
];

/** Exit code for an error inside corral itself (not bad input, not a failed job). */
const EXIT_INTERNAL = 70;

/** The command line, with the command named in `argv` registered (all of them for help or an unknown one). */
export async function buildProgram(argv: readonly string[]): Promise<Command> {
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
  const named = COMMANDS.find(([name]) => name === argv[2]);
  const modules = await Promise.all((named ? [named] : COMMANDS).map(([, load]) => load()));
  for (const m of modules) m.register(program);
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
  const program = await buildProgram(argv);
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
    if (err instanceof CommandFailed) {
      process.stderr.write(`corral: ${err.message}\n`);
      process.exitCode = CommandFailed.EXIT_CODE;
      return;
    }
    process.stderr.write(`corral: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = EXIT_INTERNAL;
  }
}
