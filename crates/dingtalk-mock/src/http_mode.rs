//! HTTP mode (§7): the mock POSTs the robot message to the bot's URL with `timestamp` and
//! `sign` headers, and posts a message returned in the response body into the conversation.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;

use crate::oapi::{custom_robot_sign, webhook_message};
use crate::state::{State, now_ms};

/// POSTs `data` to `url` signed with the app secret; returns whether the bot answered 2xx.
pub(crate) async fn post_callback(
    state: &State,
    url: &str,
    data: String,
    conversation_id: &str,
) -> bool {
    let ts = now_ms().to_string();
    let sign = custom_robot_sign(&ts, &state.config.client_secret);
    let Ok(req) = http::Request::post(url)
        .header("content-type", "application/json; charset=utf-8")
        .header("timestamp", &ts)
        .header("sign", &sign)
        .body(Full::new(Bytes::from(data)))
    else {
        return false;
    };
    let resp = match state.poster.request(req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(error = %e, "http-mode callback failed");
            return false;
        }
    };
    let ok = resp.status().is_success();
    let body = Limited::new(resp.into_body(), 1 << 20).collect().await;
    if ok
        && let Ok(body) = body
        && let Ok(reply) = serde_json::from_slice::<Value>(&body.to_bytes())
        && reply.get("msgtype").and_then(Value::as_str) != Some("empty")
        && let Some(entry) = webhook_message(
            &reply,
            "http_callback_reply",
            vec![conversation_id.to_owned()],
        )
    {
        state.record(entry);
    }
    ok
}
