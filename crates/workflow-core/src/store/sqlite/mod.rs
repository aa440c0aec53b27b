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
//! - **Close**: [`Store::close`] closes the readers, stops the writer once it has committed
//!   what is queued, checkpoints the WAL into the database file (`wal_checkpoint(TRUNCATE)`)
//!   and closes it last, so SQLite removes the WAL: after a clean stop the `.db` file alone
//!   holds everything. Reads and writes after close are [`StoreError::Closed`]. Dropping the last clone stops the writer too.
//! - **Damage**: opening refuses a database SQLite would quietly treat as empty (a WAL with a
//!   corrupt header, a missing or 0-byte file next to a WAL) and one `PRAGMA quick_check`
//!   does not pass. [`backup`] writes a consistent copy of a live database (`VACUUM INTO`).
//!
//! # Why rusqlite rather than sqlx
//!
//! The store's speed comes from the single writer that commits everything queued at once. With
//! rusqlite that writer is a plain thread running synchronous calls on one connection with
//! cached statements: the simplest code for the design, and nothing between the statement and
//! SQLite. sqlx's SQLite driver also runs a worker thread per connection, but every statement
//! becomes an async request to that thread (a channel round trip and a wakeup per statement,
//! where a finished attempt is four statements), and its pool spreads writes over connections
//! that then contend for SQLite's single write lock instead of being grouped. Measured figures
//! (group commit against committing each write alone, `benches/store.rs`) are in
//! `docs/BENCHMARKS.md`, "Store benchmark". sqlx itself was not benchmarked: it is not a
//! dependency here.
//!
//! # Files
//!
//! `config` (how to open), `schema` (migrations, connections, the file lock), `codec` (rows
//! through the shared codec), `writer` (the writer thread's state and group commit), `claim`,
//! `prune`, `query` (the read-only queries).

mod checkpoint;
mod claim;
mod codec;
mod config;
mod prune;
mod query;
mod safety;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::Notify;

use self::checkpoint::Checkpointer;
use self::codec::db_err;
use self::query::earliest_due;
use self::schema::{lock_file, migrate, open_connection};
use self::writer::{Answer, Job, Tally, Writer, status_index};
use crate::error::StoreError;
use crate::model::{AttemptRecord, CallbackRecord, NewTask, Priority, Task, TaskEvent, TaskStatus};
use crate::store::batch::{self, Batcher};
use crate::store::codec::{ms, time};
use crate::store::logic;
use crate::store::{
    CancelOutcome, Completion, Counts, EnqueueLimits, Enqueued, Fence, Page, Release, Store,
    StoreResult, TaskFilter,
};

pub use self::config::{SqliteConfig, Synchronous};
pub use self::safety::{BackupReport, backup};
pub use self::schema::SQLITE_SCHEMA_VERSION;

/// SQLite-backed store. Cheap to clone; [`Store::close`] (or dropping the last clone) stops the
/// writer thread.
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
    writer: Batcher<Job, Answer>,
    /// The writer thread, joined by [`Store::close`] (or by the last drop, off the runtime).
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The checkpoint thread (a file database only), stopped before the writer.
    checkpointer: Mutex<Option<Checkpointer>>,
    /// Read-only connections; `None` once [`Store::close`] closed them.
    readers: Vec<Mutex<Option<Connection>>>,
    next_reader: AtomicUsize,
    wakeup: Arc<Notify>,
    counts: Arc<Mutex<Tally>>,
    /// Held while the store is open; the OS lets go of it when the process dies.
    _lock: Option<std::fs::File>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last resort when `close` was not called: the writer commits what is queued and
        // stops. Joined only off an async runtime, whose threads must not block.
        let off_runtime = tokio::runtime::Handle::try_current().is_err();
        if let Some(thread) = self
            .checkpointer
            .get_mut()
            .as_mut()
            .and_then(Checkpointer::stop)
            && off_runtime
            && thread.join().is_err()
        {
            tracing::error!("sqlite checkpoint thread panicked");
        }
        self.writer.close();
        if let Some(thread) = self.thread.get_mut().take()
            && off_runtime
            && thread.join().is_err()
        {
            tracing::error!("sqlite writer thread panicked");
        }
    }
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
        if lock.is_some() {
            safety::check_files(&config.path)?;
        }
        let mut conn = open_connection(&config, false).map_err(db_err)?;
        safety::quick_check(&conn, &config.path)?;
        migrate(&mut conn)?;
        let writer_commits = Arc::new(AtomicU64::new(0));
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
        let checkpointer = if lock.is_some() {
            let own = open_connection(&config, false).map_err(db_err)?;
            Some(Checkpointer::start(own, writer_commits.clone())?)
        } else {
            // No file of its own (`:memory:`, a URI): SQLite checkpoints in the writer.
            conn.pragma_update(None, "wal_autocheckpoint", checkpoint::WRITER_ALONE_FRAMES)
                .map_err(db_err)?;
            None
        };
        let mut writer = Writer::new(conn, writer_commits)?;
        let counts = writer.published();
        let readers = (0..config.readers.max(1))
            .map(|_| open_connection(&config, true).map(|c| Mutex::new(Some(c))))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        let (jobs, queue) = batch::channel(config.max_batch);
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                // The batcher needs no runtime: its channel and lock work on any executor.
                futures::executor::block_on(queue.serve(&mut writer));
                writer.checkpoint();
            })
            .map_err(StoreError::backend)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: config.path,
                writer: jobs,
                thread: Mutex::new(Some(thread)),
                checkpointer: Mutex::new(checkpointer),
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

    /// [`Store::enqueue_batch`], claiming each created task when `claim` is given (then no
    /// wakeup: nothing new is left for the claim loop).
    async fn insert_batch(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
        now: DateTime<Utc>,
        claim: Option<(String, Duration)>,
    ) -> StoreResult<Vec<Enqueued>> {
        let wake = claim.is_none();
        self.write_atomic(wake, move |w| {
            let mut out = Vec::with_capacity(tasks.len());
            let mut fresh = 0u64;
            let start = w.active();
            for t in tasks {
                let claim = claim
                    .as_ref()
                    .map(|(owner, lease)| (owner.as_str(), *lease));
                let e = w.insert(t, EnqueueLimits::default(), now, claim)?;
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
        let job: Job = Box::new(move |w: &mut Writer| f(w).map(|v| Box::new(v) as Answer));
        let answer = self.inner.writer.call(job).await?;
        let value = answer
            .downcast::<T>()
            .map_err(|_| StoreError::backend("sqlite writer answered with another type"))?;
        if wake {
            // notify_one keeps a permit when the engine is not waiting right now.
            self.inner.wakeup.notify_one();
        }
        Ok(*value)
    }

    /// Stops the writer after it has committed what is queued, checkpoints the WAL and joins
    /// the thread. Later writes are [`StoreError::Closed`].
    async fn stop_writer(&self) {
        // The checkpoint thread's connection first: the writer must close last to remove
        // the WAL.
        let checkpointer = self
            .inner
            .checkpointer
            .lock()
            .as_mut()
            .and_then(Checkpointer::stop);
        if let Some(thread) = checkpointer
            && !matches!(
                tokio::task::spawn_blocking(move || thread.join()).await,
                Ok(Ok(()))
            )
        {
            tracing::error!("sqlite checkpoint thread panicked");
        }
        self.inner.writer.close();
        let Some(thread) = self.inner.thread.lock().take() else {
            return; // closed already
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => tracing::debug!(path = %self.inner.path.display(), "sqlite store closed"),
            Ok(Err(_)) => tracing::error!("sqlite writer thread panicked"),
            Err(e) => tracing::error!(error = %e, "could not join the sqlite writer thread"),
        }
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
            match conn.as_ref() {
                Some(conn) => f(conn),
                None => Err(StoreError::Closed),
            }
        })
        .await
        .map_err(StoreError::backend)?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue(&self, task: NewTask, limits: EnqueueLimits) -> StoreResult<Enqueued> {
        self.write(true, move |w| w.insert(task, limits, Utc::now(), None))
            .await
    }

    async fn enqueue_batch(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
    ) -> StoreResult<Vec<Enqueued>> {
        self.insert_batch(tasks, limits, Utc::now(), None).await
    }

    async fn enqueue_claimed(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Vec<Enqueued>> {
        self.insert_batch(tasks, limits, now, Some((owner.to_owned(), lease)))
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

    async fn release(&self, fence: &Fence, r: Release, now: DateTime<Utc>) -> StoreResult<Task> {
        let fence = fence.clone();
        self.write(true, move |w| {
            let (task, ev) = w.transition(&fence.task_id, |t| {
                logic::check_fence(t, &fence)?;
                Ok(logic::release(t, &r, now))
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
        self.read(move |c| query::get(c, &id)).await
    }

    async fn attempts(&self, id: &str) -> StoreResult<Vec<AttemptRecord>> {
        let id = id.to_owned();
        self.read(move |c| query::attempts(c, &id)).await
    }

    async fn events(&self, id: &str) -> StoreResult<Vec<TaskEvent>> {
        let id = id.to_owned();
        self.read(move |c| query::events(c, &id)).await
    }

    async fn cancel(&self, id: &str, why: &str, now: DateTime<Utc>) -> StoreResult<CancelOutcome> {
        let (id, reason) = (id.to_owned(), why.to_owned());
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
            let (task, ev) = w.transition(&id, |t| Ok(logic::record_callback(t, callback)))?;
            w.event(&ev)?;
            Ok(task)
        })
        .await
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Page> {
        let filter = filter.clone();
        self.read(move |c| query::list(c, &filter)).await
    }

    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(query::next_due_at).await
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

    async fn close(&self) {
        // The readers first: a read-only connection cannot remove the WAL, so the writer must
        // be the last connection to close. It then checkpoints and SQLite deletes the WAL and
        // its index, leaving the database file alone.
        let readers = self.inner.readers.iter().map(|r| r.lock().take());
        drop(readers.collect::<Vec<_>>());
        self.stop_writer().await;
    }
}
