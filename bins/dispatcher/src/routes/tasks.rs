//! The seed's task API: create, inspect, list, cancel, retry.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use task_package::FieldError;
use workflow_core::CancelOutcome;
use workflow_dispatch::api::{
    CreateTaskResponse, ListQuery, TaskListResponse, TaskStatusResponse, info,
};

use crate::AppState;
use crate::auth::ApiKey;
use crate::error::{ApiError, ErrorBody};
use crate::routes::json_body;

/// Creates a task from the seed's request body and queues its delivery.
#[utoipa::path(
    post, path = "/workflow/tasks", tag = "tasks",
    request_body(content = workflow_dispatch::api::schema::CreateTaskForms, description = "The seed's flat request, or the nested package form", content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same task: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$")),
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
    // The body's fields and the header are checked together, so one 400 names them all.
    let (request, idempotency_key) = match (
        state.manager.parse_request(&body),
        idempotency_key(&headers),
    ) {
        (Ok(request), Ok(key)) => (request, key),
        (request, key) => {
            let mut errors = request.err().unwrap_or_default();
            errors.errors.extend(key.err());
            return Err(ApiError::validation(errors));
        }
    };
    let created = state.manager.create_task(&request, idempotency_key).await?;
    tracing::Span::current().record("task_id", created.task.id.as_str());
    let replayed = created.replayed;
    let body = CreateTaskResponse::from(created);
    let mut resp = Json(body).into_response();
    if replayed {
        resp.headers_mut().insert(
            "idempotent-replayed",
            header::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, FieldError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    // HTTP strips the spaces around a header value; inside it, only visible ASCII.
    match v.to_str().map(str::trim) {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(FieldError {
            field: "Idempotency-Key".to_owned(),
            reason: "must be 1 to 255 visible ASCII characters".to_owned(),
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
    task_response(&state, &task_id).await
}

/// The task's status as `GET /workflow/tasks/{id}` answers it.
pub(crate) async fn task_response(
    state: &AppState,
    task_id: &str,
) -> Result<Json<TaskStatusResponse>, ApiError> {
    let view = state
        .manager
        .get_task_status(task_id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    Ok(Json(TaskStatusResponse {
        status: "success".to_owned(),
        task_info: info(view),
    }))
}

/// Which delivery of a task a cancel or retry acts on (default: the whole task).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveryQuery {
    /// One delivery only: its `target` (webhook URL or channel name) or its `delivery_id`.
    delivery: Option<String>,
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
    let filter = q.to_filter().map_err(ApiError::validation)?;
    let (tasks, next_cursor) = state.manager.list_task_statuses(&filter).await?;
    Ok(Json(TaskListResponse {
        status: "success".to_owned(),
        tasks: tasks.into_iter().map(info).collect(),
        next_cursor: next_cursor.map(|c| c.to_string()),
    }))
}

/// Cancels a task (every delivery not yet ended, or the one `delivery` names): at once if
/// waiting, after its current attempt if one is running.
#[utoipa::path(
    post, path = "/workflow/tasks/{task_id}/cancel", tag = "tasks",
    params(("task_id" = String, Path, description = "Task id"), DeliveryQuery),
    responses(
        (status = 200, description = "Cancelled (or cancelling)", body = TaskStatusResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such task (or delivery)", body = ErrorBody),
        (status = 409, description = "Already final", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn cancel_task(
    _: ApiKey,
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<TaskStatusResponse>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_field("query", e.body_text()))?;
    let outcome = match &q.delivery {
        None => state.manager.cancel_task(&task_id).await?,
        Some(delivery) => state.manager.cancel_delivery(&task_id, delivery).await?,
    };
    if let CancelOutcome::AlreadyFinal(t) = outcome {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_final",
            match q.delivery {
                None => format!("task is already {}", t.status),
                Some(_) => format!("delivery is already {}", t.status),
            },
        ));
    }
    task_response(&state, &task_id).await
}

/// Retries a failed (or cancelled) task now, with a fresh attempt budget: every delivery
/// that failed or was cancelled, or the one `delivery` names.
#[utoipa::path(
    post, path = "/workflow/tasks/{task_id}/retry", tag = "tasks",
    params(("task_id" = String, Path, description = "Task id"), DeliveryQuery),
    responses(
        (status = 200, description = "Queued again", body = TaskStatusResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such task (or delivery)", body = ErrorBody),
        (status = 409, description = "Not failed or cancelled", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn retry_task(
    _: ApiKey,
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<TaskStatusResponse>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_field("query", e.body_text()))?;
    match &q.delivery {
        None => {
            state.manager.retry_task(&task_id).await?;
        }
        Some(delivery) => {
            state.manager.retry_delivery(&task_id, delivery).await?;
        }
    }
    task_response(&state, &task_id).await
}
