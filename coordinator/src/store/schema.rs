//! Opening a connection to the store file and bringing its schema up to date.
//!
//! Migrations are numbered by SQLite's `user_version`: migration `i` (0-based) takes the
//! file from version `i` to `i + 1`. A released migration is never edited; a change is a
//! new entry at the end. Two coordinator processes may open the same file at once (one
//! driving a run, one running `logs --follow` or `cancel`): WAL lets readers and the one
//! writer proceed together, and `busy_timeout` makes a second writer wait its turn
//! instead of failing.
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::StoreError;

/// How long a writer waits for another process's write transaction before giving up.
/// Our transactions are short (one batch, ~100 ms), so this is generous.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first schema. Times are Unix milliseconds (UTC).
    "
    CREATE TABLE runs (
        run_id           TEXT PRIMARY KEY,
        plan_name        TEXT NOT NULL,
        plan_path        TEXT NOT NULL DEFAULT '',
        plan_text        TEXT NOT NULL DEFAULT '',
        fleet_path       TEXT,
        started_ms       INTEGER NOT NULL,
        finished_ms      INTEGER,
        status           TEXT NOT NULL,
        exit_code        INTEGER,
        driver_pid       INTEGER,
        driver_host      TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_started ON runs (started_ms);

    CREATE TABLE tasks (
        run_id      TEXT NOT NULL,
        task        TEXT NOT NULL,
        position    INTEGER NOT NULL DEFAULT 0,
        job         TEXT NOT NULL DEFAULT '',
        status      TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        sidecar     TEXT,
        duration_ms INTEGER NOT NULL DEFAULT 0,
        message     TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, task)
    );

    CREATE TABLE executions (
        execution_id TEXT PRIMARY KEY,
        run_id       TEXT NOT NULL,
        task         TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        sidecar      TEXT NOT NULL,
        job          TEXT NOT NULL DEFAULT '',
        status       TEXT NOT NULL,
        last_seq     INTEGER NOT NULL DEFAULT 0,
        started_ms   INTEGER NOT NULL,
        finished_ms  INTEGER,
        message      TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX executions_run ON executions (run_id, task, attempt);

    CREATE TABLE steps (
        execution_id TEXT NOT NULL,
        step         INTEGER NOT NULL,
        attempt      INTEGER NOT NULL,
        name         TEXT NOT NULL,
        status       TEXT NOT NULL,
        message      TEXT NOT NULL DEFAULT '',
        duration_ms  INTEGER,
        started_ms   INTEGER,
        PRIMARY KEY (execution_id, step, attempt)
    );

    -- Every event but log lines (those go to `logs`), as its --json object.
    CREATE TABLE events (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id       TEXT NOT NULL,
        ts_ms        INTEGER NOT NULL,
        type         TEXT NOT NULL,
        task         TEXT,
        execution_id TEXT,
        json         TEXT NOT NULL
    );
    CREATE INDEX events_run ON events (run_id, id);

    -- `id` orders a run's lines; a single writer holds the write lock per transaction,
    -- so ids become visible in increasing order and `logs --follow` can poll `id > last`.
    CREATE TABLE logs (
        id           INTEGER PRIMARY KEY,
        run_id       TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        task         TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        step         INTEGER NOT NULL,
        stream       TEXT NOT NULL,
        line         TEXT NOT NULL,
        ts_ms        INTEGER NOT NULL
    );
    CREATE INDEX logs_run ON logs (run_id, id);
    CREATE INDEX logs_run_task ON logs (run_id, task, id);
    ",
    // 2: compact log rows. A line names its run and its source (execution, task,
    // attempt) by small integer keys instead of repeating three ids as text; the writer
    // resolves the keys once per execution. `stream` is 1 (stdout) or 2 (stderr), any
    // other stream as its text (no declared type, so neither is converted).
    "
    CREATE TABLE log_runs (
        id     INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE
    );
    CREATE TABLE log_sources (
        id           INTEGER PRIMARY KEY,
        run          INTEGER NOT NULL,
        execution_id TEXT NOT NULL,
        task         TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        UNIQUE (run, execution_id, task, attempt)
    );
    CREATE INDEX log_sources_task ON log_sources (run, task);

    CREATE TABLE logs_v2 (
        id     INTEGER PRIMARY KEY,
        run    INTEGER NOT NULL,
        src    INTEGER NOT NULL,
        step   INTEGER NOT NULL,
        stream NOT NULL,
        line   TEXT NOT NULL,
        ts_ms  INTEGER NOT NULL
    );

    INSERT INTO log_runs (run_id) SELECT DISTINCT run_id FROM logs ORDER BY run_id;
    INSERT INTO log_sources (run, execution_id, task, attempt)
        SELECT DISTINCT r.id, l.execution_id, l.task, l.attempt
        FROM logs l JOIN log_runs r ON r.run_id = l.run_id;
    INSERT INTO logs_v2 (id, run, src, step, stream, line, ts_ms)
        SELECT l.id, s.run, s.id, l.step,
               CASE l.stream WHEN 'stdout' THEN 1 WHEN 'stderr' THEN 2 ELSE l.stream END,
               l.line, l.ts_ms
        FROM logs l
        JOIN log_runs r ON r.run_id = l.run_id
        JOIN log_sources s ON s.run = r.id AND s.execution_id = l.execution_id
            AND s.task = l.task AND s.attempt = l.attempt
        ORDER BY l.id;
    DROP TABLE logs;
    ALTER TABLE logs_v2 RENAME TO logs;
    -- `id` orders a run's lines (see version 1); paging a run or one source is a range
    -- scan of one of these.
    CREATE INDEX logs_run ON logs (run, id);
    CREATE INDEX logs_src ON logs (src, id);
    ",
    // 3: the driver's lease (see `lease.rs`): which coordinator process drives a run
    // (a random id per process) and until when, unless it renews. `driver_pid` and
    // `driver_host` stay, for display.
    "
    ALTER TABLE runs ADD COLUMN driver_id TEXT;
    ALTER TABLE runs ADD COLUMN lease_expires_ms INTEGER;
    ",
    // 4: who started each execution, as its sidecar recorded the StartJob caller (the
    // name in the coordinator's certificate, or `local uid N`); '' when not known.
    "
    ALTER TABLE executions ADD COLUMN started_by TEXT NOT NULL DEFAULT '';
    ",
    // 5: a log row may hold `n` consecutive lines of one source, step and stream, joined
    // by '\n' and numbered `id` .. `id + n - 1` (see `log_rows.rs`). Rows written before
    // hold one line each.
    "
    ALTER TABLE logs ADD COLUMN n INTEGER NOT NULL DEFAULT 1;
    ",
];

/// The schema version this build writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Opens (creating if needed) the store file at `path`, sets the connection up and
/// migrates the schema.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    configure(&conn).map_err(open_err)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer and vice versa; NORMAL: a commit is durable
    // once the WAL is synced at checkpoint, which survives a process crash and costs one
    // fsync per checkpoint instead of per batch. A power loss may take the last commits:
    // hence nothing is acknowledged to a sidecar (which then deletes its copy) before a
    // commit made with synchronous=FULL has synced the WAL (`Store::end_drive`).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    // IMMEDIATE: two processes opening a fresh file at once must not both migrate it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > current_version() {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known: current_version(),
        });
    }
    for sql in &MIGRATIONS[version as usize..] {
        tx.execute_batch(sql)?;
    }
    if version < current_version() {
        tx.pragma_update(None, "user_version", current_version())?;
    }
    tx.commit()?;
    Ok(())
}
