//! A faithful local DingTalk for tests, examples and benchmarks.
//!
//! One loopback port serves, with the success and error bodies of the protocol reference
//! (`shared/reference/dingtalk-protocol.md`, §13):
//! - `POST /v1.0/oauth2/accessToken`, `GET /gettoken` (bad credentials refused);
//! - `POST /v1.0/robot/oToMessages/batchSend` and `POST /v1.0/robot/groupMessages/send`
//!   (token checked, ≤ 20 users, `msgParam` must be a JSON string, `msgKey` checked, robot code
//!   checked, group `msgParam` < 15,000 bytes, QPS limit answered with the real 403 body,
//!   flow-controlled and invalid users reported in the lists);
//! - `POST /robot/sendBySession?session=` (expired: HTTP 200 `errcode` 300001);
//! - `POST /robot/send?access_token=&timestamp=&sign=` (custom robot: signature, 20/minute then
//!   blocked 10 minutes with 130101);
//! - `POST /v1.0/gateway/connections/open` + WebSocket `/connect?ticket=` (single-use tickets,
//!   CALLBACK frames with string headers and JSON-string `data`, SYSTEM `ping` and `disconnect`,
//!   ACK tracking, redelivery of un-ACKed callbacks with a new `messageId` and the same `msgId`);
//! - fault knobs: disconnect, drop, zombie, reject registration, expire sessions and tokens;
//! - a control API under `/_mock/`: `POST /_mock/messages` says a message as a user,
//!   `GET /_mock/outbox` reads back everything the bot sent, in order, whatever the channel.
//!
//! Time is tokio's: TTLs follow paused time in tests.
//!
//! # Example
//!
//! ```no_run
//! use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = DingTalkMock::start(MockConfig::default()).await?;
//! println!("DingTalk at {}", mock.base_url());
//! mock.say(MockMessage::single("user1", "分析公司 ACME")).await;
//! for entry in mock.outbox() {
//!     println!("{} -> {:?}: {}", entry.channel, entry.to, entry.text);
//! }
//! # Ok(())
//! # }
//! ```

mod oapi;
mod openapi;
mod state;
mod stream;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxState;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use oapi::custom_robot_sign;
pub use state::OutboxEntry;
use state::{Session, State, now_ms};

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Accepted app key.
    pub client_id: String,
    /// Accepted app secret.
    pub client_secret: String,
    /// The robot code sends must carry (default: the client id).
    pub robot_code: String,
    /// Calls per second per API before 403 QpsLimit (default 20; `None`: unlimited).
    pub qps_limit: Option<u32>,
    /// Session webhook lifetime (5,400 s).
    pub session_ttl: Duration,
    /// Access token lifetime (7,200 s).
    pub token_ttl: Duration,
    /// Stream ticket lifetime (90 s).
    pub ticket_ttl: Duration,
    /// Redeliver un-ACKed callbacks after this long (`None`: never).
    pub redelivery_after: Option<Duration>,
    /// Send SYSTEM pings this often (`None`: never).
    pub ping_interval: Option<Duration>,
    /// After `disconnect`, how long before the socket is dropped (10 s).
    pub disconnect_grace: Duration,
    /// Users reported in `flowControlledStaffIdList` on their next send.
    pub flow_controlled_users: HashSet<String>,
    /// Users reported in `invalidStaffIdList`.
    pub invalid_users: HashSet<String>,
    /// Deliver said messages by HTTP POST to this URL (HTTP mode) instead of over Stream.
    pub http_callback_url: Option<String>,
    /// The custom robot's access token.
    pub custom_robot_token: String,
    /// The custom robot's `SEC...` signing secret (`None`: unsigned).
    pub custom_robot_secret: Option<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            client_id: "dingmockclientid".into(),
            client_secret: "mock-client-secret".into(),
            robot_code: "dingmockclientid".into(),
            qps_limit: Some(20),
            session_ttl: Duration::from_secs(5400),
            token_ttl: Duration::from_secs(7200),
            ticket_ttl: Duration::from_secs(90),
            redelivery_after: None,
            ping_interval: None,
            disconnect_grace: Duration::from_secs(10),
            flow_controlled_users: HashSet::new(),
            invalid_users: HashSet::new(),
            http_callback_url: None,
            custom_robot_token: "mock-robot-token".into(),
            custom_robot_secret: Some("SECmockrobotsecret".into()),
        }
    }
}

/// A message a user says to the bot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MockMessage {
    /// What the user writes.
    pub text: String,
    /// The user's staff id (`senderStaffId`).
    pub sender_staff_id: String,
    /// The user's display name.
    #[serde(default = "default_nick")]
    pub sender_nick: String,
    /// `single` or `group`.
    #[serde(default = "default_single")]
    pub conversation_type: String,
    /// The conversation id (generated when absent).
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// The group title.
    #[serde(default)]
    pub conversation_title: Option<String>,
    /// The message id (generated when absent); repeat one to simulate a duplicate.
    #[serde(default)]
    pub msg_id: Option<String>,
}

fn default_nick() -> String {
    "测试用户".into()
}

fn default_single() -> String {
    "single".into()
}

impl MockMessage {
    /// A one-to-one message.
    pub fn single(staff_id: &str, text: &str) -> MockMessage {
        MockMessage {
            text: text.into(),
            sender_staff_id: staff_id.into(),
            sender_nick: default_nick(),
            conversation_type: "single".into(),
            conversation_id: None,
            conversation_title: None,
            msg_id: None,
        }
    }

    /// An @-message in a group.
    pub fn group(staff_id: &str, conversation_id: &str, text: &str) -> MockMessage {
        MockMessage {
            conversation_type: "group".into(),
            conversation_id: Some(conversation_id.into()),
            conversation_title: Some("测试群".into()),
            ..MockMessage::single(staff_id, text)
        }
    }
}

/// What [`DingTalkMock::say`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Said {
    /// The message's `msgId`.
    pub msg_id: String,
    /// The session webhook it carried.
    pub session_webhook: String,
    /// Whether it reached the bot (a live Stream connection, or an HTTP 2xx in HTTP mode).
    pub delivered: bool,
}

/// A running mock. Dropping it stops the server.
#[derive(Debug)]
pub struct DingTalkMock {
    addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for DingTalkMock {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockState")
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

/// The mock could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the DingTalk mock: {0}")]
pub struct StartError(#[from] std::io::Error);

impl DingTalkMock {
    /// Starts on `127.0.0.1:0`.
    ///
    /// # Errors
    ///
    /// The port cannot be bound.
    pub async fn start(config: MockConfig) -> Result<DingTalkMock, StartError> {
        DingTalkMock::start_on("127.0.0.1:0".parse().expect("valid address"), config).await
    }

    /// Starts on `addr`.
    ///
    /// # Errors
    ///
    /// The port cannot be bound.
    pub async fn start_on(
        addr: SocketAddr,
        config: MockConfig,
    ) -> Result<DingTalkMock, StartError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(config));
        *state.base_url.lock() = format!("http://{addr}");
        let app = router(state.clone());
        let mut tasks = vec![tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })];
        let s = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut last_ping = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                stream::redeliver_due(&s);
                if let Some(every) = s.config.ping_interval
                    && last_ping.elapsed() >= every
                {
                    last_ping = tokio::time::Instant::now();
                    stream::ping_all(&s);
                }
            }
        }));
        Ok(DingTalkMock { addr, state, tasks })
    }

    /// `http://127.0.0.1:PORT`: use it as both the api and the oapi base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration.
    pub fn config(&self) -> &MockConfig {
        &self.state.config
    }

    /// Says a message as a user: over the newest live Stream connection, or by HTTP POST in
    /// HTTP mode (with valid `timestamp`/`sign` headers).
    pub async fn say(&self, message: MockMessage) -> Said {
        say(&self.state, message).await
    }

    /// Everything the bot sent, in order.
    pub fn outbox(&self) -> Vec<OutboxEntry> {
        self.state.outbox.lock().clone()
    }

    /// Upstream frames received (ACKs and ping answers), in order.
    pub fn acks(&self) -> Vec<serde_json::Value> {
        self.state.acks.lock().clone()
    }

    /// How many access tokens were requested.
    pub fn token_requests(&self) -> usize {
        self.state
            .token_requests
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Live Stream connections.
    pub fn connections(&self) -> usize {
        self.state.conn_count()
    }

    /// Sends SYSTEM `disconnect` to every connection (dropped after the grace period).
    pub fn disconnect_all(&self) {
        stream::disconnect_all(&self.state);
    }

    /// Drops every connection without a close frame.
    pub fn drop_connections(&self) {
        stream::drop_all(&self.state);
    }

    /// Turns every current connection into a zombie (open, silent, answers no pings).
    pub fn zombify_connections(&self) {
        stream::zombify_all(&self.state);
    }

    /// Refuses gateway registration with `status` (`None`: accept again).
    pub fn reject_open(&self, status: Option<u16>) {
        *self.state.reject_open.lock() = status;
    }

    /// Expires every session webhook now.
    pub fn expire_sessions(&self) {
        for s in self.state.sessions.lock().values_mut() {
            s.expires_ms = 0;
        }
    }

    /// Expires every access token now.
    pub fn expire_tokens(&self) {
        self.state.tokens.lock().clear();
    }

    /// Sets the QPS limit.
    pub fn set_qps_limit(&self, limit: Option<u32>) {
        *self.state.qps_limit.lock() = limit;
    }

    /// Throttles `user` on their next send (reported in `flowControlledStaffIdList`).
    pub fn flow_control(&self, user: &str) {
        self.state.flow_controlled.lock().insert(user.to_owned());
    }

    /// Registers a group the robot is in (groups are also registered by [`DingTalkMock::say`]).
    pub fn add_group(&self, conversation_id: &str) {
        self.state.groups.lock().insert(conversation_id.to_owned());
    }
}

fn random_hex(n: usize) -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .cycle()
        .take(n)
        .collect()
}

async fn say(state: &Arc<State>, m: MockMessage) -> Said {
    let group = m.conversation_type.eq_ignore_ascii_case("group");
    let conversation_id = m
        .conversation_id
        .clone()
        .unwrap_or_else(|| format!("cid{}==", random_hex(24)));
    if group {
        state.groups.lock().insert(conversation_id.clone());
    }
    let session = random_hex(32);
    let create_at = now_ms();
    let expires =
        create_at + i64::try_from(state.config.session_ttl.as_millis()).unwrap_or(i64::MAX);
    state.sessions.lock().insert(
        session.clone(),
        Session {
            expires_ms: expires,
            conversation_id: conversation_id.clone(),
        },
    );
    let base = state.base_url.lock().clone();
    let session_webhook = format!("{base}/robot/sendBySession?session={session}");
    let msg_id = m
        .msg_id
        .clone()
        .unwrap_or_else(|| format!("msg{}==", random_hex(20)));
    let text = if group {
        format!(" {}", m.text)
    } else {
        m.text.clone()
    };
    let mut data = json!({
        "msgId": msg_id,
        "msgtype": "text",
        "text": {"content": text},
        "createAt": create_at,
        "conversationType": if group { "2" } else { "1" },
        "conversationId": conversation_id,
        "senderId": format!("$:LWCP_v1:${}", random_hex(16)),
        "senderNick": m.sender_nick,
        "senderStaffId": m.sender_staff_id,
        "senderCorpId": "dingmockcorp",
        "chatbotCorpId": "dingmockcorp",
        "chatbotUserId": "$:LWCP_v1:$mockbot",
        "robotCode": state.config.robot_code,
        "isAdmin": false,
        "sessionWebhook": session_webhook,
        "sessionWebhookExpiredTime": expires,
        "openThreadId": conversation_id,
    });
    if group {
        data["conversationTitle"] = json!(m.conversation_title.unwrap_or_else(|| "测试群".into()));
        data["isInAtList"] = json!(true);
    }
    let data = data.to_string();
    let delivered = match state.config.http_callback_url.clone() {
        Some(url) => post_callback(state, &url, &data).await,
        None => stream::push_callback(state, data),
    };
    Said {
        msg_id,
        session_webhook,
        delivered,
    }
}

async fn post_callback(state: &State, url: &str, data: &str) -> bool {
    let ts = now_ms().to_string();
    let sign = oapi::custom_robot_sign(&ts, &state.config.client_secret);
    let Ok(client) = reqwest_like::client() else {
        return false;
    };
    client.post(url, &ts, &sign, data).await
}

/// A tiny HTTP client for HTTP-mode delivery, on hyper-util, so the mock does not need reqwest.
mod reqwest_like {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    pub(crate) struct Poster(
        Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>,
    );

    pub(crate) fn client() -> Result<Poster, ()> {
        Ok(Poster(Client::builder(TokioExecutor::new()).build_http()))
    }

    impl Poster {
        pub(crate) async fn post(&self, url: &str, ts: &str, sign: &str, body: &str) -> bool {
            let Ok(req) = http::Request::post(url)
                .header("content-type", "application/json; charset=utf-8")
                .header("timestamp", ts)
                .header("sign", sign)
                .body(Full::new(bytes::Bytes::from(body.to_owned())))
            else {
                return false;
            };
            match self.0.request(req).await {
                Ok(resp) => {
                    let ok = resp.status().is_success();
                    let _ = resp.into_body().collect().await;
                    ok
                }
                Err(_) => false,
            }
        }
    }
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/v1.0/oauth2/accessToken", post(openapi::access_token))
        .route("/gettoken", get(oapi::gettoken))
        .route(
            "/v1.0/robot/oToMessages/batchSend",
            post(openapi::batch_send),
        )
        .route("/v1.0/robot/groupMessages/send", post(openapi::group_send))
        .route("/robot/sendBySession", post(oapi::send_by_session))
        .route("/robot/send", post(oapi::robot_send))
        .route("/v1.0/gateway/connections/open", post(stream::open))
        .route("/connect", get(stream::connect))
        .route("/_mock/messages", post(control_say))
        .route("/_mock/outbox", get(control_outbox))
        .route("/_mock/acks", get(control_acks))
        .route("/_mock/disconnect", post(control_disconnect))
        .route("/_mock/drop", post(control_drop))
        .route("/_mock/zombie", post(control_zombie))
        .route("/_mock/expire-sessions", post(control_expire_sessions))
        .route("/_mock/expire-tokens", post(control_expire_tokens))
        .with_state(state)
}

async fn control_say(
    AxState(state): AxState<Arc<State>>,
    axum::Json(m): axum::Json<MockMessage>,
) -> axum::Json<Said> {
    axum::Json(say(&state, m).await)
}

async fn control_outbox(AxState(state): AxState<Arc<State>>) -> axum::Json<Vec<OutboxEntry>> {
    axum::Json(state.outbox.lock().clone())
}

async fn control_acks(AxState(state): AxState<Arc<State>>) -> axum::Json<Vec<serde_json::Value>> {
    axum::Json(state.acks.lock().clone())
}

async fn control_disconnect(AxState(state): AxState<Arc<State>>) -> &'static str {
    stream::disconnect_all(&state);
    "ok"
}

async fn control_drop(AxState(state): AxState<Arc<State>>) -> &'static str {
    stream::drop_all(&state);
    "ok"
}

async fn control_zombie(AxState(state): AxState<Arc<State>>) -> &'static str {
    stream::zombify_all(&state);
    "ok"
}

async fn control_expire_sessions(AxState(state): AxState<Arc<State>>) -> &'static str {
    for s in state.sessions.lock().values_mut() {
        s.expires_ms = 0;
    }
    "ok"
}

async fn control_expire_tokens(AxState(state): AxState<Arc<State>>) -> &'static str {
    state.tokens.lock().clear();
    "ok"
}
