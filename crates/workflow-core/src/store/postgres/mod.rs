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
//!   it was the bottleneck (bench `postgres_claim`; figures in `docs/BENCHMARKS.md`).
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
//!   on the channel (no polling), and stop on [`Store::close`] or once the last store clone is
//!   gone, after the queue is drained; a finish that finds them gone is answered
//!   [`StoreError::Closed`], never dropped silently. The batching is `store::batch`, shared
//!   with the SQLite writer.
//! - **Enqueues are group-committed too.** With finishes batched, the end-to-end dispatcher
//!   (one instance, `bench -c 64`) was limited by its intake (`docs/BENCHMARKS.md`):
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
//! - **Claim on insert.** [`Store::enqueue_claimed`] builds each row as `logic::claim` leaves
//!   it (status `processing`, attempt 1, the caller's lease) and writes it through the same
//!   paths, a lone task through the enqueuers; the insert statements write the `claimed`
//!   event after the `created` one for such rows. No wakeup: nothing is left to claim. A task
//!   the engine hands off this way costs an insert and a finish, not an insert, a claim and a
//!   finish (`pg_stat_user_tables`: three tasks posted a few ms apart, 3 row updates, not 6).
//! - **Short transactions only.** Every method is one transaction of a few statements; none
//!   waits on anything but the database (the engine calls a handler between a claim and its
//!   `finish_attempt`, never inside one; a finish batch holds its transaction only for its
//!   statements, never while waiting for more requests).
//! - **Wakeups**: after `enqueue`, `release` and `retry_now` commit, a notifier task sends
//!   `NOTIFY workflow_tasks` (one per burst: requests made while one is in flight coalesce).
//!   Not inside the transaction: PostgreSQL serialises the commits of all transactions that
//!   sent a `NOTIFY` through their WAL flush, one fsync per enqueue (`docs/BENCHMARKS.md`).
//!   Each store keeps one dedicated connection that `LISTEN`s (driven with `Connection::poll_message`) and wakes
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
//! - **TLS** (`tls`): the URL takes libpq's `sslmode` (`disable`, `prefer` (default),
//!   `require`, `verify-ca`, `verify-full`, with libpq's meanings), `sslrootcert`, `sslcert`
//!   and `sslkey`. The driver knows only the first three modes and no file parameter, so
//!   `config` takes them out of the URL and maps the mode (verification needs the handshake:
//!   `verify-*` is the driver's `require`); `tls` builds one rustls configuration (ring passed
//!   explicitly, no process-wide default provider) with the verifier the mode asks for, and
//!   the pool, the migration connection and the listener share it. Trust: `sslrootcert`'s
//!   roots only, or else the platform's, as every other TLS client in the workspace.
//!   [`PostgresConfig::validate`] reads the files, so a bad setting fails at configuration
//!   time ([`StoreError::Config`]), not at the first connection.
//!
//! Every task the store spawns (finishers, enqueuers, the notifier, the listener, a refresh of
//! the active count) is owned: [`Store::close`] stops and joins them, then closes the pool.
//!
//! # Files
//!
//! `config` (how to connect, the TLS parameters), `tls` (the rustls connector), `schema` (migrations), `sql` (statements, rows through the
//! shared codec, errors), `write` (row writes), `claim`, `finish` and `enqueue` (the two
//! group-committed writes), `limit` (the queue limit), `query`, `prune`, `notify` (wakeups
//! between instances).

mod claim;
mod config;
mod enqueue;
mod finish;
mod limit;
mod notify;
mod prune;
mod query;
mod schema;
mod sql;
mod tls;
mod write;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::enqueue::{ENQUEUE_BATCH, ENQUEUERS, EnqueueRequest, Enqueuer};
use self::finish::{FINISH_BATCH, FINISHERS, FinishWork, Finisher};
use self::limit::Estimate;
use self::notify::{listen_loop, notify_loop};
use self::schema::migrate_raw;
use self::sql::{Exec, db_err, first_cause, pooled};
use self::tls::MakeRustls;
use self::write::{insert_events, load_for_update, save};
use crate::error::StoreError;
use crate::model::{AttemptRecord, CallbackRecord, NewTask, Task, TaskEvent};
use crate::store::{
    CancelOutcome, Completion, Counts, EnqueueLimits, Enqueued, Fence, Page, Release, Store,
    StoreResult, TaskFilter, batch, batch::Batcher, batch::error_chain, codec::ms, logic,
};

pub use self::config::{PostgresConfig, redact};
pub use self::notify::NOTIFY_CHANNEL;
pub use self::schema::POSTGRES_SCHEMA_VERSION;

async fn migrate_with(pg: &tokio_postgres::Config, tls: MakeRustls) -> StoreResult<usize> {
    let (mut client, driver) = connect_one(pg, tls).await?;
    let r = migrate_raw(&mut client).await;
    drop(client);
    let _ = driver.await;
    r
}

/// One connection outside the pool, driven by the returned task (which ends when the client
/// is dropped).
pub(crate) async fn connect_one(
    pg: &tokio_postgres::Config,
    tls: MakeRustls,
) -> StoreResult<(tokio_postgres::Client, JoinHandle<()>)> {
    let (client, conn) = pg.connect(tls).await.map_err(|e| connect_err(&e))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %error_chain(&e), "postgres connection ended");
        }
    });
    Ok((client, driver))
}

/// A failed connect with its causes in the message: the driver's own says only "error
/// performing TLS handshake" or "error connecting to server", the cause says why (a
/// certificate for another name, an unknown issuer, a refused connection, `pg_hba.conf`).
pub(crate) fn connect_err(e: &tokio_postgres::Error) -> StoreError {
    StoreError::backend(error_chain(e))
}

/// PostgreSQL-backed store, for several engine instances sharing one database. Cheap to
/// clone; [`Store::close`] stops and joins the listener, the notifier, the finishers and the
/// enqueuers (dropping the last clone stops them without waiting).
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
    refreshing: Arc<AtomicBool>,
    /// The background refresh of `active_estimate`, if one was started.
    refresh: Mutex<Option<JoinHandle<()>>>,
    /// The finishers' queue.
    finishes: Batcher<FinishWork, Task>,
    /// The enqueuers' queue.
    enqueues: Batcher<EnqueueRequest, Enqueued>,
    /// Stops the notifier and the listener.
    stop: CancellationToken,
    /// The finishers and enqueuers, joined by [`Store::close`].
    batchers: Mutex<Vec<JoinHandle<()>>>,
    /// The notifier and the listener, joined by [`Store::close`] after the batchers.
    wakers: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last resort when `close` was not called: every task is told to stop (the
        // batchers after draining their queues) and ends on its own; nothing waits here.
        self.finishes.close();
        self.enqueues.close();
        self.stop.cancel();
    }
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
        // One TLS configuration (files read once) for the pool, the migration and the listener.
        let (pg, tls) = config.connector()?;
        let manager = Manager::from_config(
            pg.clone(),
            tls.clone(),
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
        migrate_with(&pg, tls.clone()).await?;
        let stop = CancellationToken::new();
        let wakeup = Arc::new(Notify::new());
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let outgoing = Arc::new(Notify::new());
        let mut wakers = vec![tokio::spawn(notify_loop(
            pool.clone(),
            instance.clone(),
            outgoing.clone(),
            stop.clone(),
        ))];
        let mut batchers = Vec::with_capacity(FINISHERS + ENQUEUERS);
        let (finishes, queue) = batch::channel(FINISH_BATCH);
        for _ in 0..FINISHERS {
            let (queue, pool) = (queue.clone(), pool.clone());
            batchers.push(tokio::spawn(async move {
                queue.serve(&mut Finisher { pool }).await;
            }));
        }
        let active_estimate: Estimate = Arc::new(Mutex::new(None));
        let (enqueues, queue) = batch::channel(ENQUEUE_BATCH);
        for _ in 0..ENQUEUERS {
            let mut enqueuer = Enqueuer {
                pool: pool.clone(),
                estimate: active_estimate.clone(),
            };
            let queue = queue.clone();
            batchers.push(tokio::spawn(async move {
                queue.serve(&mut enqueuer).await;
            }));
        }
        if config.listen {
            wakers.push(tokio::spawn(listen_loop(
                pg,
                tls,
                instance.clone(),
                wakeup.clone(),
                stop.clone(),
            )));
        }
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                config,
                instance,
                wakeup,
                outgoing,
                active_estimate,
                refreshing: Arc::new(AtomicBool::new(false)),
                refresh: Mutex::new(None),
                finishes,
                enqueues,
                stop,
                batchers: Mutex::new(batchers),
                wakers: Mutex::new(wakers),
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
        let (pg, tls) = config.connector()?;
        migrate_with(&pg, tls).await
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

    /// Queues one row built by `logic::create` (and `logic::claim`) for the group commit: an
    /// enqueuer writes it with whatever else is queued (module docs).
    async fn enqueue_prepared(&self, task: Task, limits: EnqueueLimits) -> StoreResult<Enqueued> {
        let exact = limits
            .max_active
            .is_some_and(|limit| self.limit_needs_check(limit, 1));
        let request = EnqueueRequest {
            task,
            limit: limits.max_active,
            exact,
        };
        let out = self.inner.enqueues.call(request).await?;
        self.after_enqueue(std::slice::from_ref(&out));
        Ok(out)
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

    /// Stops and joins every task this store spawned (the batchers first, so what is queued
    /// is written while the pool is open), then closes the pool.
    async fn shut_down(&self) {
        self.inner.finishes.close();
        self.inner.enqueues.close();
        let batchers = std::mem::take(&mut *self.inner.batchers.lock());
        for task in batchers {
            join(task).await;
        }
        self.inner.stop.cancel();
        let wakers = std::mem::take(&mut *self.inner.wakers.lock());
        let refresh = self.inner.refresh.lock().take();
        for task in wakers.into_iter().chain(refresh) {
            join(task).await;
        }
        self.inner.pool.close();
        tracing::debug!("postgres store closed");
    }
}

async fn join(task: JoinHandle<()>) {
    if let Err(e) = task.await
        && e.is_panic()
    {
        tracing::error!(error = %e, "a postgres store task panicked");
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn enqueue(&self, task: NewTask, limits: EnqueueLimits) -> StoreResult<Enqueued> {
        self.enqueue_prepared(logic::create(task, 0, Utc::now()).0, limits)
            .await
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

    async fn enqueue_claimed(
        &self,
        tasks: Vec<NewTask>,
        limits: EnqueueLimits,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Vec<Enqueued>> {
        // Claimed on insert: the rows are written as `logic::claim` leaves them, with their
        // `created` and `claimed` events, so no claim query follows. A lone task goes through
        // the group-committed enqueue, as `enqueue` does.
        let mut tasks: Vec<Task> = tasks
            .into_iter()
            .map(|new| {
                let (mut task, _) = logic::create(new, 0, now);
                logic::claim(&mut task, owner, now, lease);
                task
            })
            .collect();
        if tasks.len() == 1
            && let Some(task) = tasks.pop()
        {
            return Ok(vec![self.enqueue_prepared(task, limits).await?]);
        }
        self.insert_many(tasks, limits).await
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
        skip_targets: &[String],
    ) -> StoreResult<Vec<Task>> {
        let skip: Vec<&str> = skip_targets.iter().map(String::as_str).collect();
        claim::claim(&self.inner.pool, owner, now, lease, max, &skip).await
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
        let task = self
            .inner
            .finishes
            .call((fence.clone(), attempt, completion, now))
            .await?;
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
        query::get(&self.client().await?, id).await
    }

    async fn attempts(&self, id: &str) -> StoreResult<Vec<AttemptRecord>> {
        query::attempts(&self.client().await?, id).await
    }

    async fn events(&self, id: &str) -> StoreResult<Vec<TaskEvent>> {
        query::events(&self.client().await?, id).await
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
            let ev = logic::record_callback(t, callback);
            Ok(((), Some(ev)))
        })
        .await
        .map(|(t, ())| t)
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Page> {
        query::list(&self.client().await?, filter).await
    }

    async fn next_due_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        query::next_due_at(&self.client().await?).await
    }

    async fn counts(&self) -> StoreResult<Counts> {
        self.count_tasks().await
    }

    async fn prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.prune_before(before).await
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.rows("SELECT 1", &[]).await.map(drop)
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.inner.wakeup.clone()
    }

    async fn close(&self) {
        self.shut_down().await;
    }
}
