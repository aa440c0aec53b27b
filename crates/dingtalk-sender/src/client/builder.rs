//! [`SenderBuilder`]: the sender's settings, checked when it is built.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use retry_policy::RetryPolicy;

use super::{DingTalkSender, Inner};
use crate::error::{Error, Result};
use crate::throttle::TokenBucket;
use crate::token::TokenCache;

/// Configures a [`DingTalkSender`]. Setters never fail; [`SenderBuilder::build`] checks.
#[derive(Clone)]
pub struct SenderBuilder {
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) robot_code: Option<String>,
    pub(super) api_base: String,
    pub(super) oapi_base: String,
    pub(super) qps: u32,
    pub(super) retry: RetryPolicy,
    pub(super) flow_control_retries: u32,
    pub(super) timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) refresh_margin: Duration,
    pub(super) part_bytes: usize,
    pub(super) extra_roots_pem: Vec<Vec<u8>>,
    pub(super) max_file_bytes: usize,
    /// `Some(url)`: through that proxy; `Some(None)`: directly; `None`: the environment's.
    pub(super) proxy: Option<Option<String>>,
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

    /// Sends every call through this proxy (`http://`, `https://` or `socks5://`, credentials
    /// in the URL). Without [`SenderBuilder::proxy`] or [`SenderBuilder::direct`] the process's
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` apply. The URL is never logged.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(Some(url.into()));
        self
    }

    /// Connects directly, whatever the process's proxy variables say.
    pub fn direct(mut self) -> Self {
        self.proxy = Some(None);
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
        let mut http = reqwest::Client::builder();
        if let Some(choice) = &self.proxy {
            // An explicit choice replaces the environment's (`HTTPS_PROXY`, read by default).
            http = http.no_proxy();
            if let Some(url) = choice {
                let proxy = reqwest::Proxy::all(url)
                    .map_err(|_| Error::Config("proxy is not a valid proxy URL".into()))?;
                http = http.proxy(proxy);
            }
        }
        let http = http
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn credentials() -> SenderBuilder {
        DingTalkSender::builder()
            .client_id("ding-id")
            .client_secret("ding-secret")
    }

    #[test]
    fn build_refuses_missing_credentials_bad_bases_and_bad_proxies() {
        let e = DingTalkSender::builder().build().unwrap_err();
        assert!(e.to_string().contains("client id"), "{e}");
        let e = credentials().api_base("ftp://x").build().unwrap_err();
        assert!(e.to_string().contains("api base"), "{e}");
        let e = credentials()
            .proxy("http://user:pw@[bad")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("proxy"), "{e}");
        assert!(
            !e.to_string().contains("pw"),
            "the proxy URL is not echoed: {e}"
        );
        let sender = credentials().build().unwrap();
        assert_eq!(
            sender.robot_code(),
            "ding-id",
            "the robot code defaults to the client id"
        );
    }

    /// A proxy that answers one request with a token and hands back the request's head.
    async fn one_shot_proxy() -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"accessToken":"via-proxy","expireIn":7200}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        (url, handle)
    }

    #[tokio::test]
    async fn calls_go_through_the_configured_proxy() {
        let (proxy, seen) = one_shot_proxy().await;
        let sender = credentials()
            .api_base("http://api.dingtalk.invalid")
            .proxy(proxy)
            .build()
            .unwrap();
        assert_eq!(sender.access_token().await.unwrap(), "via-proxy");
        let head = seen.await.unwrap();
        // A proxied plain-HTTP request names the whole target in its request line.
        assert!(
            head.starts_with("POST http://api.dingtalk.invalid/v1.0/oauth2/accessToken"),
            "{head}"
        );
    }
}
