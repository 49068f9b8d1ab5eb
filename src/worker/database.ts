/**
 * The cluster database as tasks see it. A cluster with a `database` gives its workers the
 * endpoint and the secret's ARN (CORRAL_DB_HOST, CORRAL_DB_PORT, CORRAL_DB_NAME,
 * CORRAL_DB_SECRET_ARN, from the stack); the worker reads the secret (GetSecretValue, which its
 * role may call on that one secret), writes the credentials to a pgpass file only its user can
 * read (0600), and gives every task libpq's variables: PGHOST, PGPORT, PGDATABASE, PGUSER and
 * PGPASSFILE. `psql`, psycopg, SQLAlchemy's `postgresql://` URLs and every other libpq client
 * then connect with nothing written in the task: the password is in the file, never in an
 * environment, a command line or a log.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';

/** Where the cluster database is (the stack's values; no password). */
export interface ClusterDatabase {
  /** Endpoint address (CORRAL_DB_HOST). */
  readonly host: string;
  /** TCP port (CORRAL_DB_PORT). */
  readonly port: number;
  /** Database name (CORRAL_DB_NAME). */
  readonly name: string;
  /** ARN of the secret holding `username` and `password` (CORRAL_DB_SECRET_ARN). */
  readonly secretArn: string;
}

/** What a task gets of the database. */
export interface DatabaseAccess {
  /** Variables every task gets: CORRAL_DB_* and libpq's PG* (PGPASSFILE when the secret was read). */
  readonly env: Readonly<Record<string, string>>;
  /** The folder of the pgpass file (mounted into task containers). */
  readonly dir: string;
}

/** The database of the worker's environment, when CORRAL_DB_HOST and CORRAL_DB_SECRET_ARN are set. */
export function databaseFromEnv(env: NodeJS.ProcessEnv): ClusterDatabase | undefined {
  const host = env.CORRAL_DB_HOST;
  const secretArn = env.CORRAL_DB_SECRET_ARN;
  if (!host || !secretArn) return undefined;
  return {
    host,
    port: Number(env.CORRAL_DB_PORT || 5432),
    name: env.CORRAL_DB_NAME || 'corral',
    secretArn,
  };
}

/** One field of a pgpass line: `\` and `:` escaped with `\`. */
function pgpassField(v: string): string {
  return v.replace(/[\\:]/g, (c) => `\\${c}`);
}

/**
 * Reads the secret with `readSecret`, writes `DIR/pgpass` (mode 0600, in a 0700 folder) and
 * returns the tasks' variables. A secret that cannot be read is reported with `log` (its error,
 * never its value) and the tasks still get the endpoint, without PGPASSFILE.
 */
export async function prepareDatabaseAccess(
  db: ClusterDatabase,
  dir: string,
  readSecret: (arn: string) => Promise<string>,
  log: (line: string) => void,
): Promise<DatabaseAccess> {
  const env: Record<string, string> = {
    CORRAL_DB_HOST: db.host,
    CORRAL_DB_PORT: String(db.port),
    CORRAL_DB_NAME: db.name,
    CORRAL_DB_SECRET_ARN: db.secretArn,
    PGHOST: db.host,
    PGPORT: String(db.port),
    PGDATABASE: db.name,
  };
  let secret: { username?: unknown; password?: unknown };
  try {
    secret = JSON.parse(await readSecret(db.secretArn)) as typeof secret;
  } catch (err) {
    log(
      `corral worker: cannot read the database secret ${db.secretArn} (${err instanceof SyntaxError ? 'not JSON' : (err as Error).message}); tasks get the endpoint without credentials`,
    );
    return { env, dir };
  }
  if (typeof secret.username !== 'string' || typeof secret.password !== 'string') {
    log(
      `corral worker: the database secret ${db.secretArn} has no username and password; tasks get the endpoint only`,
    );
    return { env, dir };
  }
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  await fsp.chmod(dir, 0o700);
  const file = path.join(dir, 'pgpass');
  const tmp = `${file}.${process.pid}.tmp`;
  const line = [db.host, String(db.port), db.name, secret.username, secret.password]
    .map(pgpassField)
    .join(':');
  await fsp.rm(tmp, { force: true });
  await fsp.writeFile(tmp, `${line}\n`, { mode: 0o600, flag: 'wx' });
  await fsp.rename(tmp, file);
  env.PGUSER = secret.username;
  env.PGPASSFILE = file;
  return { env, dir };
}
