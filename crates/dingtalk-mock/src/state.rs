//! The mock's state: credentials, tokens, sessions, connections, the outbox and fault knobs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::MockConfig;

/// Something the bot sent, whatever the channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxEntry {
    /// `session_webhook`, `batch_send`, `group_send` or `custom_robot`.
    pub channel: String,
    /// Recipients: user ids, the conversation id, or the session's conversation.
    pub to: Vec<String>,
    /// `msgKey` (OpenAPI) or `msgtype` (webhooks).
    pub kind: String,
    /// The message content as JSON (`msgParam` parsed, or the webhook body's message part).
    pub content: serde_json::Value,
    /// The text a user would read (content / text field).
    pub text: String,
    /// Milliseconds since the epoch.
    pub at_ms: i64,
}

/// A frame for a connection's writer, or an instruction.
#[derive(Debug)]
pub(crate) enum ConnCommand {
    /// Send this text frame.
    Frame(String),
    /// Close without a close frame (TCP drop).
    Drop,
}

pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::UnboundedSender<ConnCommand>,
    /// False after a `disconnect` was sent: nothing more is delivered here.
    pub(crate) delivering: bool,
    /// Set by the zombie knob: the connection neither reads nor writes.
    pub(crate) zombie: std::sync::Arc<AtomicBool>,
}

/// A callback waiting for its ACK (for redelivery).
pub(crate) struct Pending {
    pub(crate) message_id: String,
    pub(crate) data: String,
    pub(crate) sent: Instant,
    pub(crate) redeliveries: u32,
}

pub(crate) struct Session {
    pub(crate) expires_ms: i64,
    pub(crate) conversation_id: String,
}

pub(crate) struct State {
    pub(crate) config: MockConfig,
    pub(crate) base_url: Mutex<String>,
    pub(crate) tokens: Mutex<HashMap<String, Instant>>,
    pub(crate) token_requests: AtomicUsize,
    pub(crate) tickets: Mutex<HashMap<String, Instant>>,
    pub(crate) sessions: Mutex<HashMap<String, Session>>,
    pub(crate) groups: Mutex<HashSet<String>>,
    pub(crate) outbox: Mutex<Vec<OutboxEntry>>,
    pub(crate) acks: Mutex<Vec<serde_json::Value>>,
    pub(crate) conns: Mutex<Vec<Conn>>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) pending: Mutex<Vec<Pending>>,
    pub(crate) qps: Mutex<HashMap<&'static str, (Instant, u32)>>,
    pub(crate) qps_limit: Mutex<Option<u32>>,
    pub(crate) robot_sends: Mutex<VecDeque<Instant>>,
    pub(crate) robot_blocked_until: Mutex<Option<Instant>>,
    pub(crate) reject_open: Mutex<Option<u16>>,
    pub(crate) flow_controlled: Mutex<HashSet<String>>,
    pub(crate) request_log: Mutex<Vec<String>>,
}

impl State {
    pub(crate) fn new(config: MockConfig) -> State {
        State {
            qps_limit: Mutex::new(config.qps_limit),
            flow_controlled: Mutex::new(config.flow_controlled_users.clone()),
            config,
            base_url: Mutex::new(String::new()),
            tokens: Mutex::new(HashMap::new()),
            token_requests: AtomicUsize::new(0),
            tickets: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashSet::new()),
            outbox: Mutex::new(Vec::new()),
            acks: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
            qps: Mutex::new(HashMap::new()),
            robot_sends: Mutex::new(VecDeque::new()),
            robot_blocked_until: Mutex::new(None),
            reject_open: Mutex::new(None),
            request_log: Mutex::new(Vec::new()),
        }
    }

    /// Counts a call against the per-app, per-API QPS limit; `false` when over it.
    pub(crate) fn within_qps(&self, api: &'static str) -> bool {
        let Some(limit) = *self.qps_limit.lock() else {
            return true;
        };
        let now = Instant::now();
        let mut map = self.qps.lock();
        let entry = map.entry(api).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= limit
    }

    pub(crate) fn token_valid(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .get(token)
            .is_some_and(|exp| Instant::now() < *exp)
    }

    pub(crate) fn record(&self, entry: OutboxEntry) {
        self.outbox.lock().push(entry);
    }

    pub(crate) fn log(&self, what: String) {
        self.request_log.lock().push(what);
    }

    pub(crate) fn conn_count(&self) -> usize {
        self.conns.lock().len()
    }

    pub(crate) fn bump_tokens(&self) {
        self.token_requests.fetch_add(1, Ordering::SeqCst);
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
