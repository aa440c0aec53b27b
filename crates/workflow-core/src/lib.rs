//! The durable priority engine shared by the dispatcher and the DingTalk bot.
//!
//! Tasks are accepted, stored durably, claimed by priority, attempted, retried on a durable
//! schedule, recovered after crashes, and observable at every step.

pub mod clock;
pub mod engine;
pub mod error;
pub mod events;
pub mod facade;
pub mod handler;
pub mod model;
pub mod store;
pub mod webhook;

pub use clock::{Clock, SharedClock, SystemClock, TokioClock};
pub use engine::{Engine, EngineBuilder, EngineConfig, EngineError};
pub use error::StoreError;
pub use events::EngineEvent;
pub use facade::{
    AsyncTaskConfig, AsyncTaskManager, BotJob, DispatchRequest, DurationStats, TaskStatusView,
    WorkflowConfig, WorkflowManager,
};
pub use handler::{AttemptContext, AttemptResult, Handler, HandlerOutcome};
pub use model::{AttemptRecord, CallbackRecord, NewTask, Priority, Task, TaskEvent, TaskStatus};
pub use retry_policy::{Jitter, RetryPolicy};
pub use store::{
    CancelOutcome, Completion, Counts, EnqueueLimits, Enqueued, Fence, MemoryStore, Page, Release,
    SqliteConfig, SqliteStore, Store, StoreResult, Synchronous, TaskFilter,
};
pub use webhook::{WEBHOOK_KIND, WebhookDeliveryHandler, WebhookPayload};
