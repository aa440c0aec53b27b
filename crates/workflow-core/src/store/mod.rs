//! The [`Store`] trait: durable task state, shared by every backend.
//!
//! The trait is shaped for three backends: memory, SQLite (one writer, group commit) and
//! PostgreSQL (`FOR UPDATE SKIP LOCKED` batch claims, `LISTEN/NOTIFY` wakeups):
//! - every method is one short transaction; none spans a handler call;
//! - callers pass `now`, so tests drive time and every instance agrees on the rule;
//! - claims are batched and fenced by the task's `attempt` number;
//! - [`Store::wakeup`] lets a backend wake the engine when another instance enqueues.
//!
//! The state transitions themselves live in one place (`logic`), applied by every backend to
//! a loaded row, so backends differ in how they find and persist rows, never in the rules.
//! Every stored instant has millisecond precision. Every backend must pass the conformance
//! suite: module `conformance` and the `conformance_tests!` macro, behind the cargo feature
//! `conformance`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

// Also compiled for rustdoc, so the docs show the suite and links to it resolve.
mod batch;
mod codec;
#[cfg(any(feature = "conformance", doc))]
pub mod conformance;
mod database;
pub(crate) mod logic;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

pub use database::{Database, InvalidDatabaseUrl};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{
    NOTIFY_CHANNEL, POSTGRES_SCHEMA_VERSION, PostgresConfig, PostgresStore,
    redact as redact_database_url,
};
pub use sqlite::{
    BackupReport, SQLITE_SCHEMA_VERSION, SqliteConfig, SqliteStore, Synchronous,
    backup as sqlite_backup,
};

use crate::error::StoreError;
use crate::model::{AttemptRecord, CallbackRecord, NewTask, Priority, Task, TaskEvent, TaskStatus};

/// Result of store operations.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// Limits checked atomically with an insert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueLimits {
    /// Maximum number of non-final tasks; enqueue fails with [`StoreError::QueueFull`] past it.
    pub max_active: Option<u64>,
}

/// What [`Store::enqueue`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    /// A new task was stored.
    Created(Task),
    /// The idempotency key was already used: this is the existing task, nothing was stored.
    Existing(Task),
}

impl Enqueued {
    /// The task, new or existing.
    pub fn task(&self) -> &Task {
        match self {
            Enqueued::Created(t) | Enqueued::Existing(t) => t,
        }
    }
}

/// Identifies the one claim allowed to write a task's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The task.
    pub task_id: String,
    /// The `attempt` number the claim set.
    pub attempt: u32,
    /// The worker that holds the lease.
    pub owner: String,
}

impl Fence {
    /// The fence of a task as it was claimed.
    pub fn of(task: &Task) -> Fence {
        Fence {
            task_id: task.id.clone(),
            attempt: task.attempt,
            owner: task.lease_owner.clone().unwrap_or_default(),
        }
    }
}

/// How a claimed task ends its turn, written by [`Store::finish_attempt`].
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Success: status `completed`, with the handler's result if any.
    Succeeded {
        /// The handler's result (stored in [`Task::result`]).
        result: Option<serde_json::Value>,
    },
    /// Retryable failure: status `retrying`, due again at `at`.
    Retry {
        /// When to try again.
        at: DateTime<Utc>,
        /// Why the attempt failed.
        error: String,
    },
    /// Permanent failure or attempts exhausted: status `failed`.
    Failed {
        /// Why.
        error: String,
    },
}

/// How a claimed task is given back without spending an attempt ([`Store::release`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// When it becomes due again (a breaker's reopen time, or now on shutdown).
    pub at: DateTime<Utc>,
    /// Why (recorded as the event reason).
    pub reason: String,
}

/// What [`Store::cancel`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// It was pending or retrying and is now cancelled.
    Cancelled(Task),
    /// It is processing: `cancel_requested` is set and the worker finishes it as cancelled.
    Requested(Task),
    /// It was already final; nothing changed.
    AlreadyFinal(Task),
}

/// Filter and page for [`Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this priority.
    pub priority: Option<Priority>,
    /// Only this target key.
    pub target: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Page size (backends cap it at 1,000; 0 means 100).
    pub limit: usize,
    /// Return tasks created before this `seq` (newest first paging); from [`Page::next_cursor`].
    pub before_seq: Option<i64>,
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The tasks.
    pub tasks: Vec<Task>,
    /// Pass as [`TaskFilter::before_seq`] for the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

/// Counts of non-pruned tasks by status and priority, for gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// `(status, priority, count)` rows with count > 0.
    pub by_status_priority: Vec<(TaskStatus, Priority, u64)>,
    /// `next_run_at` of the oldest due task (pending or retrying) at the time asked, if any.
    pub oldest_due_at: Option<DateTime<Utc>>,
}

impl Counts {
    /// Number of non-final tasks.
    pub fn active(&self) -> u64 {
        self.by_status_priority
            .iter()
            .filter(|(s, _, _)| !s.is_final())
            .map(|(_, _, n)| n)
            .sum()
    }
}

/// Durable task state. Every backend passes the same conformance suite (`conformance` module,
/// cargo feature `conformance`).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new task as `pending` (event `created`), unless its idempotency key exists
    /// (returns the existing task). Fails with [`StoreError::QueueFull`] when the limit of
    /// non-final tasks is reached, and [`StoreError::Duplicate`] on an id that exists.
    async fn enqueue(&self, task: NewTask, limits: EnqueueLimits) -> StoreResult<Enqueued>;

    /// Stores many tasks in one transaction (same rules as [`Store::enqueue`], all or nothing
    /// for errors other than idempotency hits).
    async fn enqueue_batch(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
    ) -> StoreResult<Vec<Enqueued>>;

    /// Stores tasks like [`Store::enqueue_batch`] and, in the same transaction, claims each one
    /// it creates for `owner` as [`Store::claim_due`] would (status `processing`, `attempt` 1,
    /// leased until `now + lease`; created and events at `now`; events `created` then
    /// `claimed`). An engine with free
    /// workers hands such tasks straight to them: no claim query, no wakeup, and the lease makes
    /// it as safe as a claim (after a crash the task is claimed again when the lease expires).
    /// Tasks answered as [`Enqueued::Existing`] are left as they are. Does not notify
    /// [`Store::wakeup`] for the tasks it claims.
    ///
    /// The default stores them unclaimed with [`Store::enqueue_batch`], so a caller checks each
    /// created task's `lease_owner` and leaves an unclaimed one to [`Store::claim_due`].
    async fn enqueue_claimed(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Vec<Enqueued>> {
        let _ = (owner, now, lease);
        self.enqueue_batch(tasks, limits).await
    }

    /// Claims up to `max` due tasks for `owner`: `pending`/`retrying` with `next_run_at <= now`,
    /// and `processing` whose lease expired (`lease_until <= now`, crash recovery). Ordered by
    /// priority (critical first), then due time, then `seq`. Each claimed task gets
    /// status `processing`, `lease_owner = owner`, `lease_until = now + lease`, `attempt + 1`.
    /// Tasks whose `target` is in `skip_targets` are left alone (their per-target cap is full).
    async fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
        skip_targets: &[String],
    ) -> StoreResult<Vec<Task>>;

    /// Records one attempt (bumping `tries`) and ends the turn as `completion` says, if `fence`
    /// still holds (status `processing`, same `attempt` and owner); otherwise
    /// [`StoreError::Fenced`] and nothing is written. A task with `cancel_requested` ends
    /// `cancelled` instead of `retrying` (a success still ends `completed`).
    async fn finish_attempt(
        &self,
        fence: &Fence,
        attempt: AttemptRecord,
        completion: Completion,
        now: DateTime<Utc>,
    ) -> StoreResult<Task>;

    /// Gives a claimed task back without recording an attempt (breaker open, shutdown):
    /// status back to `pending` (if `tries == 0`) or `retrying`, due at `release.at`.
    /// A task with `cancel_requested` ends `cancelled`. Fenced like [`Store::finish_attempt`].
    async fn release(
        &self,
        fence: &Fence,
        release: Release,
        now: DateTime<Utc>,
    ) -> StoreResult<Task>;

    /// Extends the lease of a long-running claim to `until`. Fenced.
    async fn extend_lease(&self, fence: &Fence, until: DateTime<Utc>) -> StoreResult<()>;

    /// One task by id.
    async fn get(&self, id: &str) -> StoreResult<Option<Task>>;

    /// A task's attempts, oldest first.
    async fn attempts(&self, id: &str) -> StoreResult<Vec<AttemptRecord>>;

    /// A task's state changes, oldest first.
    async fn events(&self, id: &str) -> StoreResult<Vec<TaskEvent>>;

    /// Cancels a task: at once if pending or retrying, cooperatively if processing.
    /// [`StoreError::NotFound`] if there is no such task.
    async fn cancel(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<CancelOutcome>;

    /// Makes a `failed` (or `cancelled`) task due now again with a fresh attempt budget
    /// (`max_attempts` raised by its original size; `tries` keeps counting so attempt numbers
    /// stay unique). [`StoreError::InvalidState`] for other statuses.
    async fn retry_now(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Task>;

    /// Records the receiver's latest report on a task, and a `callback: <status>[: <note>]`
    /// event (status unchanged), so every report stays in its history. [`StoreError::NotFound`]
    /// if absent.
    async fn record_callback(&self, id: &str, callback: CallbackRecord) -> StoreResult<Task>;

    /// Lists tasks, newest first, filtered and paged.
    async fn list(&self, filter: &TaskFilter) -> StoreResult<Page>;

    /// The earliest instant something may become claimable: the minimum over `next_run_at` of
    /// pending/retrying tasks and `lease_until` of processing tasks. `None` when idle.
    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>>;

    /// Task counts for gauges and backpressure.
    async fn counts(&self) -> StoreResult<Counts>;

    /// Deletes final tasks (with their attempts and events) that finished before `before`.
    /// Returns how many tasks were deleted.
    async fn prune(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Checks the store is reachable (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Notified when a task may have become due (an enqueue, a release, a retry-now), by this
    /// process or, for shared backends, by another instance.
    fn wakeup(&self) -> Arc<Notify>;

    /// Stops the store's own tasks and threads and waits for them: what was queued is written
    /// first, then writes (and, on SQLite, reads) fail with [`StoreError::Closed`]. Call it once on shutdown, after the
    /// engine has stopped; calling it again does nothing. SQLite also checkpoints its WAL, so
    /// the database file alone is complete; PostgreSQL closes its pool. Dropping the last
    /// clone of a store stops its work too, without waiting. The default does nothing.
    async fn close(&self) {}
}
