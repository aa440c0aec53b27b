//! Robot sends: to users (batched, flow-control retried), to groups, long texts in parts, and
//! session-webhook replies.

use serde::Deserialize;
use serde_json::{Value, json};

use retry_policy::RetryPolicy;

use super::{
    Api, DingTalkSender, MAX_TITLE_CHARS, MAX_USERS_PER_CALL, NOT_DELIVERED_FILTERED,
    NOT_DELIVERED_FLOW_CONTROLLED, NOT_DELIVERED_INVALID, millis, truncated,
};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::split::{MSG_PARAM_LIMIT, json_weight, split_weighted};

/// Where a pushed message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One-to-one to these users (userIds / staff ids, e.g. a callback's `senderStaffId`).
    Users(Vec<String>),
    /// To this group (`openConversationId` = a group callback's `conversationId`).
    Group(String),
}

impl Target {
    /// The target for answering a robot callback: `conversationType` `"1"` (single chat) goes
    /// to the sender's staff id, anything else to the conversation.
    pub fn from_conversation(
        conversation_type: &str,
        conversation_id: &str,
        sender_staff_id: &str,
    ) -> Target {
        if conversation_type == "1" {
            Target::Users(vec![sender_staff_id.to_owned()])
        } else {
            Target::Group(conversation_id.to_owned())
        }
    }
}

/// The outcome of a one-to-one send to many users. DingTalk answers 200 even when some users
/// were not reached: look at the lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchSendReport {
    /// One `processQueryKey` per successful call (for read status and recall).
    pub process_query_keys: Vec<String>,
    /// Users DingTalk accepted the message for.
    pub delivered: Vec<String>,
    /// Users DingTalk does not know (`invalidStaffIdList`); never retried.
    pub invalid_users: Vec<String>,
    /// Users DingTalk filtered (`filteredStaffIdList`, e.g. no chat with the robot); not retried.
    pub filtered_users: Vec<String>,
    /// Users still flow-controlled (`flowControlledStaffIdList`) after their retries.
    pub flow_controlled_users_failed: Vec<String>,
    /// How many `batchSend` calls succeeded (first sends and flow-control retries).
    pub calls: usize,
}

impl BatchSendReport {
    /// Every user got the message.
    pub fn all_delivered(&self) -> bool {
        self.invalid_users.is_empty()
            && self.filtered_users.is_empty()
            && self.flow_controlled_users_failed.is_empty()
    }
}

/// The outcome of a group send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupSendReport {
    /// DingTalk's `processQueryKey` (message id).
    pub process_query_key: String,
}

/// The outcome of [`DingTalkSender::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendReport {
    /// A one-to-one send.
    Users(BatchSendReport),
    /// A group send.
    Group(GroupSendReport),
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct BatchSendResponse {
    process_query_key: Option<String>,
    invalid_staff_id_list: Vec<String>,
    flow_controlled_staff_id_list: Vec<String>,
    filtered_staff_id_list: Vec<String>,
}

impl DingTalkSender {
    /// Sends `message` one-to-one to `user_ids` (`batchSend`, at most 20 a call: more are split
    /// into several calls, duplicates dropped). Users reported in `flowControlledStaffIdList` are
    /// retried alone (without the others), with backoff, up to
    /// [`SenderBuilder::flow_control_retries`] times; invalid and filtered users are reported,
    /// never retried.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`], or a call failed permanently (e.g. `invalidParameter.*`,
    /// [`Error::is_invalid_token`] after the refresh) or stayed throttled through the retries.
    /// Calls before the failing one were delivered.
    pub async fn send_to_users<S: AsRef<str>>(
        &self,
        user_ids: &[S],
        message: &Message,
    ) -> Result<BatchSendReport> {
        message.validate()?;
        let mut seen = std::collections::HashSet::new();
        let users: Vec<&str> = user_ids
            .iter()
            .map(AsRef::as_ref)
            .filter(|u| seen.insert(*u))
            .collect();
        let msg_key = message.msg_key();
        let msg_param = message.msg_param();
        let mut report = BatchSendReport::default();
        for chunk in users.chunks(MAX_USERS_PER_CALL) {
            let mut pending: Vec<String> = chunk.iter().map(|u| (*u).to_owned()).collect();
            let mut round = 0;
            loop {
                let body = json!({
                    "robotCode": self.inner.robot_code,
                    "userIds": pending,
                    "msgKey": msg_key,
                    "msgParam": msg_param,
                });
                let v = self.api_call(Api::BatchSend, &body).await?;
                let r: BatchSendResponse = serde_json::from_value(v).unwrap_or_default();
                report.calls += 1;
                report.process_query_keys.extend(r.process_query_key);
                let throttled = r.flow_controlled_staff_id_list;
                report.delivered.extend(
                    pending
                        .iter()
                        .filter(|u| {
                            !throttled.contains(u)
                                && !r.invalid_staff_id_list.contains(u)
                                && !r.filtered_staff_id_list.contains(u)
                        })
                        .cloned(),
                );
                report.invalid_users.extend(r.invalid_staff_id_list);
                report.filtered_users.extend(r.filtered_staff_id_list);
                if throttled.is_empty() {
                    break;
                }
                let flow_policy = RetryPolicy {
                    max_retries: self.inner.config.flow_control_retries,
                    ..self.inner.config.retry
                };
                let Some(delay) = flow_policy.next_delay(round, None) else {
                    tracing::warn!(
                        users = throttled.len(),
                        "users still flow-controlled after retries"
                    );
                    report.flow_controlled_users_failed.extend(throttled);
                    break;
                };
                tracing::info!(
                    users = throttled.len(),
                    delay_ms = millis(delay),
                    "users flow-controlled; retrying them alone"
                );
                round += 1;
                tokio::time::sleep(delay).await;
                pending = throttled;
            }
        }
        Ok(report)
    }

    /// Sends `message` to a group (`groupMessages/send`; `open_conversation_id` is a group
    /// callback's `conversationId`, and the robot must be in the group).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] (also when `msgParam` would reach DingTalk's 15,000-byte
    /// limit), a permanent failure such as `invalidParameter.openConversationId.invalid`, or
    /// throttling that outlasted the retries.
    pub async fn send_to_group(
        &self,
        open_conversation_id: &str,
        message: &Message,
    ) -> Result<GroupSendReport> {
        message.validate()?;
        let msg_param = message.msg_param();
        if msg_param.len() >= MSG_PARAM_LIMIT {
            return Err(Error::InvalidMessage(format!(
                "msgParam is {} bytes, DingTalk takes less than {MSG_PARAM_LIMIT}: split it (send_long_markdown)",
                msg_param.len()
            )));
        }
        let body = json!({
            "robotCode": self.inner.robot_code,
            "openConversationId": open_conversation_id,
            "msgKey": message.msg_key(),
            "msgParam": msg_param,
        });
        let v = self.api_call(Api::GroupSend, &body).await?;
        let key = v
            .get("processQueryKey")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::UnexpectedResponse {
                status: 200,
                detail: "no processQueryKey in the group send answer".into(),
            })?;
        Ok(GroupSendReport {
            process_query_key: key.to_owned(),
        })
    }

    /// Sends `message` to `target`.
    ///
    /// # Errors
    ///
    /// As [`DingTalkSender::send_to_users`] or [`DingTalkSender::send_to_group`].
    pub async fn send(&self, target: &Target, message: &Message) -> Result<SendReport> {
        match target {
            Target::Users(users) => self
                .send_to_users(users, message)
                .await
                .map(SendReport::Users),
            Target::Group(cid) => self
                .send_to_group(cid, message)
                .await
                .map(SendReport::Group),
        }
    }

    /// The seed's call. The rule, since a conversation id does not say what kind of chat it
    /// is: a non-empty `user_id` means a single chat, sent one-to-one (`batchSend`) to that
    /// user (`conversation_id` is then ignored); an empty `user_id` means a group, sent to
    /// `conversation_id` (`groupMessages/send`). From a callback, pass `senderStaffId` for
    /// `conversationType` `"1"` and an empty string for `"2"`, or use [`Target::from_conversation`]
    /// with [`DingTalkSender::send`]. Text longer than a part is sent as numbered parts.
    ///
    /// # Errors
    ///
    /// As [`DingTalkSender::send_to_users`] / [`DingTalkSender::send_to_group`], and
    /// [`Error::NotDelivered`] when the user was invalid, filtered or stayed flow-controlled.
    pub async fn send_text_message(
        &self,
        conversation_id: &str,
        user_id: &str,
        content: &str,
    ) -> Result<()> {
        let parts = self.split_for_param(content, "");
        for part in &parts {
            let message = Message::text(part.as_str());
            if user_id.is_empty() {
                self.send_to_group(conversation_id, &message).await?;
                continue;
            }
            let r = self.send_to_users(&[user_id], &message).await?;
            let reason = if !r.invalid_users.is_empty() {
                NOT_DELIVERED_INVALID
            } else if !r.filtered_users.is_empty() {
                NOT_DELIVERED_FILTERED
            } else if !r.flow_controlled_users_failed.is_empty() {
                NOT_DELIVERED_FLOW_CONTROLLED
            } else {
                continue;
            };
            return Err(Error::NotDelivered {
                user_id: user_id.to_owned(),
                reason,
            });
        }
        Ok(())
    }

    /// Splits text so that each part is at most [`SenderBuilder::part_bytes`] long and its
    /// `msgParam` (JSON-escaped, next to the title) stays under DingTalk's 15,000 bytes.
    fn split_for_param(&self, text: &str, title: &str) -> Vec<String> {
        let title_weight: usize = title.chars().map(json_weight).sum();
        // {"title":"…","text":"…"} plus a " (99/99)" title suffix, with room to spare.
        let param_room = MSG_PARAM_LIMIT.saturating_sub(title_weight + 64);
        split_weighted(
            text,
            self.inner.config.part_bytes.min(param_room),
            json_weight,
        )
    }

    /// Sends long markdown as numbered parts, in order, to users or a group: the text is split
    /// on paragraph, line, then character boundaries, with code fences closed and reopened (see
    /// [`crate::split_message`]); each part's title gets a ` (i/n)` suffix. For users, those found
    /// invalid or filtered on one part are not sent the later ones. Returns the number of parts.
    ///
    /// # Errors
    ///
    /// The first part that failed (earlier parts were delivered), or [`Error::NotDelivered`]
    /// naming the first user that DingTalk answered for (with HTTP 200) as invalid, filtered or
    /// still flow-controlled after the retries ([`SenderBuilder::flow_control_retries`]); the
    /// other users were sent every part.
    pub async fn send_long_markdown(
        &self,
        target: &Target,
        title: &str,
        text: &str,
    ) -> Result<usize> {
        let title: String = title.chars().take(MAX_TITLE_CHARS).collect();
        let parts = self.split_for_param(text, &title);
        let n = parts.len();
        let mut target = target.clone();
        let mut undelivered: Option<(String, &'static str)> = None;
        for (i, part) in parts.into_iter().enumerate() {
            let part_title = if n > 1 {
                format!("{title} ({}/{n})", i + 1)
            } else {
                title.clone()
            };
            let message = Message::markdown(part_title, part);
            if let SendReport::Users(r) = self.send(&target, &message).await?
                && let Target::Users(users) = &mut target
            {
                if undelivered.is_none() {
                    undelivered = r
                        .invalid_users
                        .first()
                        .map(|u| (u.clone(), NOT_DELIVERED_INVALID))
                        .or_else(|| {
                            r.filtered_users
                                .first()
                                .map(|u| (u.clone(), NOT_DELIVERED_FILTERED))
                        })
                        .or_else(|| {
                            r.flow_controlled_users_failed
                                .first()
                                .map(|u| (u.clone(), NOT_DELIVERED_FLOW_CONTROLLED))
                        });
                }
                users.retain(|u| !r.invalid_users.contains(u) && !r.filtered_users.contains(u));
                if users.is_empty() {
                    break;
                }
            }
        }
        match undelivered {
            Some((user_id, reason)) => Err(Error::NotDelivered { user_id, reason }),
            None => Ok(n),
        }
    }

    /// Replies through a conversation's session webhook (`sessionWebhook` of the callback; no
    /// token needed): text or markdown mentioning `at_user_ids` (`at.atUserIds`, and `@id` in
    /// the content so DingTalk renders it), or an action card. Not paced or retried: it is the
    /// fast path, and the caller falls back to [`DingTalkSender::send`] on failure.
    ///
    /// # Errors
    ///
    /// [`Error::SessionExpired`] for `errcode` 300001 (push through the OpenAPI instead),
    /// [`Error::Webhook`] for another `errcode` (130101 is [`Error::is_throttled`]),
    /// [`Error::UnexpectedResponse`] for a non-2xx or bodiless answer, [`Error::Transport`].
    /// The webhook URL (it carries the session key) is never part of the error.
    pub async fn reply_session<S: AsRef<str>>(
        &self,
        session_webhook: &str,
        message: &Message,
        at_user_ids: &[S],
    ) -> Result<()> {
        message.validate()?;
        let body = message.session_body(at_user_ids);
        let resp = self
            .inner
            .http
            .post(session_webhook)
            .json(&body)
            .send()
            .await
            .map_err(Error::transport)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(Error::transport)?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match v.get("errcode").and_then(Value::as_i64) {
            Some(0) if (200..300).contains(&status) => Ok(()),
            Some(300001) => Err(Error::SessionExpired),
            Some(errcode) if errcode != 0 => Err(Error::Webhook {
                errcode,
                errmsg: truncated(v.get("errmsg").and_then(Value::as_str).unwrap_or_default()),
            }),
            _ => Err(Error::UnexpectedResponse {
                status,
                detail: format!("no errcode: {}", truncated(&text)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_chat_answers_the_sender_and_a_group_the_conversation() {
        assert_eq!(
            Target::from_conversation("1", "cid", "staff"),
            Target::Users(vec!["staff".into()])
        );
        assert_eq!(
            Target::from_conversation("2", "cid", "staff"),
            Target::Group("cid".into())
        );
    }

    #[test]
    fn a_batch_is_delivered_only_when_no_list_names_a_user() {
        let mut report = BatchSendReport {
            delivered: vec!["a".into()],
            ..BatchSendReport::default()
        };
        assert!(report.all_delivered());
        report.filtered_users.push("b".into());
        assert!(!report.all_delivered());
    }
}
