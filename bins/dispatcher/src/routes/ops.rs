//! Operations: liveness, readiness, Prometheus metrics, the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive")))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, description = "Ready"), (status = 503, description = "Store unreachable", body = ErrorBody)))]
pub(crate) async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::error!(error = %e, "store not reachable");
        ApiError::unavailable(
            "not_ready",
            "store not reachable",
            std::time::Duration::from_secs(1),
        )
    })?;
    Ok(Json(serde_json::json!({"status": "ready"})))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// This document: the OpenAPI 3.1 description of every route.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI document", content_type = "application/json")))]
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Json<serde_json::Value> {
    let names: Vec<String> = state
        .manager
        .channels()
        .views()
        .into_iter()
        .map(|v| v.name)
        .collect();
    Json(crate::openapi::restrict_channels(DOCUMENT.clone(), &names))
}

/// The routes' OpenAPI document, built once.
static DOCUMENT: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
    serde_json::to_value(super::api().into_openapi()).unwrap_or_default()
});
