//! DingTalk messages into the [`Bot`] (feature `dingtalk-stream`): what a user's message asks,
//! its text and attachments, read leniently from the callback's `msgtype` and `content`
//! (DingTalk adds types and fields over time), or why it cannot be handled; and [`handle`],
//! which hands a [`RobotMessage`] from Stream mode or an HTTP callback to the bot.

use crate::{Attachment, AttachmentKind, Bot, Incoming};
use dingtalk_stream::RobotMessage;
use serde_json::Value;

/// The message types the bot acts on, as the unsupported-type reply names them.
pub const SUPPORTED_TYPES_ZH: &str = "文字、语音（识别出的文字）、图片、文件、图文混排";

/// A message, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Something to act on.
    Ask {
        /// The text (trimmed; may be empty when only attachments came).
        text: String,
        /// Pictures and files.
        attachments: Vec<Attachment>,
    },
    /// A type the bot cannot act on, named for the user (e.g. `视频`).
    Unsupported(String),
}

fn str_field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn code_of(v: &Value) -> Option<String> {
    str_field(v, "downloadCode")
        .or_else(|| str_field(v, "pictureDownloadCode"))
        .map(str::to_owned)
}

/// Reads a message. Never fails: an unreadable or unknown shape becomes
/// [`Request::Unsupported`], so every ACKed message gets an answer.
pub fn read(m: &RobotMessage) -> Request {
    let content = m.content.clone().unwrap_or(Value::Null);
    let mut attachments = Vec::new();
    let picture = |attachments: &mut Vec<Attachment>, code: String| {
        let n = attachments.len() + 1;
        attachments.push(Attachment {
            kind: AttachmentKind::Picture,
            download_code: code,
            name: format!("picture-{n}"),
        });
    };
    let text = match m.msgtype.as_str() {
        // Some senders put text messages' content under `content` too.
        "text" | "" => m
            .text
            .as_ref()
            .map(|t| t.content.clone())
            .or_else(|| str_field(&content, "content").map(str::to_owned))
            .unwrap_or_default(),
        "richText" => {
            let mut text = String::new();
            for item in content
                .get("richText")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(t) = item.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                } else if let Some(code) = code_of(item) {
                    picture(&mut attachments, code);
                }
            }
            text
        }
        "picture" => match code_of(&content) {
            Some(code) => {
                picture(&mut attachments, code);
                String::new()
            }
            None => return Request::Unsupported("图片（缺少下载码）".into()),
        },
        "file" => match code_of(&content) {
            Some(code) => {
                attachments.push(Attachment {
                    kind: AttachmentKind::File,
                    download_code: code,
                    name: str_field(&content, "fileName").unwrap_or("file").to_owned(),
                });
                String::new()
            }
            None => return Request::Unsupported("文件（缺少下载码）".into()),
        },
        "audio" => match str_field(&content, "recognition") {
            Some(t) => t.to_owned(),
            None => return Request::Unsupported("语音（未识别出文字）".into()),
        },
        "video" => return Request::Unsupported("视频".into()),
        other => {
            let label = if other == "unknownMsgType" {
                "未知类型".to_owned()
            } else {
                other.chars().take(40).collect()
            };
            return Request::Unsupported(label);
        }
    };
    let text = text.trim().to_owned();
    if text.is_empty() && attachments.is_empty() {
        return Request::Unsupported("空消息".into());
    }
    Request::Ask { text, attachments }
}

/// Hands one message (already ACKed and deduplicated) to the bot. Every message gets an
/// answer: a type the bot cannot act on is answered with what it supports.
pub async fn handle(bot: &Bot, m: &RobotMessage) {
    let mut incoming = Incoming {
        msg_id: m.msg_id.clone(),
        staff_id: m.sender_staff_id.clone(),
        sender_id: m.sender_id.clone(),
        conversation_id: m.conversation_id.clone(),
        group: m.is_group(),
        session_webhook: m.session_webhook.clone(),
        session_expires_ms: m.session_webhook_expired_time,
        ..Incoming::default()
    };
    match read(m) {
        Request::Ask { text, attachments } => {
            incoming.text = text;
            incoming.attachments = attachments;
            bot.handle(incoming).await;
        }
        Request::Unsupported(label) => {
            tracing::info!(user = %incoming.user_key(), msg_id = %m.msg_id, msgtype = %m.msgtype, "unsupported message answered");
            bot.reply(&incoming, &unsupported_reply(&label)).await;
        }
    }
}

/// The reply to a message the bot cannot act on.
pub fn unsupported_reply(label: &str) -> String {
    format!("暂不支持这种消息（{label}）。目前支持：{SUPPORTED_TYPES_ZH}。发送 /help 查看命令。")
}
