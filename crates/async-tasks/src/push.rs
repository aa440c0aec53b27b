//! How answers reach the person who asked: the [`Push`] trait a chat platform implements, and
//! the ways a delivery fails ([`DeliveryError`], [`Undelivered`]).
//!
//! [`DingTalkPush`](crate::DingTalkPush) (feature `dingtalk`) is the DingTalk implementation;
//! another service implements [`Push`] for its own chat (only [`Push::deliver`] is required:
//! cards and attachments are optional).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::job::BotJob;

/// A boxed error from a chat platform.
pub type PushError = Box<dyn std::error::Error + Send + Sync>;

/// A progress card's variables (name to value).
pub type CardParams = BTreeMap<String, String>;

/// A downloaded attachment.
#[derive(Debug, Clone, Default)]
pub struct Downloaded {
    /// Its content.
    pub bytes: Vec<u8>,
    /// What the file server said it is.
    pub content_type: Option<String>,
    /// A temporary download URL handed to the processor (may be empty).
    pub url: String,
}

/// Delivers a job's answers and notices to its asker.
#[async_trait]
pub trait Push: Send + Sync + 'static {
    /// Delivers `text` to the asker of `job`: in the conversation (its session webhook) while it
    /// is valid for `margin` more when `prefer_session`, else pushed. Returns the channel used
    /// (stored with the result, e.g. `session_webhook`, `batch_send`).
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Undelivered`] when the platform reported the user unreachable;
    /// [`DeliveryError::Failed`] when a call failed (retried on the durable schedule).
    async fn deliver(
        &self,
        job: &BotJob,
        title: &str,
        text: &str,
        prefer_session: bool,
        margin: Duration,
    ) -> Result<&'static str, DeliveryError>;

    /// Tells the asker in the conversation that a result did not reach them. Returns whether
    /// the notice went out (default: nothing is said).
    async fn tell_undelivered(&self, job: &BotJob, task_id: &str, why: Undelivered) -> bool {
        let _ = (job, task_id, why);
        false
    }

    /// Creates and delivers a progress card for `job` from `template` (default: the platform
    /// has no cards, `Ok(false)`). `Ok(false)` also when the job has nowhere to put a card.
    ///
    /// # Errors
    ///
    /// The platform refused the card (the bot then replies in text).
    async fn create_card(
        &self,
        template: &str,
        job: &BotJob,
        out_track_id: &str,
        params: &CardParams,
    ) -> Result<bool, PushError> {
        let _ = (template, job, out_track_id, params);
        Ok(false)
    }

    /// Updates a card made by [`Push::create_card`] (default: nothing to update).
    ///
    /// # Errors
    ///
    /// The platform refused the update.
    async fn update_card(&self, out_track_id: &str, params: &CardParams) -> Result<(), PushError> {
        let _ = (out_track_id, params);
        Ok(())
    }

    /// The start of a long answer in at most `max_bytes` bytes, shown on a done card (default:
    /// [`progress::first_part`](crate::progress::first_part)).
    fn excerpt(&self, text: &str, max_bytes: usize) -> String {
        crate::progress::first_part(text, max_bytes)
    }

    /// Downloads an attachment by its download code (default: unsupported).
    ///
    /// # Errors
    ///
    /// The download failed.
    async fn download(&self, download_code: &str) -> Result<Downloaded, PushError> {
        let _ = download_code;
        Err("attachments are not supported".into())
    }
}

/// Why an answer did not go out.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Nobody received it, and trying again will not change that.
    #[error("not delivered: {0}")]
    Undelivered(Undelivered),
    /// The call failed (transport, throttling past the retries, a platform error): retryable
    /// on the durable schedule.
    #[error(transparent)]
    Failed(PushError),
}

/// The reasons a result is known not to have arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// `invalidStaffIdList`.
    InvalidUser,
    /// `filteredStaffIdList`.
    Filtered,
    /// `flowControlledStaffIdList`, still after the retries.
    FlowControlled,
    /// A single chat without `senderStaffId` (an external user, or a robot not yet published)
    /// whose session webhook has expired: there is nobody to push to.
    NoStaffId,
}

impl Undelivered {
    const ALL: [Undelivered; 4] = [
        Undelivered::InvalidUser,
        Undelivered::Filtered,
        Undelivered::FlowControlled,
        Undelivered::NoStaffId,
    ];

    /// A stable name (logs, metrics, the stored error).
    pub fn as_str(self) -> &'static str {
        match self {
            Undelivered::InvalidUser => "invalid user",
            Undelivered::Filtered => "filtered",
            Undelivered::FlowControlled => "flow-controlled",
            Undelivered::NoStaffId => "no senderStaffId",
        }
    }

    /// For the user.
    pub fn zh(self) -> &'static str {
        match self {
            Undelivered::InvalidUser => {
                "钉钉报告您的账号不是本组织的有效用户（invalidStaffIdList）"
            }
            Undelivered::Filtered => {
                "钉钉过滤了这条推送（filteredStaffIdList），例如您尚未与机器人单聊过"
            }
            Undelivered::FlowControlled => {
                "钉钉对您的推送限流（flowControlledStaffIdList），重试后仍未送达"
            }
            Undelivered::NoStaffId => {
                "消息里没有 senderStaffId（外部用户或机器人尚未发布），会话过期后无法主动推送"
            }
        }
    }

    /// The reason stored as a job's error (`not delivered: <reason>`), read back.
    pub fn from_error(error: &str) -> Option<Undelivered> {
        let reason = error.strip_prefix("not delivered: ")?;
        Undelivered::ALL
            .into_iter()
            .find(|u| reason.starts_with(u.as_str()))
    }
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_reason_reads_back() {
        for u in Undelivered::ALL {
            let stored = DeliveryError::Undelivered(u).to_string();
            assert_eq!(Undelivered::from_error(&stored), Some(u), "{stored}");
        }
        assert_eq!(Undelivered::from_error("push failed: timeout"), None);
    }
}
