//! The task API's models, as an HTTP service shows them (the seed's response shapes), and
//! the list query's parsing: shared by the dispatcher's routes and any client. With the
//! `axum` feature, [`error`]: the API's JSON error answers.

#[cfg(feature = "axum")]
pub mod error;
#[cfg(feature = "openapi")]
pub mod schema;

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use task_package::{FieldError, Priority, ValidationErrors};
use workflow_core::{AttemptRecord, TaskFilter, TaskStatus};

use crate::manager::{CreatedTask, TaskStatusView};
use crate::payload::{DeliveryPayload, DeliveryRef};
use crate::routing::RouteView;
use crate::webhook::WEBHOOK_KIND;

/// The seed's `message` for a new task, word for word.
pub const CREATED_MESSAGE: &str = "Workflow task created and dispatched successfully";
/// The `message` when an `Idempotency-Key` names a task that exists (header
/// `Idempotent-Replayed: true`); the rest of the answer is that task's.
pub const REPLAYED_MESSAGE: &str =
    "Workflow task already exists for this Idempotency-Key; returning it";

/// The answer to `POST /workflow/tasks` (the seed's shape).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTaskResponse {
    /// `"success"`.
    pub status: String,
    /// `wf_<unix>_<8 hex>`.
    pub task_id: String,
    /// What happened.
    pub message: String,
    /// Where it will be delivered (empty when only a channel was named).
    pub webhook_url: String,
    /// The preset channel named, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// With both `webhook_url` and `channel`: the delivery notifying the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_task_id: Option<String>,
    /// Every delivery (its id and target), the task's own first: shown when the task fans
    /// out or was routed (a task sent where its request said, to one target, answers exactly
    /// the seed's fields).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<DeliveryRef>,
    /// The route that chose the targets, when the request named none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

impl From<CreatedTask> for CreateTaskResponse {
    fn from(c: CreatedTask) -> CreateTaskResponse {
        CreateTaskResponse {
            status: "success".to_owned(),
            task_id: c.task.id,
            message: if c.replayed {
                REPLAYED_MESSAGE
            } else {
                CREATED_MESSAGE
            }
            .to_owned(),
            webhook_url: c.webhook_url,
            channel: c.channel,
            channel_task_id: c.channel_task_id,
            deliveries: if c.deliveries.len() > 1 || c.route.is_some() {
                c.deliveries
            } else {
                Vec::new()
            },
            route: c.route,
        }
    }
}

/// One attempt, as shown to clients.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptView {
    /// 1-based number.
    pub n: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
    /// The receiver's status, if it answered.
    pub status_code: Option<u16>,
    /// `success`, `retryable` or `permanent`.
    pub outcome: String,
    /// What went wrong.
    pub error: Option<String>,
    /// The delivery's target, in a task that fans out to several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The receiver's latest report.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackView {
    /// `accepted`, `in_progress`, `resolved` or `rejected`.
    pub status: String,
    /// The receiver's note.
    pub note: Option<String>,
    /// When it was reported.
    pub at: DateTime<Utc>,
}

/// A task's status (the seed's `task_info`, with more fields).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskInfo {
    /// The id.
    pub task_id: String,
    /// `pending`, `processing`, `retrying`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// When delivery completed (or the task ended).
    pub completed_at: Option<DateTime<Utc>>,
    /// Queue priority.
    pub priority: String,
    /// Where it goes (absent for a channel delivery).
    pub webhook_url: Option<String>,
    /// The preset channel it goes through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Attempts made.
    pub attempts: Vec<AttemptView>,
    /// Retries made (attempts after the first).
    pub retries: u32,
    /// When the next attempt is due, if waiting.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last error.
    pub last_error: Option<String>,
    /// The receiver's latest report (the latest of any delivery's).
    pub callback: Option<CallbackView>,
    /// Every delivery: one per target, each with its own attempts and status.
    #[serde(default)]
    pub deliveries: Vec<DeliveryInfo>,
}

/// One delivery of a task.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryInfo {
    /// The webhook URL, or the channel's name.
    pub target: String,
    /// The delivery's id: the task's for the first, `<task id>.<n>` for the others.
    pub delivery_id: String,
    /// `pending`, `processing`, `retrying`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due, if waiting.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last error.
    pub last_error: Option<String>,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
    /// Its receiver's latest report.
    pub callback: Option<CallbackView>,
}

/// The answer to `GET /workflow/tasks/{id}` (the seed's shape).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskStatusResponse {
    /// `"success"`.
    pub status: String,
    /// The task.
    pub task_info: TaskInfo,
}

fn callback_view(c: &workflow_core::CallbackRecord) -> CallbackView {
    CallbackView {
        status: c.status.clone(),
        note: c.note.clone(),
        at: c.at,
    }
}

fn attempt_view(a: AttemptRecord, target: Option<&str>) -> AttemptView {
    AttemptView {
        n: a.n,
        started_at: a.started_at,
        duration_ms: a.duration_ms,
        status_code: a.status_code,
        outcome: a.outcome,
        error: a.error,
        target: target.map(str::to_owned),
    }
}

/// What clients see of a task: the seed's fields for the task as a whole (its status over
/// every delivery; for a task that fans out, every delivery's attempts in time order, each
/// naming its target) and `deliveries`, one per target.
pub fn info(view: TaskStatusView) -> TaskInfo {
    let status = view.status().as_str().to_owned();
    let fans_out = view.fans_out();
    let TaskStatusView {
        task,
        attempts,
        deliveries,
        ..
    } = view;
    let stored = DeliveryPayload::read(&task.payload).ok();
    let webhook_url = stored.and_then(|p| p.url).map(str::to_owned);
    let channel = stored.and_then(|p| p.channel).map(str::to_owned);
    let all_final = deliveries.iter().all(|d| d.task.status.is_final());
    let completed_at = if !fans_out {
        task.finished_at
    } else if all_final {
        deliveries.iter().filter_map(|d| d.task.finished_at).max()
    } else {
        None
    };
    let mut attempt_views: Vec<AttemptView> = if fans_out {
        deliveries
            .iter()
            .flat_map(|d| {
                d.attempts
                    .iter()
                    .cloned()
                    .map(|a| attempt_view(a, Some(&d.target)))
            })
            .collect()
    } else {
        attempts
            .into_iter()
            .map(|a| attempt_view(a, None))
            .collect()
    };
    attempt_views.sort_by_key(|a| a.started_at);
    let latest_error = deliveries
        .iter()
        .filter(|d| d.task.last_error.is_some())
        .max_by_key(|d| {
            (
                d.task.status == workflow_core::TaskStatus::Failed,
                d.task.updated_at,
            )
        })
        .and_then(|d| d.task.last_error.clone());
    TaskInfo {
        webhook_url,
        channel,
        status,
        completed_at,
        priority: task.priority.as_str().to_owned(),
        created_at: task.created_at,
        updated_at: deliveries
            .iter()
            .map(|d| d.task.updated_at)
            .max()
            .unwrap_or(task.updated_at),
        retries: deliveries
            .iter()
            .map(|d| d.task.tries.saturating_sub(1))
            .sum(),
        attempts: attempt_views,
        next_attempt_at: if fans_out {
            deliveries
                .iter()
                .filter(|d| !d.task.status.is_final())
                .filter_map(|d| d.task.next_run_at)
                .min()
        } else {
            task.next_run_at
        },
        last_error: latest_error.or(task.last_error),
        callback: deliveries
            .iter()
            .filter_map(|d| d.task.callback.as_ref())
            .max_by_key(|c| c.at)
            .map(callback_view),
        deliveries: deliveries
            .iter()
            .map(|d| DeliveryInfo {
                target: d.target.clone(),
                delivery_id: d.task.id.clone(),
                status: d.task.status.as_str().to_owned(),
                attempts: d.task.tries,
                next_attempt_at: d.task.next_run_at,
                last_error: d.task.last_error.clone(),
                completed_at: d.task.finished_at,
                callback: d.task.callback.as_ref().map(callback_view),
            })
            .collect(),
        task_id: task.id,
    }
}

/// The answer to `GET /workflow/routes`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteListResponse {
    /// `"success"`.
    pub status: String,
    /// The rules in order: the first that matches a task that names no target decides.
    pub routes: Vec<RouteView>,
}

/// The answer to `POST /workflow/routes/test`: where a task with this body would go.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteTestResponse {
    /// `"success"`.
    pub status: String,
    /// The route that chose the targets; absent when the body names them itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Every delivery the task would get, in order.
    pub targets: Vec<crate::manager::PlannedTarget>,
}

/// Query of `GET /workflow/tasks`. Serialisable too, so a client sends the very type the
/// server parses (absent fields are left out of the query string).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct ListQuery {
    /// Only this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only this priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Only this target (`scheme://host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Page size (1 to 1000, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A page of tasks.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskListResponse {
    /// `"success"`.
    pub status: String,
    /// Tasks, newest first.
    pub tasks: Vec<TaskInfo>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

impl ListQuery {
    /// The store filter the query asks for (`webhook` tasks only).
    ///
    /// # Errors
    ///
    /// Every invalid parameter: unknown status or priority, a limit outside 1 to 1000, a
    /// malformed cursor.
    pub fn to_filter(&self) -> Result<TaskFilter, ValidationErrors> {
        let q = self;
        let mut errors = ValidationErrors::default();
        let mut bad = |field: &str, reason: &str| {
            errors.errors.push(FieldError {
                field: field.to_owned(),
                reason: reason.to_owned(),
            });
        };
        let status = q.status.as_deref().and_then(|s| {
            TaskStatus::from_str(s)
                .map_err(|_| bad("status", "unknown status"))
                .ok()
        });
        let priority = q.priority.as_deref().and_then(|p| {
            Priority::from_str(p)
                .map_err(|_| bad("priority", "expected critical, high, medium or low"))
                .ok()
        });
        let limit = q
            .limit
            .as_deref()
            .map_or(Some(100), |l| match l.parse::<usize>() {
                Ok(n @ 1..=1000) => Some(n),
                _ => {
                    bad("limit", "must be a number from 1 to 1000");
                    None
                }
            });
        let cursor = q.cursor.as_deref().and_then(|c| {
            c.parse::<i64>()
                .map_err(|_| bad("cursor", "invalid cursor"))
                .ok()
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(TaskFilter {
            status,
            priority: priority.map(crate::queue_priority),
            target: q.target.clone(),
            kind: Some(WEBHOOK_KIND.to_owned()),
            limit: limit.unwrap_or(100),
            before_seq: cursor,
        })
    }
}

/// The answer to `GET /workflow/channels`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelListResponse {
    /// `"success"`.
    pub status: String,
    /// The channels, by name: names, kinds and limits, never URLs or secrets.
    pub channels: Vec<crate::channels::ChannelView>,
}

/// What a receiver reports to `POST /workflow/tasks/{task_id}/callback` (the server checks it
/// with [`crate::CallbackReport::from_json`], which reports every invalid field).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackRequest {
    /// `accepted`, `in_progress`, `resolved` or `rejected`.
    pub status: String,
    /// Free text (at most 2,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The task's `callback_token`, if not sent as `X-Callback-Token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_token: Option<String>,
}
