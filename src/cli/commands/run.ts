import path from 'node:path';
import type { Command } from 'commander';
import { discardPrestarted, type PrestartedWorker } from '../../compute/local/local-compute.js';
import {
  assertStateDirHoldsNoOutputs,
  assertWritableStateDir,
  resolveStateDir,
} from '../../engine/state-dir.js';
import { shellQuote } from '../../engine/template.js';
import { UsageError } from '../../spec/errors.js';
import { MAX_CONCURRENCY } from '../../spec/limits.js';
import { prestartFor, takeEarly } from '../early-start.js';
import { formatSeconds, inputToOutput, parsePositiveInt, printJson } from '../output.js';
import { createProgressView } from '../progress.js';
import { addClusterOptions, type ClusterFlags, runOnCluster } from './cluster.js';
import { parsePort } from './dashboard.js';

interface RunFlags {
  stateDir?: string;
  concurrency?: number;
  fresh?: boolean;
  redoChanged?: boolean;
  json?: boolean;
  quiet?: boolean;
  var: string[];
  workdir?: string;
  ui?: boolean;
  uiPort: number;
  uiHost: string;
  token?: string;
  dryRun?: boolean;
  detach?: boolean;
}

/** `corral run FILE`: runs a job on this machine, resuming it if it was interrupted. */
export function register(program: Command): void {
  program
    .command('run')
    .description('run a job (map of tasks) on this machine; run it again to resume after any interruption')
    .argument('<FILE>', 'job spec (YAML), or a HyperFlow workflow (JSON, detected by content)')
    .option('--state-dir <DIR>', 'where job state lives (env CORRAL_STATE_DIR)', '.corral')
    .option(
      '-c, --concurrency <N>',
      "tasks at once (overrides the spec's concurrency)",
      parsePositiveInt('--concurrency', MAX_CONCURRENCY),
    )
    .option(
      '--fresh',
      'forget earlier state of this job and plan its tasks again (committed outputs still count, unless an input is newer than its output)',
    )
    .option(
      '--redo-changed',
      'run again the tasks whose input file changed since their output was made, replacing each output atomically',
    )
    .option('--json', 'print the summary as JSON on stdout')
    .option('-q, --quiet', 'no progress output')
    .option(
      '--var <NAME=VALUE>',
      'value of a {{NAME}} placeholder of a HyperFlow workflow (repeatable)',
      (v: string, all: string[]) => [...all, v],
      [],
    )
    .option(
      '--pool <STEP=POOL>',
      "with --cluster: the pool whose workers run a step's or a HyperFlow process's tasks (repeatable; a step's own pool: wins; default the job's pool:, else the cluster's first pool)",
      (v: string, all: string[]) => [...all, v],
      [],
    )
    .option(
      '--workdir <DIR>',
      "HyperFlow working directory: where signals are files and commands run (default: the JSON file's folder)",
    )
    .option('--ui', 'serve a live web dashboard of the run (URL printed on stderr; stops when the run ends)')
    .option('--ui-port <N>', 'port of the dashboard (0: any free port)', parsePort('--ui-port'), 0)
    .option('--ui-host <ADDR>', 'address of the dashboard; other than loopback needs --token', '127.0.0.1')
    .option(
      '--token <SECRET>',
      'password of the dashboard, checked on every request (env CORRAL_DASHBOARD_TOKEN)',
    )
    .option(
      '--detach',
      'with --cluster: upload the job, send what can start and return; a cluster worker coordinates the rest (follow it with corral attach JOB --cluster NAME)',
    )
    .option(
      '--dry-run',
      'validate and plan the job, print what would run and what is already committed; start nothing, write no state',
    )
    .addHelpText(
      'after',
      '\nExit codes: 0 all tasks done, 1 some tasks failed (dead letters), 2 bad input, 130 interrupted.\nExample: corral run examples/checksums/job.yaml',
    )
    .action(async (file: string, flags: RunFlags) => {
      if (flags.dryRun) return dryRunLocal(file, flags);
      if (flags.detach && !(flags as ClusterFlags).cluster)
        throw new UsageError(
          '--detach',
          'is for cluster runs: on this machine the run needs this process',
          'add --cluster NAME, or run without --detach',
        );
      if ((flags as ClusterFlags).cluster) {
        if (flags.redoChanged)
          throw new UsageError(
            '--redo-changed',
            'is for runs on this machine: a cluster re-run resumes from its bucket and does not look at changed inputs yet',
            'run without --redo-changed, or run the job here',
          );
        return runOnCluster(file, flags as ClusterFlags);
      }
      // The workers start first, and the job's modules load meanwhile (file reads off the main
      // thread): their Node start-up overlaps the loading of the job.
      const modules = Promise.all([import('../../workflow/load-job.js'), import('../../transport/local.js')]);
      modules.catch(() => {}); // awaited below; a failure is reported there
      const prestarted = takeEarly(file, flags.concurrency) ?? prestartFor(file, flags.concurrency);
      try {
        await runLocal(file, flags, prestarted, modules);
      } finally {
        discardPrestarted(prestarted); // those the run did not take (it failed before it started them)
      }
    });
  addClusterOptions(program.commands.find((c) => c.name() === 'run')!);
}

/** How many tasks `--dry-run` lists. */
const DRY_RUN_TASKS = 10;

/** `corral run FILE --dry-run`: the plan, printed; no worker, no state. */
async function dryRunLocal(file: string, flags: RunFlags): Promise<void> {
  const { loadJob, parseVars } = await import('../../workflow/load-job.js');
  const { dryRun } = await import('../../engine/preview.js');
  const job = loadJob(file, { vars: parseVars(flags.var), workdir: flags.workdir });
  const stateDir = resolveStateDir(flags.stateDir === '.corral' ? undefined : flags.stateDir);
  assertStateDirHoldsNoOutputs(
    stateDir,
    job,
    flags.stateDir === '.corral' && process.env.CORRAL_STATE_DIR ? 'CORRAL_STATE_DIR' : '--state-dir',
  );
  // what a run would refuse, a dry run refuses too (the check's probe folder is removed at once)
  assertWritableStateDir(stateDir);
  const plan = await dryRun(job, DRY_RUN_TASKS);
  if (flags.json) {
    printJson(plan);
    return;
  }
  const out = process.stdout;
  out.write(
    `dry run of job ${plan.job}: ${plan.total} task(s), ${plan.committed} already committed (skipped), ${plan.toRun} would run\n`,
  );
  const w = Math.max(...plan.steps.map((s) => s.name.length));
  for (const s of plan.steps) {
    const after = s.after.length ? ` (after ${s.after.join(', ')})` : '';
    out.write(
      s.state === 'waiting'
        ? `  step ${s.name.padEnd(w)}  planned once ${s.after.join(', ')} ${s.after.length === 1 ? 'has' : 'have'} run (its inputs are files written by then)\n`
        : `  step ${s.name.padEnd(w)}  ${s.tasks} task(s): ${s.toRun} to run, ${s.committed} committed${after}\n`,
    );
  }
  if (plan.tasks.length) {
    out.write(`first ${plan.tasks.length} task(s):\n`);
    for (const t of plan.tasks)
      out.write(
        `  ${t.key}  ${inputToOutput(t.input, t.output)}${t.committed ? '  (committed: skipped)' : ''}\n`,
      );
  }
  out.write('nothing was run and no state was written\n');
}

async function runLocal(
  file: string,
  flags: RunFlags,
  prestarted: PrestartedWorker[],
  modules: Promise<[typeof import('../../workflow/load-job.js'), typeof import('../../transport/local.js')]>,
): Promise<void> {
  const [{ loadJob, parseVars }, { runJob }] = await modules;
  const job = loadJob(file, { vars: parseVars(flags.var), workdir: flags.workdir });
  const stateDir = resolveStateDir(flags.stateDir === '.corral' ? undefined : flags.stateDir);
  assertStateDirHoldsNoOutputs(
    stateDir,
    job,
    flags.stateDir === '.corral' && process.env.CORRAL_STATE_DIR ? 'CORRAL_STATE_DIR' : '--state-dir',
  );
  const token = flags.token ?? process.env.CORRAL_DASHBOARD_TOKEN;
  // The dashboard starts now and shows the job once its state file exists.
  const ui = flags.ui
    ? await (await import('../../observe/dashboard-server.js')).startDashboard({
        stateDir,
        job: job.spec.name,
        host: flags.uiHost,
        port: flags.uiPort,
        token,
        flags: { host: '--ui-host', port: '--ui-port', token: '--token' },
      })
    : undefined;
  if (ui) process.stderr.write(`corral: dashboard at ${ui.url}${token ? '?token=<your token>' : ''}\n`);
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
      redoChanged: flags.redoChanged,
      concurrency: flags.concurrency,
      prestarted,
      onProgress: (p) => view.update(p),
      signal: ac.signal,
    });
  } finally {
    await ui?.close();
    view.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (flags.json) printJson(summary);
  else {
    const c = summary.counts;
    const out = process.stdout;
    out.write(
      `job ${summary.job} ${summary.status}: ${c.done}/${c.total} tasks done, ${c.dead} failed${c.skipped ? `, ${c.skipped} skipped` : ''} in ${formatSeconds(summary.seconds)}${summary.resumed ? ' (resumed)' : ''}\n`,
    );
    if (summary.retried)
      out.write(
        `retried the last run's failures: ${summary.retried.dead} failed and ${summary.retried.skipped} skipped task(s)${summary.retried.steps ? `, ${summary.retried.steps} skipped step(s)` : ''}\n`,
      );
    const ins = summary.inputs;
    if (ins?.added) out.write(`planned ${ins.added} new input(s) since the last run\n`);
    if (ins?.waiting)
      out.write(
        `${ins.waiting} new input(s) not planned: other steps read the step they belong to; ${retryCommand(file, flags)} --fresh plans them (and redoes what they change)\n`,
      );
    if (ins?.redone)
      out.write(`redid ${ins.redone} task(s) whose input changed since their output was made\n`);
    if (ins && ins.changed > ins.redone)
      out.write(
        `${ins.changed - ins.redone} input(s) changed since their outputs were made; ${
          flags.redoChanged
            ? `other steps read theirs: ${retryCommand(file, flags)} --fresh`
            : `${retryCommand(file, flags)} --redo-changed`
        } redoes them\n`,
      );
    if (summary.outputs) out.write(`results: ${path.relative(process.cwd(), summary.outputs) || '.'}/\n`);
    if (summary.deadLetters.length > 0) {
      out.write('failed tasks (dead letters):\n');
      for (const d of summary.deadLetters.slice(0, 20)) {
        out.write(
          `  task ${d.key}${d.input ? ` (${d.input})` : ''}: ${d.error} after ${d.attempts} attempt(s)${d.logPath ? `; log: ${path.relative(process.cwd(), d.logPath)}` : ''}\n`,
        );
      }
      if (c.dead > 20) out.write(`  … and ${c.dead - 20} more: corral status ${summary.job} --json\n`);
    }
    const spread = summary.failedPaths.filter((fp) => fp.includes('→'));
    if (spread.length > 0) {
      out.write('failed paths through the workflow:\n');
      for (const fp of spread) out.write(`  ${fp}\n`);
    }
    if (summary.unplanned?.length) {
      out.write('steps not planned:\n');
      for (const u of summary.unplanned) out.write(`  ${u}\n`);
      out.write('run the same command again to plan them (finished tasks do not run again)\n');
    }
    if (summary.status === 'interrupted') out.write(`interrupted: run the same command again to resume\n`);
    if (summary.status === 'failed')
      out.write(
        `to retry the failed and skipped tasks (done ones do not run again): ${retryCommand(file, flags)}\n`,
      );
    out.write(
      `state: ${path.relative(process.cwd(), summary.stateDir)} (corral status ${summary.job}, corral logs ${summary.job})\n`,
    );
  }
  process.exitCode = summary.status === 'succeeded' ? 0 : summary.status === 'interrupted' ? 130 : 1;
}

/**
 * The command that retries a failed run: the same job, state folder and workflow values, without
 * `--fresh` (which would plan everything anew rather than retry).
 */
function retryCommand(file: string, flags: RunFlags): string {
  const args = ['corral', 'run', file];
  if (flags.stateDir && flags.stateDir !== '.corral') args.push('--state-dir', flags.stateDir);
  for (const v of flags.var) args.push('--var', v);
  if (flags.workdir) args.push('--workdir', flags.workdir);
  return args.map(shellQuote).join(' ');
}
