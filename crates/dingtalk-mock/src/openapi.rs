//! `api.dingtalk.com` endpoints: access token and robot sends (protocol reference §2, §3).

// Handlers short-circuit with ready responses as the error side; boxing them buys nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::{Api, MockFault, OutboxEntry, State, now_ms};

const JSON_UTF8: &str = "application/json;charset=utf-8";

/// A JSON response with the content type api.dingtalk.com uses.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8))],
        body.to_string(),
    )
        .into_response()
}

/// A request id shaped like DingTalk's (`30EE8654-1AA2-7D88-8248-9518547248AA`).
pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// The documented error body `{"code","message","requestid"}` (lowercase `requestid`), with
/// the same id in `x-acs-request-id`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let id = request_id();
    let mut resp = json_response(
        status,
        &json!({"code": code, "message": message, "requestid": id}),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-acs-request-id", v);
    }
    resp
}

pub(crate) fn fault_response(fault: &MockFault) -> Response {
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, &fault.code, &fault.message)
}

/// The new-style APIs take a JSON object body (a form body gets this, §2.1).
pub(crate) fn parse_body(body: &str) -> Result<Value, Response> {
    serde_json::from_str::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "MissingBody",
                "body is mandatory for this action",
            )
        })
}

pub(crate) async fn access_token(AxState(state): AxState<Arc<State>>, body: String) -> Response {
    state.bump_tokens();
    if let Some(f) = state.take_fault(Api::AccessToken) {
        return fault_response(&f);
    }
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    if field("appKey") != state.config.client_id || field("appSecret") != state.config.client_secret
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidClientIdOrSecret",
            "无效的clientId或者clientSecret",
        );
    }
    let token = state.issue_token();
    json_response(
        StatusCode::OK,
        &json!({"accessToken": token, "expireIn": state.token_ttl_secs()}),
    )
}

/// The documented `msgKey`s (§3.3); there is no `sampleActionCard1`, `sampleImage`, ...
pub(crate) const MSG_KEYS: [&str; 13] = [
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
];

fn bad(code: &str, message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, code, message)
}

/// The checks both robot sends share, in the order a gateway would apply them: token, QPS,
/// injected faults, body, robotCode, msgKey, msgParam.
fn check_send(
    state: &State,
    headers: &HeaderMap,
    body: &str,
    api: Api,
) -> Result<(Value, String, Value), Response> {
    let token = headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !state.token_valid(token) {
        return Err(bad("InvalidAuthentication", "不合法的access_token"));
    }
    if !state.within_qps(api) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
            "调用该接口触发了限流，请降低调用频率",
        ));
    }
    if let Some(f) = state.take_fault(api) {
        return Err(fault_response(&f));
    }
    let body = parse_body(body)?;
    match body.get("robotCode").and_then(Value::as_str) {
        None | Some("") => {
            return Err(bad("invalidParameter.robotCode.empty", "robotCode不能为空"));
        }
        Some(code) if code != state.config.robot_code => {
            return Err(bad(
                "invalidParameter.robotCode.auth",
                "This app's appkey does not match the bot's robotCode",
            ));
        }
        Some(_) => {}
    }
    let key = match body.get("msgKey").and_then(Value::as_str) {
        None | Some("") => return Err(bad("invalidParameter.msgKey.empty", "msgKey不能为空")),
        Some(k) if !MSG_KEYS.contains(&k) => {
            return Err(bad("invalidParameter.msgKey.invalid", "msgKey is invalid"));
        }
        Some(k) => k.to_owned(),
    };
    let param = body
        .get("msgParam")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .filter(Value::is_object)
        .ok_or_else(|| {
            bad(
                "invalidParameter.msgParam.invalid",
                "msgParam must be in JSON format",
            )
        })?;
    Ok((body, key, param))
}

/// What a user reads of a `msgParam`.
pub(crate) fn readable(param: &Value) -> String {
    param
        .get("content")
        .or_else(|| param.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn process_query_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

pub(crate) async fn batch_send(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (body, key, param) = match check_send(&state, &headers, &body, Api::BatchSend) {
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
        return bad("invalidParameter.userIds.empty", "userIds不能为空");
    }
    if users.len() > 20 {
        return bad(
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
        // Throttled once, then the user clears, as real per-user throttling does.
        users
            .iter()
            .filter(|u| !invalid.contains(u) && fc.remove(*u))
            .cloned()
            .collect()
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
            at_user_ids: Vec::new(),
            is_at_all: false,
            at_ms: now_ms(),
        });
    }
    json_response(
        StatusCode::OK,
        &json!({
            "processQueryKey": process_query_key(),
            "invalidStaffIdList": invalid,
            "flowControlledStaffIdList": flow,
            "filteredStaffIdList": [],
        }),
    )
}

/// `msgParam` of a group message must stay under 15,000 bytes (§3.2).
pub(crate) const GROUP_MSG_PARAM_MAX: usize = 15_000;

pub(crate) async fn group_send(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (body, key, param) = match check_send(&state, &headers, &body, Api::GroupSend) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let raw_len = body
        .get("msgParam")
        .and_then(Value::as_str)
        .map_or(0, str::len);
    if raw_len >= GROUP_MSG_PARAM_MAX {
        // The real code is undocumented (§13); this one follows the family's naming.
        return bad(
            "invalidParameter.msgParam.length",
            "msgParam length must not exceed 15000 bytes",
        );
    }
    let conversation = body
        .get("openConversationId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !state.groups.lock().contains(&conversation) {
        return bad(
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
        at_user_ids: Vec::new(),
        is_at_all: false,
        at_ms: now_ms(),
    });
    json_response(
        StatusCode::OK,
        &json!({"processQueryKey": process_query_key()}),
    )
}
