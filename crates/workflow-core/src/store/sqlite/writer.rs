//! The writer thread: the one read-write connection, the counts it keeps, the row writes every
//! job uses, and the group commit that runs a batch of jobs in one transaction.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};

use super::codec::{db_err, row_to_task, status_code, status_of};
use crate::error::StoreError;
use crate::model::{AttemptRecord, NewTask, Priority, Task, TaskEvent, TaskStatus};
use crate::store::batch::Batch;
use crate::store::codec::{TASK_COLS, json_text, ms};
use crate::store::logic;
use crate::store::{EnqueueLimits, Enqueued, StoreResult};

/// Task counts by status code and priority rank.
pub(super) type Tally = [[u64; 4]; 6];

pub(super) fn status_index(s: TaskStatus) -> usize {
    // Codes are 0..=5 by construction.
    usize::try_from(status_code(s)).unwrap_or(0)
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) conn: Connection,
    /// Counts of the rows as written so far (committed or not), kept here so the queue limit
    /// and the gauges need no `COUNT(*)` over a million rows.
    pub(super) tally: Tally,
    /// The counts as of the last commit, read by [`Store::counts`](crate::Store::counts).
    published: Arc<Mutex<Tally>>,
    /// Commits so far, which tell the checkpoint thread there is WAL to copy.
    commits: Arc<AtomicU64>,
    /// A job of the current group failed after writing: the group must be rolled back.
    pub(super) poisoned: bool,
}

/// What a job answers, boxed so jobs of every result type share one queue.
pub(super) type Answer = Box<dyn Any + Send>;
/// One write, run on the writer inside the current group's transaction.
pub(super) type Job = Box<dyn FnOnce(&mut Writer) -> StoreResult<Answer> + Send>;

impl Writer {
    /// The writer of a migrated connection, with the counts of the rows it holds.
    pub(super) fn new(conn: Connection, commits: Arc<AtomicU64>) -> StoreResult<Writer> {
        let tally = load_tally(&conn)?;
        Ok(Writer {
            conn,
            tally,
            published: Arc::new(Mutex::new(tally)),
            commits,
            poisoned: false,
        })
    }

    /// The counts as of the last commit.
    pub(super) fn published(&self) -> Arc<Mutex<Tally>> {
        self.published.clone()
    }

    /// Copies the WAL into the database file and empties it, so the file alone is complete.
    pub(super) fn checkpoint(&self) {
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "sqlite checkpoint at close failed");
        }
    }

    /// Runs a group of jobs in one transaction: every job's result, each turned into an
    /// error if the group could not commit.
    fn commit_group(&mut self, jobs: Vec<Job>) -> StoreResult<Vec<StoreResult<Answer>>> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| StoreError::backend(format!("sqlite writer could not begin: {e}")))?;
        let tally_before = self.tally;
        self.poisoned = false;
        let mut results: Vec<_> = jobs.into_iter().map(|job| job(self)).collect();
        let end = if self.poisoned {
            // A job failed half-way: nothing of this group may be kept.
            Err("a write in the same transaction failed".to_owned())
        } else {
            self.conn.execute_batch("COMMIT").map_err(|e| e.to_string())
        };
        match end {
            Ok(()) => {
                *self.published.lock() = self.tally;
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(msg) => {
                tracing::error!(error = %msg, "sqlite group commit failed; rolling back the group");
                let _ = self.conn.execute_batch("ROLLBACK");
                self.tally = tally_before;
                for r in &mut results {
                    if r.is_ok() {
                        *r = Err(StoreError::backend(format!("commit failed: {msg}")));
                    }
                }
            }
        }
        Ok(results)
    }

    pub(super) fn load(&self, id: &str) -> StoreResult<Task> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"))
            .map_err(db_err)?;
        stmt.query_row([id], row_to_task)
            .optional()
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    pub(super) fn load_seq(&self, seq: i64) -> StoreResult<Task> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {TASK_COLS} FROM tasks WHERE seq = ?1"))
            .map_err(db_err)?;
        stmt.query_row([seq], row_to_task).map_err(db_err)
    }

    pub(super) fn save(&self, t: &Task) -> StoreResult<()> {
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
            t.result.as_ref().map(json_text),
            t.callback
                .as_ref()
                .map(|c| serde_json::to_string(c).unwrap_or_default()),
        ])
        .map_err(db_err)?;
        Ok(())
    }

    pub(super) fn event(&self, ev: &TaskEvent) -> StoreResult<()> {
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

    pub(super) fn exec_cached(&self, sql: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(db_err)
    }

    pub(super) fn active(&self) -> u64 {
        tally_active(&self.tally)
    }

    pub(super) fn count(&mut self, status: TaskStatus, priority: Priority, add: bool) {
        let slot = &mut self.tally[status_index(status)][usize::from(priority.rank())];
        *slot = if add {
            *slot + 1
        } else {
            slot.saturating_sub(1)
        };
    }

    /// Applies a transition to one task and writes it, with the counts kept right.
    /// `f` must leave the task unchanged when it fails.
    pub(super) fn transition<R>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut Task) -> StoreResult<R>,
    ) -> StoreResult<(Task, R)> {
        let task = self.load(id)?;
        self.apply(task, f)
    }

    pub(super) fn apply<R>(
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

    /// Inserts a task (unless its idempotency key exists), claimed at once for `claim`'s
    /// owner and lease when given.
    pub(super) fn insert(
        &mut self,
        new: NewTask,
        limits: EnqueueLimits,
        now: DateTime<Utc>,
        claim: Option<(&str, Duration)>,
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
        let claimed = claim.map(|(owner, lease)| logic::claim(&mut task, owner, now, lease));
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO tasks (id, kind, priority, status, payload, target, attempt, tries, max_attempts, \
                 next_run_at, lease_owner, lease_until, cancel_requested, created_at, updated_at, idempotency_key) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?10, ?11, 0, ?12, ?12, ?13)",
            )
            .map_err(db_err)?
            .execute(params![
                task.id,
                task.kind,
                task.priority.rank(),
                status_code(task.status),
                json_text(&task.payload),
                task.target,
                task.attempt,
                task.max_attempts,
                task.next_run_at.map(ms),
                task.lease_owner,
                task.lease_until.map(ms),
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
        if let Some(ev) = &claimed {
            self.event(ev)?;
        }
        self.count(task.status, task.priority, true);
        Ok(Enqueued::Created(task))
    }

    pub(super) fn record_attempt(&self, a: &AttemptRecord) -> StoreResult<()> {
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

impl Batch for Writer {
    type Work = Job;
    type Output = Answer;
    const NAME: &'static str = "sqlite writer";

    async fn run(&mut self, jobs: Vec<Job>) -> StoreResult<Vec<StoreResult<Answer>>> {
        self.commit_group(jobs)
    }
}

fn tally_active(t: &Tally) -> u64 {
    t[..3].iter().flatten().sum()
}

fn load_tally(conn: &Connection) -> StoreResult<Tally> {
    let mut tally = Tally::default();
    let mut stmt = conn
        .prepare("SELECT status, priority, COUNT(*) FROM tasks GROUP BY status, priority")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                status_of(r.get(0)?)?,
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
