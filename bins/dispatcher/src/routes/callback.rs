//! The closed loop: the receiver reports how a task ended.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use workflow_dispatch::CallbackReport;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::routes::json_body;
pub use workflow_dispatch::api::CallbackRequest;
use workflow_dispatch::api::TaskStatusResponse;

/// The receiver reports how the task ended (closes the loop). Authenticated by the
/// `callback_token` its package carries (as `Authorization: Bearer <token>`, header
/// `X-Callback-Token`, or the body field), not by an API key; each delivery of a task has a
/// token of its own, so the report is recorded on the delivery whose receiver answered.
#[utoipa::path(
    post, path = "/workflow/tasks/{task_id}/callback", tag = "tasks",
    params(("task_id" = String, Path, description = "Task id"), ("X-Callback-Token" = Option<String>, Header, description = "The task's callback token (or send it as `Authorization: Bearer`, or as the body's `callback_token`)")),
    request_body = CallbackRequest,
    responses(
        (status = 200, description = "Recorded", body = TaskStatusResponse),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Wrong token", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
pub(crate) async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TaskStatusResponse>, ApiError> {
    // A token in a header is checked before the body is even parsed: `X-Callback-Token`,
    // else `Authorization: Bearer` (what a receiver's HTTP client tries first).
    let header_token = headers
        .get("x-callback-token")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .or_else(|| {
            let auth = headers.get(axum::http::header::AUTHORIZATION)?;
            let auth = auth.to_str().unwrap_or_default().trim();
            let (scheme, token) = auth.split_once(' ').unwrap_or((auth, ""));
            Some(if scheme.eq_ignore_ascii_case("bearer") {
                token.trim().to_owned()
            } else {
                String::new()
            })
        });
    let mut delivery = None;
    if let Some(token) = &header_token {
        delivery = Some(
            state
                .manager
                .callback_delivery(&task_id, token)
                .ok_or_else(|| ApiError::unauthorized("invalid callback token"))?,
        );
    }
    let body = json_body(&headers, body)?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("malformed JSON: {e}"),
        )
    })?;
    let delivery = match delivery {
        Some(d) => d,
        None => {
            let token = value
                .get("callback_token")
                .and_then(|v| v.as_str())
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "missing callback token (Authorization: Bearer, X-Callback-Token or the \
                     callback_token field)",
                    )
                })?;
            state
                .manager
                .callback_delivery(&task_id, token)
                .ok_or_else(|| ApiError::unauthorized("invalid callback token"))?
        }
    };
    let report = CallbackReport::from_json(&value).map_err(ApiError::validation)?;
    state.manager.record_callback(&delivery, report).await?;
    crate::routes::tasks::task_response(&state, &task_id).await
}
