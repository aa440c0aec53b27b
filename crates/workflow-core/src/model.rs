//! Task, attempt and event records: the rows the engine stores.

use std::fmt;
use std::str::FromStr;

pub use crate::priority::Priority;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a task is in its lifecycle.
///
/// `pending -> processing -> completed`; on a retryable failure `processing -> retrying -> processing`;
/// `failed` when attempts are exhausted or the failure is permanent; `cancelled` from any non-final
/// state. Final states never change (except an explicit [`Store::retry_now`](crate::Store::retry_now)
/// of a failed task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Accepted, waiting for its first attempt.
    Pending,
    /// Claimed by a worker that holds a lease on it.
    Processing,
    /// Waiting for the next attempt after a retryable failure.
    Retrying,
    /// Done: the last attempt succeeded.
    Completed,
    /// Done: a permanent failure, or attempts exhausted.
    Failed,
    /// Done: cancelled by a user.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Pending,
        TaskStatus::Processing,
        TaskStatus::Retrying,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// Whether the status is final (completed, failed or cancelled).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The lowercase wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Processing => "processing",
            TaskStatus::Retrying => "retrying",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when a string is not a known [`TaskStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// A task to be stored by [`Store::enqueue`](crate::Store::enqueue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// Unique id (for deliveries, the seed's `wf_<unix>_<8 hex>`).
    pub id: String,
    /// Which handler runs it (e.g. `"webhook"`, `"bot_job"`).
    pub kind: String,
    /// Claim order: higher priorities are claimed first.
    pub priority: Priority,
    /// Handler input, stored as JSON.
    pub payload: serde_json::Value,
    /// The target key used for per-target concurrency caps and breakers
    /// (e.g. `https://host:443`, or a user id for bot jobs). `None`: no per-target cap.
    pub target: Option<String>,
    /// Attempts allowed in total (first attempt + retries). At least 1.
    pub max_attempts: u32,
    /// When the task first becomes due.
    pub run_at: DateTime<Utc>,
    /// Deduplication key: enqueueing the same key again returns the existing task.
    pub idempotency_key: Option<String>,
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique id.
    pub id: String,
    /// Which handler runs it.
    pub kind: String,
    /// Claim order.
    pub priority: Priority,
    /// Where it is in its lifecycle.
    pub status: TaskStatus,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Per-target key, if any.
    pub target: Option<String>,
    /// The fencing number: bumped by every claim. A write is accepted only with the current value.
    pub attempt: u32,
    /// Attempts actually made (sent). Deferrals and released leases do not count.
    pub tries: u32,
    /// Attempts allowed in total.
    pub max_attempts: u32,
    /// When it is next due (pending/retrying), or `None`.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The worker holding the lease while processing.
    pub lease_owner: Option<String>,
    /// When the lease expires; after that the task is due again (crash recovery).
    pub lease_until: Option<DateTime<Utc>>,
    /// A cancel was asked for while it was processing; the worker should stop.
    pub cancel_requested: bool,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// The handler's result of the successful attempt (e.g. a bot job's answer), if any.
    pub result: Option<serde_json::Value>,
    /// Deduplication key.
    pub idempotency_key: Option<String>,
    /// The latest report from the receiver (the callback that closes the loop).
    pub callback: Option<CallbackRecord>,
    /// Creation order: a store-assigned, strictly increasing sequence number.
    pub seq: i64,
}

/// What the receiver reported about a delivered task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRecord {
    /// `accepted`, `in_progress`, `resolved` or `rejected`.
    pub status: String,
    /// Free text from the receiver.
    pub note: Option<String>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The task.
    pub task_id: String,
    /// 1-based attempt number (the task's `tries` after this attempt).
    pub n: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
    /// HTTP status, when there was a response.
    pub status_code: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The response body, truncated.
    pub response: Option<String>,
    /// `success`, `retryable` or `permanent`.
    pub outcome: String,
}

/// A state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The task.
    pub task_id: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Previous status (`None` on creation).
    pub from: Option<TaskStatus>,
    /// New status.
    pub to: TaskStatus,
    /// Why (e.g. `created`, `claimed`, `retry scheduled`, `lease expired`, `cancelled by user`).
    pub reason: String,
}
