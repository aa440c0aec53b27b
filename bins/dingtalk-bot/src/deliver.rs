//! Getting an answer to the person who asked, and knowing when it did not arrive.
//!
//! A reply goes through the conversation's session webhook while it is valid; a result that must
//! be pushed goes through `batchSend` (single chat, to the `senderStaffId`) or
//! `groupMessages/send`. HTTP 200 from `batchSend` is not delivery: users DingTalk lists as
//! invalid, filtered or still flow-controlled did not get it, and neither does a single-chat
//! user without a `senderStaffId` once the session webhook is gone. Those end as
//! [`DeliveryError::Undelivered`], which the job handler turns into a failed job with the
//! reason, never "result pushed".

use std::time::Duration;

use dingtalk_sender::{DingTalkSender, Message, Target};

use crate::bot::BotJobPayload;

/// A part of an answer through the session webhook, at most this many bytes (DingTalk's
/// markdown renders long messages poorly; the same limit as pushed parts).
pub const SESSION_PART_BYTES: usize = dingtalk_sender::DEFAULT_PART_BYTES;

/// Why an answer did not go out.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Nobody received it, and trying again will not change that.
    #[error("not delivered: {0}")]
    Undelivered(Undelivered),
    /// The call failed (transport, throttling past the retries, a DingTalk error): retryable
    /// on the durable schedule.
    #[error(transparent)]
    Failed(#[from] dingtalk_sender::Error),
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
        [
            Undelivered::InvalidUser,
            Undelivered::Filtered,
            Undelivered::FlowControlled,
            Undelivered::NoStaffId,
        ]
        .into_iter()
        .find(|u| reason.starts_with(u.as_str()))
    }

    fn from_sender(reason: &str) -> Undelivered {
        match reason {
            "invalid user" => Undelivered::InvalidUser,
            "filtered" => Undelivered::Filtered,
            _ => Undelivered::FlowControlled,
        }
    }
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether the job's session webhook is usable for `margin` more.
pub fn session_valid(job: &BotJobPayload, margin: Duration) -> bool {
    let margin_ms = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
    !job.session_webhook.is_empty() && now_ms().saturating_add(margin_ms) < job.session_expires_ms
}

/// Replies in the conversation, in numbered parts when long. `Ok(false)`: the webhook has
/// expired (nothing, or only earlier parts, went out).
async fn reply_in_parts(
    sender: &DingTalkSender,
    job: &BotJobPayload,
    title: &str,
    text: &str,
) -> Result<bool, dingtalk_sender::Error> {
    let at = if job.group && !job.no_staff_id {
        vec![job.user_id.clone()]
    } else {
        Vec::new()
    };
    let parts = if text.len() <= SESSION_PART_BYTES {
        vec![text.to_owned()]
    } else {
        dingtalk_sender::split_message(text, SESSION_PART_BYTES)
    };
    for part in &parts {
        match sender
            .reply_session(&job.session_webhook, &Message::markdown(title, part), &at)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_session_expired() => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Delivers `text` to the asker. Through the session webhook while it is valid when
/// `prefer_session` (or when there is no staff id to push to), in numbered parts if long;
/// otherwise, or when the webhook turns out expired, pushed through the OpenAPI. Returns the
/// channel used.
///
/// # Errors
///
/// [`DeliveryError::Undelivered`] when DingTalk reported the user unreachable or there is no
/// one to push to; [`DeliveryError::Failed`] when a call failed.
pub async fn deliver(
    sender: &DingTalkSender,
    job: &BotJobPayload,
    title: &str,
    text: &str,
    prefer_session: bool,
    margin: Duration,
) -> Result<&'static str, DeliveryError> {
    let no_push = !job.group && job.no_staff_id;
    if (prefer_session || no_push) && session_valid(job, margin) {
        if reply_in_parts(sender, job, title, text).await? {
            return Ok("session_webhook");
        }
        tracing::info!("session webhook expired; pushing through the OpenAPI instead");
    }
    if no_push {
        return Err(DeliveryError::Undelivered(Undelivered::NoStaffId));
    }
    let target = if job.group {
        Target::Group(job.conversation_id.clone())
    } else {
        Target::Users(vec![job.user_id.clone()])
    };
    match sender.send_long_markdown(&target, title, text).await {
        Ok(_) => Ok(if job.group {
            "group_send"
        } else {
            "batch_send"
        }),
        Err(dingtalk_sender::Error::NotDelivered { reason, .. }) => {
            Err(DeliveryError::Undelivered(Undelivered::from_sender(reason)))
        }
        Err(e) => Err(DeliveryError::Failed(e)),
    }
}

/// Tells the user in the conversation, while its session webhook is still valid, that a result
/// did not reach them. Returns whether the notice went out.
pub async fn tell_undelivered(
    sender: &DingTalkSender,
    job: &BotJobPayload,
    task_id: &str,
    why: Undelivered,
) -> bool {
    if !session_valid(job, Duration::ZERO) {
        return false;
    }
    let text = format!(
        "任务 {task_id} 已处理完成，但结果未能推送给您：{}。",
        why.zh()
    );
    match reply_in_parts(sender, job, "结果未送达", &text).await {
        Ok(sent) => sent,
        Err(e) => {
            tracing::warn!(task_id, error = %e, "could not tell the user about the undelivered result");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_reason_reads_back() {
        for u in [
            Undelivered::InvalidUser,
            Undelivered::Filtered,
            Undelivered::FlowControlled,
            Undelivered::NoStaffId,
        ] {
            let stored = DeliveryError::Undelivered(u).to_string();
            assert_eq!(Undelivered::from_error(&stored), Some(u), "{stored}");
        }
        assert_eq!(Undelivered::from_error("push failed: timeout"), None);
    }
}
