//! What the engine reports as it works: a broadcast that logs, metrics and UIs subscribe to.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{Priority, TaskStatus};

/// One thing that happened to a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EngineEvent {
    /// Accepted and stored.
    Created {
        /// The task.
        task_id: String,
        /// Its priority.
        priority: Priority,
    },
    /// Claimed and handed to its handler.
    Dispatched {
        /// The task.
        task_id: String,
        /// 1-based attempt number.
        attempt: u32,
    },
    /// An attempt succeeded.
    Succeeded {
        /// The task.
        task_id: String,
        /// 1-based attempt number.
        attempt: u32,
        /// HTTP status, if any.
        status_code: Option<u16>,
        /// How long it took.
        duration_ms: u64,
    },
    /// An attempt failed.
    Failed {
        /// The task.
        task_id: String,
        /// 1-based attempt number.
        attempt: u32,
        /// HTTP status, if any.
        status_code: Option<u16>,
        /// What went wrong.
        error: String,
        /// Whether another attempt follows.
        will_retry: bool,
    },
    /// A retry was scheduled.
    RetryScheduled {
        /// The task.
        task_id: String,
        /// When.
        at: DateTime<Utc>,
        /// After how long.
        delay_ms: u64,
    },
    /// Not attempted now (breaker open); due again later without spending an attempt.
    Deferred {
        /// The task.
        task_id: String,
        /// When.
        until: DateTime<Utc>,
        /// Why.
        reason: String,
    },
    /// The task's status changed.
    StatusChanged {
        /// The task.
        task_id: String,
        /// Before.
        from: TaskStatus,
        /// After.
        to: TaskStatus,
    },
    /// A worker's write was refused because its claim no longer held (lease lost).
    Fenced {
        /// The task.
        task_id: String,
        /// The stale attempt number.
        attempt: u32,
    },
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
