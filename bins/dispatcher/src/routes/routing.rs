//! The server's routing rules: which channels hear of a task whose request names no target.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use workflow_dispatch::api::{RouteListResponse, RouteTestResponse};

use crate::AppState;
use crate::auth::ApiKey;
use crate::error::{ApiError, ErrorBody};
use crate::routes::json_body;

/// The routing rules in force, in order (the first that matches decides).
#[utoipa::path(
    get, path = "/workflow/routes", tag = "routes",
    responses(
        (status = 200, description = "The rules", body = RouteListResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn list_routes(
    _: ApiKey,
    State(state): State<AppState>,
) -> Json<RouteListResponse> {
    Json(RouteListResponse {
        status: "success".to_owned(),
        routes: state.manager.routes().views(),
    })
}

/// Which targets a task with this body would reach, and through which route, without
/// creating it. Answers as `POST /workflow/tasks` would refuse it: 400 naming every invalid
/// field, an unknown channel, or no matching route.
#[utoipa::path(
    post, path = "/workflow/routes/test", tag = "routes",
    request_body(content = workflow_dispatch::api::schema::CreateTaskForms, description = "A body as for POST /workflow/tasks", content_type = "application/json"),
    responses(
        (status = 200, description = "Where it would go", body = RouteTestResponse),
        (status = 400, description = "Invalid fields, unknown channel, or no route matches", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn test_route(
    _: ApiKey,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RouteTestResponse>, ApiError> {
    let body = json_body(&headers, body)?;
    let request = state
        .manager
        .parse_request(&body)
        .map_err(ApiError::validation)?;
    let plan = state.manager.plan(&request)?;
    Ok(Json(RouteTestResponse {
        status: "success".to_owned(),
        route: plan.route,
        targets: plan.targets,
    }))
}
