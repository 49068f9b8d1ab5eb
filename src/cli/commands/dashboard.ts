import { type Command, InvalidArgumentError } from 'commander';
import { resolveStateDir } from '../../engine/state-dir.js';

interface DashboardFlags {
  stateDir?: string;
  cluster?: string;
  host: string;
  port: number;
  token?: string;
}

/** Parses a TCP port flag (0 = any free port). */
export function parsePort(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535) {
      throw new InvalidArgumentError(`${flag} must be a port number from 0 to 65535, not "${v}"`);
    }
    return n;
  };
}

/** `corral dashboard [JOB]`: serves the live web dashboard of a job (or of every job of the state folder). */
export function register(program: Command): void {
  program
    .command('dashboard')
    .description(
      'serve a live web dashboard of a job (progress, throughput, workers, failures, steps) and /metrics',
    )
    .argument('[JOB]', 'job name (default: pick any job of the state folder in the page)')
    .option('--state-dir <DIR>', 'where job state lives (env CORRAL_STATE_DIR)')
    .option(
      '--cluster <NAME>',
      'a job run on this cluster with corral run --cluster NAME (what this machine tracked of it)',
    )
    .option('--host <ADDR>', 'address to listen on; other than loopback needs --token', '127.0.0.1')
    .option('--port <N>', 'port to listen on (0: any free port)', parsePort('--port'), 0)
    .option(
      '--token <SECRET>',
      'password required on every request (?token=… or Authorization: Bearer) (env CORRAL_DASHBOARD_TOKEN)',
    )
    .addHelpText(
      'after',
      '\nPrometheus metrics are at /metrics. Stop with Ctrl-C.\nExample: corral dashboard checksums --port 8080',
    )
    .action(async (name: string | undefined, flags: DashboardFlags) => {
      const { assertJobExists } = await import('../../engine/job-state.js');
      const { startDashboard } = await import('../../observe/dashboard-server.js');
      const stateDir = flags.cluster
        ? (await import('./cluster.js')).clusterStateDir(flags.stateDir, flags.cluster)
        : resolveStateDir(flags.stateDir);
      if (name !== undefined) assertJobExists(stateDir, name);
      const dash = await startDashboard({
        stateDir,
        job: name,
        host: flags.host,
        port: flags.port,
        token: flags.token ?? process.env.CORRAL_DASHBOARD_TOKEN,
      });
      process.stderr.write(
        `corral: dashboard of ${name ?? 'the jobs in ' + stateDir} at ${dash.url}${flags.token || process.env.CORRAL_DASHBOARD_TOKEN ? '?token=<your token>' : ''} (metrics: ${dash.url}metrics); Ctrl-C stops it\n`,
      );
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await dash.close();
    });
}
