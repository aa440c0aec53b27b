//! Enterprise chat platforms' wire rules: DingTalk custom robots, WeCom group robots,
//! Feishu/Lark custom bots and Slack incoming webhooks, each with its signature and its way of
//! saying "failed" inside an HTTP 200. What a message says is the caller's (the dispatcher
//! renders it in `workflow_dispatch::render`); this module only carries it.
//!
//! [`WebhookClient::send_chat`](crate::WebhookClient::send_chat) signs a body (DingTalk:
//! `timestamp` and `sign` query parameters; Feishu: `timestamp` and `sign` in the body, see
//! [`signed_request`]), posts it through the same SSRF guard, breaker and body cap as a
//! webhook, and classifies the platform's answer with [`classify_response`] (`errcode`/`code`
//! != 0 is a failure; throttles are retryable).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use retry_policy::Outcome;
use serde_json::Value;
use sha2::Sha256;

/// A chat platform whose incoming webhook we render for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatKind {
    /// DingTalk custom group robot (`oapi.dingtalk.com/robot/send?access_token=`), markdown.
    DingTalkRobot,
    /// WeCom (企业微信) group robot (`qyapi.weixin.qq.com/cgi-bin/webhook/send?key=`), markdown.
    WeComRobot,
    /// Feishu/Lark custom bot (`open.feishu.cn/open-apis/bot/v2/hook/..`), interactive card.
    FeishuRobot,
    /// Slack incoming webhook (`hooks.slack.com/services/..`), blocks.
    Slack,
}

impl ChatKind {
    /// Every kind.
    pub const ALL: [ChatKind; 4] = [
        ChatKind::DingTalkRobot,
        ChatKind::WeComRobot,
        ChatKind::FeishuRobot,
        ChatKind::Slack,
    ];

    /// The configuration name: `dingtalk_robot`, `wecom_robot`, `feishu_robot`, `slack`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::DingTalkRobot => "dingtalk_robot",
            ChatKind::WeComRobot => "wecom_robot",
            ChatKind::FeishuRobot => "feishu_robot",
            ChatKind::Slack => "slack",
        }
    }

    /// The `delivery_format` name written into packages sent this way.
    pub fn delivery_format(self) -> &'static str {
        match self {
            ChatKind::DingTalkRobot => "dingtalk_markdown",
            ChatKind::WeComRobot => "wecom_markdown",
            ChatKind::FeishuRobot => "feishu_card",
            ChatKind::Slack => "slack_blocks",
        }
    }
}

impl fmt::Display for ChatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not a [`ChatKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown chat kind {0:?} (expected dingtalk_robot, wecom_robot, feishu_robot or slack)")]
pub struct UnknownChatKind(pub String);

impl FromStr for ChatKind {
    type Err = UnknownChatKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChatKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownChatKind(s.to_owned()))
    }
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    B64.encode(mac.finalize().into_bytes())
}

/// DingTalk's custom robot signature: base64(HMAC-SHA256(key = secret, message =
/// `"{timestamp_ms}\n{secret}"`)), not yet URL-encoded.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    hmac_b64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// Feishu/Lark's custom bot signature: base64(HMAC-SHA256(key = `"{timestamp_s}\n{secret}"`,
/// message = empty)).
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    hmac_b64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

/// The URL and body to send at `now_ms` (Unix milliseconds): DingTalk gets `timestamp` (ms)
/// and `sign` appended to the query (form-encoded, so `+ / =` are escaped); Feishu gets
/// `timestamp` (s) and `sign` in the body. Without a secret, or for WeCom and Slack (whose
/// secret is the URL itself), both are returned unchanged.
///
/// # Errors
///
/// [`crate::Error::InvalidUrl`] when `url` does not parse.
pub fn signed_request(
    kind: ChatKind,
    url: &str,
    secret: Option<&str>,
    body: &Value,
    now_ms: i64,
) -> crate::Result<(String, Value)> {
    let mut url = url::Url::parse(url)
        .map_err(|_| crate::Error::InvalidUrl("not an absolute http(s) URL".into()))?;
    let mut body = body.clone();
    match (kind, secret.filter(|s| !s.is_empty())) {
        (ChatKind::DingTalkRobot, Some(secret)) => {
            let sign = dingtalk_sign(secret, now_ms);
            url.query_pairs_mut()
                .append_pair("timestamp", &now_ms.to_string())
                .append_pair("sign", &sign);
        }
        (ChatKind::FeishuRobot, Some(secret)) => {
            let ts = now_ms.div_euclid(1000);
            if let Some(obj) = body.as_object_mut() {
                obj.insert("timestamp".into(), Value::String(ts.to_string()));
                obj.insert("sign".into(), Value::String(feishu_sign(secret, ts)));
            }
        }
        _ => {}
    }
    Ok((url.into(), body))
}

/// How long a throttled platform asks us to wait, by its documented limits: DingTalk blocks a
/// robot for 10 minutes after 20 messages a minute; WeCom allows 20 a minute; Feishu 100 a minute.
fn throttle_wait(kind: ChatKind) -> Duration {
    match kind {
        ChatKind::DingTalkRobot => Duration::from_secs(600),
        ChatKind::WeComRobot => Duration::from_secs(60),
        ChatKind::FeishuRobot => Duration::from_secs(10),
        ChatKind::Slack => Duration::from_secs(1),
    }
}

/// The platform's verdict on a response, given the outcome its HTTP status already had.
///
/// - DingTalk and WeCom answer HTTP 200 with `errcode`: 0 is success; DingTalk `130101` (send
///   too fast) and WeCom `45009` (api freq out of limit) are throttles, retryable after the
///   platform's window; `-1` (system busy) is retryable; any other code (bad signature
///   `310000`, unknown token, keyword mismatch, bad key `93000`...) is permanent.
/// - Feishu answers `code` (or `StatusCode` in the older shape): 0 is success; `9499` and
///   `11232` (frequency limits) are retryable; others (`19021` sign mismatch...) permanent.
/// - Slack answers `ok` with 200; 400 `invalid_payload`, 403, 404 and 410 are permanent; 429
///   keeps its `Retry-After`.
///
/// Returns the outcome and, for a failure read from the body, a description.
pub fn classify_response(
    kind: ChatKind,
    status: u16,
    body: Option<&str>,
    http_outcome: Outcome,
) -> (Outcome, Option<String>) {
    if !(200..300).contains(&status) {
        if kind == ChatKind::Slack && matches!(status, 400 | 403 | 404 | 410) {
            let why = body.unwrap_or("").trim();
            return (
                Outcome::Permanent,
                Some(format!("slack: HTTP {status} {why}")),
            );
        }
        return (http_outcome, None);
    }
    let parsed = body.and_then(|b| serde_json::from_str::<Value>(b).ok());
    let field = |names: &[&str]| -> Option<(i64, String)> {
        let v = parsed.as_ref()?;
        let code = names
            .iter()
            .find_map(|n| v.get(*n).and_then(Value::as_i64))?;
        let msg = ["errmsg", "msg", "StatusMessage"]
            .iter()
            .find_map(|n| v.get(*n).and_then(Value::as_str))
            .unwrap_or("")
            .to_owned();
        Some((code, msg))
    };
    let (code, msg, throttles): (i64, String, &[i64]) = match kind {
        ChatKind::DingTalkRobot => match field(&["errcode"]) {
            Some((c, m)) => (c, m, &[130_101, -1]),
            None => return (Outcome::Success, None),
        },
        ChatKind::WeComRobot => match field(&["errcode"]) {
            Some((c, m)) => (c, m, &[45_009, -1]),
            None => return (Outcome::Success, None),
        },
        ChatKind::FeishuRobot => match field(&["code", "StatusCode"]) {
            Some((c, m)) => (c, m, &[9499, 11_232]),
            None => return (Outcome::Success, None),
        },
        ChatKind::Slack => return (Outcome::Success, None),
    };
    if code == 0 {
        return (Outcome::Success, None);
    }
    let error = format!("{kind}: code {code} {msg}");
    if throttles.contains(&code) {
        let retry_after = (code != -1).then(|| throttle_wait(kind));
        (Outcome::Retryable { retry_after }, Some(error))
    } else {
        (Outcome::Permanent, Some(error))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    #[test]
    fn dingtalk_signature_matches_the_documented_algorithm() {
        let s = dingtalk_sign("SECmockrobotsecret", 1_700_000_000_000);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"SECmockrobotsecret").unwrap();
        mac.update(b"1700000000000\nSECmockrobotsecret");
        assert_eq!(s, B64.encode(mac.finalize().into_bytes()));
        assert_ne!(s, dingtalk_sign("SECmockrobotsecret", 1_700_000_000_001));
        let (url, _) = signed_request(
            ChatKind::DingTalkRobot,
            "https://oapi.dingtalk.com/robot/send?access_token=t",
            Some("SECmockrobotsecret"),
            &json!({}),
            1_700_000_000_000,
        )
        .unwrap();
        let u = url::Url::parse(&url).unwrap();
        let q: BTreeMap<_, _> = u.query_pairs().collect();
        assert_eq!(q["access_token"], "t");
        assert_eq!(q["timestamp"], "1700000000000");
        assert_eq!(q["sign"], s);
        assert!(!url.contains('+') && !url.contains("=="), "{url}");
    }

    #[test]
    fn feishu_signature_keys_the_hmac_with_timestamp_and_secret() {
        let (_, body) = signed_request(
            ChatKind::FeishuRobot,
            "https://open.feishu.cn/open-apis/bot/v2/hook/x",
            Some("s3"),
            &json!({"msg_type": "interactive"}),
            1_700_000_000_999,
        )
        .unwrap();
        assert_eq!(body["timestamp"], "1700000000");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"1700000000\ns3").unwrap();
        mac.update(b"");
        assert_eq!(body["sign"], B64.encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn errcodes_are_failures_and_throttles_are_retryable() {
        let ok = Outcome::Success;
        let c = |k, s, b: &str| classify_response(k, s, Some(b), ok).0;
        assert_eq!(
            c(
                ChatKind::DingTalkRobot,
                200,
                r#"{"errcode":0,"errmsg":"ok"}"#
            ),
            Outcome::Success
        );
        assert_eq!(
            c(
                ChatKind::DingTalkRobot,
                200,
                r#"{"errcode":130101,"errmsg":"send too fast"}"#
            ),
            Outcome::Retryable {
                retry_after: Some(Duration::from_secs(600))
            }
        );
        assert_eq!(
            c(
                ChatKind::DingTalkRobot,
                200,
                r#"{"errcode":310000,"errmsg":"sign not match"}"#
            ),
            Outcome::Permanent
        );
        assert!(matches!(
            c(
                ChatKind::WeComRobot,
                200,
                r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
            ),
            Outcome::Retryable { .. }
        ));
        assert_eq!(
            c(
                ChatKind::FeishuRobot,
                200,
                r#"{"code":19021,"msg":"sign match fail"}"#
            ),
            Outcome::Permanent
        );
        assert_eq!(
            c(
                ChatKind::FeishuRobot,
                200,
                r#"{"StatusCode":0,"StatusMessage":"success"}"#
            ),
            Outcome::Success
        );
        assert_eq!(c(ChatKind::Slack, 200, "ok"), Outcome::Success);
        assert_eq!(
            classify_response(
                ChatKind::Slack,
                404,
                Some("no_service"),
                Outcome::Retryable { retry_after: None }
            )
            .0,
            Outcome::Permanent
        );
        let ra = Outcome::Retryable {
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(classify_response(ChatKind::Slack, 429, None, ra).0, ra);
    }
}
