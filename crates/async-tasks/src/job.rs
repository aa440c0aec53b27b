//! The one typed payload of a bot job ([`BotJob`]) and its typed result ([`JobResult`]), each
//! serialised and read back here only.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use workflow_core::Task;

/// The task kind of bot jobs.
pub const KIND: &str = "bot_job";

/// A picture or file a user sent, fetched (through [`Push::download`](crate::Push::download))
/// when its job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `picture` or `file`.
    pub kind: AttachmentKind,
    /// The chat platform's download code (DingTalk's `downloadCode`).
    pub download_code: String,
    /// The file's name (`fileName`), or `picture-<n>` for pictures.
    pub name: String,
}

/// What kind of attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    /// A picture (alone, or inside a rich text).
    Picture,
    /// A file.
    File,
}

/// What a job carries, so it can finish after a restart without the original message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotJob {
    /// What was asked.
    pub prompt: String,
    /// The asker: the staff id, or (without one) the encrypted sender id, which only keys the
    /// per-user limits and `/tasks`.
    pub user_id: String,
    /// The conversation (group pushes go to it).
    pub conversation_id: String,
    /// Whether it came from a group.
    pub group: bool,
    /// The conversation's reply webhook.
    pub session_webhook: String,
    /// When that webhook stops working (ms since the epoch).
    pub session_expires_ms: i64,
    /// When the message arrived (ms since the epoch).
    pub received_ms: i64,
    /// Detected as long: the result is always pushed.
    pub long: bool,
    /// The request class (for duration statistics).
    pub class: String,
    /// The message had no `senderStaffId`: a single chat can then only be answered through its
    /// session webhook.
    #[serde(default)]
    pub no_staff_id: bool,
    /// Pictures and files that came with the request.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// A progress card was delivered for this job ([`crate::progress::out_track_id`]).
    #[serde(default)]
    pub card: bool,
}

impl BotJob {
    /// The job stored in a task, if it is a readable bot job.
    ///
    /// # Errors
    ///
    /// The payload is not a bot job.
    pub fn from_task(task: &Task) -> Result<BotJob, serde_json::Error> {
        serde_json::from_value(task.payload.clone())
    }

    /// The payload to store.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a bot job always serialises")
    }

    /// Whether the job's session webhook is usable for `margin` more.
    pub fn session_valid(&self, margin: Duration) -> bool {
        let margin_ms = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
        !self.session_webhook.is_empty()
            && now_ms().saturating_add(margin_ms) < self.session_expires_ms
    }
}

/// What a completed bot job stores as its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The processor's answer.
    #[serde(default)]
    pub answer: String,
    /// How it went out (`session_webhook`, `batch_send`, `group_send`, `card`, ...).
    #[serde(default)]
    pub channel: String,
    /// How long processing took (absent in results stored before durations were kept).
    #[serde(default)]
    pub took_ms: Option<u64>,
    /// The request class (absent in results stored before durations were kept).
    #[serde(default)]
    pub class: Option<String>,
}

impl JobResult {
    /// The result stored in a task, if it has a readable one.
    pub fn from_task(task: &Task) -> Option<JobResult> {
        task.result
            .as_ref()
            .and_then(|r| serde_json::from_value(r.clone()).ok())
    }

    /// The result to store.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a job result always serialises")
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_stored_before_attachments_and_cards_still_reads() {
        let old = serde_json::json!({
            "prompt": "分析公司", "user_id": "u1", "conversation_id": "c", "group": false,
            "session_webhook": "http://x", "session_expires_ms": 1, "received_ms": 1,
            "long": true, "class": "分析公司"
        });
        let job: BotJob = serde_json::from_value(old).unwrap();
        assert!(!job.no_staff_id && !job.card && job.attachments.is_empty());
    }

    #[test]
    fn a_result_reads_back() {
        let r = JobResult {
            answer: "ok".into(),
            channel: "card".into(),
            took_ms: Some(5),
            class: Some("general".into()),
        };
        let v = r.to_value();
        assert_eq!(v["took_ms"], 5);
        assert_eq!(serde_json::from_value::<JobResult>(v).unwrap(), r);
        let old: JobResult = serde_json::from_value(serde_json::json!({"answer": "a"})).unwrap();
        assert_eq!((old.took_ms, old.class), (None, None));
    }
}
