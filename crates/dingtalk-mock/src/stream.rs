//! The Stream gateway (protocol reference §5): registration, the WebSocket at `/connect`,
//! CALLBACK frames, SYSTEM pings and disconnects, ACK tracking and redelivery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use rand::seq::IndexedRandom as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::openapi::{error, fault_response, json_response, parse_body};
use crate::state::{
    Api, Conn, ConnCommand, Pending, PingRecord, State, Ticket, now_ms, random_hex,
};

/// The robot message topic.
pub(crate) const BOT_TOPIC: &str = "/v1.0/im/bot/messages/get";

pub(crate) async fn open(AxState(state): AxState<Arc<State>>, body: String) -> Response {
    if let Some(status) = *state.reject_open.lock() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let code = if status == StatusCode::UNAUTHORIZED {
            "InvalidAuthentication"
        } else if status.is_server_error() {
            "ServiceUnavailable"
        } else {
            "Forbidden"
        };
        return error(status, code, "connection refused by the mock");
    }
    if let Some(f) = state.take_fault(Api::GatewayOpen) {
        return fault_response(&f);
    }
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    if field("clientId") != state.config.client_id
        || field("clientSecret") != state.config.client_secret
    {
        // The real body is undocumented (§5.1, §12); SDKs only look at the status.
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthentication",
            "clientId or clientSecret is invalid",
        );
    }
    let Some(subscriptions) = body
        .get("subscriptions")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidParameter.subscriptions.empty",
            "subscriptions is required",
        );
    };
    // CALLBACK topics are delivered; EVENT `*` and SYSTEM entries (the Go SDK sends them) are
    // accepted and ignored, as the cloud does.
    let topics = subscriptions
        .iter()
        .filter(|s| s.get("type").and_then(Value::as_str) == Some("CALLBACK"))
        .filter_map(|s| s.get("topic").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let ticket = uuid::Uuid::new_v4().to_string();
    let now = Instant::now();
    {
        let mut tickets = state.tickets.lock();
        tickets.retain(|_, t| now < t.deadline);
        tickets.insert(
            ticket.clone(),
            Ticket {
                deadline: now + *state.ticket_ttl.lock(),
                topics,
            },
        );
    }
    // `https://host:port` -> `wss://host:port/connect`: an explicit port and the `/connect`
    // path, which the Java SDK assumes whatever the endpoint says (§5.2).
    let endpoint = format!(
        "{}/connect",
        state
            .base_url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    json_response(
        StatusCode::OK,
        &json!({"endpoint": endpoint, "ticket": ticket}),
    )
}

pub(crate) async fn connect(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let ticket = q.get("ticket").map(String::as_str).unwrap_or_default();
    // Single use: taken out whether or not it is still fresh.
    let taken = state.tickets.lock().remove(ticket);
    let Some(topics) = taken
        .filter(|t| Instant::now() < t.deadline)
        .map(|t| t.topics)
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidTicket",
            "ticket is invalid, expired or already used",
        );
    };
    ws.on_upgrade(move |socket| run_connection(state, socket, topics))
}

async fn run_connection(state: Arc<State>, socket: WebSocket, topics: HashSet<String>) {
    let id = state.next_conn.fetch_add(1, Ordering::SeqCst) + 1;
    let connection_id = uuid::Uuid::new_v4().to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (zombie, mut zombie_rx) = watch::channel(*state.zombie_mode.lock());
    state.conns.lock().push(Conn {
        id,
        connection_id: connection_id.clone(),
        topics,
        tx,
        delivering: true,
        zombie,
    });
    tracing::debug!(connection_id, "stream connection open");
    // Callbacks that found no connection (a client between two sockets) go out now.
    deliver_held(&state);
    let (mut sink, mut stream) = socket.split();
    loop {
        if *zombie_rx.borrow_and_update() {
            // A zombie neither reads (so no pongs) nor writes; only a drop or shutdown ends it.
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                changed = zombie_rx.changed() => if changed.is_err() { break },
                cmd = rx.recv() => match cmd {
                    Some(ConnCommand::Frame(_)) => {}
                    Some(ConnCommand::Drop) | None => break,
                },
            }
            continue;
        }
        tokio::select! {
            () = state.shutdown.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                break;
            }
            changed = zombie_rx.changed() => if changed.is_err() { break },
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
                Some(Ok(Message::Close(_))) => {
                    // Answer the close handshake (the reply tungstenite queued is flushed by
                    // `close`): a client closing after `disconnect` must not wait for its
                    // close timeout before it reconnects.
                    let _ = sink.close().await;
                    break;
                }
                Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    state.conns.lock().retain(|c| c.id != id);
    tracing::debug!(connection_id, "stream connection closed");
}

/// An upstream frame: an ACK of a callback, a ping echo, or something else answering one of
/// our frames. Frames that are not JSON or carry no `headers.messageId` are ignored.
fn on_upstream(state: &State, text: &str) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(message_id) = frame["headers"]["messageId"].as_str().map(str::to_owned) else {
        return;
    };
    // Only `code: 200` acknowledges: a 4xx/5xx answer leaves the callback to be redelivered.
    let acked = frame["code"].as_i64() == Some(200) || frame["code"].as_str() == Some("200");
    if acked {
        state.pending.lock().retain(|p| p.message_id != message_id);
        if let Some(sent) = state.callback_sent.lock().remove(&message_id) {
            state.ack_latencies.lock().push(sent.elapsed());
        }
    }
    for (ping, sent) in state.pings.lock().iter_mut() {
        if ping.message_id == message_id {
            let echoed = frame["data"]
                .as_str()
                .and_then(|d| serde_json::from_str::<Value>(d).ok());
            ping.answered = true;
            ping.echo_matches = echoed.as_ref() == Some(sent);
        }
    }
    state.acks.lock().push(frame);
}

/// A `headers.messageId` shaped like DingTalk's (`bbb43a7_fc9_19ce26ebc01_2925aa2`).
pub(crate) fn message_id() -> String {
    format!(
        "{}_{}_{:x}_{}",
        random_hex(7),
        random_hex(3),
        now_ms(),
        random_hex(7)
    )
}

/// A downstream frame: every header value a string, `data` a JSON string.
pub(crate) fn frame(
    state: &State,
    connection_id: &str,
    kind: &str,
    topic: &str,
    message_id: &str,
    data: &str,
) -> String {
    json!({
        "specVersion": "1.0",
        "type": kind,
        "headers": {
            "appId": state.app_id,
            "connectionId": connection_id,
            "contentType": "application/json",
            "messageId": message_id,
            "time": now_ms().to_string(),
            "topic": topic,
        },
        "data": data,
    })
    .to_string()
}

/// Sends a CALLBACK to one live connection subscribed to `topic`, picked at random as
/// DingTalk does among an app's connections (so two bot instances both get traffic). Returns
/// whether there was one.
fn deliver_callback(state: &State, topic: &str, message_id: &str, data: &str) -> bool {
    let conns = state.conns.lock();
    let live: Vec<&Conn> = conns
        .iter()
        .filter(|c| c.live() && c.topics.contains(topic))
        .collect();
    let Some(conn) = live.choose(&mut rand::rng()) else {
        return false;
    };
    let text = frame(
        state,
        &conn.connection_id,
        "CALLBACK",
        topic,
        message_id,
        data,
    );
    // Noted before the send, so an ACK can never arrive ahead of its start time.
    state
        .callback_sent
        .lock()
        .insert(message_id.to_owned(), Instant::now());
    let sent = conn.tx.send(ConnCommand::Frame(text)).is_ok();
    if !sent {
        state.callback_sent.lock().remove(message_id);
    }
    sent
}

/// Delivers a robot message as a CALLBACK frame; with redelivery on, tracks it until ACKed
/// (and holds it when no connection is live, for the next one).
pub(crate) fn push_callback(state: &Arc<State>, data: String) -> bool {
    let id = message_id();
    let delivered = deliver_callback(state, BOT_TOPIC, &id, &data);
    if state.config.redelivery_after.is_some() {
        state.pending.lock().push(Pending {
            message_id: id.clone(),
            topic: BOT_TOPIC.to_owned(),
            data,
            delivered,
        });
        let s = state.clone();
        state.spawn(redeliver(s, id, delivered));
    }
    delivered
}

/// Hands held callbacks (said while no connection was live) to the connections there are now.
fn deliver_held(state: &State) {
    let held: Vec<(String, String, String)> = state
        .pending
        .lock()
        .iter()
        .filter(|p| !p.delivered)
        .map(|p| (p.message_id.clone(), p.topic.clone(), p.data.clone()))
        .collect();
    for (id, topic, data) in held {
        if deliver_callback(state, &topic, &id, &data) {
            for p in state.pending.lock().iter_mut() {
                if p.message_id == id {
                    p.delivered = true;
                }
            }
        }
    }
}

/// Redelivers one callback while it stays un-ACKed: new `messageId`, same `data` (so the same
/// `msgId`), at most `max_redeliveries` times after its first delivery.
async fn redeliver(state: Arc<State>, mut id: String, delivered: bool) {
    let Some(after) = state.config.redelivery_after else {
        return;
    };
    let mut deliveries = u32::from(delivered);
    // Bounded so a message nobody connects for does not keep a task forever.
    for _ in 0..1000 {
        tokio::time::sleep(after).await;
        let (topic, data, was_delivered) = {
            let pending = state.pending.lock();
            match pending.iter().find(|p| p.message_id == id) {
                Some(p) => (p.topic.clone(), p.data.clone(), p.delivered),
                None => return,
            }
        };
        if was_delivered && deliveries == 0 {
            // Delivered when a connection appeared (deliver_held).
            deliveries = 1;
        }
        if deliveries > state.config.max_redeliveries {
            break;
        }
        let new_id = message_id();
        if deliver_callback(&state, &topic, &new_id, &data) {
            deliveries += 1;
            for p in state.pending.lock().iter_mut() {
                if p.message_id == id {
                    p.message_id.clone_from(&new_id);
                    p.delivered = true;
                }
            }
            id = new_id;
        }
    }
    state.pending.lock().retain(|p| p.message_id != id);
}

/// Sends a SYSTEM `ping` with a random `opaque` to every live connection; returns how many.
pub(crate) fn ping_all(state: &Arc<State>) -> usize {
    let mut sent = Vec::new();
    for c in state.conns.lock().iter().filter(|c| c.live()) {
        let message_id = message_id();
        let opaque = uuid::Uuid::new_v4().to_string();
        let data = json!({"opaque": opaque});
        let text = frame(
            state,
            &c.connection_id,
            "SYSTEM",
            "ping",
            &message_id,
            &data.to_string(),
        );
        if c.tx.send(ConnCommand::Frame(text)).is_ok() {
            state.pings.lock().push((
                PingRecord {
                    message_id: message_id.clone(),
                    connection_id: c.connection_id.clone(),
                    opaque,
                    answered: false,
                    echo_matches: false,
                },
                data,
            ));
            sent.push((message_id, c.tx.clone()));
        }
    }
    let n = sent.len();
    if let Some(timeout) = state.config.ping_timeout {
        for (message_id, tx) in sent {
            let s = state.clone();
            state.spawn(async move {
                tokio::time::sleep(timeout).await;
                let answered = s
                    .pings
                    .lock()
                    .iter()
                    .any(|(p, _)| p.message_id == message_id && p.answered);
                if !answered {
                    let _ = tx.send(ConnCommand::Drop);
                }
            });
        }
    }
    n
}

/// Sends SYSTEM `disconnect` to every delivering connection, stops delivering to them, and
/// drops them after the grace period. Returns how many.
pub(crate) fn disconnect_all(state: &Arc<State>) -> usize {
    let data = json!({"reason": "persistent connection is timeout"}).to_string();
    let mut doomed = Vec::new();
    for c in state.conns.lock().iter_mut().filter(|c| c.delivering) {
        let text = frame(
            state,
            &c.connection_id,
            "SYSTEM",
            "disconnect",
            &message_id(),
            &data,
        );
        let _ = c.tx.send(ConnCommand::Frame(text));
        c.delivering = false;
        doomed.push(c.tx.clone());
    }
    let n = doomed.len();
    let grace = state.config.disconnect_grace;
    state.spawn(async move {
        tokio::time::sleep(grace).await;
        for tx in doomed {
            let _ = tx.send(ConnCommand::Drop);
        }
    });
    n
}

/// Drops every connection without a close frame; returns how many.
pub(crate) fn drop_all(state: &State) -> usize {
    let conns = state.conns.lock();
    for c in conns.iter() {
        let _ = c.tx.send(ConnCommand::Drop);
    }
    conns.len()
}

/// Zombie mode on: current and new connections stay open but go silent and deaf. Off: they
/// come back to life.
pub(crate) fn set_zombie(state: &State, on: bool) {
    *state.zombie_mode.lock() = on;
    for c in state.conns.lock().iter() {
        c.zombie.send_replace(on);
    }
}

/// Makes the current connections zombies; new ones are healthy.
pub(crate) fn zombify_current(state: &State) {
    for c in state.conns.lock().iter() {
        c.zombie.send_replace(true);
    }
}

/// Pings every live connection every `every` (first after one period).
pub(crate) async fn ping_loop(state: Arc<State>, every: std::time::Duration) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        ping_all(&state);
    }
}
