//! `oapi.dingtalk.com` endpoints: old-style token, session webhooks and the custom group robot
//! (protocol reference §2.2, §4, §8). All answer HTTP 200 with an `errcode`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State as AxState};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::time::Instant;

use crate::state::{OutboxEntry, State, now_ms};

fn errcode(code: i64, msg: &str) -> Response {
    Json(json!({"errcode": code, "errmsg": msg})).into_response()
}

pub(crate) async fn gettoken(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    state.bump_tokens();
    if q.get("appkey") != Some(&state.config.client_id)
        || q.get("appsecret") != Some(&state.config.client_secret)
    {
        return errcode(40089, "不合法的corpid或corpsecret");
    }
    let token = format!("mock{}", uuid::Uuid::new_v4().simple());
    state
        .tokens
        .lock()
        .insert(token.clone(), Instant::now() + state.config.token_ttl);
    Json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": state.config.token_ttl.as_secs()}))
        .into_response()
}

/// The message part of a webhook body, and its readable text.
fn message(body: &Value) -> Option<(String, Value, String)> {
    let kind = body.get("msgtype")?.as_str()?.to_owned();
    let content = body.get(&kind).cloned().unwrap_or(Value::Null);
    let text = content
        .get("content")
        .or_else(|| content.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some((kind, content, text))
}

pub(crate) async fn send_by_session(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let session = q.get("session").cloned().unwrap_or_default();
    let conversation = {
        let sessions = state.sessions.lock();
        match sessions.get(&session) {
            Some(s) if now_ms() < s.expires_ms => s.conversation_id.clone(),
            _ => return errcode(300001, "session 不存在"),
        }
    };
    let Some((kind, content, text)) = serde_json::from_str::<Value>(&body)
        .ok()
        .as_ref()
        .and_then(message)
    else {
        return errcode(40035, "缺少参数 msgtype");
    };
    state.record(OutboxEntry {
        channel: "session_webhook".into(),
        to: vec![conversation],
        kind,
        content,
        text,
        at_ms: now_ms(),
    });
    errcode(0, "ok")
}

/// `base64(HMAC-SHA256(secret, timestamp + "\n" + secret))`, the custom robot signature.
pub fn custom_robot_sign(timestamp_ms: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub(crate) async fn robot_send(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let Some(token) = q.get("access_token") else {
        return errcode(40035, "缺少参数 access_token");
    };
    if *token != state.config.custom_robot_token {
        return errcode(300005, "token is not exist");
    }
    if let Some(secret) = &state.config.custom_robot_secret {
        let (Some(ts), Some(sign)) = (q.get("timestamp"), q.get("sign")) else {
            return errcode(310000, "sign not match");
        };
        let fresh = ts
            .parse::<i64>()
            .is_ok_and(|t| (now_ms() - t).abs() <= 3_600_000);
        // The query parser has already percent-decoded the signature.
        if !fresh || custom_robot_sign(ts, secret) != *sign {
            return errcode(310000, "sign not match");
        }
    }
    let now = Instant::now();
    if state
        .robot_blocked_until
        .lock()
        .is_some_and(|until| now < until)
    {
        return errcode(130101, "send too fast, exceed 20 times per minute");
    }
    {
        let mut sends = state.robot_sends.lock();
        while sends
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            sends.pop_front();
        }
        if sends.len() >= 20 {
            // Exceeding 20 a minute blocks the robot for 10 minutes.
            *state.robot_blocked_until.lock() = Some(now + Duration::from_secs(600));
            return errcode(130101, "send too fast, exceed 20 times per minute");
        }
        sends.push_back(now);
    }
    let Some((kind, content, text)) = serde_json::from_str::<Value>(&body)
        .ok()
        .as_ref()
        .and_then(message)
    else {
        return errcode(40035, "缺少参数 msgtype");
    };
    state.record(OutboxEntry {
        channel: "custom_robot".into(),
        to: vec![token.clone()],
        kind,
        content,
        text,
        at_ms: now_ms(),
    });
    errcode(0, "ok")
}
