//! `api.dingtalk.com` endpoints: access token and robot sends (protocol reference §2, §3).

// Handlers return ready responses as errors; boxing them would only add noise here.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Json;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::{OutboxEntry, State, now_ms};

/// The documented error body: `{"code","message","requestid"}` with lowercase `requestid`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string().to_uppercase();
    (
        status,
        [
            ("x-acs-request-id", request_id.clone()),
            ("server", "DingTalk/1.0.0".to_owned()),
        ],
        Json(json!({"code": code, "message": message, "requestid": request_id})),
    )
        .into_response()
}

fn parse_body(body: &str) -> Result<Value, Response> {
    serde_json::from_str::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "MissingParameter",
                "body is mandatory for this action",
            )
        })
}

pub(crate) async fn access_token(AxState(state): AxState<Arc<State>>, body: String) -> Response {
    state.bump_tokens();
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let key = body
        .get("appKey")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = body
        .get("appSecret")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if key != state.config.client_id || secret != state.config.client_secret {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidClientIdOrSecret",
            "无效的clientId或者clientSecret",
        );
    }
    let token = format!("mock{}", uuid::Uuid::new_v4().simple());
    state.tokens.lock().insert(
        token.clone(),
        tokio::time::Instant::now() + state.config.token_ttl,
    );
    state.log("accessToken".into());
    Json(json!({"accessToken": token, "expireIn": state.config.token_ttl.as_secs()}))
        .into_response()
}

const MSG_KEYS: [&str; 15] = [
    "sampleText",
    "sampleMarkdown",
    "sampleImageMsg",
    "sampleLink",
    "sampleActionCard",
    "sampleActionCard2",
    "sampleActionCard3",
    "sampleActionCard4",
    "sampleActionCard5",
    "sampleActionCard6",
    "sampleAudio",
    "sampleFile",
    "sampleVideo",
    "sampleImage0",
    "sampleImage1",
];

/// The checks both robot sends share: token, QPS, robotCode, msgKey, msgParam.
fn check_send(
    state: &State,
    headers: &HeaderMap,
    body: &Value,
    api: &'static str,
) -> Result<(String, Value), Response> {
    let token = headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !state.token_valid(token) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "InvalidAuthentication",
            "不合法的access_token",
        ));
    }
    if !state.within_qps(api) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
            "调用频率超过限制",
        ));
    }
    match body.get("robotCode").and_then(Value::as_str) {
        None | Some("") => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalidParameter.robotCode.empty",
                "robotCode is empty",
            ));
        }
        Some(code) if code != state.config.robot_code => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalidParameter.robotCode.auth",
                "This app's appkey does not match the bot's robotCode",
            ));
        }
        Some(_) => {}
    }
    let key = match body.get("msgKey").and_then(Value::as_str) {
        None | Some("") => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalidParameter.msgKey.empty",
                "msgKey is empty",
            ));
        }
        Some(k) if !MSG_KEYS[..13].contains(&k) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalidParameter.msgKey.invalid",
                "msgKey is invalid",
            ));
        }
        Some(k) => k.to_owned(),
    };
    let param = body
        .get("msgParam")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .filter(Value::is_object)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "invalidParameter.msgParam.invalid",
                "msgParam must be in JSON format",
            )
        })?;
    Ok((key, param))
}

fn readable(param: &Value) -> String {
    param
        .get("content")
        .or_else(|| param.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub(crate) async fn batch_send(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (key, param) = match check_send(&state, &headers, &body, "batchSend") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let users: Vec<String> = body
        .get("userIds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if users.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidParameter.userIds.empty",
            "userIds is empty",
        );
    }
    if users.len() > 20 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidParameter.userIds.overMax",
            "userIds exceeds the maximum of 20",
        );
    }
    let invalid: Vec<String> = users
        .iter()
        .filter(|u| state.config.invalid_users.contains(*u))
        .cloned()
        .collect();
    let flow: Vec<String> = {
        let mut fc = state.flow_controlled.lock();
        // A user is throttled once, then the next send gets through (as real throttling clears).
        let hit: Vec<String> = users.iter().filter(|u| fc.contains(*u)).cloned().collect();
        for u in &hit {
            fc.remove(u);
        }
        hit
    };
    let delivered: Vec<String> = users
        .iter()
        .filter(|u| !invalid.contains(u) && !flow.contains(u))
        .cloned()
        .collect();
    if !delivered.is_empty() {
        state.record(OutboxEntry {
            channel: "batch_send".into(),
            to: delivered,
            kind: key,
            text: readable(&param),
            content: param,
            at_ms: now_ms(),
        });
    }
    Json(json!({
        "processQueryKey": uuid::Uuid::new_v4().simple().to_string(),
        "invalidStaffIdList": invalid,
        "flowControlledStaffIdList": flow,
        "filteredStaffIdList": [],
    }))
    .into_response()
}

pub(crate) async fn group_send(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let raw_len = body
        .get("msgParam")
        .and_then(Value::as_str)
        .map_or(0, str::len);
    let (key, param) = match check_send(&state, &headers, &body, "groupSend") {
        Ok(x) => x,
        Err(r) => return r,
    };
    if raw_len >= 15_000 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidParameter.msgParam.length",
            "msgParam length must not exceed 15000",
        );
    }
    let conversation = body
        .get("openConversationId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !state.groups.lock().contains(&conversation) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidParameter.openConversationId.invalid",
            "openConversationId is invalid",
        );
    }
    state.record(OutboxEntry {
        channel: "group_send".into(),
        to: vec![conversation],
        kind: key,
        text: readable(&param),
        content: param,
        at_ms: now_ms(),
    });
    Json(json!({"processQueryKey": uuid::Uuid::new_v4().simple().to_string()})).into_response()
}
