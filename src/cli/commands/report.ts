import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { resolveStateDir } from '../../engine/state-dir.js';
import { UsageError } from '../../spec/errors.js';

interface ReportFlags {
  stateDir?: string;
  cluster?: string;
  output?: string;
  instanceType?: string;
  region?: string;
  spot?: boolean;
}

/** `corral report JOB`: writes a self-contained HTML report of a run. */
export function register(program: Command): void {
  program
    .command('report')
    .description(
      'write a self-contained HTML report of a job: summary, step durations, timeline per worker, failures, retries, cost',
    )
    .argument('<JOB>', 'job name')
    .option('--state-dir <DIR>', 'where job state lives (env CORRAL_STATE_DIR)')
    .option(
      '--cluster <NAME>',
      'a job run on this cluster with corral run --cluster NAME (what this machine tracked of it)',
    )
    .option('-o, --output <FILE>', 'where to write the report (- for stdout)', 'report.html')
    .option(
      '--instance-type <TYPE>',
      'price the run as if its hosts were these EC2 instances (a --cluster run: an estimate, its workers × its wall time)',
    )
    .option(
      '--region <REGION>',
      "region of those instances (default: a cluster run's region, else us-east-1)",
    )
    .option('--spot', 'price those instances as spot')
    .addHelpText(
      'after',
      '\nThe file opens offline in any browser.\nExample: corral report checksums -o checksums.html',
    )
    .action(async (name: string, flags: ReportFlags) => {
      const { assertJobExists, readState } = await import('../../engine/job-state.js');
      const { buildReport } = await import('../../observe/report.js');
      const stateDir = flags.cluster
        ? (await import('./cluster.js')).clusterStateDir(flags.stateDir, flags.cluster)
        : resolveStateDir(flags.stateDir);
      assertJobExists(stateDir, name);
      const html = readState(stateDir, name, () =>
        buildReport(stateDir, name, {
          pricing: { instanceType: flags.instanceType, region: flags.region, spot: flags.spot },
        }),
      );
      if (flags.output === '-') {
        process.stdout.write(html);
        return;
      }
      const out = path.resolve(flags.output ?? 'report.html');
      try {
        mkdirSync(path.dirname(out), { recursive: true });
        writeFileSync(out, html);
      } catch (err) {
        throw new UsageError(
          '--output',
          `cannot write ${out} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
          'pass a writable file path with -o',
        );
      }
      process.stderr.write(
        `corral: wrote the report of job ${name} to ${path.relative(process.cwd(), out) || out}\n`,
      );
    });
}
