//! The mock's shared state: tokens, sessions, connections, the outbox and the fault knobs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::MockConfig;

/// Something the bot sent, whatever the channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct OutboxEntry {
    /// `session_webhook`, `batch_send`, `group_send`, `custom_robot` or `http_callback_reply`
    /// (a message returned as the body of an HTTP-mode callback response).
    pub channel: String,
    /// Recipients: the delivered user ids (`batch_send`), the `openConversationId`
    /// (`group_send`), the session's or callback's conversation id, or `custom-robot` (never
    /// the robot's access token: it is a credential).
    pub to: Vec<String>,
    /// `msgKey` (OpenAPI) or `msgtype` (webhooks).
    pub kind: String,
    /// The message itself: `msgParam` parsed (OpenAPI) or the body's `<msgtype>` object.
    pub content: Value,
    /// The text a user reads: `content` or `text` of the message (empty when it has neither).
    pub text: String,
    /// `at.atUserIds` of a webhook message.
    pub at_user_ids: Vec<String>,
    /// `at.isAtAll` of a webhook message.
    pub is_at_all: bool,
    /// When it arrived, epoch ms.
    pub at_ms: i64,
}

/// A SYSTEM `ping` the mock sent and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PingRecord {
    /// The ping frame's `headers.messageId`.
    pub message_id: String,
    /// The connection's `connectionId`.
    pub connection_id: String,
    /// The random `opaque` sent in `data`.
    pub opaque: String,
    /// Whether a frame with the same `messageId` came back.
    pub answered: bool,
    /// Whether that frame's `data` parsed to the same JSON as the ping's (the echo DingTalk
    /// expects; bytes may differ, e.g. Python adds a space).
    pub echo_matches: bool,
}

/// An API whose next calls can be made to fail with [`DingTalkMock::fail_next`](crate::DingTalkMock::fail_next).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Api {
    /// `POST /v1.0/oauth2/accessToken`.
    AccessToken,
    /// `POST /v1.0/robot/oToMessages/batchSend`.
    BatchSend,
    /// `POST /v1.0/robot/groupMessages/send`.
    GroupSend,
    /// `POST /v1.0/gateway/connections/open`.
    GatewayOpen,
    /// `POST /v1.0/robot/messageFiles/download` (the `downloadCode` to `downloadUrl` call).
    FileDownload,
    /// `POST /v1.0/card/instances` (create a card).
    CardCreate,
    /// `POST /v1.0/card/instances/deliver`.
    CardDeliver,
    /// `PUT /v1.0/card/instances` (update a card's data).
    CardUpdate,
}

/// An injected failure: the status and the `{"code","message","requestid"}` body to answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockFault {
    /// HTTP status.
    pub status: u16,
    /// `code` of the body.
    pub code: String,
    /// `message` of the body.
    pub message: String,
}

impl MockFault {
    /// A fault with this status, code and message.
    pub fn new(status: u16, code: &str, message: &str) -> MockFault {
        MockFault {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    /// `400 send.too.fast`, the robot-send throttle seen in production.
    pub fn send_too_fast() -> MockFault {
        MockFault::new(400, "send.too.fast", "发送速度太快")
    }

    /// `503 ServiceUnavailable`.
    pub fn unavailable() -> MockFault {
        MockFault::new(503, "ServiceUnavailable", "服务暂时不可用")
    }
}

/// A frame for a connection's writer, or an instruction.
#[derive(Debug)]
pub(crate) enum ConnCommand {
    /// Send this text frame.
    Frame(String),
    /// Close the TCP connection without a close frame.
    Drop,
}

pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) connection_id: String,
    /// The CALLBACK topics its registration subscribed to: only these are delivered here.
    pub(crate) topics: HashSet<String>,
    pub(crate) tx: mpsc::UnboundedSender<ConnCommand>,
    /// False after a `disconnect` was sent: nothing more is delivered here.
    pub(crate) delivering: bool,
    /// True: the connection neither reads nor writes (no frames, no pongs).
    pub(crate) zombie: watch::Sender<bool>,
}

impl Conn {
    pub(crate) fn live(&self) -> bool {
        self.delivering && !*self.zombie.borrow()
    }
}

/// A callback waiting for its ACK (or, not delivered yet, for a connection).
pub(crate) struct Pending {
    pub(crate) message_id: String,
    pub(crate) topic: String,
    pub(crate) data: String,
    /// False while no live connection subscribed to `topic` has had it.
    pub(crate) delivered: bool,
}

/// A registration's single-use ticket and what it subscribed to.
pub(crate) struct Ticket {
    pub(crate) deadline: Instant,
    pub(crate) topics: HashSet<String>,
}

/// The bytes behind a `downloadCode`.
#[derive(Clone)]
pub(crate) struct MockFile {
    pub(crate) bytes: Vec<u8>,
    pub(crate) content_type: String,
}

pub(crate) struct Session {
    pub(crate) deadline: Instant,
    pub(crate) conversation_id: String,
}

pub(crate) struct State {
    pub(crate) config: MockConfig,
    pub(crate) app_id: String,
    pub(crate) base_url: String,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: Mutex<JoinSet<()>>,
    pub(crate) tokens: Mutex<HashMap<String, Instant>>,
    pub(crate) token_requests: AtomicUsize,
    pub(crate) tickets: Mutex<HashMap<String, Ticket>>,
    /// Live lifetimes (the config's, changed by knobs).
    pub(crate) token_ttl: Mutex<Duration>,
    pub(crate) ticket_ttl: Mutex<Duration>,
    pub(crate) session_ttl: Mutex<Duration>,
    /// `downloadCode` -> bytes, for `messageFiles/download`.
    pub(crate) files: Mutex<HashMap<String, MockFile>>,
    /// What `POST /media/upload` received, in order.
    pub(crate) media: Mutex<Vec<crate::oapi::UploadedMedia>>,
    /// Download URL token -> `downloadCode`.
    pub(crate) download_tokens: Mutex<HashMap<String, String>>,
    pub(crate) cards: Mutex<crate::cards::Cards>,
    pub(crate) sessions: Mutex<HashMap<String, Session>>,
    pub(crate) groups: Mutex<HashSet<String>>,
    pub(crate) outbox: Mutex<Vec<OutboxEntry>>,
    pub(crate) acks: Mutex<Vec<Value>>,
    /// CALLBACK frames handed to a connection and not ACKed yet, by `messageId`.
    pub(crate) callback_sent: Mutex<HashMap<String, Instant>>,
    /// From handing a CALLBACK to its connection to reading its ACK, in arrival order.
    pub(crate) ack_latencies: Mutex<Vec<Duration>>,
    /// Every outbox entry as it arrives, for waiters that must not poll.
    pub(crate) outbox_tx: broadcast::Sender<OutboxEntry>,
    pub(crate) pings: Mutex<Vec<(PingRecord, Value)>>,
    pub(crate) conns: Mutex<Vec<Conn>>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) pending: Mutex<Vec<Pending>>,
    pub(crate) qps: Mutex<HashMap<Api, (Instant, u32)>>,
    pub(crate) qps_limit: Mutex<Option<u32>>,
    pub(crate) robot_sends: Mutex<VecDeque<Instant>>,
    pub(crate) robot_blocked_until: Mutex<Option<Instant>>,
    pub(crate) reject_open: Mutex<Option<u16>>,
    pub(crate) zombie_mode: Mutex<bool>,
    pub(crate) flow_controlled: Mutex<HashSet<String>>,
    pub(crate) faults: Mutex<HashMap<Api, VecDeque<MockFault>>>,
    pub(crate) poster: crate::poster::Poster,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("base_url", &self.base_url)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl State {
    pub(crate) fn new(config: MockConfig, base_url: String) -> State {
        State {
            qps_limit: Mutex::new(config.qps_limit),
            flow_controlled: Mutex::new(config.flow_controlled_users.clone()),
            token_ttl: Mutex::new(config.token_ttl),
            ticket_ttl: Mutex::new(config.ticket_ttl),
            session_ttl: Mutex::new(config.session_ttl),
            files: Mutex::new(HashMap::new()),
            media: Mutex::new(Vec::new()),
            download_tokens: Mutex::new(HashMap::new()),
            cards: Mutex::new(crate::cards::Cards::default()),
            groups: Mutex::new(config.groups.clone()),
            config,
            app_id: uuid::Uuid::new_v4().to_string(),
            base_url,
            shutdown: CancellationToken::new(),
            tasks: Mutex::new(JoinSet::new()),
            tokens: Mutex::new(HashMap::new()),
            token_requests: AtomicUsize::new(0),
            tickets: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            outbox: Mutex::new(Vec::new()),
            acks: Mutex::new(Vec::new()),
            callback_sent: Mutex::new(HashMap::new()),
            ack_latencies: Mutex::new(Vec::new()),
            outbox_tx: broadcast::channel(OUTBOX_SUBSCRIPTION_CAPACITY).0,
            pings: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
            qps: Mutex::new(HashMap::new()),
            robot_sends: Mutex::new(VecDeque::new()),
            robot_blocked_until: Mutex::new(None),
            reject_open: Mutex::new(None),
            zombie_mode: Mutex::new(false),
            faults: Mutex::new(HashMap::new()),
            poster: crate::poster::poster(),
        }
    }

    /// Runs `fut` as a task owned by the mock (aborted when it stops).
    pub(crate) fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    /// Counts a call against the per-app, per-API QPS limit; `false` when over it.
    pub(crate) fn within_qps(&self, api: Api) -> bool {
        let Some(limit) = *self.qps_limit.lock() else {
            return true;
        };
        let now = Instant::now();
        let mut map = self.qps.lock();
        let entry = map.entry(api).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= limit
    }

    /// The next injected failure for `api`, if any.
    pub(crate) fn take_fault(&self, api: Api) -> Option<MockFault> {
        self.faults
            .lock()
            .get_mut(&api)
            .and_then(VecDeque::pop_front)
    }

    pub(crate) fn token_valid(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .get(token)
            .is_some_and(|exp| Instant::now() < *exp)
    }

    /// DingTalk returns the same token while it is valid, and renews its lifetime; after it
    /// expired (or was expired by a knob), a new one.
    pub(crate) fn issue_token(&self) -> String {
        let now = Instant::now();
        let deadline = now + *self.token_ttl.lock();
        let mut tokens = self.tokens.lock();
        tokens.retain(|_, exp| now < *exp);
        if let Some((token, exp)) = tokens.iter_mut().next() {
            *exp = deadline;
            return token.clone();
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        tokens.insert(token.clone(), deadline);
        token
    }

    pub(crate) fn record(&self, entry: OutboxEntry) {
        // No subscriber is the common case; a send error then only means nobody listens.
        let _ = self.outbox_tx.send(entry.clone());
        self.outbox.lock().push(entry);
    }

    /// `expireIn` of a token issued now: its lifetime in whole seconds, rounded up.
    pub(crate) fn token_ttl_secs(&self) -> u64 {
        let ttl = *self.token_ttl.lock();
        ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
    }

    pub(crate) fn bump_tokens(&self) {
        self.token_requests.fetch_add(1, Ordering::SeqCst);
    }
}

/// How many outbox entries a slow subscriber may fall behind before it sees `Lagged`.
const OUTBOX_SUBSCRIPTION_CAPACITY: usize = 65_536;

/// Wall-clock epoch milliseconds (what DingTalk puts in `createAt`, `time`, expiry fields).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `n` random lowercase hex digits.
pub(crate) fn random_hex(n: usize) -> String {
    let mut s = String::with_capacity(n + 32);
    while s.len() < n {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}
