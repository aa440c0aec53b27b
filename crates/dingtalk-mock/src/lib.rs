//! A faithful local DingTalk on one loopback port, for tests, examples and benchmarks.
//!
//! It speaks the wire protocol of `shared/reference/dingtalk-protocol.md` (its §13 lists the
//! endpoints), with the success **and** error bodies DingTalk sends:
//!
//! - `POST /v1.0/oauth2/accessToken` and `GET /gettoken` (bad credentials refused, JSON body
//!   required);
//! - `POST /v1.0/robot/oToMessages/batchSend` and `POST /v1.0/robot/groupMessages/send`: token
//!   checked, ≤ 20 users, `msgParam` a JSON string, documented `msgKey`s only, `robotCode`
//!   checked, group `msgParam` < 15,000 bytes and known groups only, the per-app per-API QPS limit
//!   answered with the real `403`, throttled and invalid users reported in the lists;
//! - `POST /robot/sendBySession?session=`: until `sessionWebhookExpiredTime`, then HTTP 200 with
//!   `errcode` 300001;
//! - `POST /robot/send?access_token=&timestamp=&sign=`: the custom group robot with its
//!   signature, keywords, and 20-a-minute limit (then blocked 10 minutes, `130101`);
//! - `POST /v1.0/gateway/connections/open` + WebSocket `GET /connect?ticket=`: single-use
//!   tickets, CALLBACK frames with string headers and JSON-string `data`, SYSTEM `ping` expecting
//!   its echo and `disconnect`, ACK tracking, redelivery of un-ACKed callbacks with a new
//!   `messageId` and the same `msgId`;
//!   Only the topics a connection subscribed to reach it; with several connections of the
//!   app, each message goes to one picked at random (both bot instances get traffic, each
//!   message once). Only an ACK with `code` 200 acknowledges. Un-ACKed callbacks are
//!   redelivered after [`MockConfig::redelivery_after`] (60 s by default), and a message said
//!   while no connection is live (a client between two sockets) goes to the next one. The
//!   client's close frame is answered, so a client closing after `disconnect` reconnects at
//!   once;
//! - `POST /v1.0/robot/messageFiles/download` -> `{downloadUrl}`, a URL on the mock serving the
//!   bytes ([`Said::download_codes`], [`DingTalkMock::set_file`]);
//! - cards, as the official SDK's `CardReplier` / `AICardReplier` call them:
//!   `POST /v1.0/card/instances`, `.../deliver`, `.../createAndDeliver`,
//!   `PUT /v1.0/card/instances`, `PUT /v1.0/card/streaming`, and the older robot cards
//!   (`POST /v1.0/im/v1.0/robot/interactiveCards/send`, `PUT /v1.0/im/robots/interactiveCards`);
//!   read them with [`DingTalkMock::cards`] or `GET /_mock/cards`;
//! - loose payloads as the cloud sends them: no `senderStaffId`, `createAt` as a string,
//!   `null` fields, richText with pictures, @-mentions of other users, `isAdmin`
//!   ([`MockMessage`] builders, or the fields of `POST /_mock/messages`);
//! - HTTP mode: messages POSTed to the bot with valid `timestamp`/`sign` headers;
//! - fault knobs: disconnect, TCP drop, zombie, refused registration, expired sessions and
//!   tokens, QPS limit, injected error bodies (token, robot sends, file download, card create,
//!   deliver and update: [`DingTalkMock::fail_next`]);
//! - a control API under `/_mock/` (say a message, read the outbox, cards and ACKs, turn the
//!   knobs, set lifetimes): `GET /_mock` lists every endpoint with its body.
//!
//! The official Python SDK checks this mock from the outside: `tests/official-sdk/run.sh`.
//!
//! # TLS mode
//!
//! Real DingTalk is `https://` and `wss://` only. [`DingTalkMock::start_tls`] (or
//! [`MockConfig::tls`], or `dingtalk-mock --tls --write-ca ca.pem` on the command line) serves
//! TLS only, with a certificate for `localhost`, `127.0.0.1` and `::1` signed by a throwaway CA
//! generated at start ([`MockTls::Generate`]), or one given as PEM ([`MockTls::Pem`], `--tls-cert`
//! `--tls-key` `--tls-ca`). [`DingTalkMock::base_url`] is then `https://127.0.0.1:PORT`, the
//! gateway hands out `wss://127.0.0.1:PORT/connect`, and session webhooks are `https://`.
//! Clients trust [`DingTalkMock::ca_pem`]: as an extra root (reqwest's
//! `add_root_certificate`, `dingtalk_stream::StreamConfig::add_root_certificates_pem`) or,
//! for a child process, as the file `SSL_CERT_FILE` (Rust/rustls, OpenSSL) or
//! `REQUESTS_CA_BUNDLE` (Python requests) names.
//!
//! ```
//! use dingtalk_mock::{DingTalkMock, MockConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = DingTalkMock::start_tls(MockConfig::default()).await?;
//! assert!(mock.base_url().starts_with("https://"));
//! let ca_pem: &str = mock.ca_pem().expect("a generated CA");
//! # let _ = ca_pem;
//! # Ok(())
//! # }
//! ```
//!
//! Lifetimes (tokens, tickets, sessions, rate windows, grace periods, redelivery, pings) run
//! on tokio's clock, so they follow paused time; the epoch-millisecond fields on the wire
//! (`createAt`, `sessionWebhookExpiredTime`, `time`) are wall-clock, as DingTalk's are.
//!
//! # Example
//!
//! ```
//! use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = DingTalkMock::start(MockConfig::default()).await?;
//! // Point the bot at mock.base_url() for both the api and the oapi host, then:
//! let said = mock.say(MockMessage::single("user1", "分析公司 ACME")).await;
//! println!("{} delivered: {}", said.msg_id, said.delivered);
//! for entry in mock.outbox() {
//!     println!("{} -> {:?}: {}", entry.channel, entry.to, entry.text);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Why our own
//!
//! The official SDKs test against `nock` stubs or the live service, and no Rust crate mocks
//! DingTalk. We need the failure paths (expired sessions, QPS 403s, throttled users, zombie
//! sockets, redelivered callbacks) on demand and on any machine, without credentials.
//!
//! # Feature flags
//!
//! None.

mod cards;
mod config;
mod control;
mod error;
mod files;
mod http_mode;
mod message;
mod oapi;
mod openapi;
mod poster;
mod state;
mod stream;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use tokio::time::Instant;

pub use cards::{CardCall, CardRecord};
pub use config::{CustomRobotConfig, MockConfig};
pub use error::{Error, Result};
pub use message::{Conversation, MockMessage, MsgType, Said};
pub use oapi::custom_robot_sign;
pub use state::{Api, MockFault, OutboxEntry, PingRecord};
pub use tls::MockTls;

use message::{Envelope, callback_payload};

/// How long a stopping mock waits for its open connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
use state::{Session, State, now_ms, random_hex};

/// A running mock DingTalk. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct DingTalkMock {
    addr: SocketAddr,
    state: Arc<State>,
    server: Option<tokio::task::JoinHandle<()>>,
    ca_pem: Option<String>,
}

impl DingTalkMock {
    /// Starts on `127.0.0.1:0` (a free port).
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when no port can be bound.
    pub async fn start(config: MockConfig) -> Result<DingTalkMock> {
        DingTalkMock::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on `addr`.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when `addr` cannot be bound.
    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> Result<DingTalkMock> {
        // Built before binding, so a bad certificate fails fast.
        let server_tls = config.tls.as_ref().map(tls::server_tls).transpose()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let scheme = if server_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let state = Arc::new(State::new(config, format!("{scheme}://{addr}")));
        if let Some(every) = state.config.ping_interval {
            state.spawn(stream::ping_loop(state.clone(), every));
        }
        let app = router(state.clone());
        let stop = state.shutdown.clone();
        let ca_pem = server_tls.as_ref().and_then(|t| t.ca_pem.clone());
        // The listener a production gateway has: header timeout, connection cap, accept
        // back-off, TCP_NODELAY (small frames and replies go out at once).
        let limits = service_kit::HttpLimits {
            shutdown_timeout: SHUTDOWN_GRACE,
            ..service_kit::HttpLimits::default()
        };
        let stopped = stop.cancelled_owned();
        let server = match server_tls {
            Some(t) => tokio::spawn(service_kit::serve_tls(
                listener, t.acceptor, app, limits, stopped,
            )),
            None => tokio::spawn(service_kit::serve(listener, app, limits, stopped)),
        };
        tracing::debug!(%addr, tls = ca_pem.is_some(), "dingtalk mock listening");
        Ok(DingTalkMock {
            addr,
            state,
            server: Some(server),
            ca_pem,
        })
    }

    /// Starts in TLS mode on `127.0.0.1:0`: `https://` and `wss://` only, with a certificate
    /// for `localhost`, `127.0.0.1` and `::1` signed by a throwaway CA generated now (unless
    /// `config.tls` already says otherwise). Clients trust [`DingTalkMock::ca_pem`].
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when the certificate cannot be made or read, [`Error::Bind`] when no
    /// port can be bound.
    pub async fn start_tls(mut config: MockConfig) -> Result<DingTalkMock> {
        config.tls.get_or_insert_with(MockTls::default);
        DingTalkMock::start(config).await
    }

    /// In TLS mode, the PEM of the CA that signed the server certificate (`None` in plain mode,
    /// or when a certificate given as [`MockTls::Pem`] came without its CA). Hand it to clients
    /// as an extra root, or write it to a file for `SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE`.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Whether the mock serves `https://` and `wss://`.
    pub fn is_tls(&self) -> bool {
        self.state.base_url.starts_with("https://")
    }

    /// Stops the server and waits for it: Stream sockets get a close frame, idle HTTP
    /// connections are closed.
    pub async fn shutdown(mut self) {
        self.state.shutdown.cancel();
        self.state.tasks.lock().abort_all();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` in TLS mode): the base URL for both the api and the
    /// oapi host.
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration it was started with (knobs may have changed the live values since).
    pub fn config(&self) -> &MockConfig {
        &self.state.config
    }

    /// Says a message as a user.
    ///
    /// In Stream mode it goes as a CALLBACK frame to the newest live connection; in HTTP mode
    /// ([`MockConfig::http_callback_url`]) it is POSTed with `timestamp`/`sign` headers (and a
    /// message in the bot's response body lands in the outbox). The payload carries a
    /// `sessionWebhook` on this mock, valid for [`MockConfig::session_ttl`]. A group
    /// message makes its group known to `groupMessages/send`.
    pub async fn say(&self, message: MockMessage) -> Said {
        say(&self.state, message).await
    }

    /// Everything the bot sent, in order, whatever the channel.
    pub fn outbox(&self) -> Vec<OutboxEntry> {
        self.state.outbox.lock().clone()
    }

    /// Forgets the outbox.
    pub fn clear_outbox(&self) {
        self.state.outbox.lock().clear();
    }

    /// The upstream frames that answered one of the mock's frames (callback ACKs, ping echoes,
    /// disconnect ACKs), in order, as JSON.
    pub fn acks(&self) -> Vec<serde_json::Value> {
        self.state.acks.lock().clone()
    }

    /// For every ACKed CALLBACK, in ACK order: the time from handing the frame to its
    /// connection to reading the ACK on the same socket. What DingTalk sees as the bot's ACK
    /// latency (it redelivers when this grows too long).
    pub fn ack_latencies(&self) -> Vec<std::time::Duration> {
        self.state.ack_latencies.lock().clone()
    }

    /// Every outbox entry from now on, as it arrives. A subscriber more than 65,536 entries
    /// behind gets [`RecvError::Lagged`](tokio::sync::broadcast::error::RecvError::Lagged).
    pub fn subscribe_outbox(&self) -> tokio::sync::broadcast::Receiver<OutboxEntry> {
        self.state.outbox_tx.subscribe()
    }

    /// The SYSTEM pings sent so far and whether each was echoed.
    pub fn pings(&self) -> Vec<PingRecord> {
        self.state
            .pings
            .lock()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Sends a SYSTEM `ping` to every live connection now; returns how many got one.
    pub fn ping_now(&self) -> usize {
        stream::ping_all(&self.state)
    }

    /// How many access tokens were requested (both token endpoints, refused requests too).
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Open Stream connections (draining and zombie ones included).
    pub fn connections(&self) -> usize {
        self.state.conns.lock().len()
    }

    /// Sends SYSTEM `disconnect` to every connection, stops delivering to them at once, and
    /// drops them after [`MockConfig::disconnect_grace`]. Returns how many.
    pub fn disconnect_all(&self) -> usize {
        stream::disconnect_all(&self.state)
    }

    /// Drops every connection at the TCP level, without a close frame. Returns how many.
    pub fn drop_connections(&self) -> usize {
        stream::drop_all(&self.state)
    }

    /// Zombie mode: current and new connections stay open but deliver nothing, read nothing and
    /// so answer no WebSocket pings. `false` brings them back.
    pub fn set_zombie(&self, on: bool) {
        stream::set_zombie(&self.state, on);
    }

    /// Turns the current connections into zombies; connections opened later are healthy.
    pub fn zombify_connections(&self) {
        stream::zombify_current(&self.state);
    }

    /// Refuses `gateway/connections/open` with `status` (401, 503, ...) until called with
    /// `None`.
    pub fn reject_open(&self, status: Option<u16>) {
        *self.state.reject_open.lock() = status;
    }

    /// Expires every session webhook now (they answer `errcode` 300001). Returns how many.
    pub fn expire_sessions(&self) -> usize {
        expire_sessions(&self.state)
    }

    /// Expires one access token now; returns whether it existed.
    pub fn expire_token(&self, token: &str) -> bool {
        self.state.tokens.lock().remove(token).is_some()
    }

    /// Expires every access token now.
    pub fn expire_tokens(&self) {
        self.state.tokens.lock().clear();
    }

    /// Changes the per-app per-API QPS limit (`None`: unlimited).
    pub fn set_qps_limit(&self, limit: Option<u32>) {
        *self.state.qps_limit.lock() = limit;
    }

    /// Throttles `user` on their next `batchSend` (reported in `flowControlledStaffIdList`).
    pub fn flow_control(&self, user: &str) {
        self.state.flow_controlled.lock().insert(user.to_owned());
    }

    /// Registers a group the robot is in (group messages said through the mock register
    /// theirs too).
    pub fn add_group(&self, conversation_id: &str) {
        self.state.groups.lock().insert(conversation_id.to_owned());
    }

    /// Every card created so far (card APIs and the older robot cards), in creation order,
    /// with its data, spaces, streamed content and calls.
    pub fn cards(&self) -> Vec<CardRecord> {
        self.state.cards.lock().cards.clone()
    }

    /// The card with this `outTrackId` (or `cardBizId`).
    pub fn card(&self, out_track_id: &str) -> Option<CardRecord> {
        self.state
            .cards
            .lock()
            .cards
            .iter()
            .find(|c| c.out_track_id == out_track_id)
            .cloned()
    }

    /// Sets the bytes `messageFiles/download` serves for `download_code` (a code from
    /// [`Said::download_codes`], or any code a test makes up and says in a message).
    pub fn set_file(&self, download_code: &str, bytes: impl Into<Vec<u8>>, content_type: &str) {
        self.state.files.lock().insert(
            download_code.to_owned(),
            state::MockFile {
                bytes: bytes.into(),
                content_type: content_type.to_owned(),
            },
        );
    }

    /// Sets the lifetime of access tokens issued from now on (tokens issued before keep
    /// theirs; [`DingTalkMock::expire_tokens`] ends them).
    pub fn set_token_ttl(&self, ttl: std::time::Duration) {
        *self.state.token_ttl.lock() = ttl;
    }

    /// Sets the lifetime of Stream tickets issued from now on.
    pub fn set_ticket_ttl(&self, ttl: std::time::Duration) {
        *self.state.ticket_ttl.lock() = ttl;
    }

    /// Sets the lifetime of session webhooks of messages said from now on.
    pub fn set_session_ttl(&self, ttl: std::time::Duration) {
        *self.state.session_ttl.lock() = ttl;
    }

    /// Callbacks waiting for an ACK (or, held while no connection was live, for a
    /// connection).
    pub fn unacked(&self) -> usize {
        self.state.pending.lock().len()
    }

    /// Makes the next `times` calls of `api` fail with `fault` (after the token and QPS
    /// checks), e.g. `400 send.too.fast` or a `503`, answered as DingTalk answers errors: the
    /// status, the body `{"code","message","requestid"}` and the same id in `x-acs-request-id`.
    /// A failed call has no effect (no message recorded, no card created or changed).
    pub fn fail_next(&self, api: Api, fault: &MockFault, times: u32) {
        push_faults(&self.state, api, fault, times);
    }
}

impl Drop for DingTalkMock {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        self.state.tasks.lock().abort_all();
    }
}

pub(crate) fn push_faults(state: &State, api: Api, fault: &MockFault, times: u32) {
    let mut faults = state.faults.lock();
    let queue = faults.entry(api).or_default();
    for _ in 0..times {
        queue.push_back(fault.clone());
    }
}

pub(crate) fn expire_sessions(state: &State) -> usize {
    let now = Instant::now();
    let mut sessions = state.sessions.lock();
    for s in sessions.values_mut() {
        s.deadline = now;
    }
    sessions.len()
}

pub(crate) async fn say(state: &Arc<State>, m: MockMessage) -> Said {
    let conversation_id = m.conversation_id();
    if matches!(m.conversation, Conversation::Group { .. }) {
        state.groups.lock().insert(conversation_id.clone());
    }
    let session = random_hex(32);
    let create_at = now_ms();
    let ttl = *state.session_ttl.lock();
    let expires_ms = create_at.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    state.sessions.lock().insert(
        session.clone(),
        Session {
            deadline: Instant::now() + ttl,
            conversation_id: conversation_id.clone(),
        },
    );
    let session_webhook = format!("{}/robot/sendBySession?session={session}", state.base_url);
    let msg_id = m
        .msg_id
        .clone()
        .unwrap_or_else(|| format!("msg{}==", random_hex(20)));
    let (data, download_codes) = callback_payload(
        &m,
        &Envelope {
            msg_id: &msg_id,
            conversation_id: &conversation_id,
            create_at,
            session_webhook: &session_webhook,
            expires_ms,
            robot_code: &state.config.robot_code,
        },
    );
    files::register(state, &m, &download_codes);
    let data = data.to_string();
    let delivered = match &state.config.http_callback_url {
        Some(url) => http_mode::post_callback(state, url, data, &conversation_id).await,
        None => stream::push_callback(state, data),
    };
    Said {
        msg_id,
        conversation_id,
        session_webhook,
        session_webhook_expired_time: expires_ms,
        delivered,
        download_codes,
    }
}

/// api.dingtalk.com answers carry `x-acs-request-id`, `x-acs-trace-id` and
/// `Server: DingTalk/1.0.0` (§2.4).
async fn acs_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/v1.0/");
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert("server", HeaderValue::from_static("DingTalk/1.0.0"));
    if api {
        if !headers.contains_key("x-acs-request-id")
            && let Ok(v) = HeaderValue::from_str(&openapi::request_id())
        {
            headers.insert("x-acs-request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&random_hex(30)) {
            headers.insert("x-acs-trace-id", v);
        }
    }
    resp
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/v1.0/oauth2/accessToken", post(openapi::access_token))
        .route("/gettoken", get(oapi::gettoken))
        .route("/media/upload", post(oapi::media_upload))
        .route(
            "/v1.0/robot/oToMessages/batchSend",
            post(openapi::batch_send),
        )
        .route("/v1.0/robot/groupMessages/send", post(openapi::group_send))
        .route("/robot/sendBySession", post(oapi::send_by_session))
        .route("/robot/send", post(oapi::robot_send))
        .route("/v1.0/robot/messageFiles/download", post(files::download))
        .route("/down/{token}", get(files::serve))
        .route(
            "/v1.0/card/instances",
            post(cards::endpoint(Some(Api::CardCreate), cards::create))
                .put(cards::endpoint(Some(Api::CardUpdate), cards::update)),
        )
        .route(
            "/v1.0/card/instances/deliver",
            post(cards::endpoint(Some(Api::CardDeliver), cards::deliver)),
        )
        .route(
            "/v1.0/card/instances/createAndDeliver",
            post(cards::endpoint(None, cards::create_and_deliver)),
        )
        .route(
            "/v1.0/card/streaming",
            put(cards::endpoint(None, cards::streaming)),
        )
        .route(
            "/v1.0/im/v1.0/robot/interactiveCards/send",
            post(cards::endpoint(None, cards::robot_card_send)),
        )
        .route(
            "/v1.0/im/robots/interactiveCards",
            put(cards::endpoint(None, cards::robot_card_update)),
        )
        .route("/v1.0/gateway/connections/open", post(stream::open))
        .route("/connect", get(stream::connect))
        .merge(control::routes())
        .layer(axum::middleware::from_fn(acs_headers))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use axum::extract::{Query, State as AxState};
    use http_body_util::BodyExt;
    use serde_json::Value;

    use super::*;

    fn state() -> Arc<State> {
        Arc::new(State::new(MockConfig::default(), "http://mock".into()))
    }

    async fn body(resp: Response) -> Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_live_for_their_ttl_on_tokio_time() {
        let s = state();
        let t = s.issue_token();
        tokio::time::advance(Duration::from_secs(7199)).await;
        assert!(s.token_valid(&t));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!s.token_valid(&t));
        assert_ne!(s.issue_token(), t, "a new one after expiry");
    }

    #[tokio::test(start_paused = true)]
    async fn session_webhooks_expire_after_the_session_ttl_on_tokio_time() {
        let s = state();
        let said = say(&s, MockMessage::single("u1", "hi")).await;
        let session = said.session_webhook.split("session=").nth(1).unwrap();
        let send = |s: &Arc<State>| {
            oapi::send_by_session(
                AxState(s.clone()),
                Query(HashMap::from([("session".to_owned(), session.to_owned())])),
                r#"{"msgtype":"text","text":{"content":"x"}}"#.to_owned(),
            )
        };
        tokio::time::advance(Duration::from_secs(5399)).await;
        assert_eq!(body(send(&s).await).await["errcode"], 0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(body(send(&s).await).await["errcode"], 300001);
    }

    #[tokio::test(start_paused = true)]
    async fn the_qps_window_is_one_second_of_tokio_time() {
        let s = state();
        *s.qps_limit.lock() = Some(2);
        assert!(s.within_qps(Api::BatchSend));
        assert!(s.within_qps(Api::BatchSend));
        assert!(!s.within_qps(Api::BatchSend));
        assert!(s.within_qps(Api::GroupSend), "per API");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.within_qps(Api::BatchSend));
    }
}
