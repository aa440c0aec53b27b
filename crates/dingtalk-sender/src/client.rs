//! The sender: builder, token handling, paced and retried OpenAPI calls, robot sends and
//! session-webhook replies.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use retry_policy::{Jitter, RetryPolicy};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::split::{DEFAULT_PART_BYTES, MSG_PARAM_LIMIT, json_weight, split_weighted};
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

/// Configures a [`DingTalkSender`]. Setters never fail; [`SenderBuilder::build`] checks.
#[derive(Clone)]
pub struct SenderBuilder {
    client_id: String,
    client_secret: String,
    robot_code: Option<String>,
    api_base: String,
    oapi_base: String,
    qps: u32,
    retry: RetryPolicy,
    flow_control_retries: u32,
    timeout: Duration,
    connect_timeout: Duration,
    refresh_margin: Duration,
    part_bytes: usize,
    extra_roots_pem: Vec<Vec<u8>>,
    max_file_bytes: usize,
}

impl fmt::Debug for SenderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderBuilder")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("robot_code", &self.robot_code)
            .field("api_base", &self.api_base)
            .field("oapi_base", &self.oapi_base)
            .field("qps", &self.qps)
            .field("retry", &self.retry)
            .field("flow_control_retries", &self.flow_control_retries)
            .field("timeout", &self.timeout)
            .field("part_bytes", &self.part_bytes)
            .field("extra_roots", &self.extra_roots_pem.len())
            .finish_non_exhaustive()
    }
}

// === impl SenderBuilder ===

impl SenderBuilder {
    /// The app's Client ID (AppKey; `DINGTALK_CLIENT_ID`). Required.
    pub fn client_id(mut self, v: impl Into<String>) -> Self {
        self.client_id = v.into();
        self
    }

    /// The app's Client Secret (`DINGTALK_CLIENT_SECRET`). Required. Never logged or printed.
    pub fn client_secret(mut self, v: impl Into<String>) -> Self {
        self.client_secret = v.into();
        self
    }

    /// The robot code sends carry (default: the client id, as for an internal app's robot).
    pub fn robot_code(mut self, v: impl Into<String>) -> Self {
        self.robot_code = Some(v.into());
        self
    }

    /// The OpenAPI base URL (default [`DEFAULT_API_BASE`]); point it at a local mock in tests.
    pub fn api_base(mut self, v: impl Into<String>) -> Self {
        self.api_base = v.into().trim_end_matches('/').to_owned();
        self
    }

    /// The old-style API base URL (default [`DEFAULT_OAPI_BASE`]). Session webhooks are full
    /// URLs and do not use it.
    pub fn oapi_base(mut self, v: impl Into<String>) -> Self {
        self.oapi_base = v.into().trim_end_matches('/').to_owned();
        self
    }

    /// Client-side limit of calls per second, per API (default 20: DingTalk's per-app limit
    /// for a standard-edition org). Calls are paced evenly, so no one-second window sees more.
    pub fn qps(mut self, qps: u32) -> Self {
        self.qps = qps.max(1);
        self
    }

    /// Backoff for throttled calls (`QpsLimit`, `send.too.fast`, 429) and connection failures.
    /// Default: 5 retries from 1 s (DingTalk asks for at least a second), doubling to 30 s,
    /// proportional jitter. Tests pass milliseconds.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How many times users reported in `flowControlledStaffIdList` are retried (alone, with
    /// the [`SenderBuilder::retry`] backoff) before being reported as failed. Default 3.
    pub fn flow_control_retries(mut self, n: u32) -> Self {
        self.flow_control_retries = n;
        self
    }

    /// Total timeout of each HTTP call (default 10 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Connect timeout of each HTTP call (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Refresh the access token this long before it expires (default 300 s, capped at half its
    /// lifetime).
    pub fn token_refresh_margin(mut self, d: Duration) -> Self {
        self.refresh_margin = d;
        self
    }

    /// Largest part of a long message, in bytes (default [`DEFAULT_PART_BYTES`]).
    pub fn part_bytes(mut self, n: usize) -> Self {
        self.part_bytes = n;
        self
    }

    /// Trusts the CA certificates in `pem` (one or more PEM blocks) besides the platform's roots:
    /// a private CA, or a local mock's throwaway one. May be called more than once. Checked by
    /// [`SenderBuilder::build`].
    ///
    /// The platform's roots come from the platform verifier, which on Linux reads the system
    /// bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (which then replace the system
    /// bundle, as they do for OpenSSL).
    pub fn add_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_roots_pem.push(pem.into());
        self
    }

    /// Largest file [`DingTalkSender::download_file`] accepts (default 20 MiB: DingTalk's own
    /// limit for files sent to a robot).
    pub fn max_file_bytes(mut self, n: usize) -> Self {
        self.max_file_bytes = n;
        self
    }

    /// Reads `DINGTALK_CLIENT_ID`, `DINGTALK_CLIENT_SECRET`, `DINGTALK_ROBOT_CODE`,
    /// `DINGTALK_API_BASE` and `DINGTALK_OAPI_BASE` where set and non-empty. A convenience for
    /// binaries and examples; libraries should take their configuration explicitly.
    pub fn from_env(mut self) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("DINGTALK_CLIENT_ID") {
            self.client_id = v;
        }
        if let Some(v) = var("DINGTALK_CLIENT_SECRET") {
            self.client_secret = v;
        }
        if let Some(v) = var("DINGTALK_ROBOT_CODE") {
            self.robot_code = Some(v);
        }
        if let Some(v) = var("DINGTALK_API_BASE") {
            self = self.api_base(v);
        }
        if let Some(v) = var("DINGTALK_OAPI_BASE") {
            self = self.oapi_base(v);
        }
        self
    }

    /// Builds the sender. Its TLS uses rustls' `ring` provider passed explicitly: no process-wide
    /// default provider is installed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the client id or secret is empty, a base URL is not an
    /// `http(s)` URL, or the HTTP client cannot be built.
    pub fn build(self) -> Result<DingTalkSender> {
        if self.client_id.is_empty() || self.client_secret.is_empty() {
            return Err(Error::Config(
                "client id and client secret are required".into(),
            ));
        }
        for (name, base) in [("api", &self.api_base), ("oapi", &self.oapi_base)] {
            let ok = reqwest::Url::parse(base)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(Error::Config(format!("{name} base is not an http(s) URL")));
            }
        }
        let tls = crate::tls::client_config(crate::tls::certs_from_pems(&self.extra_roots_pem)?)?;
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| Error::Config(format!("http client: {}", e.without_url())))?;
        let robot_code = self
            .robot_code
            .clone()
            .unwrap_or_else(|| self.client_id.clone());
        Ok(DingTalkSender {
            inner: Arc::new(Inner {
                robot_code,
                http,
                token: TokenCache::new(self.refresh_margin),
                batch_bucket: TokenBucket::new(self.qps, 1),
                group_bucket: TokenBucket::new(self.qps, 1),
                file_bucket: TokenBucket::new(self.qps, 1),
                card_bucket: TokenBucket::new(self.qps, 1),
                config: self,
            }),
        })
    }
}

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

/// Where a pushed message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One-to-one to these users (userIds / staff ids, e.g. a callback's `senderStaffId`).
    Users(Vec<String>),
    /// To this group (`openConversationId` = a group callback's `conversationId`).
    Group(String),
}

impl Target {
    /// The target for answering a robot callback: `conversationType` `"1"` (single chat) goes
    /// to the sender's staff id, anything else to the conversation.
    pub fn from_conversation(
        conversation_type: &str,
        conversation_id: &str,
        sender_staff_id: &str,
    ) -> Target {
        if conversation_type == "1" {
            Target::Users(vec![sender_staff_id.to_owned()])
        } else {
            Target::Group(conversation_id.to_owned())
        }
    }
}

/// The outcome of a one-to-one send to many users. DingTalk answers 200 even when some users
/// were not reached: look at the lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchSendReport {
    /// One `processQueryKey` per successful call (for read status and recall).
    pub process_query_keys: Vec<String>,
    /// Users DingTalk accepted the message for.
    pub delivered: Vec<String>,
    /// Users DingTalk does not know (`invalidStaffIdList`); never retried.
    pub invalid_users: Vec<String>,
    /// Users DingTalk filtered (`filteredStaffIdList`, e.g. no chat with the robot); not retried.
    pub filtered_users: Vec<String>,
    /// Users still flow-controlled (`flowControlledStaffIdList`) after their retries.
    pub flow_controlled_users_failed: Vec<String>,
    /// How many `batchSend` calls succeeded (first sends and flow-control retries).
    pub calls: usize,
}

impl BatchSendReport {
    /// Every user got the message.
    pub fn all_delivered(&self) -> bool {
        self.invalid_users.is_empty()
            && self.filtered_users.is_empty()
            && self.flow_controlled_users_failed.is_empty()
    }
}

/// The outcome of a group send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupSendReport {
    /// DingTalk's `processQueryKey` (message id).
    pub process_query_key: String,
}

/// The outcome of [`DingTalkSender::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendReport {
    /// A one-to-one send.
    Users(BatchSendReport),
    /// A group send.
    Group(GroupSendReport),
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct BatchSendResponse {
    process_query_key: Option<String>,
    invalid_staff_id_list: Vec<String>,
    flow_controlled_staff_id_list: Vec<String>,
    filtered_staff_id_list: Vec<String>,
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

    /// Sends `message` one-to-one to `user_ids` (`batchSend`, at most 20 a call: more are split
    /// into several calls, duplicates dropped). Users reported in `flowControlledStaffIdList` are
    /// retried alone (without the others), with backoff, up to
    /// [`SenderBuilder::flow_control_retries`] times; invalid and filtered users are reported,
    /// never retried.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`], or a call failed permanently (e.g. `invalidParameter.*`,
    /// [`Error::is_invalid_token`] after the refresh) or stayed throttled through the retries.
    /// Calls before the failing one were delivered.
    pub async fn send_to_users<S: AsRef<str>>(
        &self,
        user_ids: &[S],
        message: &Message,
    ) -> Result<BatchSendReport> {
        message.validate()?;
        let mut seen = std::collections::HashSet::new();
        let users: Vec<&str> = user_ids
            .iter()
            .map(AsRef::as_ref)
            .filter(|u| seen.insert(*u))
            .collect();
        let msg_key = message.msg_key();
        let msg_param = message.msg_param();
        let mut report = BatchSendReport::default();
        for chunk in users.chunks(MAX_USERS_PER_CALL) {
            let mut pending: Vec<String> = chunk.iter().map(|u| (*u).to_owned()).collect();
            let mut round = 0;
            loop {
                let body = json!({
                    "robotCode": self.inner.robot_code,
                    "userIds": pending,
                    "msgKey": msg_key,
                    "msgParam": msg_param,
                });
                let v = self.api_call(Api::BatchSend, &body).await?;
                let r: BatchSendResponse = serde_json::from_value(v).unwrap_or_default();
                report.calls += 1;
                report.process_query_keys.extend(r.process_query_key);
                let throttled = r.flow_controlled_staff_id_list;
                report.delivered.extend(
                    pending
                        .iter()
                        .filter(|u| {
                            !throttled.contains(u)
                                && !r.invalid_staff_id_list.contains(u)
                                && !r.filtered_staff_id_list.contains(u)
                        })
                        .cloned(),
                );
                report.invalid_users.extend(r.invalid_staff_id_list);
                report.filtered_users.extend(r.filtered_staff_id_list);
                if throttled.is_empty() {
                    break;
                }
                let flow_policy = RetryPolicy {
                    max_retries: self.inner.config.flow_control_retries,
                    ..self.inner.config.retry
                };
                let Some(delay) = flow_policy.next_delay(round, None) else {
                    tracing::warn!(
                        users = throttled.len(),
                        "users still flow-controlled after retries"
                    );
                    report.flow_controlled_users_failed.extend(throttled);
                    break;
                };
                tracing::info!(
                    users = throttled.len(),
                    delay_ms = millis(delay),
                    "users flow-controlled; retrying them alone"
                );
                round += 1;
                tokio::time::sleep(delay).await;
                pending = throttled;
            }
        }
        Ok(report)
    }

    /// Sends `message` to a group (`groupMessages/send`; `open_conversation_id` is a group
    /// callback's `conversationId`, and the robot must be in the group).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] (also when `msgParam` would reach DingTalk's 15,000-byte
    /// limit), a permanent failure such as `invalidParameter.openConversationId.invalid`, or
    /// throttling that outlasted the retries.
    pub async fn send_to_group(
        &self,
        open_conversation_id: &str,
        message: &Message,
    ) -> Result<GroupSendReport> {
        message.validate()?;
        let msg_param = message.msg_param();
        if msg_param.len() >= MSG_PARAM_LIMIT {
            return Err(Error::InvalidMessage(format!(
                "msgParam is {} bytes, DingTalk takes less than {MSG_PARAM_LIMIT}: split it (send_long_markdown)",
                msg_param.len()
            )));
        }
        let body = json!({
            "robotCode": self.inner.robot_code,
            "openConversationId": open_conversation_id,
            "msgKey": message.msg_key(),
            "msgParam": msg_param,
        });
        let v = self.api_call(Api::GroupSend, &body).await?;
        let key = v
            .get("processQueryKey")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::UnexpectedResponse {
                status: 200,
                detail: "no processQueryKey in the group send answer".into(),
            })?;
        Ok(GroupSendReport {
            process_query_key: key.to_owned(),
        })
    }

    /// Sends `message` to `target`.
    ///
    /// # Errors
    ///
    /// As [`DingTalkSender::send_to_users`] or [`DingTalkSender::send_to_group`].
    pub async fn send(&self, target: &Target, message: &Message) -> Result<SendReport> {
        match target {
            Target::Users(users) => self
                .send_to_users(users, message)
                .await
                .map(SendReport::Users),
            Target::Group(cid) => self
                .send_to_group(cid, message)
                .await
                .map(SendReport::Group),
        }
    }

    /// The seed's call. The rule, since a conversation id does not say what kind of chat it
    /// is: a non-empty `user_id` means a single chat, sent one-to-one (`batchSend`) to that
    /// user (`conversation_id` is then ignored); an empty `user_id` means a group, sent to
    /// `conversation_id` (`groupMessages/send`). From a callback, pass `senderStaffId` for
    /// `conversationType` `"1"` and an empty string for `"2"`, or use [`Target::from_conversation`]
    /// with [`DingTalkSender::send`]. Text longer than a part is sent as numbered parts.
    ///
    /// # Errors
    ///
    /// As [`DingTalkSender::send_to_users`] / [`DingTalkSender::send_to_group`], and
    /// [`Error::NotDelivered`] when the user was invalid, filtered or stayed flow-controlled.
    pub async fn send_text_message(
        &self,
        conversation_id: &str,
        user_id: &str,
        content: &str,
    ) -> Result<()> {
        let parts = self.split_for_param(content, "");
        for part in &parts {
            let message = Message::text(part.as_str());
            if user_id.is_empty() {
                self.send_to_group(conversation_id, &message).await?;
                continue;
            }
            let r = self.send_to_users(&[user_id], &message).await?;
            let reason = if !r.invalid_users.is_empty() {
                NOT_DELIVERED_INVALID
            } else if !r.filtered_users.is_empty() {
                NOT_DELIVERED_FILTERED
            } else if !r.flow_controlled_users_failed.is_empty() {
                NOT_DELIVERED_FLOW_CONTROLLED
            } else {
                continue;
            };
            return Err(Error::NotDelivered {
                user_id: user_id.to_owned(),
                reason,
            });
        }
        Ok(())
    }

    /// Splits text so that each part is at most [`SenderBuilder::part_bytes`] long and its
    /// `msgParam` (JSON-escaped, next to the title) stays under DingTalk's 15,000 bytes.
    fn split_for_param(&self, text: &str, title: &str) -> Vec<String> {
        let title_weight: usize = title.chars().map(json_weight).sum();
        // {"title":"…","text":"…"} plus a " (99/99)" title suffix, with room to spare.
        let param_room = MSG_PARAM_LIMIT.saturating_sub(title_weight + 64);
        split_weighted(
            text,
            self.inner.config.part_bytes.min(param_room),
            json_weight,
        )
    }

    /// Sends long markdown as numbered parts, in order, to users or a group: the text is split
    /// on paragraph, line, then character boundaries, with code fences closed and reopened (see
    /// [`crate::split_message`]); each part's title gets a ` (i/n)` suffix. For users, those found
    /// invalid or filtered on one part are not sent the later ones. Returns the number of parts.
    ///
    /// # Errors
    ///
    /// The first part that failed (earlier parts were delivered), or [`Error::NotDelivered`]
    /// naming the first user that DingTalk answered for (with HTTP 200) as invalid, filtered or
    /// still flow-controlled after the retries ([`SenderBuilder::flow_control_retries`]); the
    /// other users were sent every part.
    pub async fn send_long_markdown(
        &self,
        target: &Target,
        title: &str,
        text: &str,
    ) -> Result<usize> {
        let title: String = title.chars().take(MAX_TITLE_CHARS).collect();
        let parts = self.split_for_param(text, &title);
        let n = parts.len();
        let mut target = target.clone();
        let mut undelivered: Option<(String, &'static str)> = None;
        for (i, part) in parts.into_iter().enumerate() {
            let part_title = if n > 1 {
                format!("{title} ({}/{n})", i + 1)
            } else {
                title.clone()
            };
            let message = Message::markdown(part_title, part);
            if let SendReport::Users(r) = self.send(&target, &message).await?
                && let Target::Users(users) = &mut target
            {
                if undelivered.is_none() {
                    undelivered = r
                        .invalid_users
                        .first()
                        .map(|u| (u.clone(), NOT_DELIVERED_INVALID))
                        .or_else(|| {
                            r.filtered_users
                                .first()
                                .map(|u| (u.clone(), NOT_DELIVERED_FILTERED))
                        })
                        .or_else(|| {
                            r.flow_controlled_users_failed
                                .first()
                                .map(|u| (u.clone(), NOT_DELIVERED_FLOW_CONTROLLED))
                        });
                }
                users.retain(|u| !r.invalid_users.contains(u) && !r.filtered_users.contains(u));
                if users.is_empty() {
                    break;
                }
            }
        }
        match undelivered {
            Some((user_id, reason)) => Err(Error::NotDelivered { user_id, reason }),
            None => Ok(n),
        }
    }

    /// Replies through a conversation's session webhook (`sessionWebhook` of the callback; no
    /// token needed): text or markdown mentioning `at_user_ids` (`at.atUserIds`, and `@id` in
    /// the content so DingTalk renders it), or an action card. Not paced or retried: it is the
    /// fast path, and the caller falls back to [`DingTalkSender::send`] on failure.
    ///
    /// # Errors
    ///
    /// [`Error::SessionExpired`] for `errcode` 300001 (push through the OpenAPI instead),
    /// [`Error::Webhook`] for another `errcode` (130101 is [`Error::is_throttled`]),
    /// [`Error::UnexpectedResponse`] for a non-2xx or bodiless answer, [`Error::Transport`].
    /// The webhook URL (it carries the session key) is never part of the error.
    pub async fn reply_session<S: AsRef<str>>(
        &self,
        session_webhook: &str,
        message: &Message,
        at_user_ids: &[S],
    ) -> Result<()> {
        message.validate()?;
        let body = message.session_body(at_user_ids);
        let resp = self
            .inner
            .http
            .post(session_webhook)
            .json(&body)
            .send()
            .await
            .map_err(Error::transport)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(Error::transport)?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match v.get("errcode").and_then(Value::as_i64) {
            Some(0) if (200..300).contains(&status) => Ok(()),
            Some(300001) => Err(Error::SessionExpired),
            Some(errcode) if errcode != 0 => Err(Error::Webhook {
                errcode,
                errmsg: truncated(v.get("errmsg").and_then(Value::as_str).unwrap_or_default()),
            }),
            _ => Err(Error::UnexpectedResponse {
                status,
                detail: format!("no errcode: {}", truncated(&text)),
            }),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
