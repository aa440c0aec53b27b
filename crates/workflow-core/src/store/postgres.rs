//! The scale-out [`Store`]: PostgreSQL, shared by several engine instances (cargo feature
//! `postgres`, on by default).
//!
//! # Design
//!
//! - **Same rows, same rules.** The schema mirrors the SQLite one (integer-millisecond
//!   instants, status and priority as small integers, JSON as text so any payload round-trips
//!   byte for byte), and every transition is `store::logic` applied to a row read
//!   `FOR UPDATE`, so both backends pass one conformance suite.
//! - **Claims** are one short transaction: for each priority (and for expired leases) a
//!   `SELECT ... ORDER BY due time, seq LIMIT n FOR UPDATE SKIP LOCKED` on a partial index,
//!   all sent at once (pipelined), merged in claim order (priority, due time, creation order)
//!   and cut to `n`; then one `UPDATE ... FROM unnest(...)` sets owner, lease and the bumped
//!   `attempt` (the fence) and one `INSERT` writes the events. Instances never block each
//!   other: a row locked by one claim is skipped by the others.
//! - **Finishes are group-committed.** `finish_attempt` is the write every task makes once,
//!   and as one transaction per task (four round trips and a commit, i.e. a WAL flush, each)
//!   it was the bottleneck: 800–1,800 tasks/s claim + finish on the 2-core test machine,
//!   3,700–8,500 with group commit (bench `postgres_claim`, figures in the workspace README).
//!   So a caller only queues its finish (fence, attempt, completion, `now`) on a channel with
//!   a oneshot reply, and two finisher tasks owned by the store (`FINISHERS`) take turns
//!   taking everything queued at that moment, up to 256 (`FINISH_BATCH`); a lone finish never
//!   waits for a batch to fill. A batch is one transaction: `SELECT ... WHERE id = ANY($1)
//!   ORDER BY seq FOR UPDATE` (always in `seq` order, so batches of two instances cannot
//!   deadlock), then `logic::check_fence` and `logic::finish_attempt` per request in Rust,
//!   then one `UPDATE ... FROM unnest(...)`, one multi-row `INSERT ... ON CONFLICT` of the
//!   attempts and one `INSERT` of the events, pipelined, and one `COMMIT`: one commit per
//!   batch instead of one per task. Callers are answered after the commit, so an acknowledged
//!   finish is durable as before. A fenced or missing task gets its own error and is left out
//!   of the writes; a database error fails every request of its batch with that error (the
//!   engine logs it and the lease runs out, as when a lone finish failed). With two
//!   finishers one batch's statements can run while the other's commit flushes. They sleep
//!   on the channel (no polling), and stop once the last store clone is gone and the queue is
//!   drained; a finish that finds them gone is answered [`StoreError::Closed`], never dropped
//!   silently.
//! - **Enqueues are group-committed too.** With finishes batched, the end-to-end dispatcher
//!   (one instance, `bench -c 64`) did about 2,200 tasks/s and was limited by its intake:
//!   every `POST /workflow/tasks` is one [`Store::enqueue`], and each was its own statement
//!   and commit (a WAL flush). So `enqueue` queues the row (built by `logic::create` at the
//!   call) with a oneshot reply, and two enqueuer tasks (`ENQUEUERS`) take turns taking
//!   everything queued, up to 256 (`ENQUEUE_BATCH`), and write it in one transaction and one
//!   commit: one `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING RETURNING` with
//!   the `created` events in the same statement. Nothing in it can fail on a conflict, so each
//!   request keeps its own answer, as if it had run alone after the ones queued before it: a
//!   key already stored, or created earlier in the batch, is `Existing` of that task; an id
//!   already used is [`StoreError::Duplicate`]; past an exactly checked limit (the batch's
//!   earlier creations counted) [`StoreError::QueueFull`]; these are decided in Rust, and a
//!   row that still conflicts (committed meanwhile by someone else) is looked up and the
//!   requests after it planned again. A database error fails every request of its batch with
//!   that error (a value the database refuses, SQLSTATE class 22 or 54, makes the batch be
//!   written one request at a time so only that request fails). A lone enqueue far from the
//!   limit is still one statement without a transaction block, so an idle store answers as
//!   fast as before. Callers are answered after the commit; each caller bumps the estimate
//!   and wakes the engine and the notifier (wakes coalesce, so one `NOTIFY` per burst).
//!   Enqueuers stop like the finishers; an enqueue that finds them gone is
//!   [`StoreError::Closed`]. [`Store::enqueue_batch`] stays one transaction of its own, all or
//!   nothing. Batches of two instances insert in request order, so two bursts that repeat
//!   each other's new ids or keys in opposite orders could deadlock; PostgreSQL then fails one
//!   batch (a database error), which the callers retry.
//! - **Short transactions only.** Every method is one transaction of a few statements; none
//!   waits on anything but the database (the engine calls a handler between a claim and its
//!   `finish_attempt`, never inside one; a finish batch holds its transaction only for its
//!   statements, never while waiting for more requests).
//! - **Wakeups**: after `enqueue`, `release` and `retry_now` commit, a notifier task sends
//!   `NOTIFY workflow_tasks` (one per burst: requests made while one is in flight coalesce).
//!   Not inside the transaction: PostgreSQL serialises the commits of all transactions that
//!   sent a `NOTIFY` through their WAL flush, which measured 275 enqueues/s here against
//!   thousands without. Each store keeps one
//!   dedicated connection that `LISTEN`s (driven with `Connection::poll_message`) and wakes
//!   [`Store::wakeup`] when another instance made work due; it reconnects with backoff when
//!   the connection drops, and wakes the engine after a reconnect in case it missed one. The
//!   engine's own sleep until [`Store::next_due_at`] stays as the safety net.
//! - **Migrations** run at connect (or alone with [`PostgresStore::migrate`]): numbered SQL
//!   steps recorded in `workflow_schema_migrations`, applied under a transaction-scoped
//!   advisory lock, so two instances starting together apply each step exactly once; a
//!   database migrated by a newer build is refused.
//! - **The queue limit** ([`EnqueueLimits::max_active`]) is checked exactly (a `COUNT` under an
//!   advisory lock, in the enqueue's transaction) whenever this instance's recent count is
//!   near the limit, and skipped while it is far below it (by more than a tenth of the limit;
//!   the count is refreshed in the background every second, by one caller): with several
//!   instances the limit is a backpressure bound, not a hard quota. An enqueue batch counts
//!   exactly when any of its requests is near its limit, its size included.
//! - **Pool**: a `deadpool-postgres` pool of [`PostgresConfig::pool_size`] connections, with
//!   cached prepared statements per connection.
//!
//! TLS is not built in: connect over loopback, a private network or a TLS-terminating proxy.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::StoreError;
use crate::model::{AttemptRecord, CallbackRecord, NewTask, Priority, Task, TaskEvent, TaskStatus};
use crate::store::logic;
use crate::store::{
    CancelOutcome, Completion, Counts, EnqueueLimits, Enqueued, Fence, Page, Release, Store,
    StoreResult, TaskFilter,
};

/// The `NOTIFY` channel every instance listens on.
pub const NOTIFY_CHANNEL: &str = "workflow_tasks";

/// Advisory lock keys (arbitrary constants, namespaced by this crate's use).
const MIGRATION_LOCK: i64 = 0x5746_4d49_4752_0001; // "WFMIGR" 1
const LIMIT_LOCK: i64 = 0x5746_4c49_4d54_0001; // "WFLIMT" 1

/// The most finishes one group-commit transaction carries: enough to cover every worker of a
/// busy instance, few enough that a batch's statements stay short.
const FINISH_BATCH: usize = 256;

/// Background finisher tasks per store: while one batch's commit waits for its WAL flush, the
/// other can run the next batch's statements. One, two and four measured the same within this
/// machine's noise (`benches/postgres_claim.rs`); two keeps the overlap for a slower disk.
const FINISHERS: usize = 2;

/// How to connect.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?...` (libpq URL or key=value form).
    pub url: String,
    /// Connections in the pool (default 16). Each in-flight store call holds one for the
    /// length of its transaction; the listener has its own connection on top.
    pub pool_size: usize,
    /// How long a call waits for a free pooled connection before failing (default 30 s).
    pub pool_wait: Duration,
    /// Connect timeout of each new connection (default 10 s).
    pub connect_timeout: Duration,
    /// Listen for other instances' `NOTIFY` (default true).
    pub listen: bool,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("pool_wait", &self.pool_wait)
            .field("connect_timeout", &self.connect_timeout)
            .field("listen", &self.listen)
            .finish()
    }
}

impl PostgresConfig {
    /// Defaults for a URL.
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            pool_size: 16,
            pool_wait: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            listen: true,
        }
    }

    /// Checks the URL parses, without connecting (for configuration validation). The error
    /// never shows the password.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] naming what is wrong.
    pub fn validate(&self) -> StoreResult<()> {
        self.pg_config().map(drop)
    }

    fn pg_config(&self) -> StoreResult<tokio_postgres::Config> {
        let mut c = tokio_postgres::Config::from_str(&self.url).map_err(|e| {
            StoreError::backend(format!("invalid PostgreSQL URL {}: {e}", redact(&self.url)))
        })?;
        if c.get_connect_timeout().is_none() {
            c.connect_timeout(self.connect_timeout);
        }
        if c.get_application_name().is_none() {
            c.application_name("workflow-core");
        }
        Ok(c)
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // key=value form
        return url
            .split(' ')
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[scheme_end + 3 + at..]
                ),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

const MIGRATION_1: &str = "
CREATE TABLE IF NOT EXISTS workflow_tasks (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    priority         SMALLINT NOT NULL,
    status           SMALLINT NOT NULL,
    payload          TEXT NOT NULL,
    target           TEXT,
    attempt          BIGINT NOT NULL,
    tries            BIGINT NOT NULL,
    max_attempts     BIGINT NOT NULL,
    next_run_at      BIGINT,
    lease_owner      TEXT,
    lease_until      BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    last_error       TEXT,
    result           TEXT,
    idempotency_key  TEXT UNIQUE,
    callback         TEXT
);
-- The claim: due tasks of one priority in due order, over active rows only.
CREATE INDEX IF NOT EXISTS workflow_tasks_due ON workflow_tasks (priority, next_run_at, seq)
    WHERE status IN (0, 2);
-- Crash recovery: expired leases.
CREATE INDEX IF NOT EXISTS workflow_tasks_lease ON workflow_tasks (lease_until) WHERE status = 1;
-- Pruning and listing.
CREATE INDEX IF NOT EXISTS workflow_tasks_finished ON workflow_tasks (finished_at) WHERE status >= 3;
CREATE INDEX IF NOT EXISTS workflow_tasks_status_seq ON workflow_tasks (status, seq);
CREATE TABLE IF NOT EXISTS workflow_attempts (
    task_id     TEXT NOT NULL,
    n           BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    response    TEXT,
    outcome     TEXT NOT NULL,
    PRIMARY KEY (task_id, n)
);
CREATE TABLE IF NOT EXISTS workflow_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    from_status SMALLINT,
    to_status   SMALLINT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS workflow_events_task ON workflow_events (task_id, id);
";

/// Schema migrations, in order; `workflow_schema_migrations` records the ones applied. Never
/// edit one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[MIGRATION_1];

/// The schema version this build migrates to.
pub const POSTGRES_SCHEMA_VERSION: usize = MIGRATIONS.len();

const TASK_COLS: &str = "seq, id, kind, priority, status, payload, target, attempt, tries, max_attempts, \
     next_run_at, lease_owner, lease_until, cancel_requested, created_at, updated_at, finished_at, \
     last_error, result, idempotency_key, callback";

fn status_code(s: TaskStatus) -> i16 {
    match s {
        TaskStatus::Pending => 0,
        TaskStatus::Processing => 1,
        TaskStatus::Retrying => 2,
        TaskStatus::Completed => 3,
        TaskStatus::Failed => 4,
        TaskStatus::Cancelled => 5,
    }
}

fn status_from(code: i16) -> StoreResult<TaskStatus> {
    TaskStatus::ALL
        .into_iter()
        .find(|s| status_code(*s) == code)
        .ok_or_else(|| StoreError::backend(format!("bad status code {code}")))
}

fn priority_from(rank: i16) -> StoreResult<Priority> {
    u8::try_from(rank)
        .ok()
        .and_then(Priority::from_rank)
        .ok_or_else(|| StoreError::backend(format!("bad priority rank {rank}")))
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn db_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::backend(e)
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn parse_json<T: serde::de::DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(StoreError::backend)
}

fn row_to_task(r: &Row) -> StoreResult<Task> {
    let payload: String = r.try_get(5).map_err(db_err)?;
    let result: Option<String> = r.try_get(18).map_err(db_err)?;
    let callback: Option<String> = r.try_get(20).map_err(db_err)?;
    let g = |i: usize| -> StoreResult<i64> { r.try_get::<_, i64>(i).map_err(db_err) };
    let go = |i: usize| -> StoreResult<Option<i64>> { r.try_get(i).map_err(db_err) };
    Ok(Task {
        seq: g(0)?,
        id: r.try_get(1).map_err(db_err)?,
        kind: r.try_get(2).map_err(db_err)?,
        priority: priority_from(r.try_get(3).map_err(db_err)?)?,
        status: status_from(r.try_get(4).map_err(db_err)?)?,
        payload: parse_json(&payload)?,
        target: r.try_get(6).map_err(db_err)?,
        attempt: u32_of(g(7)?),
        tries: u32_of(g(8)?),
        max_attempts: u32_of(g(9)?),
        next_run_at: go(10)?.map(time),
        lease_owner: r.try_get(11).map_err(db_err)?,
        lease_until: go(12)?.map(time),
        cancel_requested: r.try_get(13).map_err(db_err)?,
        created_at: time(g(14)?),
        updated_at: time(g(15)?),
        finished_at: go(16)?.map(time),
        last_error: r.try_get(17).map_err(db_err)?,
        result: result.as_deref().map(parse_json).transpose()?,
        idempotency_key: r.try_get(19).map_err(db_err)?,
        callback: callback.as_deref().map(parse_json).transpose()?,
    })
}

fn rows_to_tasks(rows: &[Row]) -> StoreResult<Vec<Task>> {
    rows.iter().map(row_to_task).collect()
}

/// The error of a pipelined group of writes in one transaction: the statement that failed,
/// not the ones after it, which only say "current transaction is aborted" (and may be the
/// first to complete, so `try_join!` would report them instead).
fn first_cause<const N: usize>(results: [StoreResult<()>; N]) -> StoreResult<()> {
    let mut aborted = None;
    for r in results {
        match r {
            Ok(()) => {}
            Err(e) if is_aborted_transaction(&e) => {
                aborted.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    aborted.map_or(Ok(()), Err)
}

fn is_aborted_transaction(e: &StoreError) -> bool {
    let StoreError::Backend(inner) = e else {
        return false;
    };
    inner
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
}

/// Anything that runs statements with cached preparation: a pooled client or a transaction.
trait Exec {
    async fn stmt(&self, sql: &str) -> StoreResult<tokio_postgres::Statement>;
    async fn rows(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>>;
    async fn exec(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<u64>;
}

macro_rules! impl_exec {
    ($t:ty) => {
        impl Exec for $t {
            async fn stmt(&self, sql: &str) -> StoreResult<tokio_postgres::Statement> {
                self.prepare_cached(sql).await.map_err(db_err)
            }
            async fn rows(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
                let st = self.stmt(sql).await?;
                self.query(&st, args).await.map_err(db_err)
            }
            async fn exec(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
                let st = self.stmt(sql).await?;
                self.execute(&st, args).await.map_err(db_err)
            }
        }
    };
}

impl_exec!(deadpool_postgres::Object);
impl_exec!(deadpool_postgres::Transaction<'_>);

async fn load_for_update(tx: &impl Exec, id: &str) -> StoreResult<Task> {
    let rows = tx
        .rows(
            &format!("SELECT {TASK_COLS} FROM workflow_tasks WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?;
    match rows.first() {
        Some(r) => row_to_task(r),
        None => Err(StoreError::NotFound(id.to_owned())),
    }
}

const SAVE_SQL: &str = "UPDATE workflow_tasks SET status = $2, attempt = $3, tries = $4, max_attempts = $5, \
     next_run_at = $6, lease_owner = $7, lease_until = $8, cancel_requested = $9, updated_at = $10, \
     finished_at = $11, last_error = $12, result = $13, callback = $14 WHERE seq = $1";

async fn save(tx: &impl Exec, t: &Task) -> StoreResult<()> {
    let result = t.result.as_ref().map(json_text);
    let callback = t.callback.as_ref().map(json_text);
    tx.exec(
        SAVE_SQL,
        &[
            &t.seq,
            &status_code(t.status),
            &i64::from(t.attempt),
            &i64::from(t.tries),
            &i64::from(t.max_attempts),
            &t.next_run_at.map(ms),
            &t.lease_owner,
            &t.lease_until.map(ms),
            &t.cancel_requested,
            &ms(t.updated_at),
            &t.finished_at.map(ms),
            &t.last_error,
            &result,
            &callback,
        ],
    )
    .await
    .map(drop)
}

async fn insert_events(tx: &impl Exec, events: &[TaskEvent]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.task_id.as_str()).collect();
    let ats: Vec<i64> = events.iter().map(|e| ms(e.at)).collect();
    let froms: Vec<Option<i16>> = events.iter().map(|e| e.from.map(status_code)).collect();
    let tos: Vec<i16> = events.iter().map(|e| status_code(e.to)).collect();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    tx.exec(
        "INSERT INTO workflow_events (task_id, at, from_status, to_status, reason) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::smallint[], $4::smallint[], $5::text[])",
        &[&ids, &ats, &froms, &tos, &reasons],
    )
    .await
    .map(drop)
}

/// Writes the attempt records of a finish batch, one statement for all. `ON CONFLICT` keeps a
/// rewritten attempt number idempotent, as the single-row insert was.
async fn insert_attempts(tx: &impl Exec, attempts: &[AttemptRecord]) -> StoreResult<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = attempts.iter().map(|a| a.task_id.as_str()).collect();
    let ns: Vec<i64> = attempts.iter().map(|a| i64::from(a.n)).collect();
    let started: Vec<i64> = attempts.iter().map(|a| ms(a.started_at)).collect();
    let durations: Vec<i64> = attempts
        .iter()
        .map(|a| i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
        .collect();
    let codes: Vec<Option<i32>> = attempts
        .iter()
        .map(|a| a.status_code.map(i32::from))
        .collect();
    let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
    let responses: Vec<Option<&str>> = attempts.iter().map(|a| a.response.as_deref()).collect();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    tx.exec(
        "INSERT INTO workflow_attempts (task_id, n, started_at, duration_ms, status_code, error, response, outcome) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::integer[], \
           $6::text[], $7::text[], $8::text[]) \
         ON CONFLICT (task_id, n) DO UPDATE SET started_at = EXCLUDED.started_at, \
         duration_ms = EXCLUDED.duration_ms, status_code = EXCLUDED.status_code, error = EXCLUDED.error, \
         response = EXCLUDED.response, outcome = EXCLUDED.outcome",
        &[
            &ids, &ns, &started, &durations, &codes, &errors, &responses, &outcomes,
        ],
    )
    .await
    .map(drop)
}

/// Writes the new state of many locked rows in one statement (every column [`save`] writes).
async fn save_many(tx: &impl Exec, tasks: &[&Task]) -> StoreResult<()> {
    if tasks.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = tasks.iter().map(|t| t.seq).collect();
    let statuses: Vec<i16> = tasks.iter().map(|t| status_code(t.status)).collect();
    let attempts: Vec<i64> = tasks.iter().map(|t| i64::from(t.attempt)).collect();
    let tries: Vec<i64> = tasks.iter().map(|t| i64::from(t.tries)).collect();
    let max_attempts: Vec<i64> = tasks.iter().map(|t| i64::from(t.max_attempts)).collect();
    let next_run_at: Vec<Option<i64>> = tasks.iter().map(|t| t.next_run_at.map(ms)).collect();
    let owners: Vec<Option<&str>> = tasks.iter().map(|t| t.lease_owner.as_deref()).collect();
    let lease_until: Vec<Option<i64>> = tasks.iter().map(|t| t.lease_until.map(ms)).collect();
    let cancel: Vec<bool> = tasks.iter().map(|t| t.cancel_requested).collect();
    let updated: Vec<i64> = tasks.iter().map(|t| ms(t.updated_at)).collect();
    let finished: Vec<Option<i64>> = tasks.iter().map(|t| t.finished_at.map(ms)).collect();
    let errors: Vec<Option<&str>> = tasks.iter().map(|t| t.last_error.as_deref()).collect();
    let results: Vec<Option<String>> = tasks
        .iter()
        .map(|t| t.result.as_ref().map(json_text))
        .collect();
    let callbacks: Vec<Option<String>> = tasks
        .iter()
        .map(|t| t.callback.as_ref().map(json_text))
        .collect();
    tx.exec(
        "UPDATE workflow_tasks AS t SET status = u.status, attempt = u.attempt, tries = u.tries, \
           max_attempts = u.max_attempts, next_run_at = u.next_run_at, lease_owner = u.lease_owner, \
           lease_until = u.lease_until, cancel_requested = u.cancel_requested, \
           updated_at = u.updated_at, finished_at = u.finished_at, last_error = u.last_error, \
           result = u.result, callback = u.callback \
         FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[], $5::bigint[], \
           $6::bigint[], $7::text[], $8::bigint[], $9::boolean[], $10::bigint[], $11::bigint[], \
           $12::text[], $13::text[], $14::text[]) \
           AS u(seq, status, attempt, tries, max_attempts, next_run_at, lease_owner, lease_until, \
             cancel_requested, updated_at, finished_at, last_error, result, callback) \
         WHERE t.seq = u.seq",
        &[
            &seqs,
            &statuses,
            &attempts,
            &tries,
            &max_attempts,
            &next_run_at,
            &owners,
            &lease_until,
            &cancel,
            &updated,
            &finished,
            &errors,
            &results,
            &callbacks,
        ],
    )
    .await
    .map(drop)
}

/// The earliest `next_run_at` of a pending or retrying task: one index probe per priority.
const EARLIEST_DUE: &str = "(SELECT min(d) FROM (\
     (SELECT next_run_at AS d FROM workflow_tasks WHERE status IN (0, 2) AND priority = 0 ORDER BY next_run_at LIMIT 1) UNION ALL \
     (SELECT next_run_at FROM workflow_tasks WHERE status IN (0, 2) AND priority = 1 ORDER BY next_run_at LIMIT 1) UNION ALL \
     (SELECT next_run_at FROM workflow_tasks WHERE status IN (0, 2) AND priority = 2 ORDER BY next_run_at LIMIT 1) UNION ALL \
     (SELECT next_run_at FROM workflow_tasks WHERE status IN (0, 2) AND priority = 3 ORDER BY next_run_at LIMIT 1)) AS due)";

/// PostgreSQL-backed store, for several engine instances sharing one database. Cheap to
/// clone; the listener, the notifier, the finishers and the enqueuers stop when the last clone
/// is dropped.
///
/// # Example
///
/// ```no_run
/// use workflow_core::{PostgresConfig, PostgresStore, Store};
///
/// # async fn demo() -> Result<(), workflow_core::StoreError> {
/// let mut config = PostgresConfig::new("postgres://app:secret@db.internal:5432/dispatch");
/// config.pool_size = 32;
/// let store = PostgresStore::connect(config).await?; // migrates, then listens
/// store.ping().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: PostgresConfig,
    /// This instance's tag in `NOTIFY` payloads, so its own notifications are not echoed.
    instance: String,
    wakeup: Arc<Notify>,
    /// Asks the notifier task to send one `NOTIFY` (requests made while one is in flight
    /// coalesce into the next).
    outgoing: Arc<Notify>,
    /// Active-task count last seen by this instance, and when (shared with the enqueuers).
    active_estimate: Estimate,
    /// A background refresh of `active_estimate` is running.
    refreshing: AtomicBool,
    /// The finishers' queue. Dropped with the last clone, which lets them drain it and stop.
    finishes: mpsc::UnboundedSender<FinishRequest>,
    /// The enqueuers' queue, likewise.
    enqueues: mpsc::UnboundedSender<EnqueueRequest>,
    /// Stops the listener when the last clone is dropped.
    _stop: DropGuard,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("config", &self.inner.config)
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects, applies pending migrations, and starts the `LISTEN` connection.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the URL is invalid, the database cannot be reached, a
    /// migration fails, or the database was migrated by a newer build.
    pub async fn connect(config: PostgresConfig) -> StoreResult<PostgresStore> {
        let pg = config.pg_config()?;
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(config.pool_wait))
            .create_timeout(Some(config.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(StoreError::backend)?;
        PostgresStore::migrate(&config).await?;
        let stop = CancellationToken::new();
        let wakeup = Arc::new(Notify::new());
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let outgoing = Arc::new(Notify::new());
        tokio::spawn(notify_loop(
            pool.clone(),
            instance.clone(),
            outgoing.clone(),
            stop.clone(),
        ));
        let (finishes, queue) = mpsc::unbounded_channel();
        let queue: FinishQueue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..FINISHERS {
            // Stops by itself: `recv_many` says closed once the last store clone is gone.
            tokio::spawn(finish_loop(pool.clone(), queue.clone()));
        }
        let active_estimate: Estimate = Arc::new(Mutex::new(None));
        let (enqueues, queue) = mpsc::unbounded_channel();
        let queue: EnqueueQueue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..ENQUEUERS {
            // Stops by itself, as the finishers do.
            tokio::spawn(enqueue_loop(
                pool.clone(),
                active_estimate.clone(),
                queue.clone(),
            ));
        }
        if config.listen {
            tokio::spawn(listen_loop(
                pg,
                instance.clone(),
                wakeup.clone(),
                stop.clone(),
            ));
        }
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                config,
                instance,
                wakeup,
                outgoing,
                active_estimate,
                refreshing: AtomicBool::new(false),
                finishes,
                enqueues,
                _stop: stop.drop_guard(),
            }),
        })
    }

    /// Applies pending migrations and returns the schema version, without starting a store
    /// (the binaries' `migrate` subcommand).
    ///
    /// # Errors
    ///
    /// As [`PostgresStore::connect`].
    pub async fn migrate(config: &PostgresConfig) -> StoreResult<usize> {
        let (mut client, conn) = config.pg_config()?.connect(NoTls).await.map_err(db_err)?;
        let driver = tokio::spawn(conn);
        let r = migrate_raw(&mut client).await;
        drop(client);
        let _ = driver.await;
        r
    }

    /// The pool's current state: `(connections, idle, waiting callers)`, for gauges.
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let s = self.inner.pool.status();
        (s.size, s.available, s.waiting)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        pooled(&self.inner.pool).await
    }

    /// After a commit that made work due: wakes this engine at once and has the notifier
    /// tell the other instances.
    fn wake(&self) {
        // notify_one keeps a permit when the engine is not waiting right now.
        self.inner.wakeup.notify_one();
        self.inner.outgoing.notify_one();
    }

    fn wake_local(&self) {
        self.inner.wakeup.notify_one();
    }

    /// Runs one transition on one task, in one transaction.
    async fn transition<R: Send>(
        &self,
        id: &str,
        wake: bool,
        f: impl FnOnce(&mut Task) -> StoreResult<(R, Option<TaskEvent>)> + Send,
    ) -> StoreResult<(Task, R)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let mut task = load_for_update(&tx, id).await?;
        let (out, ev) = f(&mut task)?;
        let events: Vec<TaskEvent> = ev.into_iter().collect();
        let (a, b) = tokio::join!(save(&tx, &task), insert_events(&tx, &events));
        first_cause([a, b])?;
        tx.commit().await.map_err(db_err)?;
        if wake {
            self.wake();
        }
        Ok((task, out))
    }

    /// Whether the queue limit needs an exact count now: when this instance has no recent
    /// count, or the count is within a tenth of the limit. A count older than a second is
    /// refreshed in the background by one caller while the others go on with it.
    fn limit_needs_check(&self, limit: u64, adding: u64) -> bool {
        let estimate = *self.inner.active_estimate.lock();
        if let Some((_, at)) = estimate
            && far_below_limit(estimate, limit, adding)
            && at.elapsed() >= Duration::from_secs(1)
            && !self.inner.refreshing.swap(true, Ordering::AcqRel)
        {
            let store = self.clone();
            tokio::spawn(async move {
                if let Err(e) = store.refresh_estimate().await {
                    tracing::debug!(error = %e, "could not refresh the active count");
                }
                store.inner.refreshing.store(false, Ordering::Release);
            });
        }
        !far_below_limit(estimate, limit, adding)
    }

    async fn refresh_estimate(&self) -> StoreResult<()> {
        let client = self.client().await?;
        let rows = client.rows(ACTIVE_COUNT, &[]).await?;
        let n: i64 = rows
            .first()
            .map_or(Ok(0), |r| r.try_get(0))
            .map_err(db_err)?;
        *self.inner.active_estimate.lock() = Some((u64::try_from(n).unwrap_or(0), Instant::now()));
        Ok(())
    }

    fn bump_estimate(&self, added: u64) {
        if let Some((n, _)) = self.inner.active_estimate.lock().as_mut() {
            *n = n.saturating_add(added);
        }
    }

    /// Exact active count, under a lock that serialises near-limit enqueues.
    async fn locked_active_count(&self, tx: &impl Exec) -> StoreResult<u64> {
        locked_active_count(tx, &self.inner.active_estimate).await
    }

    async fn enqueue_many(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
    ) -> StoreResult<Vec<Enqueued>> {
        let now = Utc::now();
        let exact = limits
            .max_active
            .filter(|limit| self.limit_needs_check(*limit, tasks.len() as u64));
        let mut client = self.client().await?;
        if tasks.len() == 1 && exact.is_none() {
            // One statement inserts the row and its event: atomic without a transaction
            // block, so one round trip.
            let mut out = Vec::with_capacity(1);
            for new in tasks {
                out.push(insert_one(&client, new, now).await?);
            }
            self.after_enqueue(&out);
            return Ok(out);
        }
        let tx = client.transaction().await.map_err(db_err)?;
        let start = match exact {
            Some(_) => Some(self.locked_active_count(&tx).await?),
            None => None,
        };
        let mut out = Vec::with_capacity(tasks.len());
        for new in tasks {
            out.push(insert_one(&tx, new, now).await?);
        }
        let fresh = out
            .iter()
            .filter(|e| matches!(e, Enqueued::Created(_)))
            .count() as u64;
        if let (Some(limit), Some(start)) = (exact, start)
            && fresh > 0
            && start + fresh > limit
        {
            return Err(StoreError::QueueFull { limit });
        }
        tx.commit().await.map_err(db_err)?;
        self.after_enqueue(&out);
        Ok(out)
    }

    fn after_enqueue(&self, out: &[Enqueued]) {
        let fresh = out
            .iter()
            .filter(|e| matches!(e, Enqueued::Created(_)))
            .count() as u64;
        self.bump_estimate(fresh);
        if fresh > 0 {
            self.wake();
        }
    }
}

/// A pooled connection; a pool error is counted for `workflow_store_pool_errors_total`.
async fn pooled(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    pool.get().await.map_err(|e| {
        metrics::counter!("workflow_store_pool_errors_total").increment(1);
        StoreError::backend(format!("PostgreSQL pool: {e}"))
    })
}

const ACTIVE_COUNT: &str = "SELECT count(*) FROM workflow_tasks WHERE status IN (0, 1, 2)";

/// This instance's last active-task count and when it was taken.
type Estimate = Arc<Mutex<Option<(u64, Instant)>>>;

/// Whether a recent count (under five seconds old) says the queue is far enough below `limit`
/// (by more than a tenth of it, at least 64) to add `adding` tasks without an exact count.
fn far_below_limit(estimate: Option<(u64, Instant)>, limit: u64, adding: u64) -> bool {
    let slack = (limit / 10).max(64);
    matches!(estimate, Some((n, at))
        if n.saturating_add(adding).saturating_add(slack) < limit
            && at.elapsed() < Duration::from_secs(5))
}

/// Exact active count, under a lock that serialises near-limit enqueues (held to the end of
/// the transaction); it also refreshes the estimate.
async fn locked_active_count(tx: &impl Exec, estimate: &Estimate) -> StoreResult<u64> {
    tx.exec("SELECT pg_advisory_xact_lock($1)", &[&LIMIT_LOCK])
        .await?;
    let rows = tx.rows(ACTIVE_COUNT, &[]).await?;
    let n: i64 = rows
        .first()
        .map_or(Ok(0), |r| r.try_get(0))
        .map_err(db_err)?;
    let n = u64::try_from(n).unwrap_or(0);
    *estimate.lock() = Some((n, Instant::now()));
    Ok(n)
}

const INSERT_TASK: &str = "WITH ins AS (\
       INSERT INTO workflow_tasks (id, kind, priority, status, payload, target, attempt, tries, \
         max_attempts, next_run_at, cancel_requested, created_at, updated_at, idempotency_key) \
       VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $8, FALSE, $9, $9, $10) \
       ON CONFLICT DO NOTHING RETURNING seq, id), \
     ev AS (INSERT INTO workflow_events (task_id, at, from_status, to_status, reason) \
       SELECT id, $9, NULL, $4, 'created' FROM ins) \
     SELECT seq FROM ins";

/// Inserts one task with its `created` event; an existing idempotency key gives the existing
/// task, an existing id [`StoreError::Duplicate`].
async fn insert_one(ex: &impl Exec, new: NewTask, now: DateTime<Utc>) -> StoreResult<Enqueued> {
    insert_task(ex, logic::create(new, 0, now).0).await
}

/// [`insert_one`] of a task built by `logic::create`.
async fn insert_task(ex: &impl Exec, mut task: Task) -> StoreResult<Enqueued> {
    let payload = json_text(&task.payload);
    let rows = ex
        .rows(
            INSERT_TASK,
            &[
                &task.id,
                &task.kind,
                &i16::from(task.priority.rank()),
                &status_code(task.status),
                &payload,
                &task.target,
                &i64::from(task.max_attempts),
                &task.next_run_at.map(ms),
                &ms(task.created_at),
                &task.idempotency_key,
            ],
        )
        .await?;
    if let Some(row) = rows.first() {
        task.seq = row.try_get(0).map_err(db_err)?;
        return Ok(Enqueued::Created(task));
    }
    // A unique constraint held: the idempotency key (an existing task) or the id.
    if let Some(key) = &task.idempotency_key {
        let existing = ex
            .rows(
                &format!("SELECT {TASK_COLS} FROM workflow_tasks WHERE idempotency_key = $1"),
                &[key],
            )
            .await?;
        if let Some(r) = existing.first() {
            return Ok(Enqueued::Existing(row_to_task(r)?));
        }
    }
    Err(StoreError::Duplicate(task.id))
}

async fn migrate_raw(client: &mut tokio_postgres::Client) -> StoreResult<usize> {
    let tx = client.transaction().await.map_err(db_err)?;
    // Held until commit: a second instance starting now waits here, then sees our rows.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS workflow_schema_migrations (\
           version    INTEGER PRIMARY KEY, \
           applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(db_err)?;
    let row = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM workflow_schema_migrations",
            &[],
        )
        .await
        .map_err(db_err)?;
    let version: i32 = row.try_get(0).map_err(db_err)?;
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::backend(format!(
            "database schema version {version} is newer than this build supports ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql).await.map_err(db_err)?;
        let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO workflow_schema_migrations (version) VALUES ($1)",
            &[&v],
        )
        .await
        .map_err(db_err)?;
        tracing::info!(version = v, "postgres schema migrated");
    }
    tx.commit().await.map_err(db_err)?;
    Ok(MIGRATIONS.len())
}

/// Sends one `NOTIFY` per request, coalescing the requests that arrive while one is in flight.
///
/// Not inside the writing transaction: PostgreSQL serialises the commits of every transaction
/// that sent a `NOTIFY` (a cluster-wide lock held through the commit's WAL flush), which capped
/// enqueues at one fsync each, about 275/s on this machine, where plain commits group to
/// thousands per second. After the commit is as safe (nobody is woken before the row is
/// visible) and costs one tiny statement per burst of enqueues.
async fn notify_loop(pool: Pool, instance: String, outgoing: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = outgoing.notified() => {}
            () = stop.cancelled() => return,
        }
        let sent = match pool.get().await {
            Ok(client) => client
                .execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &instance])
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            // The other instances still find the work at their next poll.
            tracing::warn!(error = %e, "postgres NOTIFY failed");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

// === group-committed finishes ===

/// One queued [`Store::finish_attempt`] call, answered on `reply` after its batch commits.
struct FinishRequest {
    fence: Fence,
    attempt: AttemptRecord,
    completion: Completion,
    now: DateTime<Utc>,
    reply: oneshot::Sender<StoreResult<Task>>,
}

/// The finishers' shared end of the queue: the one holding the lock is the next to take a
/// batch, so the finishers take turns and never split one burst between them.
type FinishQueue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<FinishRequest>>>;

/// Takes whatever finishes are queued (at least one, at most [`FINISH_BATCH`]) and writes
/// them in one transaction, until every sender (store clone) is gone and the queue is empty.
async fn finish_loop(pool: Pool, queue: FinishQueue) {
    let mut batch = Vec::with_capacity(FINISH_BATCH);
    loop {
        {
            // Sleeps until a request arrives; then takes what is there now, without waiting
            // for more. The lock is released before the batch touches the database.
            let mut rx = queue.lock().await;
            if rx.recv_many(&mut batch, FINISH_BATCH).await == 0 {
                return; // closed and drained
            }
        }
        finish_batch(&pool, &mut batch).await;
    }
}

/// Writes one batch and answers every request in it (draining `batch`).
async fn finish_batch(pool: &Pool, batch: &mut Vec<FinishRequest>) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut work = Vec::with_capacity(batch.len());
    for r in batch.drain(..) {
        replies.push(r.reply);
        work.push((r.fence, r.attempt, r.completion, r.now));
    }
    match write_finishes(pool, work).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that stopped waiting no longer needs the answer.
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            let error = error_chain(&e);
            tracing::warn!(%error, tasks = replies.len(), "postgres finish batch failed");
            let shared = SharedError::from(e);
            for reply in replies {
                let _ = reply.send(Err(StoreError::Backend(Box::new(shared.clone()))));
            }
        }
    }
}

/// Applies a batch of finishes in one transaction: the outcome of each request, in order, or
/// the database error that failed them all (nothing of the batch is then written).
async fn write_finishes(
    pool: &Pool,
    work: Vec<(Fence, AttemptRecord, Completion, DateTime<Utc>)>,
) -> StoreResult<Vec<StoreResult<Task>>> {
    let ids: Vec<&str> = work.iter().map(|(f, ..)| f.task_id.as_str()).collect();
    let mut client = pooled(pool).await?;
    let tx = client.transaction().await.map_err(db_err)?;
    // In seq order, as every batch of every instance locks: no two batches wait on each
    // other in a cycle.
    let rows = tx
        .rows(
            &format!(
                "SELECT {TASK_COLS} FROM workflow_tasks WHERE id = ANY($1::text[]) \
                 ORDER BY seq FOR UPDATE"
            ),
            &[&ids],
        )
        .await?;
    let mut tasks: HashMap<String, Result<Task, SharedError>> = HashMap::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get(1).map_err(db_err)?;
        // A row that does not parse fails only its own finishes.
        tasks.insert(id, row_to_task(r).map_err(SharedError::from));
    }
    let mut outcomes = Vec::with_capacity(work.len());
    let mut changed: Vec<String> = Vec::new();
    let mut attempts = Vec::with_capacity(work.len());
    let mut events = Vec::with_capacity(work.len());
    // In request order, each against the row as the requests before it left it (a second
    // finish of one claim in the same batch is fenced, as it would be one after the other).
    for (fence, mut attempt, completion, now) in work {
        let outcome = match tasks.get_mut(&fence.task_id) {
            None => Err(StoreError::NotFound(fence.task_id)),
            Some(Err(e)) => Err(StoreError::Backend(Box::new(e.clone()))),
            Some(Ok(task)) => logic::check_fence(task, &fence).map(|()| {
                events.push(logic::finish_attempt(task, &mut attempt, completion, now));
                attempts.push(attempt);
                if !changed.contains(&fence.task_id) {
                    changed.push(fence.task_id);
                }
                task.clone()
            }),
        };
        outcomes.push(outcome);
    }
    if changed.is_empty() {
        drop(tx); // rolls back: nothing to write, only locks to let go
        return Ok(outcomes);
    }
    let saved: Vec<&Task> = changed
        .iter()
        .filter_map(|id| tasks.get(id).and_then(|t| t.as_ref().ok()))
        .collect();
    let (a, b, c) = tokio::join!(
        save_many(&tx, &saved),
        insert_attempts(&tx, &attempts),
        insert_events(&tx, &events),
    );
    first_cause([a, b, c])?;
    tx.commit().await.map_err(db_err)?;
    Ok(outcomes)
}

/// One error given to every request of a failed batch ([`StoreError`] is not `Clone`): its
/// message and source are the original's.
#[derive(Debug, Clone)]
struct SharedError(Arc<dyn std::error::Error + Send + Sync>);

impl From<StoreError> for SharedError {
    fn from(e: StoreError) -> SharedError {
        match e {
            StoreError::Backend(inner) => SharedError(Arc::from(inner)),
            other => SharedError(Arc::new(other)),
        }
    }
}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// An error and its sources on one line, for the log (a database error's detail, such as the
/// constraint, is in its source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

// === group-committed enqueues ===

/// The most enqueues one group-commit transaction carries (as [`FINISH_BATCH`]).
const ENQUEUE_BATCH: usize = 256;

/// Background enqueuer tasks per store (as [`FINISHERS`]).
const ENQUEUERS: usize = 2;

/// One queued [`Store::enqueue`] call, answered on `reply` after its batch commits.
struct EnqueueRequest {
    /// The row to insert, built by `logic::create` when the call was made.
    task: Task,
    /// The queue limit, if any, and whether the caller's estimate already asked for an exact
    /// count.
    limit: Option<u64>,
    exact: bool,
    reply: oneshot::Sender<StoreResult<Enqueued>>,
}

/// The enqueuers' shared end of the queue (see [`FinishQueue`]).
type EnqueueQueue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<EnqueueRequest>>>;

/// One request of a batch as the writer sees it: the row, and the limit to check exactly
/// (`None`: no limit, or far below it).
struct EnqueueWork {
    task: Task,
    exact_limit: Option<u64>,
}

/// Takes whatever enqueues are queued (at least one, at most [`ENQUEUE_BATCH`]) and writes
/// them in one transaction, until every sender (store clone) is gone and the queue is empty.
async fn enqueue_loop(pool: Pool, estimate: Estimate, queue: EnqueueQueue) {
    let mut batch = Vec::with_capacity(ENQUEUE_BATCH);
    loop {
        {
            let mut rx = queue.lock().await;
            if rx.recv_many(&mut batch, ENQUEUE_BATCH).await == 0 {
                return; // closed and drained
            }
        }
        enqueue_batch(&pool, &estimate, &mut batch).await;
    }
}

/// Writes one batch of enqueues and answers every request in it (draining `batch`).
async fn enqueue_batch(pool: &Pool, estimate: &Estimate, batch: &mut Vec<EnqueueRequest>) {
    // The callers judged the limit one task at a time; the batch adds all of them.
    let seen = *estimate.lock();
    let adding = batch.len() as u64;
    let mut replies = Vec::with_capacity(batch.len());
    let mut work = Vec::with_capacity(batch.len());
    for r in batch.drain(..) {
        replies.push(r.reply);
        let exact = r.exact;
        work.push(EnqueueWork {
            task: r.task,
            exact_limit: r
                .limit
                .filter(|limit| exact || !far_below_limit(seen, *limit, adding)),
        });
    }
    let outcomes = match write_enqueues(pool, estimate, &work).await {
        Ok(outcomes) => outcomes,
        Err(e) if work.len() > 1 && is_row_error(&e) => {
            // One request's values were refused (say, an id too long for its index): write
            // each alone, so only that one fails.
            tracing::debug!(error = %error_chain(&e), "postgres enqueue batch refused; writing one by one");
            let mut outcomes = Vec::with_capacity(work.len());
            for w in &work {
                let one = write_enqueues(pool, estimate, std::slice::from_ref(w)).await;
                outcomes.push(one.and_then(|mut v| {
                    v.pop()
                        .unwrap_or_else(|| Err(StoreError::backend("enqueue returned nothing")))
                }));
            }
            outcomes
        }
        Err(e) => {
            let error = error_chain(&e);
            tracing::warn!(%error, tasks = replies.len(), "postgres enqueue batch failed");
            let shared = SharedError::from(e);
            work.iter()
                .map(|_| Err(StoreError::Backend(Box::new(shared.clone()))))
                .collect()
        }
    };
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // A caller that stopped waiting no longer needs the answer.
        let _ = reply.send(outcome);
    }
}

/// A database error about the values of a row (SQLSTATE class 22, data exception, or 54,
/// program limit exceeded) rather than the database or the connection.
fn is_row_error(e: &StoreError) -> bool {
    let StoreError::Backend(inner) = e else {
        return false;
    };
    inner
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("54"))
}

/// What the writer decided for one request of a planning round.
enum Plan {
    Create,
    Existing(Box<Task>),
    /// Existing: the task an earlier request of this round creates.
    ExistingPlanned(usize),
    Duplicate,
    Full(u64),
}

/// Applies a batch of enqueues in one transaction: the outcome of each request, in order, or
/// the database error that failed them all (nothing of the batch is then written).
///
/// The statements never fail on a conflict: the requests are planned in Rust (a key already
/// seen is `Existing`, an id already seen `Duplicate`, a creation past an exactly checked
/// limit `QueueFull`, each counting the batch's earlier creations), the creations are one
/// `INSERT ... ON CONFLICT DO NOTHING RETURNING` with their events, and a row that conflicted
/// with one this round did not know of (committed meanwhile by someone else) is looked up and
/// answered as `insert_one` would; the requests after it are planned again with what the
/// lookup found, so they never depend on a creation that did not happen.
async fn write_enqueues(
    pool: &Pool,
    estimate: &Estimate,
    work: &[EnqueueWork],
) -> StoreResult<Vec<StoreResult<Enqueued>>> {
    let mut client = pooled(pool).await?;
    if let [one] = work
        && one.exact_limit.is_none()
    {
        // A lone enqueue far from any limit: one statement, no transaction block.
        return Ok(vec![insert_task(&client, one.task.clone()).await]);
    }
    let tx = client.transaction().await.map_err(db_err)?;
    // Rows known to exist: found by a lookup, or created by this batch.
    let mut by_key: HashMap<String, Task> = HashMap::new();
    let mut ids: HashSet<String> = HashSet::new();
    let start = if work.iter().any(|w| w.exact_limit.is_some()) {
        // Near the limit an existing key or id must still be `Existing` or `Duplicate`, not
        // `QueueFull`, so look them all up first (after the lock: pipelined behind it).
        let all_ids: Vec<&str> = work.iter().map(|w| w.task.id.as_str()).collect();
        let all_keys: Vec<&str> = work
            .iter()
            .filter_map(|w| w.task.idempotency_key.as_deref())
            .collect();
        let (count, rows) = tokio::join!(
            locked_active_count(&tx, estimate),
            lookup(&tx, &all_ids, &all_keys)
        );
        let count = count?;
        learn(&rows?, &mut ids, &mut by_key)?;
        Some(count)
    } else {
        None
    };
    let mut outcomes: Vec<Option<StoreResult<Enqueued>>> = work.iter().map(|_| None).collect();
    let mut created = 0u64;
    let mut from = 0;
    while from < work.len() {
        let mut plans: Vec<(usize, Plan)> = Vec::new();
        let mut planned_keys: HashMap<&str, usize> = HashMap::new();
        let mut planned_ids: HashSet<&str> = HashSet::new();
        for (i, w) in work.iter().enumerate().skip(from) {
            if outcomes[i].is_some() {
                continue;
            }
            let t = &w.task;
            let key = t.idempotency_key.as_deref();
            let plan = if let Some(found) = key.and_then(|k| by_key.get(k)) {
                Plan::Existing(Box::new(found.clone()))
            } else if let Some(j) = key.and_then(|k| planned_keys.get(k)) {
                Plan::ExistingPlanned(*j)
            } else if ids.contains(&t.id) || planned_ids.contains(t.id.as_str()) {
                Plan::Duplicate
            } else if let (Some(limit), Some(start)) = (w.exact_limit, start)
                && start + created + planned_ids.len() as u64 + 1 > limit
            {
                Plan::Full(limit)
            } else {
                planned_ids.insert(&t.id);
                if let Some(k) = key {
                    planned_keys.insert(k, i);
                }
                Plan::Create
            };
            plans.push((i, plan));
        }
        let creates: Vec<&Task> = plans
            .iter()
            .filter(|(_, p)| matches!(p, Plan::Create))
            .map(|(i, _)| &work[*i].task)
            .collect();
        let seqs = insert_tasks(&tx, &creates).await?;
        let conflicted: Vec<usize> = plans
            .iter()
            .filter(|(i, p)| matches!(p, Plan::Create) && !seqs.contains_key(&work[*i].task.id))
            .map(|(i, _)| *i)
            .collect();
        if !conflicted.is_empty() {
            let c_ids: Vec<&str> = conflicted
                .iter()
                .map(|i| work[*i].task.id.as_str())
                .collect();
            let c_keys: Vec<&str> = conflicted
                .iter()
                .filter_map(|i| work[*i].task.idempotency_key.as_deref())
                .collect();
            learn(&lookup(&tx, &c_ids, &c_keys).await?, &mut ids, &mut by_key)?;
        }
        let first_conflict = conflicted.first().copied().unwrap_or(work.len());
        for (i, plan) in plans {
            let t = &work[i].task;
            let outcome = match plan {
                Plan::Create => match seqs.get(&t.id) {
                    Some(seq) => {
                        let mut task = t.clone();
                        task.seq = *seq;
                        created += 1;
                        ids.insert(task.id.clone());
                        if let Some(k) = &task.idempotency_key {
                            by_key.insert(k.clone(), task.clone());
                        }
                        Ok(Enqueued::Created(task))
                    }
                    // Conflicted: as `insert_one` answers it.
                    None => match t.idempotency_key.as_ref().and_then(|k| by_key.get(k)) {
                        Some(found) => Ok(Enqueued::Existing(found.clone())),
                        None => Err(StoreError::Duplicate(t.id.clone())),
                    },
                },
                // Planned on creations that may not have happened: plan again.
                _ if i > first_conflict => continue,
                Plan::Existing(found) => Ok(Enqueued::Existing(*found)),
                Plan::ExistingPlanned(j) => match &outcomes[j] {
                    Some(Ok(Enqueued::Created(task))) => Ok(Enqueued::Existing(task.clone())),
                    _ => return Err(StoreError::backend("enqueue batch planned out of order")),
                },
                Plan::Duplicate => Err(StoreError::Duplicate(t.id.clone())),
                Plan::Full(limit) => Err(StoreError::QueueFull { limit }),
            };
            outcomes[i] = Some(outcome);
        }
        from = first_conflict + 1;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(StoreError::backend("enqueue left unanswered"))))
        .collect())
}

/// Records looked-up rows as known: their ids, and their tasks by idempotency key.
fn learn(
    rows: &[Row],
    ids: &mut HashSet<String>,
    by_key: &mut HashMap<String, Task>,
) -> StoreResult<()> {
    for r in rows {
        let t = row_to_task(r)?;
        ids.insert(t.id.clone());
        if let Some(k) = t.idempotency_key.clone() {
            by_key.insert(k, t);
        }
    }
    Ok(())
}

/// The tasks with any of these ids or idempotency keys.
async fn lookup(tx: &impl Exec, ids: &[&str], keys: &[&str]) -> StoreResult<Vec<Row>> {
    tx.rows(
        &format!(
            "SELECT {TASK_COLS} FROM workflow_tasks \
             WHERE id = ANY($1::text[]) OR idempotency_key = ANY($2::text[])"
        ),
        &[&ids, &keys],
    )
    .await
}

/// Inserts many new tasks and their `created` events in one statement, in the given order;
/// a row that conflicts (id or idempotency key) is skipped. The `seq` of each row inserted,
/// by id.
async fn insert_tasks(tx: &impl Exec, tasks: &[&Task]) -> StoreResult<HashMap<String, i64>> {
    if tasks.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let kinds: Vec<&str> = tasks.iter().map(|t| t.kind.as_str()).collect();
    let priorities: Vec<i16> = tasks.iter().map(|t| i16::from(t.priority.rank())).collect();
    let statuses: Vec<i16> = tasks.iter().map(|t| status_code(t.status)).collect();
    let payloads: Vec<String> = tasks.iter().map(|t| json_text(&t.payload)).collect();
    let targets: Vec<Option<&str>> = tasks.iter().map(|t| t.target.as_deref()).collect();
    let max_attempts: Vec<i64> = tasks.iter().map(|t| i64::from(t.max_attempts)).collect();
    let next_run_at: Vec<Option<i64>> = tasks.iter().map(|t| t.next_run_at.map(ms)).collect();
    let created: Vec<i64> = tasks.iter().map(|t| ms(t.created_at)).collect();
    let keys: Vec<Option<&str>> = tasks.iter().map(|t| t.idempotency_key.as_deref()).collect();
    let rows = tx
        .rows(
            "WITH u AS (SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], \
               $4::smallint[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], \
               $10::text[]) WITH ORDINALITY AS u(id, kind, priority, status, payload, target, \
               max_attempts, next_run_at, created_at, idempotency_key, ord)), \
             ins AS (INSERT INTO workflow_tasks (id, kind, priority, status, payload, target, \
               attempt, tries, max_attempts, next_run_at, cancel_requested, created_at, \
               updated_at, idempotency_key) \
               SELECT id, kind, priority, status, payload, target, 0, 0, max_attempts, \
                 next_run_at, FALSE, created_at, created_at, idempotency_key FROM u ORDER BY ord \
               ON CONFLICT DO NOTHING RETURNING seq, id, status, created_at), \
             ev AS (INSERT INTO workflow_events (task_id, at, from_status, to_status, reason) \
               SELECT id, created_at, NULL, status, 'created' FROM ins ORDER BY seq) \
             SELECT id, seq FROM ins",
            &[
                &ids,
                &kinds,
                &priorities,
                &statuses,
                &payloads,
                &targets,
                &max_attempts,
                &next_run_at,
                &created,
                &keys,
            ],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?)))
        .collect()
}

/// Keeps one connection `LISTEN`ing and wakes the engine on other instances' notifications.
async fn listen_loop(
    config: tokio_postgres::Config,
    instance: String,
    wakeup: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    let mut first = true;
    while !stop.is_cancelled() {
        match listen_once(&config, &instance, &wakeup, &stop, first).await {
            Ok(()) => return, // stopped
            Err(e) => {
                if !stop.is_cancelled() {
                    metrics::counter!("workflow_store_listener_reconnects_total").increment(1);
                    tracing::warn!(error = %e, retry_in = ?backoff, "postgres listener lost; reconnecting");
                }
            }
        }
        first = false;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    instance: &str,
    wakeup: &Notify,
    stop: &CancellationToken,
    first: bool,
) -> Result<(), String> {
    let (client, mut conn) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    let closed = || "connection closed by the server".to_owned();
    let listen_sql = format!("LISTEN {NOTIFY_CHANNEL}");
    let listen = client.batch_execute(&listen_sql);
    tokio::pin!(listen);
    // The connection must be driven while LISTEN runs.
    loop {
        tokio::select! {
            r = &mut listen => { r.map_err(|e| e.to_string())?; break; }
            m = futures::StreamExt::next(&mut messages) => match m {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err(closed()),
            },
        }
    }
    if !first {
        // Notifications sent while we were away are lost: look for work now.
        wakeup.notify_one();
    }
    tracing::debug!("postgres listener connected");
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            m = futures::StreamExt::next(&mut messages) => match m {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if n.payload() != instance {
                        wakeup.notify_one();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err(closed()),
            },
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn enqueue(&self, task: NewTask, limits: EnqueueLimits) -> StoreResult<Enqueued> {
        // Group commit: an enqueuer writes this with whatever else is queued (module docs).
        let exact = limits
            .max_active
            .is_some_and(|limit| self.limit_needs_check(limit, 1));
        let (reply, answer) = oneshot::channel();
        self.inner
            .enqueues
            .send(EnqueueRequest {
                task: logic::create(task, 0, Utc::now()).0,
                limit: limits.max_active,
                exact,
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        // An enqueuer gone (its runtime shut down) drops the reply: an error, never a hang.
        let out = answer.await.map_err(|_| StoreError::Closed)??;
        self.after_enqueue(std::slice::from_ref(&out));
        Ok(out)
    }

    async fn enqueue_batch(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
    ) -> StoreResult<Vec<Enqueued>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        self.enqueue_many(tasks, limits).await
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
        let started = Instant::now();
        let now_ms = ms(now);
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let skip: Vec<&str> = skip_targets.iter().map(String::as_str).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let due_sql = format!(
            "SELECT {TASK_COLS} FROM workflow_tasks \
             WHERE status IN (0, 2) AND priority = $1 AND next_run_at <= $2 \
               AND (target IS NULL OR target <> ALL($3::text[])) \
             ORDER BY next_run_at, seq LIMIT $4 FOR UPDATE SKIP LOCKED"
        );
        let lease_sql = format!(
            "SELECT {TASK_COLS} FROM workflow_tasks \
             WHERE status = 1 AND lease_until <= $1 \
               AND (target IS NULL OR target <> ALL($2::text[])) \
             ORDER BY lease_until, seq LIMIT $3 FOR UPDATE SKIP LOCKED"
        );
        let ranks: [i16; 4] = [0, 1, 2, 3];
        // Every query at once (pipelined on the one connection): one round trip.
        let a0: [&(dyn ToSql + Sync); 4] = [&ranks[0], &now_ms, &skip, &limit];
        let a1: [&(dyn ToSql + Sync); 4] = [&ranks[1], &now_ms, &skip, &limit];
        let a2: [&(dyn ToSql + Sync); 4] = [&ranks[2], &now_ms, &skip, &limit];
        let a3: [&(dyn ToSql + Sync); 4] = [&ranks[3], &now_ms, &skip, &limit];
        let al: [&(dyn ToSql + Sync); 3] = [&now_ms, &skip, &limit];
        let (p0, p1, p2, p3, expired) = tokio::try_join!(
            tx.rows(&due_sql, &a0),
            tx.rows(&due_sql, &a1),
            tx.rows(&due_sql, &a2),
            tx.rows(&due_sql, &a3),
            tx.rows(&lease_sql, &al),
        )?;
        let mut candidates = Vec::new();
        for rows in [p0, p1, p2, p3, expired] {
            candidates.extend(rows_to_tasks(&rows)?);
        }
        if candidates.is_empty() {
            drop(tx); // rolls back: nothing was locked
            return Ok(Vec::new());
        }
        // Claim order: priority, then due time (or lease end), then creation order.
        candidates.sort_by_key(|t| {
            let due = t.next_run_at.or(t.lease_until).map_or(i64::MIN, ms);
            (t.priority.rank(), due, t.seq)
        });
        candidates.truncate(max);
        let mut events = Vec::with_capacity(candidates.len());
        for t in &mut candidates {
            events.push(logic::claim(t, owner, now, lease));
        }
        let seqs: Vec<i64> = candidates.iter().map(|t| t.seq).collect();
        let attempts: Vec<i64> = candidates.iter().map(|t| i64::from(t.attempt)).collect();
        let lease_until: Vec<Option<i64>> =
            candidates.iter().map(|t| t.lease_until.map(ms)).collect();
        let update_args: [&(dyn ToSql + Sync); 5] =
            [&seqs, &attempts, &owner, &now_ms, &lease_until];
        let update = tx.exec(
            "UPDATE workflow_tasks AS t SET status = 1, attempt = u.attempt, lease_owner = $3, \
               lease_until = u.lease_until, next_run_at = NULL, updated_at = $4 \
             FROM unnest($1::bigint[], $2::bigint[], $5::bigint[]) AS u(seq, attempt, lease_until) \
             WHERE t.seq = u.seq",
            &update_args,
        );
        let (a, b) = tokio::join!(update, insert_events(&tx, &events));
        first_cause([a.map(drop), b])?;
        tx.commit().await.map_err(db_err)?;
        metrics::histogram!("workflow_store_claim_seconds").record(started.elapsed().as_secs_f64());
        Ok(candidates)
    }

    async fn finish_attempt(
        &self,
        fence: &Fence,
        attempt: AttemptRecord,
        completion: Completion,
        now: DateTime<Utc>,
    ) -> StoreResult<Task> {
        let retry = matches!(completion, Completion::Retry { .. });
        // Group commit: a finisher writes this with whatever else is queued (module docs).
        let (reply, answer) = oneshot::channel();
        self.inner
            .finishes
            .send(FinishRequest {
                fence: fence.clone(),
                attempt,
                completion,
                now,
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        // A finisher gone (its runtime shut down) drops the reply: an error, never a hang.
        let task = answer.await.map_err(|_| StoreError::Closed)??;
        if retry {
            // This engine recomputes its next due time; others learn it from their own poll.
            self.wake_local();
        }
        Ok(task)
    }

    async fn release(
        &self,
        fence: &Fence,
        release: Release,
        now: DateTime<Utc>,
    ) -> StoreResult<Task> {
        self.transition(&fence.task_id, true, |t| {
            logic::check_fence(t, fence)?;
            Ok(((), Some(logic::release(t, &release, now))))
        })
        .await
        .map(|(t, ())| t)
    }

    async fn extend_lease(&self, fence: &Fence, until: DateTime<Utc>) -> StoreResult<()> {
        let client = self.client().await?;
        let n = client
            .exec(
                "UPDATE workflow_tasks SET lease_until = $1 \
                 WHERE id = $2 AND status = 1 AND attempt = $3 AND lease_owner = $4",
                &[
                    &ms(until),
                    &fence.task_id,
                    &i64::from(fence.attempt),
                    &fence.owner,
                ],
            )
            .await?;
        if n == 1 {
            return Ok(());
        }
        let exists = client
            .rows(
                "SELECT 1 FROM workflow_tasks WHERE id = $1",
                &[&fence.task_id],
            )
            .await?;
        if exists.is_empty() {
            Err(StoreError::NotFound(fence.task_id.clone()))
        } else {
            Err(StoreError::Fenced {
                task_id: fence.task_id.clone(),
                attempt: fence.attempt,
            })
        }
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Task>> {
        let client = self.client().await?;
        let rows = client
            .rows(
                &format!("SELECT {TASK_COLS} FROM workflow_tasks WHERE id = $1"),
                &[&id],
            )
            .await?;
        rows.first().map(row_to_task).transpose()
    }

    async fn attempts(&self, id: &str) -> StoreResult<Vec<AttemptRecord>> {
        let client = self.client().await?;
        let rows = client
            .rows(
                "SELECT task_id, n, started_at, duration_ms, status_code, error, response, outcome \
                 FROM workflow_attempts WHERE task_id = $1 ORDER BY n",
                &[&id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRecord {
                    task_id: r.try_get(0).map_err(db_err)?,
                    n: u32_of(r.try_get(1).map_err(db_err)?),
                    started_at: time(r.try_get(2).map_err(db_err)?),
                    duration_ms: u64::try_from(r.try_get::<_, i64>(3).map_err(db_err)?)
                        .unwrap_or(0),
                    status_code: r
                        .try_get::<_, Option<i32>>(4)
                        .map_err(db_err)?
                        .and_then(|c| u16::try_from(c).ok()),
                    error: r.try_get(5).map_err(db_err)?,
                    response: r.try_get(6).map_err(db_err)?,
                    outcome: r.try_get(7).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn events(&self, id: &str) -> StoreResult<Vec<TaskEvent>> {
        let client = self.client().await?;
        let rows = client
            .rows(
                "SELECT task_id, at, from_status, to_status, reason FROM workflow_events \
                 WHERE task_id = $1 ORDER BY id",
                &[&id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TaskEvent {
                    task_id: r.try_get(0).map_err(db_err)?,
                    at: time(r.try_get(1).map_err(db_err)?),
                    from: r
                        .try_get::<_, Option<i16>>(2)
                        .map_err(db_err)?
                        .map(status_from)
                        .transpose()?,
                    to: status_from(r.try_get(3).map_err(db_err)?)?,
                    reason: r.try_get(4).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn cancel(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<CancelOutcome> {
        self.transition(id, false, |t| Ok(logic::cancel(t, reason, now)))
            .await
            .map(|(_, out)| out)
    }

    async fn retry_now(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Task> {
        self.transition(id, true, |t| Ok(((), Some(logic::retry_now(t, now)?))))
            .await
            .map(|(t, ())| t)
    }

    async fn record_callback(&self, id: &str, callback: CallbackRecord) -> StoreResult<Task> {
        self.transition(id, false, |t| {
            logic::record_callback(t, callback);
            Ok(((), None))
        })
        .await
        .map(|(t, ())| t)
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Page> {
        let limit = match filter.limit {
            0 => 100,
            n => n.min(1000),
        };
        let status = filter.status.map(status_code);
        let priority = filter.priority.map(|p| i16::from(p.rank()));
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        // One statement for every filter shape: a NULL parameter disables its condition.
        let sql = format!(
            "SELECT {TASK_COLS} FROM workflow_tasks \
             WHERE ($1::smallint IS NULL OR status = $1) AND ($2::smallint IS NULL OR priority = $2) \
               AND ($3::text IS NULL OR target = $3) AND ($4::text IS NULL OR kind = $4) \
               AND ($5::bigint IS NULL OR seq < $5) \
             ORDER BY seq DESC LIMIT $6"
        );
        let client = self.client().await?;
        let rows = client
            .rows(
                &sql,
                &[
                    &status,
                    &priority,
                    &filter.target,
                    &filter.kind,
                    &filter.before_seq,
                    &fetch,
                ],
            )
            .await?;
        let mut tasks = rows_to_tasks(&rows)?;
        let more = tasks.len() > limit;
        tasks.truncate(limit);
        let next_cursor = if more {
            tasks.last().map(|t| t.seq)
        } else {
            None
        };
        Ok(Page { tasks, next_cursor })
    }

    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let client = self.client().await?;
        let rows = client
            .rows(
                &format!(
                    "SELECT LEAST({EARLIEST_DUE}, \
                     (SELECT lease_until FROM workflow_tasks WHERE status = 1 ORDER BY lease_until LIMIT 1))"
                ),
                &[],
            )
            .await?;
        let v: Option<i64> = rows
            .first()
            .map_or(Ok(None), |r| r.try_get(0))
            .map_err(db_err)?;
        Ok(v.map(time))
    }

    async fn counts(&self) -> StoreResult<Counts> {
        let client = self.client().await?;
        let due_sql = format!("SELECT {EARLIEST_DUE}");
        let (rows, due) = tokio::try_join!(
            client.rows(
                "SELECT status, priority, count(*) FROM workflow_tasks GROUP BY status, priority",
                &[],
            ),
            client.rows(&due_sql, &[]),
        )?;
        let mut by_status_priority = Vec::new();
        let mut active = 0u64;
        for r in &rows {
            let status = status_from(r.try_get(0).map_err(db_err)?)?;
            let priority = priority_from(r.try_get(1).map_err(db_err)?)?;
            let n = u64::try_from(r.try_get::<_, i64>(2).map_err(db_err)?).unwrap_or(0);
            if n > 0 {
                by_status_priority.push((status, priority, n));
            }
            if !status.is_final() {
                active += n;
            }
        }
        by_status_priority.sort_by_key(|(s, p, _)| (status_code(*s), p.rank()));
        *self.inner.active_estimate.lock() = Some((active, Instant::now()));
        let oldest: Option<i64> = due
            .first()
            .map_or(Ok(None), |r| r.try_get(0))
            .map_err(db_err)?;
        let (size, idle, waiting) = self.pool_status();
        metrics::gauge!("workflow_store_pool_connections").set(size as f64);
        metrics::gauge!("workflow_store_pool_idle").set(idle as f64);
        metrics::gauge!("workflow_store_pool_waiting").set(waiting as f64);
        Ok(Counts {
            by_status_priority,
            oldest_due_at: oldest.map(time),
        })
    }

    async fn prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        // In chunks, so a first prune of a large backlog never holds locks for long.
        const CHUNK: i64 = 2_000;
        let cutoff = ms(before);
        let mut total = 0u64;
        loop {
            let client = self.client().await?;
            let rows = client
                .rows(
                    "WITH v AS (SELECT seq, id FROM workflow_tasks \
                        WHERE status >= 3 AND finished_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED), \
                     a AS (DELETE FROM workflow_attempts WHERE task_id IN (SELECT id FROM v)), \
                     e AS (DELETE FROM workflow_events WHERE task_id IN (SELECT id FROM v)), \
                     d AS (DELETE FROM workflow_tasks WHERE seq IN (SELECT seq FROM v) RETURNING 1) \
                     SELECT count(*) FROM d",
                    &[&cutoff, &CHUNK],
                )
                .await?;
            let n: i64 = rows
                .first()
                .map_or(Ok(0), |r| r.try_get(0))
                .map_err(db_err)?;
            total += u64::try_from(n).unwrap_or(0);
            if n < CHUNK {
                return Ok(total);
            }
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.rows("SELECT 1", &[]).await.map(drop)
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.inner.wakeup.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x?sslmode=disable"),
            "postgres://app:***@db:5432/x?sslmode=disable"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("host=db user=app"), "host=db user=app");
        assert_eq!(
            redact("host=db password=x user=app"),
            "host=db password=*** user=app"
        );
        assert_eq!(redact("postgresql://a:b:c@h/d"), "postgresql://a:***@h/d");
    }

    #[test]
    fn config_debug_never_shows_the_password() {
        let c = PostgresConfig::new("postgres://app:s3cret@db/x");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn bad_urls_are_a_backend_error() {
        let c = PostgresConfig::new("postgres://app:s3cret@db:notaport/x");
        let err = c.pg_config().expect_err("invalid");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
