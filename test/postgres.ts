/**
 * A real PostgreSQL (the Debian package's, /usr/lib/postgresql/VERSION/bin) standing in for RDS:
 * a new cluster in a temporary folder, listening on 127.0.0.1 only, on a free port, with a
 * password (scram-sha-256) for TCP clients and trust on its own Unix socket (for the test's
 * setup). initdb and postgres refuse to run as root: as root, they run as `nobody` (setpriv).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** A running PostgreSQL. */
export interface Postgres {
  readonly port: number;
  /** The superuser (`corral`) and its password. */
  readonly user: string;
  readonly password: string;
  /** Runs SQL over the Unix socket (trust) as the superuser; returns psql's unaligned output. */
  sql(database: string, sql: string): Promise<string>;
  stop(): Promise<void>;
}

/** The bin folder of the newest installed PostgreSQL, or undefined. */
export function postgresBin(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(root, versions[0], 'bin') : undefined;
}

const NOBODY = 65534;

function run(cmd: string, args: string[], asOwner: boolean, timeoutMs = 60_000): Promise<string> {
  const [file, argv] =
    asOwner && process.getuid?.() === 0
      ? ['setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', cmd, ...args]]
      : [cmd, args];
  return new Promise((resolve, reject) => {
    execFile(
      file,
      argv,
      { timeout: timeoutMs, env: { PATH: process.env.PATH, LC_ALL: 'C' } },
      (err, out, errOut) =>
        err ? reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${errOut}`)) : resolve(out),
    );
  });
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Starts PostgreSQL; its folder is removed by stop(). */
export async function startPostgres(
  password = `pw:${randomBytes(12).toString('hex')}\\x`,
): Promise<Postgres> {
  const bin = postgresBin();
  if (!bin) throw new Error('PostgreSQL is not installed (apt-get install postgresql)');
  const base = mkdtempSync(path.join(os.tmpdir(), 'corral-pg-'));
  chmodSync(base, 0o755);
  const data = path.join(base, 'data');
  mkdirSync(data, { mode: 0o700 });
  const pwfile = path.join(base, 'pw');
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (process.getuid?.() === 0) {
    chownSync(data, NOBODY, NOBODY);
    chownSync(pwfile, NOBODY, NOBODY);
  }
  const user = 'corral';
  await run(
    path.join(bin, 'initdb'),
    [
      '-D',
      data,
      '-U',
      user,
      `--pwfile=${pwfile}`,
      '--auth-host=scram-sha-256',
      '--auth-local=trust',
      '--no-sync',
      '-E',
      'UTF8',
    ],
    true,
  );
  rmSync(pwfile);
  const port = await freePort();
  const args = ['-D', data, '-h', '127.0.0.1', '-p', String(port), '-k', data, '-c', 'fsync=off'];
  const [file, argv] =
    process.getuid?.() === 0
      ? [
          'setpriv',
          [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', path.join(bin, 'postgres'), ...args],
        ]
      : [path.join(bin, 'postgres'), args];
  const child: ChildProcess = spawn(file, argv, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { PATH: process.env.PATH },
  });
  let log = '';
  child.stderr!.on('data', (d) => {
    if (log.length < 100_000) log += d;
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const sql = (database: string, text: string) =>
    run(
      'psql',
      [
        '-h',
        data,
        '-p',
        String(port),
        '-U',
        user,
        '-d',
        database,
        '-XAtq',
        '-v',
        'ON_ERROR_STOP=1',
        '-c',
        text,
      ],
      false,
    );
  const stop = async () => {
    child.kill('SIGINT'); // fast shutdown
    const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
    rmSync(base, { recursive: true, force: true });
  };
  for (let i = 0; ; i++) {
    try {
      await sql('postgres', 'select 1');
      break;
    } catch (err) {
      if (i >= 150 || child.exitCode !== null) {
        await stop();
        throw new Error(`PostgreSQL did not start: ${(err as Error).message}\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { port, user, password, sql, stop };
}
