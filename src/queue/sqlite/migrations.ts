/**
 * Numbered schema migrations of the sqlite state file, applied in order, each in its own
 * transaction; `PRAGMA user_version` records the last one applied.
 */
export const MIGRATIONS: readonly string[] = [
  /* 0001_initial */ `
  CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
  CREATE TABLE tasks (
    id            INTEGER PRIMARY KEY,
    key           TEXT NOT NULL UNIQUE,
    step          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    run_at        INTEGER NOT NULL DEFAULT 0,
    owner         TEXT,
    lease_expires INTEGER,
    started_at    INTEGER,
    finished_at   INTEGER,
    last_error    TEXT,
    log_path      TEXT,
    outcome       TEXT
  );
  CREATE INDEX tasks_ready ON tasks (run_at, id) WHERE state = 'pending';
  CREATE INDEX tasks_leased ON tasks (lease_expires) WHERE state = 'leased';
  CREATE INDEX tasks_owner ON tasks (owner) WHERE state = 'leased';
  CREATE TABLE counts (step TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (step, state)) WITHOUT ROWID;
  CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO counts (step, state, n) VALUES (NEW.step, NEW.state, 1)
      ON CONFLICT (step, state) DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER tasks_count_update AFTER UPDATE OF state ON tasks WHEN OLD.state <> NEW.state BEGIN
    UPDATE counts SET n = n - 1 WHERE step = OLD.step AND state = OLD.state;
    INSERT INTO counts (step, state, n) VALUES (NEW.step, NEW.state, 1)
      ON CONFLICT (step, state) DO UPDATE SET n = n + 1;
  END;
  CREATE TABLE attempts (
    task_id     INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    owner       TEXT,
    started_at  INTEGER,
    finished_at INTEGER,
    outcome     TEXT NOT NULL,
    error       TEXT
  );
  CREATE INDEX attempts_task ON attempts (task_id);
  CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    pid          INTEGER,
    host         TEXT,
    started_at   INTEGER,
    heartbeat_at INTEGER,
    task_pgids   TEXT,
    state        TEXT NOT NULL DEFAULT 'running'
  ) WITHOUT ROWID;
  `,
];
