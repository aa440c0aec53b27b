//! DingTalk Stream-mode client and HTTP-callback verification.
//!
//! Stream mode: the client registers with the gateway (`POST /v1.0/gateway/connections/open`),
//! opens a WebSocket to the returned endpoint with its single-use ticket, and then:
//! - ACKs every CALLBACK frame at once (code 200, same `messageId`), before the message is
//!   handled, because a late ACK is what makes DingTalk redeliver;
//! - answers SYSTEM `ping` with its `data`, ignores unknown SYSTEM topics;
//! - on SYSTEM `disconnect`, opens a new connection before dropping the old one;
//! - reconnects with exponential backoff and jitter (1 s to 60 s, reset by a healthy frame);
//! - runs a watchdog: with no frame for half the idle time it pings, at the full idle time it
//!   reconnects (zombie connections are the most reported problem of the official SDKs);
//! - drops redeliveries (same `data.msgId`, new `messageId`) for 10 minutes.
//!
//! HTTP mode: [`callback_router`] verifies `timestamp` and `sign` (base64 HMAC-SHA256 of
//! `timestamp + "\n" + appSecret`, one-hour window, constant-time compare) and answers 401 to
//! anything else.
//!
//! # TLS
//!
//! The gateway request (`https://`) and the Stream socket (`wss://`, what DingTalk hands
//! out) trust the same roots, through `rustls-platform-verifier` (the verifier reqwest uses):
//! - on Linux, the system store (`/etc/ssl/certs` and the other usual places), or, when set,
//!   the PEM file `SSL_CERT_FILE` and the directories `SSL_CERT_DIR` name instead;
//! - on macOS and Windows, the OS's own certificate verifier;
//! - plus any [`StreamConfig::add_root_certificates_pem`] adds (a local mock's CA, a
//!   company proxy's).
//!
//! rustls runs with the `ring` provider passed to it explicitly: this crate installs no
//! process-wide crypto provider. Plain `ws://` and `http://` endpoints (a local mock) work too.
//!
//! We wrote our own because none of the existing crates ACKs before handling, deduplicates by
//! `msgId`, switches connections make-before-break, or detects zombie connections (see the
//! protocol reference, section 9).
//!
//! # Example
//!
//! ```no_run
//! use dingtalk_stream::{StreamClient, StreamConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = StreamConfig::new("dingxxxx", "secret");
//! let (handle, mut messages) = StreamClient::new(config)?.start();
//! while let Some(incoming) = messages.recv().await {
//!     println!("{}: {:?}", incoming.message.sender_nick, incoming.message.extract_text());
//! }
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod client;
mod dedupe;
mod frame;
mod http_mode;
mod message;
mod proxy;
mod sign;
mod tls;

pub use client::{
    DEFAULT_API_BASE, StatsSnapshot, StreamClient, StreamConfig, StreamHandle, StreamStats,
};
pub use dedupe::Deduper;
pub use frame::{AckFrame, BOT_MESSAGE_TOPIC, DownstreamFrame};
pub use http_mode::callback_router;
pub use message::{
    CONVERSATION_GROUP, CONVERSATION_SINGLE, MessageBody, RobotMessage, TextContent,
};
pub use sign::{MAX_CLOCK_SKEW_MS, SignatureError, callback_signature, verify_callback};
/// The proxy type of [`StreamConfig::proxy`], shared with the webhook client.
pub use webhook_client::EgressProxy;

/// A robot message received over Stream or HTTP, already ACKed and deduplicated.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The message.
    pub message: RobotMessage,
    /// The frame's `messageId` (empty in HTTP mode).
    pub message_id: String,
    /// The frame's topic.
    pub topic: String,
}

/// Errors of the Stream client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The gateway refused the registration.
    #[error("gateway answered {status}: {body}")]
    Gateway {
        /// HTTP status.
        status: u16,
        /// The body, truncated.
        body: String,
    },
    /// The registration request failed in transport.
    #[error("gateway request failed: {0}")]
    Http(String),
    /// The WebSocket failed.
    #[error("websocket error: {0}")]
    WebSocket(String),
}

impl Error {
    /// Whether the gateway refused the credentials (401/403): retrying will not help until the
    /// configuration changes.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Error::Gateway {
                status: 401 | 403,
                ..
            }
        )
    }
}
