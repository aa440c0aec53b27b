//! [`DingTalkPush`]: [`Push`] over [`dingtalk_sender`] (feature `dingtalk`, on by default).
//!
//! A reply goes through the conversation's session webhook while it is valid; a result that must
//! be pushed goes through `batchSend` (single chat, to the `senderStaffId`) or
//! `groupMessages/send`. HTTP 200 from `batchSend` is not delivery: users DingTalk lists as
//! invalid, filtered or still flow-controlled did not get it, and neither does a single-chat
//! user without a `senderStaffId` once the session webhook is gone. Those end as
//! [`DeliveryError::Undelivered`], which the job handler turns into a failed job with the
//! reason, never "result pushed".

use std::time::Duration;

use async_trait::async_trait;
use dingtalk_sender::{CardSpace, DingTalkSender, Message, Target};

use crate::job::BotJob;
use crate::push::{CardParams, DeliveryError, Downloaded, Push, PushError, Undelivered};

/// A part of an answer through the session webhook, at most this many bytes (DingTalk's
/// markdown renders long messages poorly; the same limit as pushed parts).
pub const SESSION_PART_BYTES: usize = dingtalk_sender::DEFAULT_PART_BYTES;

/// [`Push`] through DingTalk: session webhooks, robot pushes, interactive cards, file downloads.
#[derive(Debug, Clone)]
pub struct DingTalkPush {
    sender: DingTalkSender,
}

impl DingTalkPush {
    /// Pushes through `sender`.
    pub fn new(sender: DingTalkSender) -> DingTalkPush {
        DingTalkPush { sender }
    }

    /// Replies in the conversation, in numbered parts when long. `Ok(false)`: the webhook has
    /// expired (nothing, or only earlier parts, went out).
    async fn reply_in_parts(
        &self,
        job: &BotJob,
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
            match self
                .sender
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
}

/// Where a job's card goes: the group, or the user's chat with the robot (which needs a staff id).
pub fn card_space(job: &BotJob) -> Option<CardSpace> {
    if job.group {
        Some(CardSpace::Group(job.conversation_id.clone()))
    } else if job.no_staff_id {
        None
    } else {
        Some(CardSpace::User(job.user_id.clone()))
    }
}

fn from_sender(reason: &str) -> Undelivered {
    match reason {
        "invalid user" => Undelivered::InvalidUser,
        "filtered" => Undelivered::Filtered,
        _ => Undelivered::FlowControlled,
    }
}

#[async_trait]
impl Push for DingTalkPush {
    /// Through the session webhook while it is valid when `prefer_session` (or when there is no
    /// staff id to push to), in numbered parts if long; otherwise, or when the webhook turns out
    /// expired, pushed through the OpenAPI.
    async fn deliver(
        &self,
        job: &BotJob,
        title: &str,
        text: &str,
        prefer_session: bool,
        margin: Duration,
    ) -> Result<&'static str, DeliveryError> {
        let no_push = !job.group && job.no_staff_id;
        if (prefer_session || no_push) && job.session_valid(margin) {
            if self
                .reply_in_parts(job, title, text)
                .await
                .map_err(|e| DeliveryError::Failed(e.into()))?
            {
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
        match self.sender.send_long_markdown(&target, title, text).await {
            Ok(_) => Ok(if job.group {
                "group_send"
            } else {
                "batch_send"
            }),
            Err(dingtalk_sender::Error::NotDelivered { reason, .. }) => {
                Err(DeliveryError::Undelivered(from_sender(reason)))
            }
            Err(e) => Err(DeliveryError::Failed(e.into())),
        }
    }

    /// While the session webhook is still valid.
    async fn tell_undelivered(&self, job: &BotJob, task_id: &str, why: Undelivered) -> bool {
        if !job.session_valid(Duration::ZERO) {
            return false;
        }
        let text = format!(
            "任务 {task_id} 已处理完成，但结果未能推送给您：{}。",
            why.zh()
        );
        match self.reply_in_parts(job, "结果未送达", &text).await {
            Ok(sent) => sent,
            Err(e) => {
                tracing::warn!(task_id, error = %e, "could not tell the user about the undelivered result");
                false
            }
        }
    }

    async fn create_card(
        &self,
        template: &str,
        job: &BotJob,
        out_track_id: &str,
        params: &CardParams,
    ) -> Result<bool, PushError> {
        let Some(space) = card_space(job) else {
            return Ok(false);
        };
        self.sender
            .create_and_deliver_card(template, out_track_id, &space, params)
            .await?;
        Ok(true)
    }

    async fn update_card(&self, out_track_id: &str, params: &CardParams) -> Result<(), PushError> {
        Ok(self.sender.update_card(out_track_id, params).await?)
    }

    /// The first of the parts [`dingtalk_sender::split_message`] makes (fences repaired).
    fn excerpt(&self, text: &str, max_bytes: usize) -> String {
        dingtalk_sender::split_message(text, max_bytes)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    async fn download(&self, download_code: &str) -> Result<Downloaded, PushError> {
        let f = self.sender.download_file(download_code).await?;
        Ok(Downloaded {
            bytes: f.bytes,
            content_type: f.content_type,
            url: f.url,
        })
    }
}
