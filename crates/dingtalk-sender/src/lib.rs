//! DingTalk OpenAPI client: token cache, robot sends, session-webhook replies, splitting,
//! throttling.
//!
//! Built from the protocol reference (`shared/reference/dingtalk-protocol.md`, §2–4, §10–11):
//! - **Access token** (`POST /v1.0/oauth2/accessToken`): cached, refreshed 5 minutes before it
//!   expires, fetched by one caller however many ask at once; when DingTalk answers
//!   `400 InvalidAuthentication` or 401 the token is dropped, refreshed once and the call retried
//!   once.
//! - **Sends**: one-to-one [`DingTalkSender::send_to_users`] (`oToMessages/batchSend`, at most 20
//!   users a call: more are split) and [`DingTalkSender::send_to_group`]
//!   (`groupMessages/send`), header `x-acs-dingtalk-access-token`, `msgParam` as a JSON string;
//!   typed [`Message`]s: text, markdown, action cards with one or 2–5 buttons. The seed's
//!   [`DingTalkSender::send_text_message`] is kept (its routing rule is documented there).
//! - **Throttling**: a client-side token bucket per API (20 calls/s by default);
//!   `403 Forbidden.AccessDenied.QpsLimit*`, `400 send.too.fast` / `send.byToken.tooFast` /
//!   `too.many.*` and 429 are retried with backoff from [`retry_policy`] (from 1 s by default);
//!   users in `flowControlledStaffIdList` are retried alone; `invalidStaffIdList` is reported,
//!   never retried; `invalidParameter.*` is permanent. [`Error`] carries DingTalk's `code`,
//!   `message` and `requestid`, with [`Error::is_retryable`], [`Error::is_throttled`] and
//!   [`Error::is_session_expired`].
//! - **Session-webhook replies** ([`DingTalkSender::reply_session`]): `errcode` 300001 is the
//!   typed [`Error::SessionExpired`], so the caller can fall back to the OpenAPI push.
//! - **Long content**: [`split_message`] cuts on paragraph, then line, then character boundaries
//!   (never inside a UTF-8 character), closes and reopens code fences and numbers the parts
//!   "(1/3)"; [`DingTalkSender::send_long_markdown`] sends them in order, each within
//!   DingTalk's 15,000-byte `msgParam` limit. [`reassemble`] undoes it.
//! - **Files users send** ([`DingTalkSender::download_file`]): `messageFiles/download` turns a
//!   callback's `downloadCode` into a temporary URL, whose bytes are fetched (size-capped).
//! - **Interactive cards** ([`DingTalkSender::create_and_deliver_card`],
//!   [`DingTalkSender::update_card`]): created, delivered and updated as the official SDK's
//!   `CardReplier` does (`/v1.0/card/instances`, `/v1.0/card/instances/deliver`).
//! - **Trust**: the platform's roots (on Linux `SSL_CERT_FILE` / `SSL_CERT_DIR` when set) plus
//!   any CA given to [`SenderBuilder::add_root_certificates_pem`].
//! - **Secrets** (app secret, access tokens, session-webhook URLs) never appear in logs, errors
//!   or `Debug` output.
//!
//! Why our own client: the existing crates (protocol reference §9) do not handle
//! `flowControlledStaffIdList`, rate-limit-aware retries, single-flight token refresh or the
//! session-webhook fallback. The token bucket is ours too (`governor` keeps its own clock, which
//! paused-time tests cannot drive).
//!
//! # Example
//!
//! ```no_run
//! use dingtalk_sender::{DingTalkSender, Message, Target};
//!
//! # async fn run() -> Result<(), dingtalk_sender::Error> {
//! let sender = DingTalkSender::builder()
//!     .client_id("dingxxxx")
//!     .client_secret("secret")
//!     .build()?;
//! // A single chat: one-to-one to the user.
//! sender.send_text_message("", "manager1234", "分析完成，请查看报告").await?;
//! // A group, as markdown; a long report goes out as numbered parts.
//! sender
//!     .send_to_group("cid6KeBBLoveMJOGXoYKF5x7EeiodoA==", &Message::markdown("结果", "### 完成"))
//!     .await?;
//! let report = "## 报告\n\n".repeat(5_000);
//! sender
//!     .send_long_markdown(&Target::Group("cid6KeBBLoveMJOGXoYKF5x7EeiodoA==".into()), "报告", &report)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Splitting is pure and needs no server:
//!
//! ```
//! let text = "第一段。\n\n".repeat(1_000);
//! let parts = dingtalk_sender::split_message(&text, 3_500);
//! assert!(parts[0].starts_with(&format!("(1/{}) ", parts.len())));
//! assert!(parts.iter().all(|p| p.len() <= 3_500));
//! assert_eq!(dingtalk_sender::reassemble(&parts), text);
//! ```
//!
//! # Feature flags
//!
//! None.

mod card;
mod client;
mod error;
mod files;
mod message;
mod split;
mod throttle;
mod tls;
mod token;

pub use card::{CardParams, CardSpace};
pub use client::{
    BatchSendReport, DEFAULT_API_BASE, DEFAULT_OAPI_BASE, DingTalkSender, GroupSendReport,
    MAX_USERS_PER_CALL, SendReport, SenderBuilder, Target,
};
pub use error::{Error, Result, TransportKind};
pub use files::DownloadedFile;
pub use message::Message;
pub use split::{DEFAULT_PART_BYTES, MIN_PART_BYTES, MSG_PARAM_LIMIT, reassemble, split_message};
