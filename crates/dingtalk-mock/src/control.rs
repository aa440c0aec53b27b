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
        .route("/_mock/cards", get(cards))
        .route("/_mock/media", get(media))
        .route("/_mock/files/{code}", axum::routing::put(set_file))
        .route("/_mock/lifetimes", post(lifetimes))
        .route("/_mock/unacked", get(unacked))
        .route("/_mock/stats", get(stats))
        .route("/_mock", get(index))
}

/// `GET /_mock`: what the control API offers, so a person or a test can find it.
async fn index() -> Response {
    Json(json!({
        "GET /_mock": "this list",
        "POST /_mock/messages": "say a message: {text, sender_staff_id, sender_nick?, conversation_id? (group), conversation_title?, msg_type? (text|richText|picture|audio|video|file|unknownMsgType), msg_id?, no_sender_staff_id?, create_at_as_string?, null_fields?, is_admin?, at_users? [staff ids], rich_text_pictures? n} -> {msg_id, conversation_id, session_webhook, session_webhook_expired_time, delivered, download_codes}",
        "GET /_mock/outbox": "everything the bot sent (session webhook, batchSend, groupMessages/send, custom robot)",
        "DELETE /_mock/outbox": "forget the outbox",
        "GET /_mock/acks": "upstream frames answering the mock's frames (ACKs, ping echoes)",
        "GET /_mock/unacked": "{unacked}: callbacks waiting for an ACK (code 200)",
        "GET /_mock/pings": "SYSTEM pings sent and whether echoed",
        "POST /_mock/pings": "ping every live connection now",
        "GET /_mock/connections": "{connections, live, opened, ids}: open sockets (draining ones too), live ones, how many were ever opened",
        "GET /_mock/stats": "{token_requests, connections_opened, connections, unacked, acks, outbox, cards}",
        "POST /_mock/disconnect": "SYSTEM disconnect to every connection (dropped after the grace)",
        "POST /_mock/drop": "drop every connection without a close frame",
        "POST /_mock/zombie": "{on}: connections stop reading and writing",
        "POST /_mock/reject-open": "{status}: refuse gateway/connections/open (null: accept)",
        "POST /_mock/expire-sessions": "expire every session webhook",
        "POST /_mock/expire-tokens": "{token?}: expire one or all access tokens",
        "POST /_mock/lifetimes": "{token_ttl_secs?, ticket_ttl_secs?, session_ttl_secs?}: lifetimes from now on",
        "POST /_mock/qps-limit": "{limit}: per-app per-API calls per second (null: unlimited)",
        "POST /_mock/flow-control": "{user}: throttle a user on their next batchSend",
        "POST /_mock/groups": "{conversation_id}: a group the robot is in",
        "POST /_mock/faults": "{api, status, code, message, times?}: fail the next calls of an API (access_token, batch_send, group_send, gateway_open, file_download, card_create, card_deliver, card_update)",
        "GET /_mock/cards": "every card created (card instances and robot interactive cards) with data, spaces, streamed content and calls",
        "GET /_mock/media": "files uploaded with POST /media/upload (media_id, type, file_name, content_type, size)",
        "PUT /_mock/files/{code}": "raw body (and content-type): the bytes messageFiles/download serves for a downloadCode",
        "GET /_mock/config": "the configuration without secrets",
    }))
    .into_response()
}

async fn cards(AxState(state): S) -> Response {
    Json(state.cards.lock().cards.clone()).into_response()
}

/// Media uploaded with `POST /media/upload`: id, type, file name, content type and size.
async fn media(AxState(state): S) -> Response {
    Json(state.media.lock().clone()).into_response()
}

async fn unacked(AxState(state): S) -> Response {
    Json(json!({"unacked": state.pending.lock().len()})).into_response()
}

async fn set_file(
    AxState(state): S,
    axum::extract::Path(code): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    state.files.lock().insert(
        code,
        crate::state::MockFile {
            bytes: body.to_vec(),
            content_type,
        },
    );
    ok(&json!({}))
}

#[derive(Deserialize)]
struct Lifetimes {
    token_ttl_secs: Option<f64>,
    ticket_ttl_secs: Option<f64>,
    session_ttl_secs: Option<f64>,
}

async fn lifetimes(AxState(state): S, Json(b): Json<Lifetimes>) -> Response {
    let secs = |v: Option<f64>| {
        v.filter(|s| s.is_finite() && *s >= 0.0)
            .map(std::time::Duration::from_secs_f64)
    };
    if let Some(d) = secs(b.token_ttl_secs) {
        *state.token_ttl.lock() = d;
    }
    if let Some(d) = secs(b.ticket_ttl_secs) {
        *state.ticket_ttl.lock() = d;
    }
    if let Some(d) = secs(b.session_ttl_secs) {
        *state.session_ttl.lock() = d;
    }
    ok(&json!({
        "token_ttl_secs": state.token_ttl.lock().as_secs_f64(),
        "ticket_ttl_secs": state.ticket_ttl.lock().as_secs_f64(),
        "session_ttl_secs": state.session_ttl.lock().as_secs_f64(),
    }))
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
    let conns = state.conns.lock();
    Json(json!({
        "connections": conns.len(),
        "live": conns.iter().filter(|c| c.live()).count(),
        "opened": state.next_conn.load(std::sync::atomic::Ordering::SeqCst),
        "ids": conns.iter().map(|c| c.connection_id.clone()).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn stats(AxState(state): S) -> Response {
    Json(json!({
        "token_requests": state.token_requests.load(std::sync::atomic::Ordering::SeqCst),
        "connections_opened": state.next_conn.load(std::sync::atomic::Ordering::SeqCst),
        "connections": state.conns.lock().len(),
        "unacked": state.pending.lock().len(),
        "acks": state.acks.lock().len(),
        "outbox": state.outbox.lock().len(),
        "cards": state.cards.lock().cards.len(),
    }))
    .into_response()
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
        "session_ttl_secs": state.session_ttl.lock().as_secs_f64(),
        "token_ttl_secs": state.token_ttl.lock().as_secs_f64(),
        "ticket_ttl_secs": state.ticket_ttl.lock().as_secs_f64(),
        "redelivery_after_secs": c.redelivery_after.map(|d| d.as_secs_f64()),
        "ping_interval_secs": c.ping_interval.map(|d| d.as_secs_f64()),
        "disconnect_grace_secs": c.disconnect_grace.as_secs_f64(),
        "http_mode": c.http_callback_url.is_some(),
        "custom_robot_signed": c.custom_robot.secret.is_some(),
    }))
    .into_response()
}
