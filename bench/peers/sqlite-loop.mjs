// Peer of targets 2 and 3: a plain Node program doing corral's durable write pattern and
// nothing else. `run <db> <lines> <workers>` reads the lines file, inserts one row per line
// (5,000 per transaction, one cached statement), then starts <workers> processes that each loop:
// claim up to 256 pending rows with one `UPDATE … RETURNING` in an immediate transaction, call a
// no-op function per row, mark each row done with one UPDATE per task in one immediate transaction.
// Same pragmas as corral (WAL, synchronous=NORMAL): a completed task is in the sqlite file before
// it counts. It prints {"insertMs","execMs","done"} as JSON. No leases renewal, attempt history,
// counters, logs, stores, timeouts or retries: the floor under corral's bookkeeping.
import { fork } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

function open(file) {
  const db = new Database(file);
  db.pragma('busy_timeout = 30000');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  return db;
}

async function setup(file, lines) {
  const db = open(file);
  db.exec(`CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', owner TEXT, finished_at INTEGER);
    CREATE INDEX IF NOT EXISTS ready ON tasks (id) WHERE state = 'pending';`);
  const ins = db.prepare('INSERT INTO tasks (key, payload) VALUES (?, ?)');
  const flush = db.transaction((rows) => {
    for (const [k, p] of rows) ins.run(k, p);
  });
  let batch = [];
  let i = 0;
  const rl = createInterface({ input: createReadStream(lines), crlfDelay: Number.POSITIVE_INFINITY });
  for await (const line of rl) {
    if (line.trim() === '') continue;
    batch.push([String(i), JSON.stringify({ i, l: line })]);
    i++;
    if (batch.length >= 5000) {
      flush.immediate(batch);
      batch = [];
    }
  }
  flush.immediate(batch);
  db.close();
  return i;
}

async function worker(file, id) {
  const db = open(file);
  const claim = db.prepare(
    `UPDATE tasks SET state = 'leased', owner = ? WHERE id IN
       (SELECT id FROM tasks WHERE state = 'pending' ORDER BY id LIMIT 256) RETURNING id, payload`,
  );
  const done = db.prepare("UPDATE tasks SET state = 'done', owner = NULL, finished_at = ? WHERE id = ?");
  const claimTx = db.transaction(() => claim.all(id));
  const doneTx = db.transaction((ids, now) => {
    for (const t of ids) done.run(now, t);
  });
  const fn = async () => {};
  let n = 0;
  // bounded: every pass claims at least one row or ends
  for (;;) {
    const rows = claimTx.immediate();
    if (rows.length === 0) break;
    const ids = [];
    for (const r of rows) {
      JSON.parse(r.payload);
      await fn();
      ids.push(r.id);
    }
    doneTx.immediate(ids, Date.now());
    n += ids.length;
  }
  db.close();
  return n;
}

const [mode, file, arg] = process.argv.slice(2);
if (mode === 'worker') {
  await worker(file, arg);
} else if (mode === 'run') {
  const t0 = performance.now();
  const tasks = await setup(file, arg);
  const t1 = performance.now();
  const workers = Number(process.argv[5] ?? 2);
  const self = fileURLToPath(import.meta.url);
  await Promise.all(
    Array.from(
      { length: workers },
      (_, w) =>
        new Promise((resolve, reject) => {
          const c = fork(self, ['worker', file, `p${w}`], { stdio: 'inherit' });
          c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`peer worker exited ${code}`))));
        }),
    ),
  );
  const t2 = performance.now();
  const db = open(file);
  const doneCount = db.prepare("SELECT count(*) AS n FROM tasks WHERE state = 'done'").get().n;
  db.close();
  process.stdout.write(`${JSON.stringify({ tasks, done: doneCount, insertMs: t1 - t0, execMs: t2 - t1 })}\n`);
} else {
  process.stderr.write('usage: sqlite-loop.mjs run <db> <lines> [workers]\n');
  process.exit(2);
}
