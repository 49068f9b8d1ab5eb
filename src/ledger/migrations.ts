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
    outcome       TEXT,
    deps_left     INTEGER NOT NULL DEFAULT 0,
    propagated    INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX tasks_ready ON tasks (run_at, id) WHERE state = 'pending';
  CREATE INDEX tasks_leased ON tasks (lease_expires) WHERE state = 'leased';
  CREATE INDEX tasks_owner ON tasks (owner) WHERE state = 'leased';
  CREATE INDEX tasks_step ON tasks (step, id);
  CREATE INDEX tasks_unpropagated ON tasks (id) WHERE state IN ('dead', 'skipped') AND propagated = 0;
  -- task_id must be done before dependent_id may run (a map over the outputs of an earlier step)
  CREATE TABLE deps (task_id INTEGER NOT NULL, dependent_id INTEGER NOT NULL);
  CREATE INDEX deps_by_task ON deps (task_id);
  -- a step's expansion: waiting (inputs not there yet), expanded, or skipped (a step it needs failed)
  CREATE TABLE steps (name TEXT PRIMARY KEY, state TEXT NOT NULL, tasks INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
  -- step barriers: every task of step waits until needs has finished
  CREATE TABLE step_deps (step TEXT NOT NULL, needs TEXT NOT NULL, satisfied INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (step, needs)) WITHOUT ROWID;
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
  /* 0002_claim_depth */ `
  -- how deep a task's step sits in the workflow (0 for a step that reads no other step): ready
  -- tasks of later steps are claimed first, so results flow out while the first step still runs
  ALTER TABLE tasks ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
  DROP INDEX tasks_ready;
  CREATE INDEX tasks_ready ON tasks (depth DESC, run_at, id) WHERE state = 'pending';
  `,
  /* 0003_counts_per_statement */ `
  -- counts of the hot paths are written once per transaction by their writers, not per row by a
  -- trigger (two b-tree writes per row: a third of a no-op task's cost in the state file): a
  -- task's insert, and its moves pending → leased (a claim) and leased → done (a completion).
  -- Every other move (retries, dead letters, expiries, skips, re-runs) is still counted here.
  -- The counts kept so far stay right: nothing is recounted.
  DROP TRIGGER tasks_count_insert;
  DROP TRIGGER tasks_count_update;
  CREATE TRIGGER tasks_count_update AFTER UPDATE OF state ON tasks
    WHEN OLD.state <> NEW.state
      AND NOT (OLD.state = 'pending' AND NEW.state = 'leased')
      AND NOT (OLD.state = 'leased' AND NEW.state = 'done')
  BEGIN
    UPDATE counts SET n = n - 1 WHERE step = OLD.step AND state = OLD.state;
    INSERT INTO counts (step, state, n) VALUES (NEW.step, NEW.state, 1)
      ON CONFLICT (step, state) DO UPDATE SET n = n + 1;
  END;
  -- one index of the leases instead of two (each claim and completion wrote both): a worker's
  -- leases by owner; the reaper scans the leased rows (a few thousand at most) for expired ones
  DROP INDEX tasks_owner;
  DROP INDEX tasks_leased;
  CREATE INDEX tasks_leased ON tasks (owner, lease_expires) WHERE state = 'leased';
  `,
];
