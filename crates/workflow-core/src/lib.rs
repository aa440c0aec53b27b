//! The durable priority engine shared by the dispatcher and the DingTalk bot.
//!
//! Tasks are accepted, stored durably, claimed by priority, attempted, retried on a durable
//! schedule, recovered after crashes, and observable at every step.

pub mod clock;
pub mod error;
pub mod model;
pub mod store;

pub use clock::{Clock, SharedClock, SystemClock, TokioClock};
pub use error::StoreError;
pub use model::{AttemptRecord, CallbackRecord, NewTask, Priority, Task, TaskEvent, TaskStatus};
pub use store::{
    CancelOutcome, Completion, Counts, EnqueueLimits, Enqueued, Fence, MemoryStore, Page, Release,
    SqliteConfig, SqliteStore, Store, StoreResult, Synchronous, TaskFilter,
};
