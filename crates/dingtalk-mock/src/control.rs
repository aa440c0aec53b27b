//! The control API under `/_mock/`: what a test or a person does to the mock over HTTP.

use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::message::SayRequest;
use crate::state::{Api, MockFault, State};
use crate::{say, stream};

type S = AxState<Arc<State>>;

pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/_mock/messages", post(messages))
        .route("/_mock/outbox", get(outbox).delete(clear_outbox))
        .route("/_mock/acks", get(acks))
        .route("/_mock/pings", get(pings).post(ping_now))
        .route("/_mock/connections", get(connections))
        .route("/_mock/disconnect", post(disconnect))
        .route("/_mock/drop", post(drop_connections))
        .route("/_mock/zombie", post(zombie))
        .route("/_mock/reject-open", post(reject_open))
        .route("/_mock/expire-sessions", post(expire_sessions))
        .route("/_mock/expire-tokens", post(expire_tokens))
        .route("/_mock/qps-limit", post(qps_limit))
        .route("/_mock/flow-control", post(flow_control))
        .route("/_mock/groups", post(add_group))
        .route("/_mock/faults", post(fail_next))
        .route("/_mock/config", get(config))
}

fn ok(extra: &Value) -> Response {
    let mut body = json!({"ok": true});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    Json(body).into_response()
}

async fn messages(AxState(state): S, Json(req): Json<SayRequest>) -> Response {
    Json(say(&state, req.into()).await).into_response()
}

async fn outbox(AxState(state): S) -> Response {
    Json(state.outbox.lock().clone()).into_response()
}

async fn clear_outbox(AxState(state): S) -> Response {
    state.outbox.lock().clear();
    ok(&json!({}))
}

async fn acks(AxState(state): S) -> Response {
    Json(state.acks.lock().clone()).into_response()
}

async fn pings(AxState(state): S) -> Response {
    let pings: Vec<_> = state.pings.lock().iter().map(|(p, _)| p.clone()).collect();
    Json(pings).into_response()
}

async fn ping_now(AxState(state): S) -> Response {
    ok(&json!({"connections": stream::ping_all(&state)}))
}

async fn connections(AxState(state): S) -> Response {
    Json(json!({"connections": state.conns.lock().len()})).into_response()
}

async fn disconnect(AxState(state): S) -> Response {
    ok(&json!({"connections": stream::disconnect_all(&state)}))
}

async fn drop_connections(AxState(state): S) -> Response {
    ok(&json!({"connections": stream::drop_all(&state)}))
}

#[derive(Deserialize)]
struct On {
    #[serde(default = "yes")]
    on: bool,
}

fn yes() -> bool {
    true
}

async fn zombie(AxState(state): S, body: Option<Json<On>>) -> Response {
    let on = body.is_none_or(|Json(b)| b.on);
    stream::set_zombie(&state, on);
    ok(&json!({"zombie": on}))
}

#[derive(Deserialize)]
struct Status {
    status: Option<u16>,
}

async fn reject_open(AxState(state): S, Json(b): Json<Status>) -> Response {
    *state.reject_open.lock() = b.status;
    ok(&json!({"status": b.status}))
}

async fn expire_sessions(AxState(state): S) -> Response {
    ok(&json!({"sessions": crate::expire_sessions(&state)}))
}

#[derive(Deserialize, Default)]
struct TokenBody {
    token: Option<String>,
}

async fn expire_tokens(AxState(state): S, body: Option<Json<TokenBody>>) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let n = match body.token {
        Some(t) => usize::from(state.tokens.lock().remove(&t).is_some()),
        None => {
            let mut tokens = state.tokens.lock();
            let n = tokens.len();
            tokens.clear();
            n
        }
    };
    ok(&json!({"tokens": n}))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn qps_limit(AxState(state): S, Json(b): Json<Limit>) -> Response {
    *state.qps_limit.lock() = b.limit;
    ok(&json!({"limit": b.limit}))
}

#[derive(Deserialize)]
struct User {
    user: String,
}

async fn flow_control(AxState(state): S, Json(b): Json<User>) -> Response {
    state.flow_controlled.lock().insert(b.user);
    ok(&json!({}))
}

#[derive(Deserialize)]
struct Group {
    conversation_id: String,
}

async fn add_group(AxState(state): S, Json(b): Json<Group>) -> Response {
    state.groups.lock().insert(b.conversation_id);
    ok(&json!({}))
}

#[derive(Deserialize)]
struct FaultBody {
    api: Api,
    #[serde(flatten)]
    fault: MockFault,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

async fn fail_next(AxState(state): S, Json(b): Json<FaultBody>) -> Response {
    if StatusCode::from_u16(b.fault.status).is_err() {
        return (StatusCode::BAD_REQUEST, "status out of range").into_response();
    }
    crate::push_faults(&state, b.api, &b.fault, b.times);
    ok(&json!({}))
}

/// The configuration without secrets.
async fn config(AxState(state): S) -> Response {
    let c = &state.config;
    Json(json!({
        "base_url": state.base_url,
        "client_id": c.client_id,
        "robot_code": c.robot_code,
        "qps_limit": *state.qps_limit.lock(),
        "session_ttl_secs": c.session_ttl.as_secs_f64(),
        "token_ttl_secs": c.token_ttl.as_secs_f64(),
        "ticket_ttl_secs": c.ticket_ttl.as_secs_f64(),
        "redelivery_after_secs": c.redelivery_after.map(|d| d.as_secs_f64()),
        "ping_interval_secs": c.ping_interval.map(|d| d.as_secs_f64()),
        "disconnect_grace_secs": c.disconnect_grace.as_secs_f64(),
        "http_mode": c.http_callback_url.is_some(),
        "custom_robot_signed": c.custom_robot.secret.is_some(),
    }))
    .into_response()
}
