//! `oapi.dingtalk.com` endpoints: old-style token, media upload, session webhooks and the
//! custom group robot (protocol reference §2.2, §4, §8). All answer HTTP 200 with an `errcode`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State as AxState};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::state::{OutboxEntry, State, now_ms, random_hex};

pub(crate) fn errcode(code: i64, msg: &str) -> Response {
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
        // The errcode is [UNVERIFIED] in the reference (legacy corpid/corpsecret error).
        return errcode(40089, "不合法的corpid或corpsecret");
    }
    let token = state.issue_token();
    Json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": state.token_ttl_secs()}))
        .into_response()
}

/// A webhook message body parsed for the outbox: `(msgtype, content, text, atUserIds, isAtAll)`.
pub(crate) fn webhook_message(body: &Value, channel: &str, to: Vec<String>) -> Option<OutboxEntry> {
    let kind = body.get("msgtype")?.as_str()?.to_owned();
    let content = body.get(&kind).cloned().unwrap_or(Value::Null);
    let text = content
        .get("content")
        .or_else(|| content.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let at = body.get("at");
    let at_user_ids = at
        .and_then(|a| a.get("atUserIds"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let is_at_all = at
        .and_then(|a| a.get("isAtAll"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some(OutboxEntry {
        channel: channel.to_owned(),
        to,
        kind,
        content,
        text,
        at_user_ids,
        is_at_all,
        at_ms: now_ms(),
    })
}

pub(crate) async fn send_by_session(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let session = q.get("session").map(String::as_str).unwrap_or_default();
    let conversation = {
        let sessions = state.sessions.lock();
        match sessions.get(session) {
            Some(s) if Instant::now() < s.deadline => s.conversation_id.clone(),
            _ => return errcode(300001, "session 不存在"),
        }
    };
    let Some(entry) = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|b| webhook_message(&b, "session_webhook", vec![conversation]))
    else {
        return errcode(40035, "缺少参数 msgtype");
    };
    state.record(entry);
    errcode(0, "ok")
}

/// `base64(HMAC-SHA256(key = secret, msg = timestamp + "\n" + secret))`: the custom robot's
/// `sign` (§8, before URL-encoding) and the HTTP-mode callback's `sign` header (§7, with the
/// app secret).
/// It is [`webhook_client::chat::dingtalk_sign`]; a timestamp that is not a number of
/// milliseconds has no signature (the empty string; the mock refuses such a timestamp anyway).
pub fn custom_robot_sign(timestamp_ms: &str, secret: &str) -> String {
    timestamp_ms
        .parse::<i64>()
        .map(|ts| webhook_client::chat::dingtalk_sign(secret, ts))
        .unwrap_or_default()
}

const SEND_TOO_FAST: &str = "send too fast, exceed 20 times per minute";

pub(crate) async fn robot_send(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let robot = &state.config.custom_robot;
    let Some(token) = q.get("access_token") else {
        return errcode(40035, "缺少参数 access_token");
    };
    if *token != robot.access_token {
        return errcode(300005, "token is not exist");
    }
    if let Some(secret) = &robot.secret {
        let (Some(ts), Some(sign)) = (q.get("timestamp"), q.get("sign")) else {
            return errcode(310000, "sign not match");
        };
        let fresh = ts
            .parse::<i64>()
            .is_ok_and(|t| now_ms().abs_diff(t) <= 3_600_000);
        // The query extractor has already percent-decoded the signature.
        let expected = custom_robot_sign(ts, secret);
        if !fresh || !subtle_eq(expected.as_bytes(), sign.as_bytes()) {
            return errcode(310000, "sign not match");
        }
    }
    let Some(entry) = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|b| webhook_message(&b, "custom_robot", vec!["custom-robot".to_owned()]))
    else {
        return errcode(40035, "缺少参数 msgtype");
    };
    if !robot.keywords.is_empty() {
        let body_text = entry.content.to_string();
        if !robot
            .keywords
            .iter()
            .any(|k| body_text.contains(k.as_str()))
        {
            return errcode(310000, "keywords not in content");
        }
    }
    let now = Instant::now();
    {
        let mut blocked = state.robot_blocked_until.lock();
        if blocked.is_some_and(|until| now < until) {
            return errcode(130101, SEND_TOO_FAST);
        }
        let mut sends = state.robot_sends.lock();
        while sends
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            sends.pop_front();
        }
        if sends.len() >= robot.per_minute as usize {
            // Exceeding the rate blocks the robot (10 minutes by default).
            *blocked = Some(now + robot.block_for);
            return errcode(130101, SEND_TOO_FAST);
        }
        sends.push_back(now);
    }
    state.record(entry);
    errcode(0, "ok")
}

/// Constant-time comparison of two signatures.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A file an app uploaded with `POST /media/upload`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct UploadedMedia {
    pub(crate) media_id: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) file_name: String,
    pub(crate) content_type: String,
    pub(crate) size: usize,
}

/// `POST https://oapi.dingtalk.com/media/upload?access_token=..&type=..` (what the official PY
/// SDK's `upload_to_dingtalk` calls, with the v1.0 token): a multipart form with the file in
/// `media` and its kind (`image`, `voice`, `video`, `file`) in `type` (form field or query).
/// Answers `{errcode: 0, errmsg: "ok", media_id, created_at, type}`; errors are HTTP 200 with
/// an errcode, as every oapi endpoint (40014 for a bad token; the others [UNVERIFIED]).
pub(crate) async fn media_upload(
    AxState(state): AxState<Arc<State>>,
    Query(q): Query<HashMap<String, String>>,
    mut form: axum::extract::Multipart,
) -> Response {
    if !q.get("access_token").is_some_and(|t| state.token_valid(t)) {
        return errcode(40014, "不合法的access_token");
    }
    let mut kind = q.get("type").cloned();
    let mut media = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) => match field.name() {
                Some("type") => kind = field.text().await.ok(),
                Some("media") => {
                    let file_name = field.file_name().unwrap_or("media").to_owned();
                    let content_type = field
                        .content_type()
                        .unwrap_or("application/octet-stream")
                        .to_owned();
                    match field.bytes().await {
                        Ok(bytes) => media = Some((file_name, content_type, bytes)),
                        Err(_) => return errcode(40035, "不合法的参数"),
                    }
                }
                _ => {}
            },
            Ok(None) => break,
            Err(_) => return errcode(40035, "不合法的参数"),
        }
    }
    let kind = kind.unwrap_or_default();
    if !matches!(kind.as_str(), "image" | "voice" | "video" | "file") {
        return errcode(40004, "不合法的媒体文件类型");
    }
    let Some((file_name, content_type, bytes)) = media else {
        return errcode(41005, "缺少多媒体文件数据");
    };
    let media_id = format!("@lA{}", random_hex(24));
    // Uploaded media can be downloaded like any robot file (its media_id as download code).
    state.files.lock().insert(
        media_id.clone(),
        crate::state::MockFile {
            bytes: bytes.to_vec(),
            content_type: content_type.clone(),
        },
    );
    state.media.lock().push(UploadedMedia {
        media_id: media_id.clone(),
        kind: kind.clone(),
        file_name,
        content_type,
        size: bytes.len(),
    });
    Json(json!({
        "errcode": 0, "errmsg": "ok", "media_id": media_id,
        "created_at": now_ms(), "type": kind,
    }))
    .into_response()
}
