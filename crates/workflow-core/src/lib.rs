//! A durable priority job engine: the one under the dispatcher and the DingTalk bot, and
//! usable by any Rust service as its job queue.
//!
//! Tasks are accepted, stored durably, claimed by priority, attempted, retried on a durable
//! schedule, recovered after crashes, and observable at every step.
//!
//! - [`Store`]: [`MemoryStore`] for tests and library users, [`SqliteStore`] as the embedded
//!   default (WAL, one writer thread with group commit), `PostgresStore` for several instances
//!   sharing one database (`FOR UPDATE SKIP LOCKED` batch claims, `LISTEN/NOTIFY` wakeups);
//!   every backend passes one conformance suite ([`store::conformance`]).
//! - [`Engine`]: claims due tasks by priority, then due time, then creation order, under a
//!   lease fenced by the attempt number; a bounded pool with per-target caps; retries are rows
//!   with a due time; an idle engine sleeps until the next due time or an enqueue.
//! - [`Handler`]: what runs a task. The engine knows no webhook, package or chat platform:
//!   the dispatcher's delivery (crate `workflow-dispatch`) and the bot's jobs (crate
//!   `async-tasks`) are handlers registered by kind, and so is any other service's work.
//! - [`outcome::decide`]: what an attempt's outcome means for its task (budget, backoff,
//!   `Retry-After`, cancel, deferral), a pure function.
//!
//! Why our own engine rather than a general job-queue crate: the product needs, together,
//! priority claims fenced by attempt numbers, per-target concurrency caps, breaker-aware
//! deferral that spends no attempt, a group-committed SQLite writer, and identical semantics on
//! SQLite and PostgreSQL (one set of state transitions in `store::logic`, one conformance suite).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use workflow_core::{AttemptContext, Engine, Handler, HandlerOutcome, MemoryStore, NewTask, Priority, Task};
//!
//! struct Print;
//!
//! #[async_trait::async_trait]
//! impl Handler for Print {
//!     async fn handle(&self, task: &Task, _ctx: AttemptContext) -> HandlerOutcome {
//!         println!("running {}", task.id);
//!         HandlerOutcome::success()
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder(Arc::new(MemoryStore::new())).handler("print", Arc::new(Print)).start();
//! engine
//!     .enqueue(NewTask {
//!         id: "t1".into(),
//!         kind: "print".into(),
//!         priority: Priority::High,
//!         payload: serde_json::json!({}),
//!         target: None,
//!         max_attempts: 3,
//!         run_at: chrono::Utc::now(),
//!         idempotency_key: None,
//!     })
//!     .await?;
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `postgres` (default): `PostgresStore` and `PostgresConfig`, with `tokio-postgres`,
//!   `deadpool-postgres`, and rustls (`tokio-rustls`, `rustls-platform-verifier`) for TLS. On by default because both bundled binaries offer
//!   `--database-url postgres://...` and a scale-out backend that must be switched on at build
//!   time is one users find missing when they need it; a library user who embeds only SQLite
//!   turns default features off and builds neither client nor pool.
//! - `conformance`: exposes [`store::conformance`], the suite every `Store` backend must pass,
//!   and the `conformance_tests!` macro, for backends that live in other crates.

pub mod clock;
pub mod engine;
pub mod error;
pub mod events;
pub mod handler;
pub mod model;
pub mod outcome;
mod priority;
pub mod store;

pub use clock::{Clock, SharedClock, SystemClock, TokioClock};
pub use engine::{Engine, EngineBuilder, EngineConfig, EngineError};
pub use error::StoreError;
pub use events::EngineEvent;
pub use handler::{AttemptContext, AttemptResult, Handler, HandlerOutcome};
pub use model::{AttemptRecord, CallbackRecord, NewTask, Priority, Task, TaskEvent, TaskStatus};
pub use priority::UnknownPriority;
pub use retry_policy::{ExponentialBackoff, Jitter, RetryPolicy};
pub use store::{
    CancelOutcome, Completion, Counts, EnqueueLimits, Enqueued, Fence, MemoryStore, Page, Release,
    SqliteConfig, SqliteStore, Store, StoreResult, Synchronous, TaskFilter,
};
#[cfg(feature = "postgres")]
pub use store::{PostgresConfig, PostgresStore};
