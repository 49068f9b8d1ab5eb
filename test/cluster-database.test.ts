/**
 * The cluster database at run time, against a real PostgreSQL (test/postgres.ts) standing in for
 * RDS and the query peer's Secrets Manager serving its secret: a `corral worker` started as the
 * bootstrap starts it (CORRAL_DB_* in its environment, as /etc/corral/worker.env holds them) reads
 * the secret, and its tasks connect with plain `psql`, from libpq's variables and a 0600 pgpass
 * file. The password is in no task's environment, task log or worker log.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { getSecretString, SecretReadError } from '../src/aws/secrets.js';
import { loadJobFile } from '../src/spec/job.js';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
import { type QueryPeer, startQueryPeer } from './aws-query-peer.js';
import { PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { startCli, tempDir, waitFor, writeFiles } from './helpers.js';
import { type Postgres, startPostgres } from './postgres.js';

let peer: Peer;
let query: QueryPeer;
let pg: Postgres;
before(async () => {
  peer = await startPeer();
  query = await startQueryPeer({ upstream: peer.endpoint });
  pg = await startPostgres();
});
after(async () => {
  await pg?.stop();
  await query?.stop();
  await peer?.stop();
});

test('a task of a cluster with a database writes a row with psql from what corral gave it; the password is in no environment or log', async (t) => {
  const dir = tempDir(t);
  await pg.sql('postgres', 'create database research');
  await pg.sql('research', 'create table visits (task text primary key, who text)');
  const secretArn = query.putSecret(
    'corral-db1-db',
    JSON.stringify({ username: pg.user, password: pg.password, engine: 'postgres', port: pg.port }),
  );
  writeFiles(dir, {
    'in/a.txt': 'a\n',
    'in/b.txt': 'b\n',
    'in/c.txt': 'c\n',
    // stdout (every variable the task has) is the output; its log (stderr) says where it wrote
    'job.yaml': `name: db1
tasks:
  map: { glob: "in/*.txt" }
  command: echo "insert into visits values ('$CORRAL_INPUT_STEM', current_user)" | psql -X -q -v ON_ERROR_STOP=1 && echo "wrote as $PGUSER to $PGHOST" >&2 && env
outputs: out/{input.stem}.env
`,
  });
  const { queueUrl, dlqUrl } = await peer.createQueues('db1');
  await peer.createBucket('db1-bucket');
  const target = {
    name: 'db1',
    queueUrl,
    deadLetterQueueUrl: dlqUrl,
    bucket: 'db1-bucket',
    region: 'us-east-1',
  };
  const run = runClusterJob(loadJobFile(path.join(dir, 'job.yaml')), target, {
    stateDir: path.join(dir, '.corral'),
    endpointUrl: query.endpoint,
    tickMs: 200,
  });
  await waitFor(() => (peer.requests.get('sqs:SendMessageBatch') ?? 0) > 0, 60_000);
  // the worker's environment as the pool bootstrap writes it (/etc/corral/worker.env)
  const cacheDir = path.join(dir, 'w');
  const worker = startCli(['worker', '--no-spot'], {
    cwd: dir,
    env: {
      ...PEER_ENV,
      CORRAL_QUEUE_URL: queueUrl,
      CORRAL_DLQ_URL: dlqUrl,
      CORRAL_BUCKET: 'db1-bucket',
      CORRAL_ENDPOINT_URL: query.endpoint,
      CORRAL_CACHE_DIR: cacheDir,
      CORRAL_IDLE_EXIT_SECONDS: '3',
      CORRAL_DB_HOST: '127.0.0.1',
      CORRAL_DB_PORT: String(pg.port),
      CORRAL_DB_NAME: 'research',
      CORRAL_DB_SECRET_ARN: secretArn,
    },
  });
  const timer = setTimeout(() => worker.kill('SIGKILL'), 120_000);
  const [summary, w] = await Promise.all([run, worker.result]);
  clearTimeout(timer);
  assert.equal(w.code, 0, w.stderr);
  assert.equal(summary.status, 'succeeded', w.stderr);
  assert.equal(summary.counts.done, 3);

  // every task connected as the secret's user and wrote its row
  assert.equal(
    await pg.sql('research', 'select task, who from visits order by task'),
    'a|corral\nb|corral\nc|corral\n',
  );
  // the secret was read once, by its ARN, with a request the peer's signature check accepted
  assert.deepEqual(
    query.callsOf('GetSecretValue').map((c) => c.params.SecretId),
    [secretArn],
  );

  const pgpass = path.join(cacheDir, 'db', 'pgpass');
  for (const stem of ['a', 'b', 'c']) {
    const env = readFileSync(path.join(dir, 'out', `${stem}.env`), 'utf8');
    const vars = new Map(
      env.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    assert.equal(vars.get('PGHOST'), '127.0.0.1');
    assert.equal(vars.get('PGPORT'), String(pg.port));
    assert.equal(vars.get('PGDATABASE'), 'research');
    assert.equal(vars.get('PGUSER'), 'corral');
    assert.equal(vars.get('PGPASSFILE'), pgpass);
    assert.equal(vars.get('CORRAL_DB_HOST'), '127.0.0.1');
    assert.equal(vars.get('CORRAL_DB_SECRET_ARN'), secretArn);
    assert.equal(vars.has('PGPASSWORD'), false);
    assert.ok(!env.includes(pg.password), `the password is in the environment of task ${stem}`);
  }
  // the password is in the pgpass file alone, which only the worker's user may read
  assert.equal(statSync(pgpass).mode & 0o777, 0o600);
  assert.equal(statSync(path.dirname(pgpass)).mode & 0o777, 0o700);
  assert.equal(
    readFileSync(pgpass, 'utf8'),
    `127.0.0.1:${pg.port}:research:corral:${pg.password.replace(/[\\:]/g, (c) => `\\${c}`)}\n`,
  );
  const taskLogs = peer.objectKeys('db1-bucket', 'jobs/db1/logs/');
  assert.equal(taskLogs.length, 3);
  for (const k of taskLogs) {
    const text = peer.readObject('db1-bucket', `jobs/db1/logs/${k}`)!.toString('utf8');
    assert.match(text, /wrote as corral to 127\.0\.0\.1/);
    assert.ok(!text.includes(pg.password), `task log ${k} holds the password`);
  }
  assert.ok(!`${w.stdout}${w.stderr}`.includes(pg.password), 'the worker logged the password');
});

test('GetSecretValue: a request signed with other credentials is refused, and the error holds no secret', async () => {
  const arn = query.putSecret('corral-db2-db', JSON.stringify({ username: 'u', password: 'do-not-show' }));
  const read = (secretAccessKey: string) =>
    getSecretString({
      secretId: arn,
      region: 'us-east-1',
      endpointUrl: query.endpoint,
      credentials: async () => ({ accessKeyId: PEER_ENV.AWS_ACCESS_KEY_ID, secretAccessKey }),
    });
  assert.equal(JSON.parse(await read(PEER_ENV.AWS_SECRET_ACCESS_KEY)).password, 'do-not-show');
  const err = await read('another-secret-key').catch((e: unknown) => e);
  assert.ok(err instanceof SecretReadError, String(err));
  assert.equal(err.code, 'InvalidSignatureException');
  assert.equal(err.status, 403);
  const missing = await getSecretString({
    secretId: 'no-such-secret',
    region: 'us-east-1',
    endpointUrl: query.endpoint,
    credentials: async () => ({
      accessKeyId: PEER_ENV.AWS_ACCESS_KEY_ID,
      secretAccessKey: PEER_ENV.AWS_SECRET_ACCESS_KEY,
    }),
  }).catch((e: unknown) => e);
  assert.ok(
    missing instanceof SecretReadError && missing.code === 'ResourceNotFoundException',
    String(missing),
  );
});
