//! HTTP callback mode: DingTalk POSTs each robot message to your URL instead of a Stream frame.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::Incoming;
use crate::dedupe::Deduper;
use crate::message::RobotMessage;
use crate::sign::verify_callback;

#[derive(Clone)]
struct CallbackState {
    app_secret: Arc<str>,
    out: mpsc::Sender<Incoming>,
    deduper: Arc<Mutex<Deduper>>,
}

/// A router with one `POST /` route that verifies DingTalk's `timestamp` and `sign` headers
/// (401 otherwise), drops duplicates by `msgId`, forwards the message to `out` and answers
/// `{"msgtype":"empty"}` at once (the reply comes later through the session webhook).
///
/// Nest it where DingTalk is configured to call, e.g. `Router::new().nest("/dingtalk", router)`.
pub fn callback_router(app_secret: &str, out: mpsc::Sender<Incoming>) -> Router {
    let state = CallbackState {
        app_secret: Arc::from(app_secret),
        out,
        deduper: Arc::new(Mutex::new(Deduper::new(Duration::from_secs(600), 100_000))),
    };
    Router::new().route("/", post(receive)).with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"status": "error", "message": message})),
    )
        .into_response()
}

async fn receive(State(state): State<CallbackState>, headers: HeaderMap, body: String) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now_ms = chrono_now_ms();
    if let Err(e) = verify_callback(
        header("timestamp"),
        header("sign"),
        &state.app_secret,
        now_ms,
    ) {
        tracing::warn!(error = %e, "dingtalk callback refused");
        return error(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    let message = match RobotMessage::from_json(&body) {
        Ok(m) => m,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("unreadable robot message: {e}"),
            );
        }
    };
    if !message.msg_id.is_empty() && !state.deduper.lock().first_time(&message.msg_id) {
        tracing::info!(msg_id = %message.msg_id, "duplicate delivery dropped");
    } else {
        let incoming = Incoming {
            message,
            message_id: String::new(),
            topic: crate::frame::BOT_MESSAGE_TOPIC.to_owned(),
        };
        if state.out.send(incoming).await.is_err() {
            return error(StatusCode::SERVICE_UNAVAILABLE, "bot is shutting down");
        }
    }
    Json(serde_json::json!({"msgtype": "empty"})).into_response()
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
