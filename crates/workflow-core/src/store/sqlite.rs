//! The embedded default [`Store`]: SQLite in WAL mode with one writer thread and group commit.
//!
//! # Design
//!
//! - **One writer thread** (a plain `std::thread`) owns the only read-write connection and its
//!   cached prepared statements. Every write is a job sent over a channel; the thread takes
//!   every job queued at that moment (up to [`SqliteConfig::max_batch`]) and runs them in one
//!   transaction: **group commit**, one WAL append for many tasks. Callers get their answer
//!   through a oneshot channel after the commit, so an acknowledged write is durable.
//! - **Reads** (`get`, `list`, `attempts`, `events`, `next_due_at`) run on a small pool of
//!   read-only connections in `spawn_blocking`; in WAL mode they see the last commit and
//!   never wait behind a write group.
//! - **Counts** by status and priority are kept by the writer and published at each commit,
//!   so the queue limit and the gauges never run `COUNT(*)` over a million rows.
//! - **Indexes**: "next due task" is a partial index on `(priority, next_run_at, seq, target)`
//!   over pending/retrying rows, probed once per priority; expired leases a partial index on
//!   `lease_until` over processing rows; "status by id" the unique index on `id`. Each stays
//!   O(log n) however many final tasks are kept.
//! - **Migrations** are SQL in this file, applied in order at open and tracked in
//!   `PRAGMA user_version` ([`SQLITE_SCHEMA_VERSION`]); a file from a newer build is refused.
//! - **Durability**: `synchronous = NORMAL` (default) loses nothing acknowledged when the
//!   process crashes (every commit is in the WAL); `FULL` also survives power loss, at an fsync
//!   per commit.
//!
//! # Why rusqlite rather than sqlx
//!
//! The store's speed comes from the single writer that commits everything queued at once. With
//! rusqlite that writer is a plain thread running synchronous calls on one connection with
//! cached statements: the simplest code for the design, and nothing between the statement and
//! SQLite. sqlx's SQLite driver also runs a worker thread per connection, but every statement
//! becomes an async request to that thread (a channel round trip and a wakeup per statement,
//! where a finished attempt is four statements), and its pool spreads writes over connections
//! that then contend for SQLite's single write lock instead of being grouped. The measured
//! figures (crate README, "Store benchmark", `benches/store.rs`): with group commit, about
//! 21,000 tasks/s through enqueue + claim + finish on this 2-core machine, against about
//! 8,000 tasks/s for the same store committing each write alone (and 45,000 against 9,600
//! for the finishes alone). sqlx itself was not benchmarked: it is not a dependency here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::error::StoreError;
use crate::model::{AttemptRecord, CallbackRecord, NewTask, Priority, Task, TaskEvent, TaskStatus};
use crate::store::logic;
use crate::store::{
    CancelOutcome, Completion, Counts, EnqueueLimits, Enqueued, Fence, Page, Release, Store,
    StoreResult, TaskFilter,
};

/// `PRAGMA synchronous` level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// No fsync: fastest, may lose recent commits on a crash of the OS (not of the process).
    Off,
    /// fsync at checkpoints: nothing acknowledged is lost when the process crashes.
    #[default]
    Normal,
    /// fsync every commit: nothing acknowledged is lost on power loss either.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Where and how to open the database.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file (parent directories are created).
    pub path: PathBuf,
    /// `PRAGMA synchronous` (default NORMAL).
    pub synchronous: Synchronous,
    /// Read-only connections for queries (default 4).
    pub readers: usize,
    /// How long a connection waits for a lock before failing (default 5 s).
    pub busy_timeout: Duration,
    /// Most writes committed in one transaction (default 1,024).
    pub max_batch: usize,
    /// Expire every lease when the file is opened (default true). A SQLite file is used by one
    /// process at a time, so a task still leased at start belongs to a process that died: it is
    /// retried at once instead of after its lease runs out.
    pub recover_leases_on_open: bool,
}

impl SqliteConfig {
    /// Defaults for a file.
    pub fn new(path: impl Into<PathBuf>) -> SqliteConfig {
        SqliteConfig {
            path: path.into(),
            synchronous: Synchronous::Normal,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            max_batch: 1024,
            recover_leases_on_open: true,
        }
    }
}

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

const TASK_COLS: &str = "seq, id, kind, priority, status, payload, target, attempt, tries, max_attempts, \
     next_run_at, lease_owner, lease_until, cancel_requested, created_at, updated_at, finished_at, \
     last_error, result, idempotency_key, callback";

fn status_code(s: TaskStatus) -> i64 {
    match s {
        TaskStatus::Pending => 0,
        TaskStatus::Processing => 1,
        TaskStatus::Retrying => 2,
        TaskStatus::Completed => 3,
        TaskStatus::Failed => 4,
        TaskStatus::Cancelled => 5,
    }
}

fn status_index(s: TaskStatus) -> usize {
    // Codes are 0..=5 by construction.
    usize::try_from(status_code(s)).unwrap_or(0)
}

fn status_from(code: i64) -> rusqlite::Result<TaskStatus> {
    TaskStatus::ALL
        .into_iter()
        .find(|s| status_code(*s) == code)
        .ok_or(rusqlite::Error::IntegralValueOutOfRange(4, code))
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

fn opt_time(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.map(time)
}

fn bad_json(i: usize, e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

fn row_to_task(r: &Row<'_>) -> rusqlite::Result<Task> {
    let payload: String = r.get(5)?;
    let result: Option<String> = r.get(18)?;
    let callback: Option<String> = r.get(20)?;
    let rank: i64 = r.get(3)?;
    Ok(Task {
        seq: r.get(0)?,
        id: r.get(1)?,
        kind: r.get(2)?,
        priority: Priority::from_rank(u8::try_from(rank).unwrap_or(u8::MAX))
            .ok_or(rusqlite::Error::IntegralValueOutOfRange(3, rank))?,
        status: status_from(r.get(4)?)?,
        payload: serde_json::from_str(&payload).map_err(|e| bad_json(5, e))?,
        target: r.get(6)?,
        attempt: r.get(7)?,
        tries: r.get(8)?,
        max_attempts: r.get(9)?,
        next_run_at: opt_time(r.get(10)?),
        lease_owner: r.get(11)?,
        lease_until: opt_time(r.get(12)?),
        cancel_requested: r.get::<_, i64>(13)? != 0,
        created_at: time(r.get(14)?),
        updated_at: time(r.get(15)?),
        finished_at: opt_time(r.get(16)?),
        last_error: r.get(17)?,
        result: result
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| bad_json(18, e))?,
        idempotency_key: r.get(19)?,
        callback: callback
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| bad_json(20, e))?,
    })
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::backend(e)
}

/// Task counts by status code and priority rank.
type Tally = [[u64; 4]; 6];

fn tally_active(t: &Tally) -> u64 {
    t[..3].iter().flatten().sum()
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    /// Counts of the rows as written so far (committed or not), kept here so the queue limit
    /// and the gauges need no `COUNT(*)` over a million rows.
    tally: Tally,
    /// The counts as of the last commit, read by [`Store::counts`].
    published: Arc<Mutex<Tally>>,
    /// A job of the current group failed after writing: the group must be rolled back.
    poisoned: bool,
}

type Finisher = Box<dyn FnOnce(Option<&str>) + Send>;
type Job = Box<dyn FnOnce(&mut Writer) -> Finisher + Send>;

impl Writer {
    fn load(&self, id: &str) -> StoreResult<Task> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"))
            .map_err(db_err)?;
        stmt.query_row([id], row_to_task)
            .optional()
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    fn load_seq(&self, seq: i64) -> StoreResult<Task> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {TASK_COLS} FROM tasks WHERE seq = ?1"))
            .map_err(db_err)?;
        stmt.query_row([seq], row_to_task).map_err(db_err)
    }

    fn save(&self, t: &Task) -> StoreResult<()> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "UPDATE tasks SET status = ?2, attempt = ?3, tries = ?4, max_attempts = ?5, next_run_at = ?6, \
                 lease_owner = ?7, lease_until = ?8, cancel_requested = ?9, updated_at = ?10, finished_at = ?11, \
                 last_error = ?12, result = ?13, callback = ?14 WHERE seq = ?1",
            )
            .map_err(db_err)?;
        stmt.execute(params![
            t.seq,
            status_code(t.status),
            t.attempt,
            t.tries,
            t.max_attempts,
            t.next_run_at.map(ms),
            t.lease_owner,
            t.lease_until.map(ms),
            i64::from(t.cancel_requested),
            ms(t.updated_at),
            t.finished_at.map(ms),
            t.last_error,
            t.result.as_ref().map(|v| v.to_string()),
            t.callback
                .as_ref()
                .map(|c| serde_json::to_string(c).unwrap_or_default()),
        ])
        .map_err(db_err)?;
        Ok(())
    }

    fn event(&self, ev: &TaskEvent) -> StoreResult<()> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT INTO events (task_id, at, from_status, to_status, reason) VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(db_err)?;
        stmt.execute(params![
            ev.task_id,
            ms(ev.at),
            ev.from.map(status_code),
            status_code(ev.to),
            ev.reason
        ])
        .map_err(db_err)?;
        Ok(())
    }

    fn exec_cached(&self, sql: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(db_err)
    }

    fn active(&self) -> u64 {
        tally_active(&self.tally)
    }

    fn count(&mut self, status: TaskStatus, priority: Priority, add: bool) {
        let slot = &mut self.tally[status_index(status)][usize::from(priority.rank())];
        *slot = if add {
            *slot + 1
        } else {
            slot.saturating_sub(1)
        };
    }

    /// Applies a transition to one task and writes it, with the counts kept right.
    /// `f` must leave the task unchanged when it fails.
    fn transition<R>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut Task) -> StoreResult<R>,
    ) -> StoreResult<(Task, R)> {
        let task = self.load(id)?;
        self.apply(task, f)
    }

    fn apply<R>(
        &mut self,
        mut task: Task,
        f: impl FnOnce(&mut Task) -> StoreResult<R>,
    ) -> StoreResult<(Task, R)> {
        let before = task.status;
        let out = f(&mut task)?;
        self.save(&task)?;
        if before != task.status {
            self.count(before, task.priority, false);
            self.count(task.status, task.priority, true);
        }
        Ok((task, out))
    }

    fn insert(
        &mut self,
        new: NewTask,
        limits: EnqueueLimits,
        now: DateTime<Utc>,
    ) -> StoreResult<Enqueued> {
        if let Some(key) = &new.idempotency_key {
            let existing = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {TASK_COLS} FROM tasks WHERE idempotency_key = ?1"
                ))
                .map_err(db_err)?
                .query_row([key], row_to_task)
                .optional()
                .map_err(db_err)?;
            if let Some(t) = existing {
                return Ok(Enqueued::Existing(t));
            }
        }
        if let Some(limit) = limits.max_active
            && self.active() >= limit
        {
            return Err(StoreError::QueueFull { limit });
        }
        let (mut task, ev) = logic::create(new, 0, now);
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO tasks (id, kind, priority, status, payload, target, attempt, tries, max_attempts, \
                 next_run_at, cancel_requested, created_at, updated_at, idempotency_key) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7, ?8, 0, ?9, ?9, ?10)",
            )
            .map_err(db_err)?
            .execute(params![
                task.id,
                task.kind,
                task.priority.rank(),
                status_code(task.status),
                task.payload.to_string(),
                task.target,
                task.max_attempts,
                task.next_run_at.map(ms),
                ms(now),
                task.idempotency_key,
            ]);
        match inserted {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(StoreError::Duplicate(task.id));
            }
            Err(e) => return Err(db_err(e)),
        }
        task.seq = self.conn.last_insert_rowid();
        self.event(&ev)?;
        self.count(task.status, task.priority, true);
        Ok(Enqueued::Created(task))
    }

    fn claim(
        &mut self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
        skip: &[String],
    ) -> StoreResult<Vec<Task>> {
        let now_ms = ms(now);
        // Full targets are filtered in SQL (on the covering due index), so a long run of due
        // tasks for a full target never hides other targets' tasks behind it.
        let not_skipped = if skip.is_empty() {
            String::new()
        } else {
            let marks = vec!["?"; skip.len()].join(", ");
            format!(" AND (target IS NULL OR target NOT IN ({marks}))")
        };
        // The LIMIT is written into the SQL, not bound: SQLite plans a bound LIMIT as a
        // constant, so rebinding it expired the cached statements and every claim re-prepared
        // them (9 % of the dispatcher's instructions under callgrind). Rounding up to a power of
        // two keeps the cached variants few; `candidates.truncate(max)` below takes what was asked.
        let limit = max.max(1).next_power_of_two();
        // (rank, due, seq) candidates: the head of each priority's due range (one index range
        // each: a single ORDER BY priority would walk every not-yet-due row of a priority before
        // reaching the next), then expired leases (crash recovery).
        let mut candidates: Vec<(i64, i64, i64)> = Vec::new();
        let due_sql = format!(
            "SELECT next_run_at, seq FROM tasks INDEXED BY tasks_due_v2 \
             WHERE status IN (0, 2) AND priority = ? AND next_run_at <= ?{not_skipped} \
             ORDER BY next_run_at, seq LIMIT {limit}"
        );
        for rank in 0..4i64 {
            if candidates.len() >= max {
                break;
            }
            let mut args: Vec<rusqlite::types::Value> = vec![rank.into(), now_ms.into()];
            args.extend(skip.iter().map(|t| t.clone().into()));
            let mut stmt = self.conn.prepare_cached(&due_sql).map_err(db_err)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((rank, r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(db_err)?;
            for row in rows {
                candidates.push(row.map_err(db_err)?);
            }
        }
        let lease_sql = format!(
            "SELECT priority, lease_until, seq FROM tasks INDEXED BY tasks_lease \
             WHERE status = 1 AND lease_until <= ?{not_skipped} ORDER BY lease_until LIMIT {limit}"
        );
        let mut args: Vec<rusqlite::types::Value> = vec![now_ms.into()];
        args.extend(skip.iter().map(|t| t.clone().into()));
        let mut stmt = self.conn.prepare_cached(&lease_sql).map_err(db_err)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db_err)?;
        for row in rows {
            candidates.push(row.map_err(db_err)?);
        }
        drop(stmt);
        candidates.sort_unstable();
        candidates.truncate(max);
        let mut out = Vec::with_capacity(candidates.len());
        for (_, _, seq) in candidates {
            let task = self.load_seq(seq)?;
            let (task, ev) = self.apply(task, |t| Ok(logic::claim(t, owner, now, lease)))?;
            self.event(&ev)?;
            out.push(task);
        }
        Ok(out)
    }

    /// Deletes up to `max` final tasks finished before `cutoff`, with attempts and events.
    fn prune_chunk(&mut self, cutoff: i64, max: usize) -> StoreResult<usize> {
        let victims: Vec<(i64, String, i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT seq, id, status, priority FROM tasks INDEXED BY tasks_finished \
                 WHERE status >= 3 AND finished_at < ?1 LIMIT ?2",
            )
            .map_err(db_err)?
            .query_map(
                params![cutoff, i64::try_from(max).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(db_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db_err)?;
        for (seq, id, status, rank) in &victims {
            for sql in [
                "DELETE FROM attempts WHERE task_id = ?1",
                "DELETE FROM events WHERE task_id = ?1",
            ] {
                self.conn
                    .prepare_cached(sql)
                    .map_err(db_err)?
                    .execute([id])
                    .map_err(db_err)?;
            }
            self.conn
                .prepare_cached("DELETE FROM tasks WHERE seq = ?1")
                .map_err(db_err)?
                .execute([seq])
                .map_err(db_err)?;
            let priority = Priority::from_rank(u8::try_from(*rank).unwrap_or(u8::MAX))
                .ok_or_else(|| StoreError::backend(format!("bad priority rank {rank}")))?;
            self.count(status_from(*status).map_err(db_err)?, priority, false);
        }
        Ok(victims.len())
    }

    fn record_attempt(&self, a: &AttemptRecord) -> StoreResult<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO attempts (task_id, n, started_at, duration_ms, status_code, error, response, outcome) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(db_err)?
            .execute(params![
                a.task_id,
                a.n,
                ms(a.started_at),
                i64::try_from(a.duration_ms).unwrap_or(i64::MAX),
                a.status_code,
                a.error,
                a.response,
                a.outcome
            ])
            .map_err(db_err)?;
        Ok(())
    }
}

/// Takes an exclusive lock on `<database>.lock`, so a second process cannot open the same
/// file: opening expires every lease (they belong to a dead process, since a file has one
/// owner), which would hand a live process's running tasks out again. A separate file, because
/// SQLite's own POSIX locks on the database are dropped when any descriptor of it is closed.
/// In-memory databases (`:memory:`, `file:` URIs) are not locked.
fn lock_file(path: &Path) -> StoreResult<Option<std::fs::File>> {
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

fn open_connection(config: &SqliteConfig, read_only: bool) -> rusqlite::Result<Connection> {
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
    conn.pragma_update(None, "cache_size", -32_000)?; // 32 MB page cache per connection
    if !read_only {
        // Checkpoint (copy the WAL into the database file, with an fsync) every 32 MB of WAL
        // rather than every 4 MB: fewer, larger checkpoints under a sustained write load.
        conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
    }
    // Claims and lists build SQL per shape (number of skipped targets, filters): room for all.
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
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

fn load_tally(conn: &Connection) -> StoreResult<Tally> {
    let mut tally = Tally::default();
    let mut stmt = conn
        .prepare("SELECT status, priority, COUNT(*) FROM tasks GROUP BY status, priority")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                status_from(r.get(0)?)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (status, rank, n) = row.map_err(db_err)?;
        let rank = usize::try_from(rank)
            .ok()
            .filter(|r| *r < 4)
            .ok_or_else(|| StoreError::backend(format!("bad priority rank {rank}")))?;
        tally[status_index(status)][rank] = u64::try_from(n).unwrap_or(0);
    }
    Ok(tally)
}

/// The earliest `next_run_at` of a pending or retrying task: one index probe per priority.
fn earliest_due(c: &Connection) -> StoreResult<Option<i64>> {
    let mut earliest: Option<i64> = None;
    let mut stmt = c
        .prepare_cached(
            "SELECT next_run_at FROM tasks INDEXED BY tasks_due_v2 \
             WHERE status IN (0, 2) AND priority = ?1 ORDER BY next_run_at LIMIT 1",
        )
        .map_err(db_err)?;
    for rank in 0..4i64 {
        let v: Option<i64> = stmt
            .query_row([rank], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        earliest = min_opt(earliest, v);
    }
    Ok(earliest)
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// SQLite-backed store. Cheap to clone; the writer thread stops when the last clone is dropped.
///
/// # Example
///
/// ```
/// use workflow_core::{EnqueueLimits, NewTask, Priority, SqliteConfig, SqliteStore, Store, Synchronous};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let mut config = SqliteConfig::new(dir.path().join("data/tasks.db"));
/// config.synchronous = Synchronous::Normal; // the default: nothing acknowledged is lost on a crash
/// let store = SqliteStore::open(config)?;
/// let task = NewTask {
///     id: "wf_1700000000_0a1b2c3d".into(),
///     kind: "webhook".into(),
///     priority: Priority::High,
///     payload: serde_json::json!({"hello": "world"}),
///     target: Some("https://hooks.example.com:443".into()),
///     max_attempts: 4,
///     run_at: chrono::Utc::now(),
///     idempotency_key: None,
/// };
/// store.enqueue(task, EnqueueLimits { max_active: Some(10_000) }).await?;
/// let claimed = store
///     .claim_due("worker-1", chrono::Utc::now(), std::time::Duration::from_secs(60), 32, &[])
///     .await?;
/// assert_eq!(claimed[0].attempt, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    jobs: mpsc::UnboundedSender<Job>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    wakeup: Arc<Notify>,
    counts: Arc<Mutex<Tally>>,
    /// Held while the store is open; the OS lets go of it when the process dies.
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("readers", &self.inner.readers.len())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database and its parent directories, applies pending
    /// migrations and starts the writer thread.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the file cannot be created or opened, a migration fails,
    /// or the file was written by a newer build (schema version above [`SQLITE_SCHEMA_VERSION`]);
    /// [`StoreError::InUse`] when another process (or another open store in this one) has the
    /// file open: a SQLite file belongs to one process at a time.
    pub fn open(config: SqliteConfig) -> StoreResult<SqliteStore> {
        if let Some(dir) = config.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        }
        let lock = lock_file(&config.path)?;
        let mut conn = open_connection(&config, false).map_err(db_err)?;
        migrate(&mut conn)?;
        if config.recover_leases_on_open {
            let recovered = conn
                .execute(
                    "UPDATE tasks SET lease_until = ?1 WHERE status = 1 AND lease_until > ?1",
                    [Utc::now().timestamp_millis()],
                )
                .map_err(db_err)?;
            if recovered > 0 {
                tracing::info!(
                    recovered,
                    "tasks left running by a previous process are due again"
                );
            }
        }
        let tally = load_tally(&conn)?;
        let counts = Arc::new(Mutex::new(tally));
        let readers = (0..config.readers.max(1))
            .map(|_| open_connection(&config, true).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let max_batch = config.max_batch.max(1);
        let writer = Writer {
            conn,
            tally,
            published: counts.clone(),
            poisoned: false,
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, max_batch))
            .map_err(StoreError::backend)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: config.path,
                jobs,
                readers,
                next_reader: AtomicUsize::new(0),
                wakeup: Arc::new(Notify::new()),
                counts,
                _lock: lock,
            }),
        })
    }

    /// Opens `path` with the default configuration.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    pub fn open_path(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        SqliteStore::open(SqliteConfig::new(path.as_ref()))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer thread, inside the current group-commit transaction. Answers
    /// after the commit.
    ///
    /// `f` must fail only before it writes, except with [`StoreError::Backend`] (which rolls
    /// back the whole group: every caller in it gets the error). Jobs that can fail half-way
    /// for other reasons (a batch insert meeting a duplicate) use [`SqliteStore::write_atomic`].
    async fn write<T: Send + 'static>(
        &self,
        wake: bool,
        f: impl FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.submit(wake, move |w: &mut Writer| {
            let tally_before = w.tally;
            let r = f(w);
            if let Err(e) = &r {
                w.tally = tally_before;
                if matches!(e, StoreError::Backend(_)) {
                    w.poisoned = true;
                }
            }
            r
        })
        .await
    }

    /// Like [`SqliteStore::write`], under a savepoint: an error undoes only `f`'s writes.
    async fn write_atomic<T: Send + 'static>(
        &self,
        wake: bool,
        f: impl FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.submit(wake, move |w: &mut Writer| {
            let tally_before = w.tally;
            w.exec_cached("SAVEPOINT job")?;
            let r = f(w);
            let end = if r.is_ok() {
                w.exec_cached("RELEASE job")
            } else {
                w.tally = tally_before;
                w.exec_cached("ROLLBACK TO job")
                    .and_then(|()| w.exec_cached("RELEASE job"))
            };
            if end.is_err() {
                w.poisoned = true;
            }
            end.and(r)
        })
        .await
    }

    async fn submit<T: Send + 'static>(
        &self,
        wake: bool,
        f: impl FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        let notify = self.inner.wakeup.clone();
        let job: Job = Box::new(move |w: &mut Writer| {
            let result = f(w);
            Box::new(move |commit_error: Option<&str>| {
                let result = match commit_error {
                    Some(e) if result.is_ok() => {
                        Err(StoreError::backend(format!("commit failed: {e}")))
                    }
                    _ => result,
                };
                if wake && result.is_ok() {
                    // notify_one keeps a permit when the engine is not waiting right now.
                    notify.notify_one();
                }
                let _ = tx.send(result);
            })
        });
        self.inner.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a query on a free read connection (WAL: readers see the last commit and never
    /// wait for the writer).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let n = inner.readers.len();
            let start = inner.next_reader.fetch_add(1, Ordering::Relaxed);
            // Take the first idle connection from a rotating start; wait only if all are busy.
            let conn = (0..n)
                .find_map(|i| inner.readers[(start + i) % n].try_lock())
                .unwrap_or_else(|| inner.readers[start % n].lock());
            f(&conn)
        })
        .await
        .map_err(StoreError::backend)?
    }
}

fn writer_loop(mut w: Writer, mut rx: mpsc::UnboundedReceiver<Job>, max_batch: usize) {
    while let Some(first) = rx.blocking_recv() {
        // Group commit: everything queued now goes into one transaction.
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = w.conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the jobs drops their reply channels: every caller gets an error.
            tracing::error!(error = %e, "sqlite writer could not begin a transaction");
            continue;
        }
        let tally_before = w.tally;
        w.poisoned = false;
        let finishers: Vec<Finisher> = jobs.into_iter().map(|job| job(&mut w)).collect();
        let end = if w.poisoned {
            // A job failed half-way: nothing of this group may be kept.
            Err("a write in the same transaction failed".to_owned())
        } else {
            w.conn.execute_batch("COMMIT").map_err(|e| e.to_string())
        };
        match end {
            Ok(()) => {
                *w.published.lock() = w.tally;
                finishers.into_iter().for_each(|f| f(None));
            }
            Err(msg) => {
                tracing::error!(error = %msg, "sqlite group commit failed; rolling back the group");
                let _ = w.conn.execute_batch("ROLLBACK");
                w.tally = tally_before;
                finishers.into_iter().for_each(|f| f(Some(&msg)));
            }
        }
    }
}

fn read_attempt(r: &Row<'_>) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        task_id: r.get(0)?,
        n: r.get(1)?,
        started_at: time(r.get(2)?),
        duration_ms: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        status_code: r.get(4)?,
        error: r.get(5)?,
        response: r.get(6)?,
        outcome: r.get(7)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue(&self, task: NewTask, limits: EnqueueLimits) -> StoreResult<Enqueued> {
        self.write(true, move |w| w.insert(task, limits, Utc::now()))
            .await
    }

    async fn enqueue_batch(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
    ) -> StoreResult<Vec<Enqueued>> {
        self.write_atomic(true, move |w| {
            let now = Utc::now();
            let mut out = Vec::with_capacity(tasks.len());
            let mut fresh = 0u64;
            let start = w.active();
            for t in tasks {
                let e = w.insert(t, EnqueueLimits::default(), now)?;
                if matches!(e, Enqueued::Created(_)) {
                    fresh += 1;
                }
                out.push(e);
            }
            if let Some(limit) = limits.max_active
                && fresh > 0
                && start + fresh > limit
            {
                return Err(StoreError::QueueFull { limit });
            }
            Ok(out)
        })
        .await
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
        skip_targets: &[String],
    ) -> StoreResult<Vec<Task>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let owner = owner.to_owned();
        let skip = skip_targets.to_vec();
        self.write(false, move |w| w.claim(&owner, now, lease, max, &skip))
            .await
    }

    async fn finish_attempt(
        &self,
        fence: &Fence,
        mut attempt: AttemptRecord,
        completion: Completion,
        now: DateTime<Utc>,
    ) -> StoreResult<Task> {
        let fence = fence.clone();
        let retry = matches!(completion, Completion::Retry { .. });
        self.write(retry, move |w| {
            let (task, ev) = w.transition(&fence.task_id, |t| {
                logic::check_fence(t, &fence)?;
                Ok(logic::finish_attempt(t, &mut attempt, completion, now))
            })?;
            w.record_attempt(&attempt)?;
            w.event(&ev)?;
            Ok(task)
        })
        .await
    }

    async fn release(
        &self,
        fence: &Fence,
        release: Release,
        now: DateTime<Utc>,
    ) -> StoreResult<Task> {
        let fence = fence.clone();
        self.write(true, move |w| {
            let (task, ev) = w.transition(&fence.task_id, |t| {
                logic::check_fence(t, &fence)?;
                Ok(logic::release(t, &release, now))
            })?;
            w.event(&ev)?;
            Ok(task)
        })
        .await
    }

    async fn extend_lease(&self, fence: &Fence, until: DateTime<Utc>) -> StoreResult<()> {
        let fence = fence.clone();
        self.write(false, move |w| {
            w.transition(&fence.task_id, |t| {
                logic::check_fence(t, &fence)?;
                logic::extend_lease(t, until);
                Ok(())
            })
            .map(|_| ())
        })
        .await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Task>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"))
                .map_err(db_err)?
                .query_row([id], row_to_task)
                .optional()
                .map_err(db_err)
        })
        .await
    }

    async fn attempts(&self, id: &str) -> StoreResult<Vec<AttemptRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT task_id, n, started_at, duration_ms, status_code, error, response, outcome \
                     FROM attempts WHERE task_id = ?1 ORDER BY n",
                )
                .map_err(db_err)?;
            let rows = stmt.query_map([id], read_attempt).map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    async fn events(&self, id: &str) -> StoreResult<Vec<TaskEvent>> {
        let id = id.to_owned();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT task_id, at, from_status, to_status, reason FROM events WHERE task_id = ?1 ORDER BY rowid",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok(TaskEvent {
                        task_id: r.get(0)?,
                        at: time(r.get(1)?),
                        from: r.get::<_, Option<i64>>(2)?.map(status_from).transpose()?,
                        to: status_from(r.get(3)?)?,
                        reason: r.get(4)?,
                    })
                })
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    async fn cancel(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<CancelOutcome> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(false, move |w| {
            let (_, (out, ev)) = w.transition(&id, |t| Ok(logic::cancel(t, &reason, now)))?;
            if let Some(ev) = ev {
                w.event(&ev)?;
            }
            Ok(out)
        })
        .await
    }

    async fn retry_now(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Task> {
        let id = id.to_owned();
        self.write(true, move |w| {
            let (task, ev) = w.transition(&id, |t| logic::retry_now(t, now))?;
            w.event(&ev)?;
            Ok(task)
        })
        .await
    }

    async fn record_callback(&self, id: &str, callback: CallbackRecord) -> StoreResult<Task> {
        let id = id.to_owned();
        self.write(false, move |w| {
            w.transition(&id, |t| {
                logic::record_callback(t, callback);
                Ok(())
            })
            .map(|(t, ())| t)
        })
        .await
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Page> {
        let filter = filter.clone();
        self.read(move |c| {
            let limit = match filter.limit {
                0 => 100,
                n => n.min(1000),
            };
            let mut sql = format!("SELECT {TASK_COLS} FROM tasks WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(s) = filter.status {
                sql.push_str(" AND status = ?");
                args.push(status_code(s).into());
            }
            if let Some(p) = filter.priority {
                sql.push_str(" AND priority = ?");
                args.push(i64::from(p.rank()).into());
            }
            if let Some(t) = &filter.target {
                sql.push_str(" AND target = ?");
                args.push(t.clone().into());
            }
            if let Some(k) = &filter.kind {
                sql.push_str(" AND kind = ?");
                args.push(k.clone().into());
            }
            if let Some(b) = filter.before_seq {
                sql.push_str(" AND seq < ?");
                args.push(b.into());
            }
            sql.push_str(" ORDER BY seq DESC LIMIT ?");
            args.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
            let mut stmt = c.prepare_cached(&sql).map_err(db_err)?;
            let mut tasks = stmt
                .query_map(rusqlite::params_from_iter(args), row_to_task)
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            let more = tasks.len() > limit;
            tasks.truncate(limit);
            let next_cursor = if more {
                tasks.last().map(|t| t.seq)
            } else {
                None
            };
            Ok(Page { tasks, next_cursor })
        })
        .await
    }

    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(|c| {
            let lease: Option<i64> = c
                .prepare_cached(
                    "SELECT lease_until FROM tasks INDEXED BY tasks_lease WHERE status = 1 \
                     ORDER BY lease_until LIMIT 1",
                )
                .map_err(db_err)?
                .query_row([], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            Ok(min_opt(earliest_due(c)?, lease).map(time))
        })
        .await
    }

    async fn counts(&self) -> StoreResult<Counts> {
        let tally = *self.inner.counts.lock();
        let mut by_status_priority = Vec::new();
        for status in TaskStatus::ALL {
            for priority in Priority::ALL {
                let n = tally[status_index(status)][usize::from(priority.rank())];
                if n > 0 {
                    by_status_priority.push((status, priority, n));
                }
            }
        }
        let oldest_due_at = self.read(earliest_due).await?.map(time);
        Ok(Counts {
            by_status_priority,
            oldest_due_at,
        })
    }

    async fn prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        // In chunks, so a first prune of a large backlog never holds the writer for long.
        const CHUNK: usize = 2_000;
        let cutoff = ms(before);
        let mut total = 0u64;
        loop {
            let n = self
                .write(false, move |w| w.prune_chunk(cutoff, CHUNK))
                .await?;
            total += n as u64;
            if n < CHUNK {
                return Ok(total);
            }
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err))
            .await
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.inner.wakeup.clone()
    }
}
