//! The Stream-mode client: gateway registration, WebSocket, ACKs, reconnects and the watchdog.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rand::Rng;
use retry_policy::{ExponentialBackoff, Jitter};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::dedupe::Deduper;
use crate::frame::{AckFrame, BOT_MESSAGE_TOPIC, DownstreamFrame};
use crate::message::RobotMessage;
use crate::{Error, Incoming};

/// The default OpenAPI host.
pub const DEFAULT_API_BASE: &str = "https://api.dingtalk.com";

/// How the client connects and recovers.
#[derive(Clone)]
pub struct StreamConfig {
    /// App key (`DINGTALK_CLIENT_ID`).
    pub client_id: String,
    /// App secret (`DINGTALK_CLIENT_SECRET`). Never printed.
    pub client_secret: String,
    /// OpenAPI base URL (the mock's address in tests).
    pub api_base: String,
    /// CALLBACK topics to subscribe to (default: robot messages).
    pub topics: Vec<String>,
    /// With no frame for this long the connection is presumed dead: a WebSocket ping is sent at
    /// half of it, and at the full time the client reconnects (the zombie-connection watchdog).
    pub idle_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max`, with jitter, reset by a healthy frame.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long a `msgId` is remembered to drop redeliveries (at least 10 minutes).
    pub dedupe_ttl: Duration,
    /// How many `msgId`s are remembered at most.
    pub dedupe_capacity: usize,
    /// Timeout of the gateway registration request and the WebSocket handshake.
    pub connect_timeout: Duration,
    /// Capacity of the channel of incoming messages.
    pub channel_capacity: usize,
    /// PEM certificates trusted as roots besides the platform's (see the crate docs, "TLS"),
    /// e.g. the CA of a local DingTalk mock or of a TLS-inspecting proxy.
    pub extra_root_certs_pem: Vec<Vec<u8>>,
    /// The proxy the WebSocket (an `http://` proxy, by CONNECT) and the gateway request go
    /// through, if any. Unset, the gateway request follows `HTTPS_PROXY` (reqwest reads it).
    pub proxy: Option<webhook_client::EgressProxy>,
}

impl StreamConfig {
    /// A configuration with the defaults: the real API host, robot messages, 90 s watchdog,
    /// 1 s to 60 s backoff, 10-minute duplicate window.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> StreamConfig {
        StreamConfig {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            api_base: DEFAULT_API_BASE.to_owned(),
            topics: vec![BOT_MESSAGE_TOPIC.to_owned()],
            idle_timeout: Duration::from_secs(90),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            dedupe_ttl: Duration::from_secs(600),
            dedupe_capacity: 100_000,
            connect_timeout: Duration::from_secs(10),
            channel_capacity: 1024,
            extra_root_certs_pem: Vec::new(),
            proxy: None,
        }
    }

    /// Opens the WebSocket through `proxy` (e.g. [`webhook_client::EgressProxy::from_env`]).
    pub fn proxy(mut self, proxy: webhook_client::EgressProxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Also trusts the certificates in `pem` (one or more `CERTIFICATE` blocks) as roots, for
    /// both the gateway request and the WebSocket. The PEM is parsed by
    /// [`StreamClient::new`], which fails on a PEM without a certificate.
    pub fn add_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_root_certs_pem.push(pem.into());
        self
    }

    /// Sets the OpenAPI base URL.
    pub fn api_base(mut self, base: impl Into<String>) -> Self {
        self.api_base = base.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets the watchdog's idle timeout.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the reconnect backoff bounds.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }
}

impl fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("api_base", &self.api_base)
            .field("topics", &self.topics)
            .field("idle_timeout", &self.idle_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("dedupe_ttl", &self.dedupe_ttl)
            .field("extra_root_certs", &self.extra_root_certs_pem.len())
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

/// Counters of what the client did, for logs, metrics and tests.
#[derive(Debug, Default)]
pub struct StreamStats {
    connections_opened: AtomicU64,
    reconnects: AtomicU64,
    watchdog_reconnects: AtomicU64,
    disconnects_handled: AtomicU64,
    callbacks_acked: AtomicU64,
    duplicates_dropped: AtomicU64,
    pings_answered: AtomicU64,
}

/// A copy of [`StreamStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// WebSocket connections established.
    pub connections_opened: u64,
    /// Reconnects after a dropped or failed connection.
    pub reconnects: u64,
    /// Reconnects because the watchdog saw no frame for too long.
    pub watchdog_reconnects: u64,
    /// Server `disconnect` frames handled by a make-before-break switch.
    pub disconnects_handled: u64,
    /// CALLBACK frames ACKed.
    pub callbacks_acked: u64,
    /// Redeliveries dropped by `msgId`.
    pub duplicates_dropped: u64,
    /// SYSTEM pings answered.
    pub pings_answered: u64,
}

impl StreamStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections_opened: self.connections_opened.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            watchdog_reconnects: self.watchdog_reconnects.load(Ordering::Relaxed),
            disconnects_handled: self.disconnects_handled.load(Ordering::Relaxed),
            callbacks_acked: self.callbacks_acked.load(Ordering::Relaxed),
            duplicates_dropped: self.duplicates_dropped.load(Ordering::Relaxed),
            pings_answered: self.pings_answered.load(Ordering::Relaxed),
        }
    }
}

/// A running client. Dropping it does not stop the client; call [`StreamHandle::shutdown`].
#[derive(Debug)]
pub struct StreamHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    stats: Arc<StreamStats>,
}

impl StreamHandle {
    /// What the client has done so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Closes the connection and waits for the client to stop.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// The Stream-mode client.
///
/// Every CALLBACK frame is ACKed before anything else happens with it; robot messages are then
/// deduplicated by `msgId` and handed to the receiver returned by [`StreamClient::start`].
#[derive(Debug, Clone)]
pub struct StreamClient {
    config: Arc<StreamConfig>,
    http: reqwest::Client,
    /// The `wss://` connector: the same roots as `http`, no ALPN (WebSocket is HTTP/1.1).
    ws_tls: Arc<rustls::ClientConfig>,
}

#[derive(Debug, Deserialize)]
struct OpenResponse {
    endpoint: String,
    ticket: String,
}

/// What a connection task tells the supervisor.
#[derive(Debug)]
enum ConnEvent {
    /// The first frame arrived: the connection works (resets the backoff).
    Healthy(u64),
    /// The server asked us to move (SYSTEM `disconnect`).
    Disconnect(u64),
    /// The socket closed or failed.
    Closed(u64),
    /// The watchdog saw nothing for `idle_timeout`.
    Idle(u64),
}

struct Conn {
    id: u64,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Conn {
    async fn close(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// State shared by the connection tasks.
struct Shared {
    config: Arc<StreamConfig>,
    out: mpsc::Sender<Incoming>,
    deduper: Mutex<Deduper>,
    stats: Arc<StreamStats>,
    events: mpsc::UnboundedSender<ConnEvent>,
}

impl StreamClient {
    /// Builds a client.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the id or secret is empty, an extra root certificate is not
    /// readable PEM, no trust root can be loaded, or the HTTP client cannot be built.
    pub fn new(config: StreamConfig) -> Result<StreamClient, Error> {
        if config.client_id.trim().is_empty() || config.client_secret.trim().is_empty() {
            return Err(Error::Config(
                "client id and client secret are required".into(),
            ));
        }
        let mut roots = Vec::new();
        for pem in &config.extra_root_certs_pem {
            roots.extend(crate::tls::certs_from_pem(pem)?);
        }
        let http_tls = crate::tls::client_config(&roots, &[b"h2", b"http/1.1"])?;
        let ws_tls = Arc::new(crate::tls::client_config(&roots, &[])?);
        let mut http = reqwest::Client::builder();
        if let Some(proxy) = &config.proxy {
            // A given proxy replaces the environment's for the gateway request as well.
            http = http.no_proxy();
            let via = reqwest::Url::parse(&config.api_base)
                .ok()
                .and_then(|u| proxy.for_url(&u).cloned());
            if let Some(via) = via {
                let via = reqwest::Proxy::all(via.as_str())
                    .map_err(|_| Error::Config("proxy is not a valid proxy URL".into()))?;
                http = http.proxy(via);
            }
        }
        let http = http
            .tls_backend_preconfigured(http_tls)
            .timeout(config.connect_timeout)
            .user_agent(concat!("dingtalk-stream-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("http client: {}", e.without_url())))?;
        Ok(StreamClient {
            config: Arc::new(config),
            http,
            ws_tls,
        })
    }

    /// Registers with the gateway (`POST /v1.0/gateway/connections/open`) and returns the
    /// WebSocket URL with its single-use ticket.
    ///
    /// # Errors
    ///
    /// [`Error::Gateway`] for a non-200 answer, [`Error::Http`] for transport failures.
    pub async fn open_ticket(&self) -> Result<String, Error> {
        let subscriptions: Vec<_> = self
            .config
            .topics
            .iter()
            .map(|t| serde_json::json!({"type": "CALLBACK", "topic": t}))
            .collect();
        let body = serde_json::json!({
            "clientId": self.config.client_id,
            "clientSecret": self.config.client_secret,
            "subscriptions": subscriptions,
            "ua": concat!("dingtalk-stream-rs/", env!("CARGO_PKG_VERSION")),
        });
        let url = format!("{}/v1.0/gateway/connections/open", self.config.api_base);
        let resp = self
            .http
            .post(url)
            .header("accept", "application/json")
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::Http(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| Error::Http(e.without_url().to_string()))?;
        if status != 200 {
            return Err(Error::Gateway {
                status,
                body: text.chars().take(512).collect(),
            });
        }
        let open: OpenResponse = serde_json::from_str(&text).map_err(|e| Error::Gateway {
            status,
            body: format!("unreadable answer: {e}"),
        })?;
        if open.endpoint.is_empty() || open.ticket.is_empty() {
            return Err(Error::Gateway {
                status,
                body: "empty endpoint or ticket".into(),
            });
        }
        let mut url = url::Url::parse(&open.endpoint).map_err(|e| Error::Gateway {
            status,
            body: format!("bad endpoint: {e}"),
        })?;
        url.query_pairs_mut().append_pair("ticket", &open.ticket);
        Ok(url.into())
    }

    /// Starts the client in the background. Robot messages arrive on the returned receiver,
    /// ACKed and deduplicated.
    pub fn start(self) -> (StreamHandle, mpsc::Receiver<Incoming>) {
        let (out, rx) = mpsc::channel(self.config.channel_capacity.max(1));
        let cancel = CancellationToken::new();
        let stats = Arc::new(StreamStats::default());
        let task = tokio::spawn(self.supervise(out, cancel.clone(), stats.clone()));
        (
            StreamHandle {
                cancel,
                task,
                stats,
            },
            rx,
        )
    }

    async fn connect(&self, shared: &Arc<Shared>, next_id: &mut u64) -> Result<Conn, Error> {
        let url = self.open_ticket().await?;
        let connector = Some(tokio_tungstenite::Connector::Rustls(self.ws_tls.clone()));
        let through = url::Url::parse(&url)
            .ok()
            .and_then(|u| Some((self.config.proxy.as_ref()?.for_url(&u)?.clone(), u)));
        let handshake = async {
            match through {
                // Nagle off: ACKs are tiny frames written one per CALLBACK. With Nagle on, the
                // second ACK of a burst waits for the TCP ACK of the first, which the gateway's
                // delayed ACK holds back for ~40 ms (measured with bench-bot: burst ACK p90 46 ms).
                // A `ws://` endpoint ignores the connector; `wss://` uses it.
                None => tokio_tungstenite::connect_async_tls_with_config(
                    url.as_str(),
                    None,
                    true,
                    connector,
                )
                .await
                .map_err(|e| Error::WebSocket(e.to_string())),
                Some((proxy, target)) => {
                    let tunnel = crate::proxy::connect_tunnel(&proxy, &target).await?;
                    tokio_tungstenite::client_async_tls_with_config(
                        url.as_str(),
                        tunnel,
                        None,
                        connector,
                    )
                    .await
                    .map_err(|e| Error::WebSocket(e.to_string()))
                }
            }
        };
        let (ws, _) = tokio::time::timeout(self.config.connect_timeout, handshake)
            .await
            .map_err(|_| Error::WebSocket("handshake timed out".into()))??;
        *next_id += 1;
        let id = *next_id;
        StreamStats::bump(&shared.stats.connections_opened);
        tracing::info!(connection = id, "dingtalk stream connected");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_connection(id, ws, shared.clone(), cancel.clone()));
        Ok(Conn { id, cancel, task })
    }

    /// Connects, retrying with backoff until it works or `cancel` fires.
    async fn connect_with_backoff(
        &self,
        shared: &Arc<Shared>,
        next_id: &mut u64,
        failures: &mut u32,
        cancel: &CancellationToken,
    ) -> Option<Conn> {
        loop {
            if *failures > 0 {
                let delay = backoff_delay(&self.config, *failures - 1, &mut rand::rng());
                tracing::debug!(?delay, "dingtalk stream reconnect backoff");
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return None,
                res = self.connect(shared, next_id) => match res {
                    Ok(conn) => return Some(conn),
                    Err(e) => {
                        tracing::warn!(error = %e, "dingtalk stream connect failed");
                        *failures += 1;
                    }
                },
            }
        }
    }

    async fn supervise(
        self,
        out: mpsc::Sender<Incoming>,
        cancel: CancellationToken,
        stats: Arc<StreamStats>,
    ) {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            out,
            deduper: Mutex::new(Deduper::new(
                self.config.dedupe_ttl,
                self.config.dedupe_capacity,
            )),
            stats,
            events: events_tx,
        });
        let mut next_id = 0;
        let mut failures = 0u32;
        let mut current: Option<Conn> = None;
        loop {
            let conn = match current.take() {
                Some(c) => c,
                None => match self
                    .connect_with_backoff(&shared, &mut next_id, &mut failures, &cancel)
                    .await
                {
                    Some(c) => c,
                    None => break,
                },
            };
            let event = tokio::select! {
                () = cancel.cancelled() => { conn.close().await; break; }
                ev = events.recv() => ev,
            };
            let Some(event) = event else {
                conn.close().await;
                break;
            };
            match event {
                ConnEvent::Healthy(id) => {
                    if id == conn.id {
                        failures = 0;
                    }
                    current = Some(conn);
                }
                ConnEvent::Disconnect(id) if id == conn.id => {
                    // Make before break: the old socket keeps reading until the new one is up.
                    StreamStats::bump(&shared.stats.disconnects_handled);
                    tracing::info!(
                        connection = id,
                        "dingtalk asked to reconnect; opening a new connection first"
                    );
                    let mut f = 0;
                    let new = self
                        .connect_with_backoff(&shared, &mut next_id, &mut f, &cancel)
                        .await;
                    conn.close().await;
                    match new {
                        Some(n) => current = Some(n),
                        None => break,
                    }
                }
                ConnEvent::Closed(id) | ConnEvent::Idle(id) if id == conn.id => {
                    if matches!(event, ConnEvent::Idle(_)) {
                        StreamStats::bump(&shared.stats.watchdog_reconnects);
                        tracing::warn!(
                            connection = id,
                            "no frame from dingtalk for too long; reconnecting"
                        );
                    } else {
                        tracing::warn!(
                            connection = id,
                            "dingtalk stream connection closed; reconnecting"
                        );
                    }
                    StreamStats::bump(&shared.stats.reconnects);
                    conn.close().await;
                    failures = failures.saturating_add(1);
                }
                // An event of a connection that was already replaced.
                _ => current = Some(conn),
            }
        }
        tracing::info!("dingtalk stream client stopped");
    }
}

/// `min(min * 2^n, max)` ([`ExponentialBackoff`]) with under 20 % of that step added as
/// jitter, never above `max`.
fn backoff_delay(config: &StreamConfig, n: u32, rng: &mut impl Rng) -> Duration {
    let schedule =
        |jitter| ExponentialBackoff::try_new(config.backoff_min, config.backoff_max, jitter);
    let Ok(plain) = schedule(Jitter::None) else {
        return config.backoff_max;
    };
    let extra = plain
        .base_step(n)
        .mul_f64(0.2)
        .saturating_sub(Duration::from_millis(1));
    schedule(Jitter::Additive(extra)).map_or(config.backoff_max, |b| b.delay(n, rng))
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run_connection(id: u64, ws: WsStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let (mut tx, mut rx) = ws.split();
    let half_idle = shared.config.idle_timeout / 2;
    let mut healthy = false;
    let mut quiet_periods = 0u32;
    let mut moving = false;
    let end = loop {
        let next = tokio::select! {
            () = cancel.cancelled() => {
                let _ = tx.send(WsMessage::Close(None)).await;
                return;
            }
            next = tokio::time::timeout(half_idle, rx.next()) => next,
        };
        let msg = match next {
            Err(_) => {
                quiet_periods += 1;
                if quiet_periods >= 2 {
                    break ConnEvent::Idle(id);
                }
                // Half the idle time passed: ask for a sign of life before giving up.
                if tx.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    break ConnEvent::Closed(id);
                }
                continue;
            }
            Ok(None) | Ok(Some(Err(_))) => break ConnEvent::Closed(id),
            Ok(Some(Ok(msg))) => msg,
        };
        quiet_periods = 0;
        if !healthy {
            healthy = true;
            let _ = shared.events.send(ConnEvent::Healthy(id));
        }
        let text = match msg {
            WsMessage::Text(t) => t,
            WsMessage::Close(_) => break ConnEvent::Closed(id),
            // Pongs are answered by tungstenite itself; binary frames are not part of the protocol.
            _ => continue,
        };
        let frame: DownstreamFrame = match serde_json::from_str(text.as_str()) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(connection = id, error = %e, "unreadable frame from dingtalk");
                continue;
            }
        };
        let ack = match frame.kind.as_str() {
            "CALLBACK" => Some(AckFrame::callback(frame.message_id())),
            "EVENT" => Some(AckFrame::event_success(frame.message_id())),
            "SYSTEM" if frame.topic() == "ping" => Some(AckFrame::pong(&frame)),
            "SYSTEM" if frame.topic() == "disconnect" => {
                Some(AckFrame::ok(frame.message_id(), String::new()))
            }
            _ => None,
        };
        // ACK first, before anything else happens with the frame: a late ACK is what makes
        // DingTalk redeliver.
        if let Some(ack) = ack
            && tx.send(WsMessage::text(ack.to_json())).await.is_err()
        {
            break ConnEvent::Closed(id);
        }
        match (frame.kind.as_str(), frame.topic()) {
            ("CALLBACK", topic) => {
                StreamStats::bump(&shared.stats.callbacks_acked);
                if topic == BOT_MESSAGE_TOPIC {
                    deliver(&shared, &frame, id).await;
                }
            }
            ("SYSTEM", "ping") => StreamStats::bump(&shared.stats.pings_answered),
            ("SYSTEM", "disconnect") if !moving => {
                moving = true;
                let _ = shared.events.send(ConnEvent::Disconnect(id));
            }
            _ => {}
        }
    };
    let _ = shared.events.send(end);
}

async fn deliver(shared: &Shared, frame: &DownstreamFrame, connection: u64) {
    let message = match RobotMessage::from_json(&frame.data) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(connection, error = %e, "unreadable robot message");
            return;
        }
    };
    let first = message.msg_id.is_empty() || shared.deduper.lock().first_time(&message.msg_id);
    if !first {
        StreamStats::bump(&shared.stats.duplicates_dropped);
        tracing::info!(msg_id = %message.msg_id, "duplicate delivery dropped");
        return;
    }
    let incoming = Incoming {
        message,
        message_id: frame.message_id().to_owned(),
        topic: frame.topic().to_owned(),
    };
    if shared.out.send(incoming).await.is_err() {
        tracing::debug!("message receiver dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_from_one_second_and_caps_at_sixty() {
        let config = StreamConfig::new("id", "secret");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let d: Vec<_> = (0..8)
            .map(|n| backoff_delay(&config, n, &mut rng))
            .collect();
        assert!(d[0] >= Duration::from_secs(1) && d[0] < Duration::from_millis(1200));
        assert!(d[1] >= Duration::from_secs(2) && d[1] < Duration::from_millis(2400));
        assert!(d[7] <= Duration::from_secs(60) && d[7] >= Duration::from_secs(60));
    }

    #[test]
    fn debug_redacts_the_secret() {
        let s = format!("{:?}", StreamConfig::new("id", "very-secret"));
        assert!(!s.contains("very-secret"));
    }
}
