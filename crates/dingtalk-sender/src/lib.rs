//! DingTalk OpenAPI client: token cache, robot sends, session-webhook replies, splitting,
//! throttling.
//!
//! Built from `shared/reference/dingtalk-protocol.md` (§2–4, §10–11):
//! - the access token (`POST /v1.0/oauth2/accessToken`) is cached, refreshed 5 minutes before it
//!   expires, fetched by one caller at a time however many ask, and refreshed once more when
//!   DingTalk answers `InvalidAuthentication` or 401;
//! - one-to-one sends (`oToMessages/batchSend`, at most 20 users a call: more are split) and group
//!   sends (`groupMessages/send`), `msgParam` as a JSON string; text, markdown and action cards;
//! - a client-side token bucket per API (20 calls/s by default); `403 ...QpsLimit*`,
//!   `send.too.fast` and friends are retried with backoff; users in `flowControlledStaffIdList`
//!   are retried alone; `invalidStaffIdList` is reported, never retried;
//! - session-webhook replies, with `errcode` 300001 as the typed [`Error::SessionExpired`] so the
//!   caller falls back to the OpenAPI push;
//! - [`split_message`] for long content (paragraph, line, then character boundaries; code fences
//!   closed and reopened; parts numbered "(1/3)").
//!
//! We wrote our own because none of the existing crates handles `flowControlledStaffIdList`,
//! rate-limit-aware retries or the session-webhook fallback (protocol reference §9).
//!
//! # Example
//!
//! ```no_run
//! use dingtalk_sender::{DingTalkSender, Message};
//!
//! # async fn run() -> Result<(), dingtalk_sender::Error> {
//! let sender = DingTalkSender::builder().client_id("dingxxxx").client_secret("secret").build()?;
//! sender.send_text_message("", "manager1234", "分析完成，请查看报告").await?;
//! sender.send_to_group("cid6KeBBLoveMJOGXoYKF5x7EeiodoA==", &Message::markdown("结果", "### 完成")).await?;
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
mod message;
mod split;

pub use client::{
    BatchSendReport, DEFAULT_API_BASE, DEFAULT_OAPI_BASE, DingTalkSender, MAX_USERS_PER_CALL,
    SenderBuilder, Target,
};
pub use error::Error;
pub use message::Message;
pub use split::{DEFAULT_PART_BYTES, reassemble, split_message};
