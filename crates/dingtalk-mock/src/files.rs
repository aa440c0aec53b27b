//! Media a user sent: `POST /v1.0/robot/messageFiles/download` (protocol reference §3.2, the
//! Python SDK's `get_image_download_url`) turns a `downloadCode` into a `downloadUrl`, and
//! `GET /down/{token}` serves the bytes.

use std::sync::Arc;

use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::message::{MockMessage, MsgType};
use crate::openapi::{error, fault_response, json_response, parse_body};
use crate::state::{Api, MockFile, State, random_hex};

/// A 1x1 PNG: what a picture downloads as unless a test sets other bytes.
pub(crate) fn tiny_png() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(TINY_PNG_B64)
        .unwrap_or_default()
}

const TINY_PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// Gives every download code of a said message its default bytes.
pub(crate) fn register(state: &State, m: &MockMessage, codes: &[String]) {
    let file = match m.msg_type {
        MsgType::File => MockFile {
            bytes: format!("mock file {}\n", m.text).into_bytes(),
            content_type: "application/octet-stream".into(),
        },
        MsgType::Audio => MockFile {
            bytes: b"#!AMR\n".to_vec(),
            content_type: "audio/amr".into(),
        },
        MsgType::Video => MockFile {
            bytes: b"\x00\x00\x00\x18ftypmp42".to_vec(),
            content_type: "video/mp4".into(),
        },
        _ => MockFile {
            bytes: tiny_png(),
            content_type: "image/png".into(),
        },
    };
    let mut files = state.files.lock();
    for code in codes {
        files.insert(code.clone(), file.clone());
    }
}

/// `POST /v1.0/robot/messageFiles/download {robotCode, downloadCode}` -> `{downloadUrl}`.
pub(crate) async fn download(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let token = headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !state.token_valid(token) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidAuthentication",
            "不合法的access_token",
        );
    }
    if let Some(f) = state.take_fault(Api::FileDownload) {
        return fault_response(&f);
    }
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    if field("robotCode") != state.config.robot_code {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidParameter.robotCode.auth",
            "This app's appkey does not match the bot's robotCode",
        );
    }
    let code = field("downloadCode");
    if !state.files.lock().contains_key(code) {
        // The real code for an unknown download code is undocumented.
        return error(
            StatusCode::BAD_REQUEST,
            "invalidParameter.downloadCode.invalid",
            "downloadCode is invalid",
        );
    }
    let url_token = random_hex(32);
    state
        .download_tokens
        .lock()
        .insert(url_token.clone(), code.to_owned());
    json_response(
        StatusCode::OK,
        &json!({"downloadUrl": format!("{}/down/{url_token}", state.base_url)}),
    )
}

/// `GET /down/{token}`: the bytes behind a download URL (no token needed, like DingTalk's
/// signed media URLs).
pub(crate) async fn serve(
    AxState(state): AxState<Arc<State>>,
    Path(url_token): Path<String>,
) -> Response {
    let code = state.download_tokens.lock().get(&url_token).cloned();
    let file = code.and_then(|c| state.files.lock().get(&c).cloned());
    match file {
        Some(f) => {
            let ct = HeaderValue::from_str(&f.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (StatusCode::OK, [(header::CONTENT_TYPE, ct)], f.bytes).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
