//! The task API's errors over axum (feature `axum`): JSON
//! `{"status":"error","code","message","details"}` with the right status, the mapping of
//! [`crate::Error`] and [`workflow_core::EngineError`] to it, and [`json_errors`], the
//! middleware that gives axum's and tower-http's own rejections the same shape. A service
//! publishing the task API answers with these, as the dispatcher does.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use task_package::{FieldError, ValidationErrors};

/// One invalid field.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// JSON path of the field (empty for the whole body).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Always `"error"`.
    pub status: &'static str,
    /// Machine-readable code, e.g. `validation_failed`.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Invalid fields, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
}

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<ErrorDetail>,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    /// 400 listing every invalid field.
    pub fn validation(errors: ValidationErrors) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "request is invalid",
        );
        e.details = errors
            .errors
            .into_iter()
            .map(|FieldError { field, reason }| ErrorDetail { field, reason })
            .collect();
        if e.details.len() == 1 && e.details[0].field.is_empty() {
            e.message = e.details[0].reason.clone();
            e.code = "malformed_body";
        }
        e
    }

    /// 400 for one bad field.
    pub fn bad_field(field: &str, reason: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "request is invalid",
        );
        e.details.push(ErrorDetail {
            field: field.to_owned(),
            reason: reason.into(),
        });
        e
    }

    /// 413 over the body limit of `limit` bytes.
    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {} KiB", limit / 1024),
        )
    }

    /// 401.
    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after = Some(retry_after);
        e
    }

    /// 500; the cause is logged, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            status: "error",
            code: self.code,
            message: self.message,
            details: self.details,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(d) = self.retry_after {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// The `code` of an error answered with `status` by something other than a handler.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

/// Middleware: rewrites every error response that is not already JSON (axum's extractor
/// rejections, tower-http's timeout and body-limit answers) into the API's error shape, so
/// clients parse one format whatever produced the error. 5xx bodies are never echoed.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    // The dashboard's own error pages are HTML and stay so.
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    if is_json || is_html {
        return response;
    }
    let (parts, body) = response.into_parts();
    let message = if status.is_server_error() {
        None
    } else {
        axum::body::to_bytes(body, 4096)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|m| !m.is_empty())
    };
    let message = message.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    });
    let mut out = ApiError::new(status, code_for(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        match e {
            crate::Error::UnknownChannels(unknown) => ApiError::validation(ValidationErrors {
                errors: unknown
                    .iter()
                    .map(|(field, name)| crate::unknown_channel(field, name))
                    .collect(),
            }),
            crate::Error::NoRoute => ApiError::bad_field(
                "webhook_url",
                "is required: the request names no target (webhook_url, channel or channels) \
                 and no route matches it (GET /workflow/routes lists the rules)",
            ),
            crate::Error::TooManyTargets(max) => ApiError::bad_field(
                "channels",
                format!("a task may reach at most {max} targets"),
            ),
            crate::Error::UnknownDelivery(_) => ApiError::not_found("delivery"),
            crate::Error::BreakerOpen { retry_in } => ApiError::unavailable(
                "target_unavailable",
                "the target's circuit breaker is open after repeated failures; try again later",
                retry_in,
            ),
            crate::Error::Engine(e) => e.into(),
        }
    }
}

impl From<workflow_core::EngineError> for ApiError {
    fn from(e: workflow_core::EngineError) -> Self {
        use workflow_core::{EngineError, StoreError};
        match e {
            EngineError::Store(StoreError::QueueFull { limit }) => ApiError::unavailable(
                "queue_full",
                format!("task queue is full ({limit} tasks waiting); try again later"),
                Duration::from_secs(5),
            ),
            EngineError::Store(StoreError::NotFound(_)) => ApiError::not_found("task"),
            EngineError::Store(StoreError::InvalidState {
                status, message, ..
            }) => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_state",
                format!("task is {status}: {message}"),
            ),
            EngineError::ShuttingDown => ApiError::unavailable(
                "shutting_down",
                "the dispatcher is shutting down",
                Duration::from_secs(5),
            ),
            other => ApiError::internal(&other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn body_of(resp: Response) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn foreign_errors_get_the_json_shape_and_keep_their_headers() {
        let plain = Response::builder()
            .status(StatusCode::REQUEST_TIMEOUT)
            .header("x-request-id", "r1")
            .body(axum::body::Body::empty())
            .unwrap();
        let out = json_errors(plain).await;
        assert_eq!(out.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(out.headers()["x-request-id"], "r1");
        assert_eq!(out.headers()[header::CONTENT_TYPE], "application/json");
        let v = body_of(out).await;
        assert_eq!(v["status"], "error");
        assert_eq!(v["code"], "request_timeout");
        assert_eq!(v["message"], "request timeout");

        let rejection = (StatusCode::BAD_REQUEST, "Invalid URL: bad path").into_response();
        let v = body_of(json_errors(rejection).await).await;
        assert_eq!(v["code"], "bad_request");
        assert_eq!(v["message"], "Invalid URL: bad path");
    }

    #[tokio::test]
    async fn server_errors_never_echo_their_cause() {
        let leaky = (
            StatusCode::INTERNAL_SERVER_ERROR,
            "disk /var/lib/secret full",
        )
            .into_response();
        let v = body_of(json_errors(leaky).await).await;
        assert_eq!(v["code"], "internal");
        assert!(!v.to_string().contains("secret"), "{v}");
        let v = body_of(ApiError::internal(&"db password=hunter2 rejected").into_response()).await;
        assert_eq!(v["message"], "internal server error");
        assert!(!v.to_string().contains("hunter2"));
    }

    #[tokio::test]
    async fn successes_and_json_errors_pass_through_untouched() {
        let ok = (StatusCode::OK, "fine").into_response();
        let out = json_errors(ok).await;
        assert_eq!(out.status(), StatusCode::OK);
        let own = ApiError::not_found("task").into_response();
        let v = body_of(json_errors(own).await).await;
        assert_eq!(v["message"], "task not found");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let resp = ApiError::unavailable("x", "y", Duration::from_millis(1500)).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        let resp = ApiError::unavailable("x", "y", Duration::ZERO).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
