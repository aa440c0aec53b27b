//! The engine: claims due tasks by priority, runs them on a bounded pool, writes outcomes.
//!
//! One background loop claims due tasks (critical first, then due time, then creation order)
//! in batches of at most the free slots, skipping targets at their per-target cap, and runs each
//! attempt as an owned task in a [`JoinSet`]. When nothing is due it sleeps until the store's
//! next due time, an enqueue (the store's [`Store::wakeup`]) or a freed slot: an idle engine
//! does not poll. Outcomes are written with the claim's [`Fence`], so a worker that lost its
//! lease cannot overwrite a newer attempt. A handler that defers an attempt (the target's
//! breaker is open, its rate limit is reached) holds that target back: its tasks stay
//! unclaimed until the deferral ends, so a failing target costs no writes while it waits.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use workflow_core::{
//!     AttemptContext, Engine, Handler, HandlerOutcome, MemoryStore, NewTask, Priority, Task,
//!     TaskStatus,
//! };
//!
//! struct Hello;
//!
//! #[async_trait::async_trait]
//! impl Handler for Hello {
//!     async fn handle(&self, task: &Task, _ctx: AttemptContext) -> HandlerOutcome {
//!         HandlerOutcome::success_with(serde_json::json!({ "hello": task.id }))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder(Arc::new(MemoryStore::new()))
//!     .handler("hello", Arc::new(Hello))
//!     .start();
//! let mut events = engine.subscribe();
//! engine
//!     .enqueue(NewTask {
//!         id: "t1".into(),
//!         kind: "hello".into(),
//!         priority: Priority::High,
//!         payload: serde_json::json!({}),
//!         target: None,
//!         max_attempts: 3,
//!         run_at: engine.now(),
//!         idempotency_key: None,
//!     })
//!     .await?;
//! // Wait for the task to reach a final state.
//! while !matches!(
//!     events.recv().await?,
//!     workflow_core::EngineEvent::StatusChanged { to, .. } if to.is_final()
//! ) {}
//! let task = engine.store().get("t1").await?.expect("stored");
//! assert_eq!(task.status, TaskStatus::Completed);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use retry_policy::RetryPolicy;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{SharedClock, SystemClock};
use crate::error::StoreError;
use crate::events::{EngineEvent, millis};
use crate::handler::{AttemptContext, AttemptResult, Handler, HandlerOutcome};
use crate::model::{AttemptRecord, NewTask, Task, TaskStatus};
use crate::store::{CancelOutcome, Completion, EnqueueLimits, Enqueued, Fence, Release, Store};

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This instance's name in leases (default: host-pid-random).
    pub owner_id: String,
    /// Most tasks claimed at once.
    pub batch_size: usize,
    /// Most attempts running at once.
    pub max_in_flight: usize,
    /// Most attempts running at once against one target.
    pub per_target_in_flight: usize,
    /// How long a claim holds a task; running attempts extend it every third of it.
    pub lease: Duration,
    /// Delays between attempts.
    pub retry: RetryPolicy,
    /// Most non-final tasks; past it, enqueue fails with queue-full.
    pub task_queue_size: Option<u64>,
    /// Final tasks older than this are deleted (checked every minute). `None`: kept.
    pub prune_after: Option<Duration>,
    /// On shutdown, how long running attempts may take before they are cancelled and released.
    pub shutdown_grace: Duration,
    /// How often queue gauges are refreshed.
    pub gauge_interval: Duration,
    /// Longest idle sleep: a safety net for stores shared with other instances.
    pub max_idle: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            owner_id: format!(
                "{}-{}-{:08x}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "engine".to_owned()),
                std::process::id(),
                rand::random::<u32>()
            ),
            batch_size: 128,
            max_in_flight: 512,
            per_target_in_flight: 64,
            lease: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            task_queue_size: None,
            prune_after: None,
            shutdown_grace: Duration::from_secs(10),
            gauge_interval: Duration::from_secs(5),
            max_idle: Duration::from_secs(60),
        }
    }
}

/// Errors of the engine's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No handler is registered for the task's kind.
    #[error("no handler for task kind {0:?}")]
    UnknownKind(String),
    /// The engine is shutting down.
    #[error("engine is shutting down")]
    ShuttingDown,
}

impl EngineError {
    /// Whether the queue is full.
    pub fn is_queue_full(&self) -> bool {
        matches!(self, EngineError::Store(e) if e.is_queue_full())
    }
}

#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    per_target: HashMap<String, usize>,
    running: HashMap<String, (Fence, CancellationToken)>,
    /// Targets whose handler deferred an attempt (breaker open, rate limit), with when they
    /// may go again: their tasks are not claimed before then.
    held: HashMap<String, DateTime<Utc>>,
}

impl InFlight {
    /// The targets not to claim now: at their concurrency cap, or held until later (expired
    /// holds are dropped). With the earliest end of a hold, if any.
    fn skipped_targets(
        &mut self,
        per_target_cap: usize,
        now: DateTime<Utc>,
    ) -> (Vec<String>, Option<DateTime<Utc>>) {
        self.held.retain(|_, until| *until > now);
        let mut skip: Vec<String> = self
            .per_target
            .iter()
            .filter(|(_, n)| **n >= per_target_cap)
            .map(|(k, _)| k.clone())
            .collect();
        for target in self.held.keys() {
            if !skip.contains(target) {
                skip.push(target.clone());
            }
        }
        (skip, self.held.values().min().copied())
    }
}

struct Inner {
    store: Arc<dyn Store>,
    handlers: HashMap<String, Arc<dyn Handler>>,
    config: EngineConfig,
    clock: SharedClock,
    events: broadcast::Sender<EngineEvent>,
    in_flight: Mutex<InFlight>,
    slot_freed: Notify,
    stop_claiming: CancellationToken,
    hard_stop: CancellationToken,
    claim_rounds: AtomicU64,
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("owner", &self.inner.config.owner_id)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    handlers: HashMap<String, Arc<dyn Handler>>,
    config: EngineConfig,
    clock: SharedClock,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Registers the handler of a task kind.
    pub fn handler(mut self, kind: impl Into<String>, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(kind.into(), handler);
        self
    }

    /// Sets the configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the clock (tests use [`crate::TokioClock`]).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Starts the engine's background loop. Must be called inside a tokio runtime.
    pub fn start(self) -> Engine {
        let (events, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            store: self.store,
            handlers: self.handlers,
            config: self.config,
            clock: self.clock,
            events,
            in_flight: Mutex::new(InFlight::default()),
            slot_freed: Notify::new(),
            stop_claiming: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            claim_rounds: AtomicU64::new(0),
            background: Mutex::new(None),
        });
        let handle = tokio::spawn(run(inner.clone()));
        *inner.background.lock() = Some(handle);
        Engine { inner }
    }
}

impl Engine {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder {
            store,
            handlers: HashMap::new(),
            config: EngineConfig::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Events as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    /// How many times the claim loop has asked the store for work (an idle engine does not).
    pub fn claim_rounds(&self) -> u64 {
        self.inner.claim_rounds.load(Ordering::Relaxed)
    }

    /// Attempts running now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.lock().total
    }

    /// Stores a task (durably, before returning) and wakes a worker.
    ///
    /// # Errors
    ///
    /// Queue full, duplicate id, unknown kind, store failure, or shutting down.
    pub async fn enqueue(&self, task: NewTask) -> Result<Enqueued, EngineError> {
        if self.inner.stop_claiming.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        if !self.inner.handlers.contains_key(&task.kind) {
            return Err(EngineError::UnknownKind(task.kind));
        }
        let limits = EnqueueLimits {
            max_active: self.inner.config.task_queue_size,
        };
        let out = self.inner.store.enqueue(task, limits).await?;
        if let Enqueued::Created(t) = &out {
            created(&self.inner, t);
        }
        Ok(out)
    }

    /// Stores many tasks in one transaction.
    ///
    /// # Errors
    ///
    /// As [`Engine::enqueue`]; nothing is stored on error.
    pub async fn enqueue_batch(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, EngineError> {
        if let Some(t) = tasks
            .iter()
            .find(|t| !self.inner.handlers.contains_key(&t.kind))
        {
            return Err(EngineError::UnknownKind(t.kind.clone()));
        }
        let limits = EnqueueLimits {
            max_active: self.inner.config.task_queue_size,
        };
        let out = self.inner.store.enqueue_batch(tasks, limits).await?;
        for e in &out {
            if let Enqueued::Created(t) = e {
                created(&self.inner, t);
            }
        }
        Ok(out)
    }

    /// Cancels a task: at once if waiting; if running, its handler's token fires and the task
    /// ends cancelled when the handler returns.
    ///
    /// # Errors
    ///
    /// Not found, or a store failure.
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome, EngineError> {
        let out = self
            .inner
            .store
            .cancel(id, "cancelled by user", self.now())
            .await?;
        match &out {
            CancelOutcome::Requested(_) => {
                if let Some((_, token)) = self.inner.in_flight.lock().running.get(id) {
                    token.cancel();
                }
            }
            CancelOutcome::Cancelled(t) => {
                // Only waiting tasks are cancelled at once, and a task waits as `retrying`
                // exactly when it has been tried before.
                let from = if t.tries == 0 {
                    TaskStatus::Pending
                } else {
                    TaskStatus::Retrying
                };
                status_changed(&self.inner, &t.id, from, TaskStatus::Cancelled);
            }
            CancelOutcome::AlreadyFinal(_) => {}
        }
        Ok(out)
    }

    /// Makes a failed or cancelled task due now with a fresh attempt budget.
    ///
    /// # Errors
    ///
    /// Not found, wrong status, or a store failure.
    pub async fn retry_now(&self, id: &str) -> Result<Task, EngineError> {
        Ok(self.inner.store.retry_now(id, self.now()).await?)
    }

    /// Stops claiming, lets running attempts finish within the grace period, then cancels the
    /// rest and releases their leases so a restart picks them up at once.
    pub async fn shutdown(&self) {
        self.inner.stop_claiming.cancel();
        self.inner.slot_freed.notify_waiters();
        let handle = self.inner.background.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }
}

fn created(inner: &Inner, t: &Task) {
    metrics::counter!("workflow_tasks_created_total", "priority" => t.priority.as_str())
        .increment(1);
    tracing::info!(task_id = %t.id, kind = %t.kind, priority = %t.priority, "task created");
    let _ = inner.events.send(EngineEvent::Created {
        task_id: t.id.clone(),
        priority: t.priority,
    });
}

fn status_changed(inner: &Inner, id: &str, from: TaskStatus, to: TaskStatus) {
    if from == to {
        return;
    }
    tracing::debug!(task_id = %id, %from, %to, "task status changed");
    if to.is_final() {
        metrics::counter!("workflow_tasks_finished_total", "status" => to.as_str()).increment(1);
    }
    let _ = inner.events.send(EngineEvent::StatusChanged {
        task_id: id.to_owned(),
        from,
        to,
    });
}

/// How often a loop whose due work is held back by per-target caps looks for other work.
const CAPPED_RECHECK: Duration = Duration::from_secs(1);

/// The background loop: claims and runs until shutdown, then drains.
async fn run(inner: Arc<Inner>) {
    let mut attempts: JoinSet<()> = JoinSet::new();
    let mut gauges =
        tokio::time::interval(inner.config.gauge_interval.max(Duration::from_millis(100)));
    gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wakeup = inner.store.wakeup();
    loop {
        // Reap finished attempts without waiting.
        while let Some(res) = attempts.try_join_next() {
            if let Err(e) = res
                && e.is_panic()
            {
                tracing::error!(
                    "an attempt panicked; its lease will expire and it will be retried"
                );
            }
        }
        if inner.stop_claiming.is_cancelled() {
            break;
        }
        let (free, skip, hold_ends) = {
            let mut f = inner.in_flight.lock();
            let (skip, hold_ends) =
                f.skipped_targets(inner.config.per_target_in_flight, inner.clock.now());
            (
                inner.config.max_in_flight.saturating_sub(f.total),
                skip,
                hold_ends,
            )
        };
        // Whether something may be due that this loop cannot take now (no free slot, or a
        // target at its cap): then the store's next due time says nothing about other work.
        let mut capped = free == 0;
        if free > 0 {
            let want = free.min(inner.config.batch_size.max(1));
            inner.claim_rounds.fetch_add(1, Ordering::Relaxed);
            let now = inner.clock.now();
            match inner
                .store
                .claim_due(&inner.config.owner_id, now, inner.config.lease, want, &skip)
                .await
            {
                Ok(claimed) => {
                    let full = claimed.len() == want;
                    for task in claimed {
                        if target_full(&inner, &task) {
                            // A batch may hold more tasks for one target than its cap allows:
                            // give the extra back at once, without spending an attempt.
                            let release = Release {
                                at: inner.clock.now(),
                                reason: "target at its concurrency cap".to_owned(),
                            };
                            if let Err(e) = inner
                                .store
                                .release(&Fence::of(&task), release, inner.clock.now())
                                .await
                            {
                                tracing::warn!(task_id = %task.id, error = %e, "could not give back a claimed task");
                            }
                            continue;
                        }
                        start_attempt(&inner, &mut attempts, task);
                    }
                    if full {
                        continue; // more may be due: claim again at once
                    }
                    capped = !skip.is_empty();
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming tasks failed; retrying in 1 s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = inner.stop_claiming.cancelled() => {}
                    }
                    continue;
                }
            }
        }
        // Idle: sleep until the next due time, an enqueue, or a freed slot.
        let sleep_for = if free == 0 {
            // A freed slot wakes the loop.
            inner.config.max_idle
        } else {
            match inner.store.next_due_at().await {
                Ok(Some(at)) => {
                    let now = inner.clock.now();
                    if at <= now {
                        // Due but not claimable: its target is at its cap (a freed slot wakes
                        // us), or it became due just after the claim. Other targets' tasks may
                        // fall due before any slot frees, and the store cannot say when, so
                        // look again shortly: this only happens while busy, never when idle.
                        if capped {
                            // A held target may go again before the recheck.
                            hold_ends
                                .map_or(CAPPED_RECHECK, |end| {
                                    (end - now).to_std().unwrap_or_default()
                                })
                                .clamp(Duration::from_millis(10), CAPPED_RECHECK)
                        } else {
                            Duration::from_millis(10)
                        }
                    } else {
                        (at - now)
                            .to_std()
                            .unwrap_or_default()
                            .min(inner.config.max_idle)
                    }
                }
                Ok(None) => inner.config.max_idle,
                Err(e) => {
                    tracing::error!(error = %e, "reading the next due time failed");
                    Duration::from_secs(1)
                }
            }
        };
        // Housekeeping ticks are handled here without going back to the store for work.
        let deadline = tokio::time::Instant::now() + sleep_for;
        loop {
            tokio::select! {
                () = wakeup.notified() => {}
                () = inner.slot_freed.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = inner.stop_claiming.cancelled() => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                _ = gauges.tick() => { refresh_gauges(&inner).await; continue; }
                _ = prune.tick(), if inner.config.prune_after.is_some() => { prune_old(&inner).await; continue; }
            }
            break;
        }
    }
    drain(&inner, attempts).await;
}

async fn refresh_gauges(inner: &Inner) {
    let Ok(counts) = inner.store.counts().await else {
        return;
    };
    for status in TaskStatus::ALL {
        for p in crate::model::Priority::ALL {
            let n = counts
                .by_status_priority
                .iter()
                .find(|(s, pr, _)| *s == status && *pr == p)
                .map_or(0, |(_, _, n)| *n);
            metrics::gauge!("workflow_tasks", "status" => status.as_str(), "priority" => p.as_str()).set(n as f64);
        }
    }
    let age = counts.oldest_due_at.map_or(0.0, |at| {
        (inner.clock.now() - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    metrics::gauge!("workflow_oldest_due_task_age_seconds").set(age);
    metrics::gauge!("workflow_in_flight").set(inner.in_flight.lock().total as f64);
}

async fn prune_old(inner: &Inner) {
    let Some(after) = inner.config.prune_after else {
        return;
    };
    let before =
        inner.clock.now() - chrono::Duration::from_std(after).unwrap_or(chrono::TimeDelta::MAX);
    match inner.store.prune(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(pruned = n, "pruned old final tasks"),
        Err(e) => tracing::warn!(error = %e, "pruning failed"),
    }
}

async fn drain(inner: &Arc<Inner>, mut attempts: JoinSet<()>) {
    let grace = inner.config.shutdown_grace;
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = attempts.join_next() => if next.is_none() { return; },
            () = &mut deadline => break,
        }
    }
    // Past the grace: ask handlers to stop, give them a moment, then abandon them.
    inner.hard_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while attempts.join_next().await.is_some() {}
    })
    .await;
    attempts.abort_all();
    while attempts.join_next().await.is_some() {}
    let leftovers: Vec<Fence> = inner
        .in_flight
        .lock()
        .running
        .drain()
        .map(|(_, (fence, _))| fence)
        .collect();
    let now = inner.clock.now();
    for fence in leftovers {
        let release = Release {
            at: now,
            reason: "released on shutdown".to_owned(),
        };
        match inner.store.release(&fence, release, now).await {
            Ok(_) => tracing::info!(task_id = %fence.task_id, "lease released on shutdown"),
            Err(e) => {
                tracing::warn!(task_id = %fence.task_id, error = %e, "could not release lease")
            }
        }
    }
}

fn target_full(inner: &Inner, task: &Task) -> bool {
    task.target.as_ref().is_some_and(|t| {
        inner
            .in_flight
            .lock()
            .per_target
            .get(t)
            .copied()
            .unwrap_or(0)
            >= inner.config.per_target_in_flight
    })
}

fn start_attempt(inner: &Arc<Inner>, attempts: &mut JoinSet<()>, task: Task) {
    let token = inner.hard_stop.child_token();
    if task.cancel_requested {
        // Reclaimed after its worker died while a cancel was pending: stop at once.
        token.cancel();
    }
    {
        let mut f = inner.in_flight.lock();
        f.total += 1;
        if let Some(t) = &task.target {
            *f.per_target.entry(t.clone()).or_default() += 1;
        }
        f.running
            .insert(task.id.clone(), (Fence::of(&task), token.clone()));
    }
    let inner = inner.clone();
    attempts.spawn(async move {
        let target = task.target.clone();
        let id = task.id.clone();
        run_attempt(&inner, task, token).await;
        let mut f = inner.in_flight.lock();
        f.total = f.total.saturating_sub(1);
        if let Some(t) = target
            && let Some(n) = f.per_target.get_mut(&t)
        {
            *n -= 1;
            if *n == 0 {
                f.per_target.remove(&t);
            }
        }
        f.running.remove(&id);
        drop(f);
        inner.slot_freed.notify_one();
    });
}

async fn run_attempt(inner: &Arc<Inner>, task: Task, token: CancellationToken) {
    let fence = Fence::of(&task);
    let attempt_no = task.tries + 1;
    let from_status = if task.tries == 0 {
        TaskStatus::Pending
    } else {
        TaskStatus::Retrying
    };
    status_changed(inner, &task.id, from_status, TaskStatus::Processing);
    tracing::info!(task_id = %task.id, attempt = attempt_no, target = task.target.as_deref().unwrap_or(""), "task dispatched");
    let _ = inner.events.send(EngineEvent::Dispatched {
        task_id: task.id.clone(),
        attempt: attempt_no,
    });
    let Some(handler) = inner.handlers.get(&task.kind).cloned() else {
        let outcome =
            HandlerOutcome::permanent(format!("no handler for task kind {:?}", task.kind));
        record(
            inner,
            &task,
            &fence,
            outcome,
            inner.clock.now(),
            Duration::ZERO,
            false,
        )
        .await;
        return;
    };
    let ctx = AttemptContext {
        attempt: attempt_no,
        cancel: token.clone(),
    };
    let started_at = inner.clock.now();
    let started = tokio::time::Instant::now();
    let work = handler.handle(&task, ctx);
    tokio::pin!(work);
    // Long handlers keep their lease alive; losing it means another worker owns the task.
    let period = (inner.config.lease / 3).max(Duration::from_millis(50));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let outcome = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = heartbeat.tick() => {
                let until = inner.clock.now() + chrono::Duration::from_std(inner.config.lease).unwrap_or(chrono::TimeDelta::MAX);
                match inner.store.extend_lease(&fence, until).await {
                    Ok(()) => {
                        // A cancel asked through another instance (or the store directly)
                        // reaches the handler within a third of the lease.
                        if !token.is_cancelled()
                            && let Ok(Some(t)) = inner.store.get(&task.id).await
                            && t.cancel_requested
                        {
                            tracing::info!(task_id = %task.id, "cancel requested; stopping the handler");
                            token.cancel();
                        }
                    }
                    Err(e) if e.is_fenced() => {
                        tracing::warn!(task_id = %task.id, "lease lost while running; abandoning the attempt");
                        token.cancel();
                        metrics::counter!("workflow_fenced_writes_total").increment(1);
                        let _ = inner.events.send(EngineEvent::Fenced { task_id: task.id.clone(), attempt: fence.attempt });
                        return;
                    }
                    Err(e) => tracing::warn!(task_id = %task.id, error = %e, "could not extend lease"),
                }
            }
        }
    };
    let elapsed = started.elapsed();
    if inner.hard_stop.is_cancelled() && !matches!(outcome.result, AttemptResult::Success(_)) {
        // Stopped by shutdown, not by the target: give the task back without spending a try.
        let now = inner.clock.now();
        let release = Release {
            at: now,
            reason: "released on shutdown".to_owned(),
        };
        match inner.store.release(&fence, release, now).await {
            Ok(_) => tracing::info!(task_id = %task.id, "lease released on shutdown"),
            Err(e) => fenced_or_failed(inner, &task, &fence, &e),
        }
        return;
    }
    // Past the shutdown check, a fired token means a user cancel.
    let cancelled = token.is_cancelled();
    record(
        inner, &task, &fence, outcome, started_at, elapsed, cancelled,
    )
    .await;
}

/// The delay before the next attempt: the policy's step for this retry, raised by the target's
/// `Retry-After` and capped.
fn retry_delay(policy: &RetryPolicy, retries_done: u32, retry_after: Option<Duration>) -> Duration {
    let d = policy.delay(retries_done, &mut rand::rng());
    match retry_after {
        Some(ra) => d.max(ra).min(policy.max_delay),
        None => d,
    }
}

async fn record(
    inner: &Arc<Inner>,
    task: &Task,
    fence: &Fence,
    outcome: HandlerOutcome,
    started_at: DateTime<Utc>,
    elapsed: Duration,
    cancelled: bool,
) {
    let now = inner.clock.now();
    let attempt_no = task.tries + 1;
    let duration_ms = millis(elapsed);
    let mut attempt = AttemptRecord {
        task_id: task.id.clone(),
        n: attempt_no,
        started_at,
        duration_ms,
        status_code: outcome.status_code,
        error: None,
        response: outcome.response.clone(),
        outcome: String::new(),
    };
    metrics::histogram!("workflow_attempt_duration_seconds").record(elapsed.as_secs_f64());
    let (completion, will_retry) = match outcome.result {
        AttemptResult::Deferred {
            retry_in,
            reason,
            hold_target,
        } => {
            let until =
                now + chrono::Duration::from_std(retry_in).unwrap_or(chrono::TimeDelta::MAX);
            tracing::info!(task_id = %task.id, %until, reason = %reason, "attempt deferred");
            let _ = inner.events.send(EngineEvent::Deferred {
                task_id: task.id.clone(),
                until,
                reason: reason.clone(),
            });
            metrics::counter!("workflow_attempts_total", "outcome" => "deferred").increment(1);
            if let Some(target) = task.target.as_ref().filter(|_| hold_target) {
                // Whatever deferred this task (the target's breaker, its rate limit) holds
                // every task of the target: leave them unclaimed until then, instead of
                // claiming and giving back each due one (a write and an event apiece, over
                // and over while a failing target's breaker stays open).
                let mut f = inner.in_flight.lock();
                let end = f.held.entry(target.clone()).or_insert(until);
                *end = (*end).max(until);
            }
            match inner
                .store
                .release(fence, Release { at: until, reason }, now)
                .await
            {
                Ok(t) => status_changed(inner, &t.id, TaskStatus::Processing, t.status),
                Err(e) => fenced_or_failed(inner, task, fence, &e),
            }
            return;
        }
        AttemptResult::Success(result) => {
            attempt.outcome = "success".to_owned();
            (Completion::Succeeded { result }, false)
        }
        AttemptResult::Permanent { error } => {
            attempt.outcome = "permanent".to_owned();
            attempt.error = Some(error.clone());
            (Completion::Failed { error }, false)
        }
        AttemptResult::Retryable { error, retry_after } => {
            attempt.outcome = "retryable".to_owned();
            attempt.error = Some(error.clone());
            if cancelled {
                // The user cancelled it while it ran: no further attempt (the store ends it
                // `cancelled`).
                (Completion::Failed { error }, false)
            } else if attempt_no >= task.max_attempts {
                let error = format!("attempts exhausted ({attempt_no}); last error: {error}");
                (Completion::Failed { error }, false)
            } else {
                let delay = retry_delay(&inner.config.retry, task.tries, retry_after);
                let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
                (Completion::Retry { at, error }, true)
            }
        }
    };
    metrics::counter!("workflow_attempts_total", "outcome" => attempt.outcome.clone()).increment(1);
    match &completion {
        Completion::Succeeded { .. } => {
            tracing::info!(task_id = %task.id, attempt = attempt_no, status = ?attempt.status_code, duration_ms, "attempt succeeded");
            let _ = inner.events.send(EngineEvent::Succeeded {
                task_id: task.id.clone(),
                attempt: attempt_no,
                status_code: attempt.status_code,
                duration_ms,
            });
            let latency = (now - task.created_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("workflow_delivery_latency_seconds").record(latency);
        }
        Completion::Retry { error, .. } | Completion::Failed { error } => {
            tracing::warn!(task_id = %task.id, attempt = attempt_no, status = ?attempt.status_code, error = %error, will_retry, "attempt failed");
            let _ = inner.events.send(EngineEvent::Failed {
                task_id: task.id.clone(),
                attempt: attempt_no,
                status_code: attempt.status_code,
                error: error.clone(),
                will_retry,
            });
        }
    }
    if let Completion::Retry { at, .. } = &completion {
        let delay_ms = (*at - now).num_milliseconds().max(0) as u64;
        tracing::info!(task_id = %task.id, retry_at = %at, delay_ms, "retry scheduled");
        let _ = inner.events.send(EngineEvent::RetryScheduled {
            task_id: task.id.clone(),
            at: *at,
            delay_ms,
        });
    }
    match inner
        .store
        .finish_attempt(fence, attempt, completion, now)
        .await
    {
        Ok(t) => status_changed(inner, &t.id, TaskStatus::Processing, t.status),
        Err(e) => fenced_or_failed(inner, task, fence, &e),
    }
}

fn fenced_or_failed(inner: &Inner, task: &Task, fence: &Fence, e: &StoreError) {
    if e.is_fenced() {
        metrics::counter!("workflow_fenced_writes_total").increment(1);
        tracing::warn!(task_id = %task.id, attempt = fence.attempt, "stale write rejected: another worker owns the task");
        let _ = inner.events.send(EngineEvent::Fenced {
            task_id: task.id.clone(),
            attempt: fence.attempt,
        });
    } else {
        tracing::error!(task_id = %task.id, error = %e, "could not record the attempt; the lease will expire and it will be retried");
    }
}
