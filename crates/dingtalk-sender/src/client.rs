//! The sender: token cache, throttling, robot sends and session-webhook replies.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use retry_policy::{Jitter, RetryPolicy};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::error::Error;
use crate::message::Message;
use crate::split::{DEFAULT_PART_BYTES, split_message};

/// The real OpenAPI host.
pub const DEFAULT_API_BASE: &str = "https://api.dingtalk.com";
/// The real old-style API host.
pub const DEFAULT_OAPI_BASE: &str = "https://oapi.dingtalk.com";
/// Most user ids in one `batchSend`.
pub const MAX_USERS_PER_CALL: usize = 20;

/// Configures a [`DingTalkSender`].
#[derive(Clone)]
pub struct SenderBuilder {
    client_id: String,
    client_secret: String,
    robot_code: Option<String>,
    api_base: String,
    oapi_base: String,
    qps: u32,
    retry: RetryPolicy,
    timeout: Duration,
    refresh_margin: Duration,
}

impl fmt::Debug for SenderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderBuilder")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl SenderBuilder {
    /// App key (`DINGTALK_CLIENT_ID`).
    pub fn client_id(mut self, v: impl Into<String>) -> Self {
        self.client_id = v.into();
        self
    }

    /// App secret (`DINGTALK_CLIENT_SECRET`).
    pub fn client_secret(mut self, v: impl Into<String>) -> Self {
        self.client_secret = v.into();
        self
    }

    /// Robot code (default: the client id).
    pub fn robot_code(mut self, v: impl Into<String>) -> Self {
        self.robot_code = Some(v.into());
        self
    }

    /// OpenAPI base URL.
    pub fn api_base(mut self, v: impl Into<String>) -> Self {
        self.api_base = v.into().trim_end_matches('/').to_owned();
        self
    }

    /// Old-style API base URL.
    pub fn oapi_base(mut self, v: impl Into<String>) -> Self {
        self.oapi_base = v.into().trim_end_matches('/').to_owned();
        self
    }

    /// Client-side limit of calls per second per API (default 20, DingTalk's per-app limit).
    pub fn qps(mut self, qps: u32) -> Self {
        self.qps = qps.max(1);
        self
    }

    /// Backoff for throttled calls (default: 3 retries from 1 s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Timeout of each HTTP call (default 10 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Reads `DINGTALK_CLIENT_ID`, `DINGTALK_CLIENT_SECRET`, `DINGTALK_ROBOT_CODE`,
    /// `DINGTALK_API_BASE` and `DINGTALK_OAPI_BASE` (for binaries; libraries should not read
    /// the environment).
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

    /// Builds the sender.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the id or secret is missing or the HTTP client cannot be built.
    pub fn build(self) -> Result<DingTalkSender, Error> {
        if self.client_id.is_empty() || self.client_secret.is_empty() {
            return Err(Error::Config(
                "client id and client secret are required".into(),
            ));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| Error::Config(e.without_url().to_string()))?;
        Ok(DingTalkSender {
            inner: Arc::new(Inner {
                robot_code: self
                    .robot_code
                    .clone()
                    .unwrap_or_else(|| self.client_id.clone()),
                http,
                token: tokio::sync::Mutex::new(None),
                buckets: Mutex::new(std::collections::HashMap::new()),
                config: self,
            }),
        })
    }
}

struct CachedToken {
    value: String,
    refresh_at: Instant,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Inner {
    config: SenderBuilder,
    robot_code: String,
    http: reqwest::Client,
    /// The cached token; the async mutex makes refreshes single-flight.
    token: tokio::sync::Mutex<Option<CachedToken>>,
    buckets: Mutex<std::collections::HashMap<&'static str, Bucket>>,
}

/// Pushes messages through the DingTalk OpenAPI and replies through session webhooks.
/// Cheap to clone.
#[derive(Clone)]
pub struct DingTalkSender {
    inner: Arc<Inner>,
}

impl fmt::Debug for DingTalkSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DingTalkSender")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The outcome of a one-to-one send to many users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchSendReport {
    /// One `processQueryKey` per successful call.
    pub process_query_keys: Vec<String>,
    /// Users who got the message.
    pub delivered: Vec<String>,
    /// Users DingTalk does not know (`invalidStaffIdList`); never retried.
    pub invalid_users: Vec<String>,
    /// Users DingTalk filtered (`filteredStaffIdList`).
    pub filtered_users: Vec<String>,
    /// Users still throttled after the retries (`flowControlledStaffIdList`).
    pub flow_controlled_users: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct BatchSendResponse {
    process_query_key: Option<String>,
    invalid_staff_id_list: Vec<String>,
    flow_controlled_staff_id_list: Vec<String>,
    filtered_staff_id_list: Vec<String>,
}

impl DingTalkSender {
    /// A builder with the real hosts, 20 calls/s and a 1 s backoff.
    pub fn builder() -> SenderBuilder {
        SenderBuilder {
            client_id: String::new(),
            client_secret: String::new(),
            robot_code: None,
            api_base: DEFAULT_API_BASE.into(),
            oapi_base: DEFAULT_OAPI_BASE.into(),
            qps: 20,
            retry: RetryPolicy {
                max_retries: 3,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(30),
                jitter: Jitter::Full,
            },
            timeout: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(300),
        }
    }

    /// The robot code used for sends.
    pub fn robot_code(&self) -> &str {
        &self.inner.robot_code
    }

    /// A valid access token: cached, refreshed `expireIn - 300 s` after it was issued, one
    /// refresh at a time however many callers ask.
    ///
    /// # Errors
    ///
    /// DingTalk refused the credentials, or the request failed.
    pub async fn access_token(&self) -> Result<String, Error> {
        let mut slot = self.inner.token.lock().await;
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.value.clone());
        }
        let url = format!("{}/v1.0/oauth2/accessToken", self.inner.config.api_base);
        let body = json!({"appKey": self.inner.config.client_id, "appSecret": self.inner.config.client_secret});
        let v = self.call_json(&url, None, &body).await?;
        let value = v["accessToken"]
            .as_str()
            .ok_or_else(|| Error::Transport("no accessToken in the answer".into()))?
            .to_owned();
        let ttl = Duration::from_secs(v["expireIn"].as_u64().unwrap_or(7200));
        let refresh_at =
            Instant::now() + ttl.saturating_sub(self.inner.config.refresh_margin.min(ttl / 2));
        *slot = Some(CachedToken {
            value: value.clone(),
            refresh_at,
        });
        tracing::debug!(ttl_secs = ttl.as_secs(), "dingtalk access token refreshed");
        Ok(value)
    }

    async fn invalidate(&self, stale: &str) {
        let mut slot = self.inner.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.value == stale) {
            *slot = None;
        }
    }

    /// Waits for the client-side token bucket of `api`.
    async fn throttle(&self, api: &'static str) {
        let qps = f64::from(self.inner.config.qps);
        loop {
            let wait = {
                let mut buckets = self.inner.buckets.lock();
                let now = Instant::now();
                // Capacity 1: calls are paced evenly at 1/qps, so no one-second window (DingTalk
                // counts per second) ever sees more than `qps`, bursts included.
                let b = buckets.entry(api).or_insert(Bucket {
                    tokens: 1.0,
                    last: now,
                });
                b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * qps).min(1.0);
                b.last = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - b.tokens) / qps)
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn call_json(
        &self,
        url: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<Value, Error> {
        let mut req = self
            .inner
            .http
            .post(url)
            .header("content-type", "application/json")
            .json(body);
        if let Some(t) = token {
            req = req.header("x-acs-dingtalk-access-token", t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Transport(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| Error::Transport(e.without_url().to_string()))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(v);
        }
        Err(Error::Api {
            status,
            code: v["code"].as_str().unwrap_or("unknown").to_owned(),
            message: v["message"]
                .as_str()
                .unwrap_or(&text)
                .chars()
                .take(300)
                .collect(),
            request_id: v["requestid"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// An authenticated OpenAPI call: token refreshed once on `InvalidAuthentication`/401,
    /// throttling retried with backoff.
    async fn api_call(&self, api: &'static str, path: &str, body: &Value) -> Result<Value, Error> {
        let url = format!("{}{path}", self.inner.config.api_base);
        let mut retries = 0;
        let mut refreshed = false;
        loop {
            self.throttle(api).await;
            let token = self.access_token().await?;
            match self.call_json(&url, Some(&token), body).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_auth() && !refreshed => {
                    tracing::info!("dingtalk refused the access token; refreshing once");
                    refreshed = true;
                    self.invalidate(&token).await;
                }
                Err(e) if e.is_retryable() => {
                    match self.inner.config.retry.next_delay(retries, None) {
                        Some(d) => {
                            tracing::warn!(error = %e, delay_ms = d.as_millis() as u64, "dingtalk call throttled or failed; retrying");
                            retries += 1;
                            tokio::time::sleep(d).await;
                        }
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `message` one-to-one to `user_ids` (split into calls of at most 20). Users in
    /// `flowControlledStaffIdList` are retried alone with backoff; invalid users are reported,
    /// never retried.
    ///
    /// # Errors
    ///
    /// A call failed permanently (e.g. `invalidParameter.*`) or kept being throttled.
    pub async fn send_to_users(
        &self,
        user_ids: &[String],
        message: &Message,
    ) -> Result<BatchSendReport, Error> {
        let mut report = BatchSendReport::default();
        for chunk in user_ids.chunks(MAX_USERS_PER_CALL) {
            let mut pending: Vec<String> = chunk.to_vec();
            let mut round = 0;
            while !pending.is_empty() {
                let body = json!({
                    "robotCode": self.inner.robot_code,
                    "userIds": pending,
                    "msgKey": message.msg_key(),
                    "msgParam": message.msg_param(),
                });
                let v = self
                    .api_call("batchSend", "/v1.0/robot/oToMessages/batchSend", &body)
                    .await?;
                let r: BatchSendResponse = serde_json::from_value(v).unwrap_or_default();
                if let Some(k) = r.process_query_key {
                    report.process_query_keys.push(k);
                }
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
                match self.inner.config.retry.next_delay(round, None) {
                    Some(d) if !throttled.is_empty() => {
                        tracing::info!(
                            users = throttled.len(),
                            "users flow-controlled; retrying them alone"
                        );
                        round += 1;
                        tokio::time::sleep(d).await;
                        pending = throttled;
                    }
                    _ => {
                        report.flow_controlled_users.extend(throttled);
                        pending = Vec::new();
                    }
                }
            }
        }
        Ok(report)
    }

    /// Sends `message` to a group (`openConversationId` = the callback's `conversationId`).
    /// Returns the `processQueryKey`.
    ///
    /// # Errors
    ///
    /// A permanent failure, or throttling that outlasted the retries.
    pub async fn send_to_group(
        &self,
        open_conversation_id: &str,
        message: &Message,
    ) -> Result<String, Error> {
        let body = json!({
            "robotCode": self.inner.robot_code,
            "openConversationId": open_conversation_id,
            "msgKey": message.msg_key(),
            "msgParam": message.msg_param(),
        });
        let v = self
            .api_call("groupSend", "/v1.0/robot/groupMessages/send", &body)
            .await?;
        Ok(v["processQueryKey"].as_str().unwrap_or_default().to_owned())
    }

    /// The seed's call: text to a user in a single chat (`user_id` non-empty), or to the group
    /// `conversation_id` (empty `user_id`).
    ///
    /// # Errors
    ///
    /// As [`DingTalkSender::send_to_users`] and [`DingTalkSender::send_to_group`]; a user send
    /// that reached nobody is an error too.
    pub async fn send_text_message(
        &self,
        conversation_id: &str,
        user_id: &str,
        content: &str,
    ) -> Result<(), Error> {
        let message = Message::text(content);
        if user_id.is_empty() {
            self.send_to_group(conversation_id, &message)
                .await
                .map(|_| ())
        } else {
            let r = self.send_to_users(&[user_id.to_owned()], &message).await?;
            if r.delivered.is_empty() {
                return Err(Error::Api {
                    status: 200,
                    code: "notDelivered".into(),
                    message: format!("user was invalid, filtered or throttled: {r:?}"),
                    request_id: String::new(),
                });
            }
            Ok(())
        }
    }

    /// Sends long markdown as numbered parts, in order, to users or a group.
    ///
    /// # Errors
    ///
    /// The first part that failed.
    pub async fn send_long_markdown(
        &self,
        target: &Target,
        title: &str,
        text: &str,
    ) -> Result<usize, Error> {
        let parts = split_message(text, DEFAULT_PART_BYTES);
        let n = parts.len();
        for part in parts {
            let m = Message::markdown(title, part);
            match target {
                Target::Users(users) => {
                    self.send_to_users(users, &m).await?;
                }
                Target::Group(cid) => {
                    self.send_to_group(cid, &m).await?;
                }
            }
        }
        Ok(n)
    }

    /// Replies through a conversation's session webhook (no token needed), mentioning
    /// `at_user_ids`.
    ///
    /// # Errors
    ///
    /// [`Error::SessionExpired`] for `errcode` 300001 (fall back to the OpenAPI push), another
    /// [`Error::Errcode`], or a transport failure.
    pub async fn reply_session(
        &self,
        session_webhook: &str,
        message: &Message,
        at_user_ids: &[String],
    ) -> Result<(), Error> {
        let body = message.session_body(at_user_ids);
        let resp = self
            .inner
            .http
            .post(session_webhook)
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::Transport(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        match v["errcode"].as_i64() {
            Some(0) => Ok(()),
            Some(300001) => Err(Error::SessionExpired),
            Some(code) => Err(Error::Errcode {
                errcode: code,
                errmsg: v["errmsg"].as_str().unwrap_or_default().to_owned(),
            }),
            None => Err(Error::Transport(format!(
                "session webhook answered HTTP {status} without errcode"
            ))),
        }
    }
}

/// Where a pushed message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One-to-one to these users (staff ids).
    Users(Vec<String>),
    /// To this group (`openConversationId`).
    Group(String),
}
