//! The Stream gateway (protocol reference §5): registration, the WebSocket at `/connect`,
//! CALLBACK frames, SYSTEM pings and disconnects, ACK tracking and redelivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::openapi::error;
use crate::state::{Conn, ConnCommand, Pending, State, now_ms};

pub(crate) async fn open(AxState(state): AxState<Arc<State>>, body: String) -> Response {
    if let Some(status) = *state.reject_open.lock() {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return error(code, "MockRejected", "connection refused by the mock");
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "body is mandatory for this action",
        );
    };
    let id = body
        .get("clientId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = body
        .get("clientSecret")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if id != state.config.client_id || secret != state.config.client_secret {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthentication",
            "clientId or clientSecret is invalid",
        );
    }
    if body
        .get("subscriptions")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidParameter.subscriptions",
            "subscriptions is required",
        );
    }
    let ticket = uuid::Uuid::new_v4().to_string();
    state
        .tickets
        .lock()
        .insert(ticket.clone(), Instant::now() + state.config.ticket_ttl);
    let base = state.base_url.lock().replacen("http://", "ws://", 1);
    axum::Json(json!({"endpoint": format!("{base}/connect"), "ticket": ticket})).into_response()
}

pub(crate) async fn connect(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let ticket = q.get("ticket").cloned().unwrap_or_default();
    // Single use: taken out of the map whether or not it is still fresh.
    let valid = state
        .tickets
        .lock()
        .remove(&ticket)
        .is_some_and(|exp| Instant::now() < exp);
    if !valid {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidTicket",
            "ticket is invalid or already used",
        );
    }
    ws.on_upgrade(move |socket| run_connection(state, socket))
}

async fn run_connection(state: Arc<State>, socket: WebSocket) {
    let id = state.next_conn.fetch_add(1, Ordering::SeqCst) + 1;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let zombie = Arc::new(AtomicBool::new(false));
    state.conns.lock().push(Conn {
        id,
        tx,
        delivering: true,
        zombie: zombie.clone(),
    });
    let (mut sink, mut stream) = socket.split();
    loop {
        if zombie.load(Ordering::SeqCst) {
            // A zombie keeps the socket open but neither reads nor writes: no frames, no pongs.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if rx.is_closed() {
                break;
            }
            continue;
        }
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(ConnCommand::Frame(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(ConnCommand::Drop) | None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => on_upstream(&state, text.as_str()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    state.conns.lock().retain(|c| c.id != id);
}

/// An upstream frame: an ACK of a callback, a ping answer, anything else is ignored.
fn on_upstream(state: &State, text: &str) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let message_id = frame["headers"]["messageId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    state.pending.lock().retain(|p| p.message_id != message_id);
    state.acks.lock().push(frame);
}

fn message_id() -> String {
    format!("{}_{}", uuid::Uuid::new_v4().simple(), now_ms())
}

/// A downstream frame: string headers, JSON-string data.
pub(crate) fn frame(kind: &str, topic: &str, message_id: &str, data: &str) -> String {
    json!({
        "specVersion": "1.0",
        "type": kind,
        "headers": {
            "appId": "mock-app",
            "connectionId": "mock-connection",
            "contentType": "application/json",
            "messageId": message_id,
            "time": now_ms().to_string(),
            "topic": topic,
        },
        "data": data,
    })
    .to_string()
}

/// Sends a frame to the newest connection still delivering. Returns whether one was there.
pub(crate) fn deliver(state: &State, text: String) -> bool {
    let conns = state.conns.lock();
    match conns
        .iter()
        .rev()
        .find(|c| c.delivering && !c.zombie.load(Ordering::SeqCst))
    {
        Some(c) => c.tx.send(ConnCommand::Frame(text)).is_ok(),
        None => false,
    }
}

/// Delivers a robot message as a CALLBACK frame and tracks it for redelivery.
pub(crate) fn push_callback(state: &State, data: String) -> bool {
    let id = message_id();
    let sent = deliver(
        state,
        frame("CALLBACK", "/v1.0/im/bot/messages/get", &id, &data),
    );
    if sent && state.config.redelivery_after.is_some() {
        state.pending.lock().push(Pending {
            message_id: id,
            data,
            sent: Instant::now(),
            redeliveries: 0,
        });
    }
    sent
}

/// Redelivers callbacks that were not ACKed in time: new `messageId`, same data (same `msgId`).
pub(crate) fn redeliver_due(state: &State) {
    let Some(after) = state.config.redelivery_after else {
        return;
    };
    let now = Instant::now();
    let due: Vec<(String, u32)> = {
        let mut pending = state.pending.lock();
        let (due, keep): (Vec<Pending>, Vec<Pending>) = pending
            .drain(..)
            .partition(|p| now.duration_since(p.sent) >= after && p.redeliveries < 3);
        *pending = keep;
        due.into_iter()
            .map(|p| (p.data, p.redeliveries + 1))
            .collect()
    };
    for (data, n) in due {
        let id = message_id();
        if deliver(
            state,
            frame("CALLBACK", "/v1.0/im/bot/messages/get", &id, &data),
        ) {
            state.pending.lock().push(Pending {
                message_id: id,
                data,
                sent: now,
                redeliveries: n,
            });
        }
    }
}

/// Sends a SYSTEM ping with a random opaque to every delivering connection.
pub(crate) fn ping_all(state: &State) {
    let opaque = uuid::Uuid::new_v4().to_string();
    let data = json!({"opaque": opaque}).to_string();
    for c in state.conns.lock().iter().filter(|c| c.delivering) {
        let _ = c.tx.send(ConnCommand::Frame(frame(
            "SYSTEM",
            "ping",
            &message_id(),
            &data,
        )));
    }
}

/// Sends SYSTEM `disconnect` to every connection, stops delivering to them, and drops them
/// after the grace period (DingTalk: 10 s).
pub(crate) fn disconnect_all(state: &Arc<State>) {
    let data = json!({"reason": "persistent connection is timeout"}).to_string();
    let mut doomed = Vec::new();
    for c in state.conns.lock().iter_mut().filter(|c| c.delivering) {
        let _ = c.tx.send(ConnCommand::Frame(frame(
            "SYSTEM",
            "disconnect",
            &message_id(),
            &data,
        )));
        c.delivering = false;
        doomed.push(c.tx.clone());
    }
    let grace = state.config.disconnect_grace;
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        for tx in doomed {
            let _ = tx.send(ConnCommand::Drop);
        }
    });
}

/// Drops every connection without a close frame.
pub(crate) fn drop_all(state: &State) {
    for c in state.conns.lock().iter() {
        let _ = c.tx.send(ConnCommand::Drop);
    }
}

/// Makes every current connection a zombie: open, but silent and deaf.
pub(crate) fn zombify_all(state: &State) {
    for c in state.conns.lock().iter() {
        c.zombie.store(true, Ordering::SeqCst);
    }
}
