//! HTTP handlers, one module per area: `tasks` (the seed's API), `callback` (the closed loop),
//! `channels` (the preset channels), `routing` (the routing rules), `ops` (health, readiness, metrics, the OpenAPI document).

pub mod callback;
pub mod channels;
pub mod ops;
pub mod routing;
pub mod tasks;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};

use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;

/// The API's routes with their OpenAPI description, both from the handlers' `#[utoipa::path]`
/// attributes: a route cannot be served undocumented, nor documented unserved.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(tasks::create_task, tasks::list_tasks))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::cancel_task))
        .routes(routes!(tasks::retry_task))
        .routes(routes!(callback::callback))
        .routes(routes!(channels::list_channels))
        .routes(routes!(routing::list_routes))
        .routes(routes!(routing::test_route))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics_text))
        .routes(routes!(ops::openapi_json))
}

/// The body of a JSON request: 415 unless `Content-Type` is JSON, 413 over the body limit.
pub(crate) fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !(mime.eq_ignore_ascii_case("application/json")
        || mime.to_ascii_lowercase().ends_with("+json"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(crate::BODY_LIMIT)
        } else {
            ApiError::new(rejection.status(), "bad_body", rejection.body_text())
        }
    })
}

/// Any path that is not a route.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

/// A route asked with a method it does not have.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
