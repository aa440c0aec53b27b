//! The SQLite schema and its migrations, opening connections, and the file lock that keeps a
//! database to one process.

use std::path::Path;

use rusqlite::Connection;

use super::SqliteConfig;
use super::checkpoint::WRITER_BACKSTOP_FRAMES;
use super::codec::db_err;
use crate::error::StoreError;
use crate::store::StoreResult;

const MIGRATION_1: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    status           INTEGER NOT NULL,
    payload          TEXT NOT NULL,
    target           TEXT,
    attempt          INTEGER NOT NULL,
    tries            INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    next_run_at      INTEGER,
    lease_owner      TEXT,
    lease_until      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    last_error       TEXT,
    result           TEXT,
    idempotency_key  TEXT UNIQUE,
    callback         TEXT
);
-- The claim: due tasks of one priority in due order. Partial, so it holds only active rows.
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (priority, next_run_at, seq) WHERE status IN (0, 2);
-- Crash recovery: expired leases.
CREATE INDEX IF NOT EXISTS tasks_lease ON tasks (lease_until) WHERE status = 1;
-- Pruning and listing.
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at) WHERE status >= 3;
CREATE INDEX IF NOT EXISTS tasks_status_seq ON tasks (status, seq);
CREATE INDEX IF NOT EXISTS tasks_target_seq ON tasks (target, seq);
CREATE TABLE IF NOT EXISTS attempts (
    task_id     TEXT NOT NULL,
    n           INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    response    TEXT,
    outcome     TEXT NOT NULL,
    PRIMARY KEY (task_id, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    task_id     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    from_status INTEGER,
    to_status   INTEGER NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_task ON events (task_id);
";

/// The due index also holds `target`, so a claim that skips full targets filters on the
/// index alone; one index less to maintain per insert.
const MIGRATION_2: &str = "
DROP INDEX IF EXISTS tasks_due;
-- Listing by target is rare; a scan in seq order serves it.
DROP INDEX IF EXISTS tasks_target_seq;
CREATE INDEX IF NOT EXISTS tasks_due_v2 ON tasks (priority, next_run_at, seq, target)
    WHERE status IN (0, 2);
";

/// Schema migrations, in order; `PRAGMA user_version` is the number applied. Never edit one
/// that has shipped: add the next.
const MIGRATIONS: &[&str] = &[MIGRATION_1, MIGRATION_2];

/// Takes an exclusive lock on `<database>.lock`, so a second process cannot open the same
/// file: opening expires every lease (they belong to a dead process, since a file has one
/// owner), which would hand a live process's running tasks out again. A separate file, because
/// SQLite's own POSIX locks on the database are dropped when any descriptor of it is closed.
/// In-memory databases (`:memory:`, `file:` URIs) are not locked.
pub(super) fn lock_file(path: &Path) -> StoreResult<Option<std::fs::File>> {
    let shown = path.display().to_string();
    if shown.is_empty() || shown == ":memory:" || shown.starts_with("file:") {
        return Ok(None);
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(StoreError::backend)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(shown)),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::backend(e)),
    }
}

pub(super) fn open_connection(
    config: &SqliteConfig,
    read_only: bool,
) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    };
    let conn = Connection::open_with_flags(&config.path, flags)?;
    conn.busy_timeout(config.busy_timeout)?;
    conn.pragma_update(None, "synchronous", config.synchronous.pragma())?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // A negative cache_size is in KiB.
    conn.pragma_update(None, "cache_size", -(i64::from(config.cache_mib) * 1024))?;
    if !read_only {
        // Checkpoints run on their own thread (checkpoint.rs); this one, inside a commit,
        // only if that thread falls far behind.
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_BACKSTOP_FRAMES)?;
    }
    // Claims and lists build SQL per shape (number of skipped targets, filters): room for all.
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "sqlite could not switch to WAL mode");
    }
    // One immediate transaction per step, version re-read inside it: two processes opening a
    // new file at once apply each migration exactly once.
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err)?;
        let applied = usize::try_from(version).unwrap_or(usize::MAX);
        if applied > MIGRATIONS.len() {
            return Err(StoreError::backend(format!(
                "database schema version {version} is newer than this build supports ({})",
                MIGRATIONS.len()
            )));
        }
        let Some(sql) = MIGRATIONS.get(applied) else {
            return Ok(());
        };
        tx.execute_batch(sql).map_err(db_err)?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        tracing::debug!(version = version + 1, "sqlite schema migrated");
    }
}

/// The schema version this build migrates to (`PRAGMA user_version`).
pub const SQLITE_SCHEMA_VERSION: usize = MIGRATIONS.len();
