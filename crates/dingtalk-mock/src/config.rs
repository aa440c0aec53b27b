//! How the mock behaves: credentials, limits, lifetimes and delivery mode.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use crate::MockTls;

/// How the mock behaves. Every field has a default taken from the protocol reference.
///
/// Build it with struct update syntax: `MockConfig { qps_limit: None, ..MockConfig::default() }`.
/// `Debug` redacts the secrets.
#[derive(Clone)]
pub struct MockConfig {
    /// Accepted Client ID (app key) for tokens and Stream registration.
    pub client_id: String,
    /// Accepted Client Secret; also the key of HTTP-mode callback signatures.
    pub client_secret: String,
    /// The `robotCode` robot sends must carry (for an internal-app robot: the client id).
    pub robot_code: String,
    /// Calls per second per app per API before `403 Forbidden.AccessDenied.QpsLimitForAppkeyAndApi`
    /// (default 20, DingTalk's standard edition; `None`: unlimited).
    pub qps_limit: Option<u32>,
    /// Session webhook lifetime from `createAt` (5,400 s).
    pub session_ttl: Duration,
    /// Access token lifetime (7,200 s).
    pub token_ttl: Duration,
    /// Stream ticket lifetime (90 s); tickets are single use as well.
    pub ticket_ttl: Duration,
    /// Redeliver un-ACKed robot callbacks (no ACK, or an ACK whose `code` is not 200) after
    /// this long, with a new `headers.messageId` and the same `data.msgId`. Default 60 s: the
    /// cloud redelivers after 16-60 s in field reports (protocol reference §5.7), whatever
    /// its documentation says. While it is set, a message said with no live connection is
    /// held and handed to the next connection that subscribes to its topic. `None`: fire and
    /// forget, a message said with no connection is lost.
    pub redelivery_after: Option<Duration>,
    /// How many times one callback is redelivered at most (3).
    pub max_redeliveries: u32,
    /// Send a SYSTEM `ping` with a random `opaque` to every live connection this often
    /// (`None`, the default: only on [`DingTalkMock::ping_now`](crate::DingTalkMock::ping_now)).
    pub ping_interval: Option<Duration>,
    /// Drop a connection (no close frame) whose ping was not echoed within this long
    /// (`None`, the default: never).
    pub ping_timeout: Option<Duration>,
    /// After a SYSTEM `disconnect`, how long the socket stays open before the mock drops it
    /// (10 s, as DingTalk documents).
    pub disconnect_grace: Duration,
    /// Users reported in `flowControlledStaffIdList` (and not delivered to) on their next
    /// `batchSend`; each is throttled once, then clears, as real throttling does.
    pub flow_controlled_users: HashSet<String>,
    /// Users that are not valid user ids of the organisation: always in `invalidStaffIdList`.
    pub invalid_users: HashSet<String>,
    /// Groups (`openConversationId`) the robot is a member of, besides those learnt from
    /// group messages said through the mock.
    pub groups: HashSet<String>,
    /// HTTP mode: POST said messages to this URL (with `timestamp` and `sign` headers) instead of
    /// delivering them over Stream.
    pub http_callback_url: Option<String>,
    /// The custom group robot served at `/robot/send`.
    pub custom_robot: CustomRobotConfig,
    /// TLS mode (`None`, the default: plain `http://` and `ws://`). With it the mock serves
    /// `https://` only, and the Stream gateway hands out `wss://` endpoints, as DingTalk does.
    pub tls: Option<MockTls>,
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
            redelivery_after: Some(Duration::from_secs(60)),
            max_redeliveries: 3,
            ping_interval: None,
            ping_timeout: None,
            disconnect_grace: Duration::from_secs(10),
            flow_controlled_users: HashSet::new(),
            invalid_users: HashSet::new(),
            groups: HashSet::new(),
            http_callback_url: None,
            custom_robot: CustomRobotConfig::default(),
            tls: None,
        }
    }
}

impl fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("robot_code", &self.robot_code)
            .field("qps_limit", &self.qps_limit)
            .field("session_ttl", &self.session_ttl)
            .field("token_ttl", &self.token_ttl)
            .field("ticket_ttl", &self.ticket_ttl)
            .field("redelivery_after", &self.redelivery_after)
            .field("max_redeliveries", &self.max_redeliveries)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("disconnect_grace", &self.disconnect_grace)
            .field("flow_controlled_users", &self.flow_controlled_users)
            .field("invalid_users", &self.invalid_users)
            .field("groups", &self.groups)
            .field(
                "http_callback_url",
                &self.http_callback_url.as_ref().map(|_| "<set>"),
            )
            .field("custom_robot", &self.custom_robot)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The custom group robot (`POST /robot/send?access_token=`), protocol reference §8.
///
/// `Debug` redacts the token and the secret.
#[derive(Clone)]
pub struct CustomRobotConfig {
    /// The robot's `access_token` (others get `300005 token is not exist`).
    pub access_token: String,
    /// The `SEC...` signing secret (`None`: the robot is not signed and `timestamp`/`sign` are
    /// ignored).
    pub secret: Option<String>,
    /// Security keywords: when not empty, a message must contain one of them
    /// (`310000 keywords not in content`).
    pub keywords: Vec<String>,
    /// Messages per minute before `130101` (20).
    pub per_minute: u32,
    /// How long the robot stays throttled after exceeding the rate (10 minutes).
    pub block_for: Duration,
}

impl Default for CustomRobotConfig {
    fn default() -> Self {
        CustomRobotConfig {
            access_token: "mock-robot-token".into(),
            secret: Some("SECmockrobotsecret".into()),
            keywords: Vec::new(),
            per_minute: 20,
            block_for: Duration::from_secs(600),
        }
    }
}

impl fmt::Debug for CustomRobotConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomRobotConfig")
            .field("access_token", &"<redacted>")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("keywords", &self.keywords)
            .field("per_minute", &self.per_minute)
            .field("block_for", &self.block_for)
            .finish()
    }
}
