//! The seed's task API: create, inspect, list, cancel, retry.

use std::str::FromStr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use task_package::{CreateTaskRequest, Priority};
use utoipa::{IntoParams, ToSchema};
use workflow_core::{CancelOutcome, Task, TaskFilter, TaskStatus};
use workflow_dispatch::{CreatedTask, DeliveryPayload, TaskStatusView};

use crate::AppState;
use crate::auth::ApiKey;
use crate::error::{ApiError, ErrorBody};
use crate::routes::json_body;

/// The seed's `message` for a new task, word for word.
pub const CREATED_MESSAGE: &str = "Workflow task created and dispatched successfully";
/// The `message` when an `Idempotency-Key` names a task that exists (header
/// `Idempotent-Replayed: true`); the rest of the answer is that task's.
pub const REPLAYED_MESSAGE: &str =
    "Workflow task already exists for this Idempotency-Key; returning it";

/// The answer to `POST /workflow/tasks` (the seed's shape).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    /// With both `webhook_url` and `channel`: the task notifying the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_task_id: Option<String>,
}

/// Creates a task from the seed's request body and queues its delivery.
#[utoipa::path(
    post, path = "/workflow/tasks", tag = "tasks",
    request_body(content = crate::openapi::CreateTaskForms, description = "The seed's flat request, or the nested package form", content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same task")),
    responses(
        (status = 200, description = "Queued", body = CreateTaskResponse),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Target's breaker open or queue full (see Retry-After)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn create_task(
    _: ApiKey,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let request = CreateTaskRequest::from_json_slice(&body).map_err(ApiError::validation)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() && k.len() <= 255 => Some(k.trim().to_owned()),
            _ => {
                return Err(ApiError::bad_field(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters",
                ));
            }
        },
    };
    let CreatedTask {
        task,
        replayed,
        webhook_url,
        channel,
        channel_task_id,
    } = state
        .manager
        .create_task(&request, idempotency_key)
        .await?;
    let body = CreateTaskResponse {
        status: "success".to_owned(),
        task_id: task.id,
        message: if replayed {
            REPLAYED_MESSAGE
        } else {
            CREATED_MESSAGE
        }
        .to_owned(),
        webhook_url,
        channel,
        channel_task_id,
    };
    let mut resp = Json(body).into_response();
    if replayed {
        resp.headers_mut().insert(
            "idempotent-replayed",
            header::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// One attempt, as shown to clients.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
}

/// The receiver's latest report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CallbackView {
    /// `accepted`, `in_progress`, `resolved` or `rejected`.
    pub status: String,
    /// The receiver's note.
    pub note: Option<String>,
    /// When it was reported.
    pub at: DateTime<Utc>,
}

/// A task's status (the seed's `task_info`, with more fields).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    /// The receiver's latest report.
    pub callback: Option<CallbackView>,
}

/// The answer to `GET /workflow/tasks/{id}` (the seed's shape).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskStatusResponse {
    /// `"success"`.
    pub status: String,
    /// The task.
    pub task_info: TaskInfo,
}

pub(crate) fn info(task: Task, attempts: Vec<workflow_core::AttemptRecord>) -> TaskInfo {
    let stored = DeliveryPayload::read(&task.payload).ok();
    let webhook_url = stored.and_then(|p| p.url).map(str::to_owned);
    let channel = stored.and_then(|p| p.channel).map(str::to_owned);
    TaskInfo {
        webhook_url,
        channel,
        task_id: task.id,
        status: task.status.as_str().to_owned(),
        completed_at: task.finished_at,
        priority: task.priority.as_str().to_owned(),
        created_at: task.created_at,
        updated_at: task.updated_at,
        retries: task.tries.saturating_sub(1),
        attempts: attempts
            .into_iter()
            .map(|a| AttemptView {
                n: a.n,
                started_at: a.started_at,
                duration_ms: a.duration_ms,
                status_code: a.status_code,
                outcome: a.outcome,
                error: a.error,
            })
            .collect(),
        next_attempt_at: task.next_run_at,
        last_error: task.last_error,
        callback: task.callback.map(|c| CallbackView {
            status: c.status,
            note: c.note,
            at: c.at,
        }),
    }
}

/// A task's status, attempts and the receiver's latest report.
#[utoipa::path(
    get, path = "/workflow/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task", body = TaskStatusResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn get_task(
    _: ApiKey,
    State(state): State<AppState>,
    Path(task_id): Path<String>,
) -> Result<Json<TaskStatusResponse>, ApiError> {
    let TaskStatusView { task, attempts, .. } = state
        .manager
        .get_task_status(&task_id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    Ok(Json(TaskStatusResponse {
        status: "success".to_owned(),
        task_info: info(task, attempts),
    }))
}

/// Query of `GET /workflow/tasks`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ListQuery {
    /// Only this status.
    status: Option<String>,
    /// Only this priority.
    priority: Option<String>,
    /// Only this target (`scheme://host:port`).
    target: Option<String>,
    /// Page size (1 to 1000, default 100).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of tasks.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskListResponse {
    /// `"success"`.
    pub status: String,
    /// Tasks, newest first.
    pub tasks: Vec<TaskInfo>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Lists tasks, newest first, with filters and cursor paging.
#[utoipa::path(
    get, path = "/workflow/tasks", tag = "tasks", params(ListQuery),
    responses(
        (status = 200, description = "A page", body = TaskListResponse),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn list_tasks(
    _: ApiKey,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<TaskListResponse>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_field("query", e.body_text()))?;
    let mut errors = task_package::ValidationErrors::default();
    let mut bad = |field: &str, reason: &str| {
        errors.errors.push(task_package::FieldError {
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
        return Err(ApiError::validation(errors));
    }
    let filter = TaskFilter {
        status,
        priority,
        target: q.target,
        kind: Some(workflow_dispatch::WEBHOOK_KIND.to_owned()),
        limit: limit.unwrap_or(100),
        before_seq: cursor,
    };
    let page = state.manager.list_tasks(&filter).await?;
    Ok(Json(TaskListResponse {
        status: "success".to_owned(),
        tasks: page
            .tasks
            .into_iter()
            .map(|t| info(t, Vec::new()))
            .collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// Cancels a task: at once if waiting, after its current attempt if one is running.
#[utoipa::path(
    post, path = "/workflow/tasks/{task_id}/cancel", tag = "tasks",
    params(("task_id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "Cancelled (or cancelling)", body = TaskStatusResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Already final", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn cancel_task(
    _: ApiKey,
    State(state): State<AppState>,
    Path(task_id): Path<String>,
) -> Result<Json<TaskStatusResponse>, ApiError> {
    let task = match state.manager.cancel_task(&task_id).await? {
        CancelOutcome::Cancelled(t) | CancelOutcome::Requested(t) => t,
        CancelOutcome::AlreadyFinal(t) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_final",
                format!("task is already {}", t.status),
            ));
        }
    };
    Ok(Json(TaskStatusResponse {
        status: "success".to_owned(),
        task_info: info(task, Vec::new()),
    }))
}

/// Retries a failed (or cancelled) task now, with a fresh attempt budget.
#[utoipa::path(
    post, path = "/workflow/tasks/{task_id}/retry", tag = "tasks",
    params(("task_id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "Queued again", body = TaskStatusResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Not failed or cancelled", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn retry_task(
    _: ApiKey,
    State(state): State<AppState>,
    Path(task_id): Path<String>,
) -> Result<Json<TaskStatusResponse>, ApiError> {
    let task = state.manager.retry_task(&task_id).await?;
    Ok(Json(TaskStatusResponse {
        status: "success".to_owned(),
        task_info: info(task, Vec::new()),
    }))
}
