//! The sender: builder, token handling, paced and retried OpenAPI calls, robot sends and
//! session-webhook replies.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use retry_policy::{Jitter, RetryPolicy};

use serde_json::{Value, json};

mod builder;
mod send;

pub use builder::SenderBuilder;
pub use send::{BatchSendReport, GroupSendReport, SendReport, Target};

use crate::error::{Error, Result};

use crate::split::DEFAULT_PART_BYTES;
use crate::throttle::TokenBucket;
use crate::token::{AccessToken, TokenCache};

/// The real OpenAPI host.
pub const DEFAULT_API_BASE: &str = "https://api.dingtalk.com";
/// The real old-style API host.
pub const DEFAULT_OAPI_BASE: &str = "https://oapi.dingtalk.com";
/// Most user ids in one `batchSend` (DingTalk refuses more with
/// `invalidParameter.userIds.overMax`).
pub const MAX_USERS_PER_CALL: usize = 20;

/// [`Error::NotDelivered`] reasons, one per list of DingTalk's `batchSend` answer.
pub(crate) const NOT_DELIVERED_INVALID: &str = "invalid user";
pub(crate) const NOT_DELIVERED_FILTERED: &str = "filtered";
pub(crate) const NOT_DELIVERED_FLOW_CONTROLLED: &str = "flow-controlled";

/// Longest title sent with a long markdown's parts (it is only the notification preview).
const MAX_TITLE_CHARS: usize = 64;

/// The OpenAPI endpoints this crate calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    BatchSend,
    GroupSend,
    FileDownload,
    CardCreate,
    CardDeliver,
    CardUpdate,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::BatchSend => "/v1.0/robot/oToMessages/batchSend",
            Api::GroupSend => "/v1.0/robot/groupMessages/send",
            Api::FileDownload => "/v1.0/robot/messageFiles/download",
            Api::CardCreate | Api::CardUpdate => "/v1.0/card/instances",
            Api::CardDeliver => "/v1.0/card/instances/deliver",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Api::BatchSend => "batchSend",
            Api::GroupSend => "groupMessages/send",
            Api::FileDownload => "messageFiles/download",
            Api::CardCreate => "card/instances create",
            Api::CardDeliver => "card/instances/deliver",
            Api::CardUpdate => "card/instances update",
        }
    }

    fn method(self) -> reqwest::Method {
        match self {
            Api::CardUpdate => reqwest::Method::PUT,
            _ => reqwest::Method::POST,
        }
    }

    /// Whether repeating the call after a timeout cannot do harm (no message sent twice).
    fn idempotent(self) -> bool {
        matches!(self, Api::FileDownload | Api::CardUpdate)
    }
}

struct Inner {
    config: SenderBuilder,
    robot_code: String,
    http: reqwest::Client,
    token: TokenCache,
    batch_bucket: TokenBucket,
    group_bucket: TokenBucket,
    file_bucket: TokenBucket,
    card_bucket: TokenBucket,
}

/// Pushes robot messages through the DingTalk OpenAPI and replies through session webhooks.
///
/// Cheap to clone (an `Arc` inside); clones share the token cache and the QPS buckets, so use
/// one sender (and its clones) per app.
#[derive(Clone)]
pub struct DingTalkSender {
    inner: Arc<Inner>,
}

impl fmt::Debug for DingTalkSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DingTalkSender")
            .field("robot_code", &self.inner.robot_code)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A failed call and the server's `Retry-After`, if any.
type CallError = (Error, Option<Duration>);

fn truncated(s: &str) -> String {
    s.chars().take(200).collect()
}

// === impl DingTalkSender ===

impl DingTalkSender {
    /// A builder with the real hosts, 20 calls/s per API, a 1 s-based backoff and 10 s timeouts.
    pub fn builder() -> SenderBuilder {
        SenderBuilder {
            client_id: String::new(),
            client_secret: String::new(),
            robot_code: None,
            api_base: DEFAULT_API_BASE.into(),
            oapi_base: DEFAULT_OAPI_BASE.into(),
            qps: 20,
            retry: RetryPolicy {
                max_retries: 5,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(30),
                jitter: Jitter::Full,
            },
            flow_control_retries: 3,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            refresh_margin: Duration::from_secs(300),
            part_bytes: DEFAULT_PART_BYTES,
            extra_roots_pem: Vec::new(),
            max_file_bytes: 20 * 1024 * 1024,
            proxy: None,
        }
    }

    /// `DingTalkSender::builder().from_env().build()`: configured from `DINGTALK_*` variables
    /// (see [`SenderBuilder::from_env`]).
    ///
    /// # Errors
    ///
    /// As [`SenderBuilder::build`] (e.g. the credentials are not set).
    pub fn from_env() -> Result<DingTalkSender> {
        DingTalkSender::builder().from_env().build()
    }

    /// The robot code sends carry.
    pub fn robot_code(&self) -> &str {
        &self.inner.robot_code
    }

    /// The HTTP client (its trust roots and timeouts), for calls outside the OpenAPI.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn max_file_bytes(&self) -> usize {
        self.inner.config.max_file_bytes
    }

    /// A valid access token, for OpenAPI calls this crate does not wrap. Cached, refreshed
    /// ahead of expiry, fetched once however many callers ask at the same time. It is a
    /// credential: do not log it.
    ///
    /// # Errors
    ///
    /// DingTalk refused the credentials (`invalidClientIdOrSecret`), or kept failing.
    pub async fn access_token(&self) -> Result<String> {
        Ok(self.token().await?.0)
    }

    async fn token(&self) -> Result<AccessToken> {
        self.inner.token.get(|| self.fetch_token()).await
    }

    /// `POST /v1.0/oauth2/accessToken`, retried (it is idempotent) on throttling and failures.
    async fn fetch_token(&self) -> Result<(String, Duration)> {
        let url = format!("{}/v1.0/oauth2/accessToken", self.inner.config.api_base);
        let body = json!({
            "appKey": self.inner.config.client_id,
            "appSecret": self.inner.config.client_secret,
        });
        let mut retries = 0;
        let v = loop {
            match self.post_json(&url, None, &body).await {
                Ok(v) => break v,
                Err((e, retry_after)) if e.is_retryable() => {
                    match self.inner.config.retry.next_delay(retries, retry_after) {
                        Some(d) => {
                            tracing::warn!(error = %e, delay_ms = millis(d), "dingtalk token request failed; retrying");
                            retries += 1;
                            tokio::time::sleep(d).await;
                        }
                        None => return Err(e),
                    }
                }
                Err((e, _)) => return Err(e),
            }
        };
        let token = v
            .get("accessToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::UnexpectedResponse {
                status: 200,
                detail: "no accessToken in the token answer".into(),
            })?;
        let ttl = v.get("expireIn").and_then(Value::as_u64).unwrap_or(7200);
        Ok((token.to_owned(), Duration::from_secs(ttl)))
    }

    /// One POST with a JSON body; 2xx JSON is success, anything else an error.
    async fn post_json(
        &self,
        url: &str,
        token: Option<&AccessToken>,
        body: &Value,
    ) -> std::result::Result<Value, CallError> {
        self.call_json(reqwest::Method::POST, url, token, body)
            .await
    }

    /// One call with a JSON body; 2xx JSON is success (an empty 2xx body is `null`), anything
    /// else an error.
    async fn call_json(
        &self,
        method: reqwest::Method,
        url: &str,
        token: Option<&AccessToken>,
        body: &Value,
    ) -> std::result::Result<Value, CallError> {
        let mut req = self.inner.http.request(method, url).json(body);
        if let Some(t) = token {
            req = req.header("x-acs-dingtalk-access-token", &t.0);
        }
        let resp = req.send().await.map_err(|e| (Error::transport(e), None))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_policy::parse_retry_after(v, SystemTime::now()));
        let header_request_id = resp
            .headers()
            .get("x-acs-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp
            .text()
            .await
            .map_err(|e| (Error::transport(e), retry_after))?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return parsed.ok_or_else(|| {
                (
                    Error::UnexpectedResponse {
                        status,
                        detail: format!("not JSON: {}", truncated(&text)),
                    },
                    None,
                )
            });
        }
        let error = match parsed
            .as_ref()
            .and_then(|v| Some((v, v.get("code")?.as_str()?)))
        {
            Some((v, code)) => Error::Api {
                status,
                code: code.to_owned(),
                message: truncated(v.get("message").and_then(Value::as_str).unwrap_or("")),
                request_id: v
                    .get("requestid")
                    .and_then(Value::as_str)
                    .map_or(header_request_id, str::to_owned),
            },
            None => Error::UnexpectedResponse {
                status,
                detail: truncated(&text),
            },
        };
        Err((error, retry_after))
    }

    /// An authenticated, paced OpenAPI call: the token is refreshed once if refused, throttling
    /// and connection failures are retried with backoff, anything else is returned.
    pub(crate) async fn api_call(&self, api: Api, body: &Value) -> Result<Value> {
        let url = format!("{}{}", self.inner.config.api_base, api.path());
        let bucket = match api {
            Api::BatchSend => &self.inner.batch_bucket,
            Api::GroupSend => &self.inner.group_bucket,
            Api::FileDownload => &self.inner.file_bucket,
            Api::CardCreate | Api::CardDeliver | Api::CardUpdate => &self.inner.card_bucket,
        };
        let mut retries = 0;
        let mut refreshed = false;
        loop {
            bucket.acquire().await;
            let token = self.token().await?;
            let (e, retry_after) =
                match self.call_json(api.method(), &url, Some(&token), body).await {
                    Ok(v) => return Ok(v),
                    Err(failure) => failure,
                };
            if e.is_invalid_token() && !refreshed {
                tracing::info!(
                    api = api.name(),
                    "dingtalk refused the access token; refreshing it once"
                );
                refreshed = true;
                self.inner.token.invalidate(&token);
                continue;
            }
            let retry = e.is_safe_to_retry() || (api.idempotent() && e.is_retryable());
            if !retry {
                tracing::warn!(api = api.name(), error = %e, "dingtalk call failed");
                return Err(e);
            }
            let Some(delay) = self.inner.config.retry.next_delay(retries, retry_after) else {
                tracing::warn!(api = api.name(), error = %e, retries, "dingtalk call still failing; giving up");
                return Err(e);
            };
            tracing::info!(api = api.name(), error = %e, delay_ms = millis(delay), "dingtalk call throttled or unreachable; backing off");
            retries += 1;
            tokio::time::sleep(delay).await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_that_cannot_send_twice_are_idempotent() {
        for api in [
            Api::BatchSend,
            Api::GroupSend,
            Api::CardCreate,
            Api::CardDeliver,
        ] {
            assert!(!api.idempotent(), "{api:?}");
            assert_eq!(api.method(), reqwest::Method::POST);
        }
        assert!(Api::FileDownload.idempotent());
        assert_eq!(Api::CardUpdate.method(), reqwest::Method::PUT);
        assert_eq!(Api::CardUpdate.path(), Api::CardCreate.path());
    }

    #[test]
    fn truncated_keeps_200_characters_not_bytes() {
        let long = "钉".repeat(300);
        assert_eq!(truncated(&long).chars().count(), 200);
        assert_eq!(truncated("short"), "short");
    }
}
