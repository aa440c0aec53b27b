//! The engine: claims due tasks by priority, runs them on a bounded pool, writes outcomes.
//!
//! One background loop claims due tasks (critical first, then due time, then creation order)
//! in batches of at most the free slots, skipping targets at their per-target cap, and runs each
//! attempt as an owned task in a [`JoinSet`](tokio::task::JoinSet). When nothing is due it sleeps until the store's
//! next due time, an enqueue (the store's [`Store::wakeup`]) or a freed slot: an idle engine
//! does not poll. Outcomes are written with the claim's [`Fence`](crate::store::Fence), so a worker that lost its
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

mod attempt;
mod claim_loop;
mod handoff;
mod slots;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use retry_policy::{ExponentialBackoff, RetryPolicy};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{SharedClock, SystemClock};
use crate::error::StoreError;
use crate::events::EngineEvent;
use crate::handler::Handler;
use crate::model::{NewTask, Task, TaskStatus};
use crate::store::{CancelOutcome, Enqueued, Store};

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
    /// Delays between attempts. How many attempts a task gets is the task's own
    /// ([`NewTask::max_attempts`]), stored with it, so a restart with other settings does not
    /// change the budget of tasks already accepted.
    pub backoff: ExponentialBackoff,
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
            owner_id: EngineConfig::owner_id_for("engine"),
            batch_size: 128,
            max_in_flight: 512,
            per_target_in_flight: 64,
            lease: Duration::from_secs(60),
            backoff: RetryPolicy::default().backoff(),
            task_queue_size: None,
            prune_after: None,
            shutdown_grace: Duration::from_secs(10),
            gauge_interval: Duration::from_secs(5),
            max_idle: Duration::from_secs(60),
        }
    }
}

impl EngineConfig {
    /// A lease owner name unique to this process: `<host>-<pid>-<random>`.
    pub fn owner_id_for(host: &str) -> String {
        format!(
            "{host}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        )
    }

    /// [`EngineConfig::owner_id_for`] the host named by the `HOSTNAME` environment variable
    /// (`engine` when unset), so operators can tell instances apart in leases and logs. The
    /// one place the engine reads the environment, and only when a service asks.
    pub fn owner_id_from_env() -> String {
        EngineConfig::owner_id_for(
            &std::env::var("HOSTNAME").unwrap_or_else(|_| "engine".to_owned()),
        )
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

struct Inner {
    store: Arc<dyn Store>,
    handlers: HashMap<String, Arc<dyn Handler>>,
    config: EngineConfig,
    clock: SharedClock,
    events: broadcast::Sender<EngineEvent>,
    in_flight: Mutex<slots::InFlight>,
    slot_freed: Notify,
    stop_claiming: CancellationToken,
    hard_stop: CancellationToken,
    claim_rounds: AtomicU64,
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The running attempts, owned so shutdown drains them; `None` once the drain took them.
    attempts: Mutex<Option<JoinSet<()>>>,
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
            // Nothing goes straight to a worker before the first claim round has seen what
            // the store holds from before this start.
            in_flight: Mutex::new(slots::InFlight {
                backlog: 1,
                ..slots::InFlight::default()
            }),
            slot_freed: Notify::new(),
            stop_claiming: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            claim_rounds: AtomicU64::new(0),
            background: Mutex::new(None),
            attempts: Mutex::new(Some(JoinSet::new())),
        });
        let handle = tokio::spawn(claim_loop::run(inner.clone()));
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

    /// Stores a task (durably, before returning) and runs it: at once when a worker is free
    /// and no due work waits in the store (the task is stored already claimed by this engine),
    /// otherwise through the claim loop, in priority order.
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
        let out = handoff::enqueue(&self.inner, vec![task], true).await?;
        out.into_iter()
            .next()
            .ok_or_else(|| EngineError::Store(StoreError::backend("the store answered no task")))
    }

    /// Stores many tasks in one transaction, run as [`Engine::enqueue`] runs one (all at once
    /// when there is room for all of them).
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
        Ok(handoff::enqueue(&self.inner, tasks, false).await?)
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
