//! The client: one signed attempt per call.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use circuit_breaker::{
    BreakerConfig, BreakerPolicy, BreakerRegistry, CircuitOpen, KeyedCircuitBreakerLayer,
    KeyedCircuitBreakerService, Verdict,
};
use futures::future::BoxFuture;
use ipnet::IpNet;
use retry_policy::{Classifier, Outcome, TransportErrorKind, parse_retry_after};
use tower::{Layer as _, ServiceExt as _};

use crate::error::{Error, Result};
use crate::proxy::EgressProxy;
use crate::signing::{SigningSecret, signature_header};
use crate::ssrf::{BlockedAddress, GuardedResolver, SsrfPolicy, TargetCheck};

/// The default user agent: `closed-loop-webhook/<version>`.
pub const USER_AGENT: &str = concat!("closed-loop-webhook/", env!("CARGO_PKG_VERSION"));

/// One delivery to make.
#[derive(Debug, Clone)]
pub struct WebhookRequest<'a> {
    /// The target (absolute http(s) URL).
    pub url: &'a str,
    /// `webhook-id`: stable across retries (the task id).
    pub msg_id: &'a str,
    /// The JSON body.
    pub body: Bytes,
    /// Signing secrets: one signature each (rotation). Empty: unsigned.
    pub secrets: &'a [SigningSecret],
    /// Extra headers for this request.
    pub headers: &'a [(String, String)],
}

/// One chat message to send (see [`crate::chat`]).
#[derive(Debug, Clone)]
pub struct ChatRequest<'a> {
    /// The platform.
    pub kind: crate::chat::ChatKind,
    /// The robot's webhook URL (it may hold the access token or key: never logged).
    pub url: &'a str,
    /// The signing secret (DingTalk `SEC...`, Feishu), if the robot has signing on.
    pub secret: Option<&'a str>,
    /// The platform's JSON message body, unsigned.
    pub body: &'a serde_json::Value,
    /// The breaker key (e.g. `channel:pr-team`); `None`: the URL's [endpoint](endpoint_key).
    pub breaker_key: Option<&'a str>,
}

/// What one attempt did.
#[derive(Debug)]
pub struct AttemptReport {
    /// Whether the attempt was made. False when the URL is invalid, the SSRF guard refused the
    /// target or its breaker is open: nothing was sent and no attempt should be counted. A
    /// connect failure or a timeout is an attempt made.
    pub sent: bool,
    /// Success, retryable or permanent.
    pub outcome: Outcome,
    /// The HTTP status, if a response came back.
    pub status: Option<u16>,
    /// How long the attempt took.
    pub duration: Duration,
    /// The first bytes of the response body (lossy UTF-8), capped.
    pub response_body: Option<String>,
    /// The failure without a response, if any.
    pub error: Option<Error>,
    /// Set when not sent because the target's breaker is open: when it lets a probe through.
    pub breaker_retry_in: Option<Duration>,
    /// The target's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl AttemptReport {
    fn not_sent(
        outcome: Outcome,
        error: Option<Error>,
        retry_in: Option<Duration>,
    ) -> AttemptReport {
        AttemptReport {
            sent: false,
            outcome,
            status: None,
            duration: Duration::ZERO,
            response_body: None,
            error,
            breaker_retry_in: retry_in,
            retry_after: None,
        }
    }

    /// What this attempt says about its target, for its breaker: 5xx, 408 and 429 (and a
    /// transport failure of a request that was sent) count against it, pinning the open wait to
    /// the target's `Retry-After` on 429 and 503; other answers (2xx, 3xx, 4xx) show a live
    /// receiver; a request never sent says nothing.
    pub fn verdict(&self) -> Verdict {
        if !self.sent {
            return Verdict::Ignore;
        }
        match self.status {
            None => Verdict::Failure,
            Some(429 | 503) => match self.retry_after {
                Some(wait) => Verdict::FailureRetryAfter(wait),
                None => Verdict::Failure,
            },
            Some(status) if status >= 500 || status == 408 => Verdict::Failure,
            Some(_) => Verdict::Success,
        }
    }

    /// A one-line description of the failure for records and logs (`None` on success).
    pub fn error_message(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.to_string());
        }
        if let Some(d) = self.breaker_retry_in {
            return Some(format!("circuit open; retry in {} ms", d.as_millis()));
        }
        match (self.outcome, self.status) {
            (Outcome::Success, _) => None,
            (_, Some(s)) => Some(format!("HTTP {s}")),
            _ => Some("failed".to_owned()),
        }
    }
}

/// Configures a [`WebhookClient`].
#[derive(Debug, Clone)]
pub struct WebhookClientBuilder {
    connect_timeout: Duration,
    timeout: Duration,
    max_response_body: usize,
    user_agent: String,
    default_headers: Vec<(String, String)>,
    ssrf_guard: bool,
    allow_cidrs: Vec<IpNet>,
    resolve: std::collections::HashMap<String, Vec<std::net::SocketAddr>>,
    breaker: BreakerConfig,
    classifier: Classifier,
    pool_idle_per_host: usize,
    proxy: Option<EgressProxy>,
}

impl Default for WebhookClientBuilder {
    fn default() -> Self {
        WebhookClientBuilder {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_response_body: 4096,
            user_agent: USER_AGENT.to_owned(),
            default_headers: Vec::new(),
            ssrf_guard: true,
            allow_cidrs: Vec::new(),
            resolve: std::collections::HashMap::new(),
            breaker: BreakerConfig::default(),
            classifier: Classifier::default(),
            pool_idle_per_host: 64,
            proxy: None,
        }
    }
}

impl WebhookClientBuilder {
    /// Connect timeout (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Total timeout of an attempt, body included (default 30 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Response bytes kept for the attempt record (default 4 KiB); the rest is not read.
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.max_response_body = bytes;
        self
    }

    /// The `user-agent` header.
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    /// A header sent with every request.
    pub fn default_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.default_headers.push((name.into(), value.into()));
        self
    }

    /// Whether to refuse non-public targets (default true).
    pub fn ssrf_guard(mut self, on: bool) -> Self {
        self.ssrf_guard = on;
        self
    }

    /// CIDRs allowed even though non-public (e.g. `127.0.0.0/8` for local development).
    pub fn allow_cidrs(mut self, cidrs: Vec<IpNet>) -> Self {
        self.allow_cidrs = cidrs;
        self
    }

    /// Sends every delivery through `proxy` (default: directly; the process's `HTTP_PROXY`
    /// and `HTTPS_PROXY` are read only through [`EgressProxy::from_env`]). The SSRF guard still
    /// applies to the target: before a request goes to the proxy, every address of the
    /// target's name must be permitted, else the attempt is `Blocked` and nothing is sent. The
    /// proxy's own name resolves without the guard. (The proxy resolves the name again; a
    /// name that changes its answer in between is the proxy's to refuse: restrict its egress.)
    pub fn proxy(mut self, proxy: EgressProxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Connects to `addr` for `host` instead of asking DNS (curl's `--resolve`): for
    /// split-horizon networks and tests. The SSRF guard still checks `addr`. TLS still
    /// verifies the certificate for `host`.
    pub fn resolve(mut self, host: &str, addr: std::net::SocketAddr) -> Self {
        self.resolve
            .entry(host.to_ascii_lowercase())
            .or_default()
            .push(addr);
        self
    }

    /// Per-target breaker settings.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Which statuses are permanent (default: the seed's rule, retry every non-2xx).
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// Idle keep-alive connections kept per host (default 64).
    pub fn pool_idle_per_host(mut self, n: usize) -> Self {
        self.pool_idle_per_host = n;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`Error::Build`] when the HTTP client cannot be built (e.g. an invalid header).
    pub fn build(self) -> Result<WebhookClient> {
        // reqwest is built without a default TLS provider so the workspace links ring only.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let policy = Arc::new(SsrfPolicy::new(self.ssrf_guard, self.allow_cidrs.clone()));
        let mut headers = http::HeaderMap::new();
        for (k, v) in &self.default_headers {
            let name = http::HeaderName::try_from(k.as_str())
                .map_err(|_| Error::Build(format!("invalid header name {k:?}")))?;
            let value = http::HeaderValue::try_from(v.as_str())
                .map_err(|_| Error::Build(format!("invalid value for header {k:?}")))?;
            headers.insert(name, value);
        }
        let resolver = GuardedResolver {
            policy: policy.clone(),
            overrides: Arc::new(self.resolve),
            trusted: Arc::new(self.proxy.iter().flat_map(EgressProxy::hosts).collect()),
        };
        // No implicit proxy from the environment: it would hide the target from the guard.
        let mut http = reqwest::Client::builder().no_proxy();
        for p in self.proxy.iter().map(EgressProxy::reqwest_proxies) {
            for p in p? {
                http = http.proxy(p);
            }
        }
        let http = http
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(self.pool_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(self.user_agent.clone())
            .default_headers(headers)
            .dns_resolver(resolver.clone())
            .build()
            .map_err(|e| Error::Build(e.without_url().to_string()))?;
        let breakers = Arc::new(BreakerRegistry::new(self.breaker));
        let transport = Transport(Arc::new(TransportInner {
            http,
            classifier: self.classifier.clone(),
            max_body: self.max_response_body,
        }));
        Ok(WebhookClient {
            inner: Arc::new(Inner {
                guarded: KeyedCircuitBreakerLayer::new(breakers.clone(), KeyedByPost)
                    .layer(transport.clone()),
                transport,
                policy,
                breakers,
                classifier: self.classifier,
                proxied: self.proxy.is_some(),
                resolver,
                endpoint_keys: EndpointKeys::default(),
            }),
        })
    }
}

struct Inner {
    /// The transport behind the per-target breakers: the one path every guarded send takes.
    guarded: KeyedCircuitBreakerService<Transport, KeyedByPost, String>,
    /// The same transport unguarded, for callers whose own breaker layer guards the send.
    transport: Transport,
    /// Whether a proxy is configured (targets are then checked before they are sent).
    proxied: bool,
    resolver: GuardedResolver,
    policy: Arc<SsrfPolicy>,
    breakers: Arc<BreakerRegistry<String>>,
    classifier: Classifier,
    endpoint_keys: EndpointKeys,
}

/// The [`endpoint_key`]s of the URLs asked about lately. [`WebhookClient::breaker_retry_in`]
/// runs for every new task, and parsing its URL was ~1.5 % of the dispatcher's CPU under load,
/// while a deployment sends to a handful of URLs.
#[derive(Default)]
struct EndpointKeys(parking_lot::Mutex<HashMap<String, Option<String>>>);

impl EndpointKeys {
    /// Forgotten all at once when this many are kept (a cache, not a registry of URLs).
    const MAX: usize = 4096;

    /// `f` of `url`'s key; `None` when it has none.
    fn with<R>(&self, url: &str, f: impl FnOnce(&String) -> R) -> Option<R> {
        let mut keys = self.0.lock();
        if let Some(key) = keys.get(url) {
            return key.as_ref().map(f);
        }
        if keys.len() >= Self::MAX {
            keys.clear();
        }
        keys.entry(url.to_owned())
            .or_insert_with(|| endpoint_key(url))
            .as_ref()
            .map(f)
    }
}

/// One checked POST, ready for the transport.
struct Post {
    url: url::Url,
    /// Its breaker key, for the guarded path and the debug logs.
    key: String,
    body: Bytes,
    headers: Vec<(String, String)>,
}

/// The guarded path's policy: a post's breaker is the key it carries, and the attempt report
/// judges the target ([`AttemptReport::verdict`]).
#[derive(Debug, Clone, Copy)]
struct KeyedByPost;

impl BreakerPolicy<Post, AttemptReport> for KeyedByPost {
    type Key = String;

    fn key(&self, post: &Post) -> Option<String> {
        Some(post.key.clone())
    }

    fn verdict(&self, report: &AttemptReport) -> Verdict {
        report.verdict()
    }

    fn refused(&self, _: Post, open: CircuitOpen) -> AttemptReport {
        AttemptReport::not_sent(
            Outcome::Retryable {
                retry_after: Some(open.retry_in),
            },
            None,
            Some(open.retry_in),
        )
    }
}

struct TransportInner {
    http: reqwest::Client,
    classifier: Classifier,
    max_body: usize,
}

/// Sends a [`Post`] and classifies the answer: the tower service the breakers wrap.
#[derive(Clone)]
struct Transport(Arc<TransportInner>);

impl tower::Service<Post> for Transport {
    type Response = AttemptReport;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<AttemptReport, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, post: Post) -> Self::Future {
        let transport = self.0.clone();
        Box::pin(async move { Ok(transport.send(post).await) })
    }
}

/// A webhook sender: pooled keep-alive connections, SSRF guard, per-target circuit breakers.
/// Build once and clone freely (an `Arc` inside).
#[derive(Clone)]
pub struct WebhookClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookClient")
            .field("ssrf", &self.inner.policy)
            .field("breakers", &self.inner.breakers)
            .finish_non_exhaustive()
    }
}

/// The breaker key of a URL: its endpoint, `scheme://host:port/path`, and when it has a query,
/// `?q=` with a hash of it (a query may hold a token: `robot/send?access_token=...`). Default
/// ports are filled in and the host lowercased, so spellings of one endpoint share a key.
///
/// Each endpoint has its own breaker, so one dead hook on a host shared with others
/// (`hooks.slack.com`, `oapi.dingtalk.com`, a partner's gateway) does not stop the rest. It
/// is safe in logs and metrics.
pub fn endpoint_key(url: &str) -> Option<String> {
    endpoint_key_of(&url::Url::parse(url).ok()?)
}

/// [`endpoint_key`] of a parsed URL.
fn endpoint_key_of(u: &url::Url) -> Option<String> {
    use sha2::Digest;
    let host = target_key_of(u)?;
    Some(match u.query() {
        Some(q) if !q.is_empty() => {
            let digest = sha2::Sha256::digest(q.as_bytes());
            format!("{host}{}?q={}", u.path(), hex_prefix(&digest[..6]))
        }
        _ => format!("{host}{}", u.path()),
    })
}

fn hex_prefix(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The host key of a URL: `scheme://host:port` (default ports filled in). Connection pools
/// and concurrency caps are per host; breakers are per [endpoint](endpoint_key).
pub fn target_key(url: &str) -> Option<String> {
    target_key_of(&url::Url::parse(url).ok()?)
}

/// [`target_key`] of a parsed URL.
fn target_key_of(u: &url::Url) -> Option<String> {
    let host = u.host_str()?;
    let port = u.port_or_known_default()?;
    Some(format!(
        "{}://{}:{}",
        u.scheme(),
        host.to_ascii_lowercase(),
        port
    ))
}

fn classify_reqwest(e: &reqwest::Error) -> TransportErrorKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        // hyper-util wraps the resolver's error in a private `DnsError` that does not expose it
        // as a source, so the Debug text is the only way to see our guard's refusal.
        if s.is::<BlockedAddress>() || format!("{s:?}").contains("BlockedAddress") {
            return TransportErrorKind::Blocked;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::NotFound
        {
            return TransportErrorKind::Dns;
        }
        let text = s.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return TransportErrorKind::Dns;
        }
        if s.is::<rustls::Error>() {
            return TransportErrorKind::Tls;
        }
        source = s.source();
    }
    if e.is_timeout() {
        TransportErrorKind::Timeout
    } else if e.is_connect() {
        TransportErrorKind::Connect
    } else if e.is_redirect() {
        TransportErrorKind::Redirect
    } else {
        TransportErrorKind::Other
    }
}

/// A transport error without the URL: reqwest's message plus its causes (hyper, io), which
/// name the failure ("Connection refused", "operation timed out") but never the URL.
fn transport_error(kind: TransportErrorKind, e: reqwest::Error) -> Error {
    use std::fmt::Write as _;
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            let _ = write!(message, ": {text}");
        }
        source = s.source();
    }
    Error::transport(kind, message)
}

impl WebhookClient {
    /// A builder with the defaults.
    pub fn builder() -> WebhookClientBuilder {
        WebhookClientBuilder::default()
    }

    /// While the breaker of `url`'s endpoint is open, how long until it lets a probe through.
    pub fn breaker_retry_in(&self, url: &str) -> Option<Duration> {
        self.inner
            .endpoint_keys
            .with(url, |k| self.inner.breakers.retry_in(k))
            .flatten()
    }

    /// Whether `url`'s endpoint is the only one of its host ([`target_key`]) that has a
    /// breaker here: then its open breaker speaks for every delivery to the host, and a caller
    /// may hold the whole host back instead of deferring its deliveries one by one.
    pub fn sole_endpoint_of_host(&self, url: &str) -> bool {
        let Some(host) = target_key(url) else {
            return false;
        };
        let on_host = |k: &String| {
            k.strip_prefix(host.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        };
        self.inner.breakers.count_keys(on_host) <= 1
    }

    /// While the breaker under `key` (see [`ChatRequest::breaker_key`]) is open, how long
    /// until it lets a probe through.
    pub fn breaker_retry_in_key(&self, key: &str) -> Option<Duration> {
        self.inner.breakers.retry_in(&key.to_owned())
    }

    /// The per-target breakers (for state-change events and metrics). Share it with a
    /// [`KeyedCircuitBreakerLayer`] to guard other sends to the same targets (see
    /// [`WebhookClient::send_chat_unguarded`]).
    pub fn breakers(&self) -> &Arc<BreakerRegistry<String>> {
        &self.inner.breakers
    }

    /// Makes one attempt: checks the target, asks its breaker, signs, POSTs, reads up to the
    /// body cap and classifies. Never panics and never returns an error: failures are in the
    /// report.
    pub async fn send_webhook(&self, req: &WebhookRequest<'_>) -> AttemptReport {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut headers = Vec::with_capacity(3 + req.headers.len());
        headers.push(("webhook-id".to_owned(), req.msg_id.to_owned()));
        headers.push(("webhook-timestamp".to_owned(), timestamp.to_string()));
        if !req.secrets.is_empty() {
            headers.push((
                "webhook-signature".to_owned(),
                signature_header(req.secrets, req.msg_id, timestamp, &req.body),
            ));
        }
        headers.extend(req.headers.iter().cloned());
        self.post(req.url, None, true, req.body.clone(), headers)
            .await
    }

    /// Sends a chat message ([`crate::chat`]): signs it for its platform at this moment,
    /// POSTs it with the same guard, breaker (keyed by `breaker_key` when given, so each
    /// channel has its own) and body cap as a webhook, then lets the platform's answer decide:
    /// `errcode`/`code` != 0 is a failure, throttles are retryable (see
    /// [`crate::chat::classify_response`]).
    pub async fn send_chat(&self, req: &ChatRequest<'_>) -> AttemptReport {
        self.chat(req, true).await
    }

    /// [`WebhookClient::send_chat`] without asking a breaker (`breaker_key` is ignored): for a
    /// caller whose own [`KeyedCircuitBreakerLayer`] over [`WebhookClient::breakers`] guards the
    /// send, so that its other steps (a rate limiter, say) sit behind the same breaker. The
    /// report's [`AttemptReport::verdict`] is what to tell that breaker.
    pub async fn send_chat_unguarded(&self, req: &ChatRequest<'_>) -> AttemptReport {
        self.chat(req, false).await
    }

    async fn chat(&self, req: &ChatRequest<'_>, guarded: bool) -> AttemptReport {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let (url, body) =
            match crate::chat::signed_request(req.kind, req.url, req.secret, req.body, now_ms) {
                Ok(r) => r,
                Err(e) => return AttemptReport::not_sent(Outcome::Permanent, Some(e), None),
            };
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let mut report = self
            .post(&url, req.breaker_key, guarded, body, Vec::new())
            .await;
        if let Some(status) = report.status {
            let (outcome, error) = crate::chat::classify_response(
                req.kind,
                status,
                report.response_body.as_deref(),
                report.outcome,
            );
            report.outcome = outcome;
            if let Some(e) = error {
                report.error = Some(Error::Rejected(e));
            }
        }
        report
    }

    /// Checks the target (URL, literal address, every address before a proxy), then sends it
    /// through the breakers, or straight to the transport when `guarded` is false.
    async fn post(
        &self,
        target: &str,
        breaker_key: Option<&str>,
        guarded: bool,
        body: Bytes,
        headers: Vec<(String, String)>,
    ) -> AttemptReport {
        let inner = &self.inner;
        let url = match url::Url::parse(target) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                return AttemptReport::not_sent(
                    Outcome::Permanent,
                    Some(Error::InvalidUrl("not an absolute http(s) URL".into())),
                    None,
                );
            }
        };
        // Literal IPs never reach the resolver: check them here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !inner.policy.permits(ip)
        {
            return AttemptReport::not_sent(
                Outcome::Permanent,
                Some(Error::transport(
                    TransportErrorKind::Blocked,
                    BlockedAddress.to_string(),
                )),
                None,
            );
        }
        if inner.proxied
            && let Some(url::Host::Domain(host)) = url.host()
        {
            let refusal = match inner.resolver.check_every_address(host).await {
                Ok(()) => None,
                Err(TargetCheck::Blocked) => Some((
                    Outcome::Permanent,
                    Error::transport(TransportErrorKind::Blocked, BlockedAddress.to_string()),
                )),
                Err(TargetCheck::Lookup(e)) => Some((
                    inner.classifier.classify_transport(TransportErrorKind::Dns),
                    Error::transport(
                        TransportErrorKind::Dns,
                        format!("cannot resolve the target to check it before the proxy: {e}"),
                    ),
                )),
            };
            if let Some((outcome, error)) = refusal {
                return AttemptReport::not_sent(outcome, Some(error), None);
            }
        }
        let key =
            breaker_key.map_or_else(|| endpoint_key_of(&url).unwrap_or_default(), str::to_owned);
        let post = Post {
            url,
            key,
            body,
            headers,
        };
        let sent = if guarded {
            inner.guarded.clone().oneshot(post).await
        } else {
            inner.transport.clone().oneshot(post).await
        };
        match sent {
            Ok(report) => report,
            Err(never) => match never {},
        }
    }
}

impl TransportInner {
    /// One POST: sends, reads up to the body cap, classifies. Breakers are the caller's.
    async fn send(&self, post: Post) -> AttemptReport {
        let inner = self;
        let Post {
            url,
            key,
            body,
            headers,
        } = post;
        let mut builder = inner
            .http
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in &headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let started = Instant::now();
        let result = builder.body(body).send().await;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                let kind = classify_reqwest(&e);
                let outcome = inner.classifier.classify_transport(kind);
                tracing::debug!(target_key = %key, kind = kind.as_str(), outcome = outcome.as_str(), "webhook attempt failed");
                // A resolver refusal never sent anything: neither success nor failure for the
                // target's breaker (`sent` false, so its verdict is "ignore").
                return AttemptReport {
                    sent: kind != TransportErrorKind::Blocked,
                    outcome,
                    status: None,
                    duration: started.elapsed(),
                    response_body: None,
                    error: Some(transport_error(kind, e)),
                    breaker_retry_in: None,
                    retry_after: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Read at most the cap; a larger body is not downloaded (the connection is dropped).
        let mut body = Vec::new();
        let mut body_error = None;
        while body.len() < inner.max_body {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = inner.max_body - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        drop(resp);
        let duration = started.elapsed();
        let outcome = inner.classifier.classify_status(status, retry_after);
        let error = match (&outcome, body_error) {
            (Outcome::Success, _) | (_, None) => None,
            (_, Some(e)) => Some(transport_error(classify_reqwest(&e), e)),
        };
        let error = error.or_else(|| {
            (300..400).contains(&status).then(|| {
                Error::transport(
                    TransportErrorKind::Redirect,
                    format!("HTTP {status} redirect not followed"),
                )
            })
        });
        tracing::debug!(target_key = %key, status, outcome = outcome.as_str(), ?duration, "webhook attempt");
        AttemptReport {
            sent: true,
            outcome,
            status: Some(status),
            duration,
            response_body: (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned()),
            error,
            breaker_retry_in: None,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_answer_like_endpoint_key_and_stay_bounded() {
        let keys = EndpointKeys::default();
        for i in 0..EndpointKeys::MAX + 10 {
            let url = format!("https://Hooks.Example:443/h{i}?token=t{i}");
            assert_eq!(keys.with(&url, String::clone), endpoint_key(&url));
            // The second answer comes from the memo, and is the same.
            assert_eq!(keys.with(&url, String::clone), endpoint_key(&url));
        }
        assert!(keys.0.lock().len() <= EndpointKeys::MAX);
        assert_eq!(keys.with("not a url", String::clone), None);
    }
}
