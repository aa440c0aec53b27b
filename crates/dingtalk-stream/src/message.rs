//! The robot callback payload (`topic = /v1.0/im/bot/messages/get`, also the HTTP-mode body).

use serde::{Deserialize, Serialize};

/// Single chat (`conversationType == "1"`).
pub const CONVERSATION_SINGLE: &str = "1";
/// Group chat (`conversationType == "2"`).
pub const CONVERSATION_GROUP: &str = "2";

/// A message a user sent to the robot.
///
/// Field names follow DingTalk's JSON (`camelCase`). Unknown fields are ignored and
/// optional ones default, because DingTalk adds fields over time and omits some before
/// the robot is published (`senderStaffId`, `isAdmin`). Parsing is as loose as DingTalk is:
/// `null` for any field, numbers as strings (`createAt` is a String in DingTalk's field
/// table, a number in every sample), strings as numbers, booleans as `"true"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RobotMessage {
    /// Encrypted message id: the key to drop duplicate deliveries.
    #[serde(deserialize_with = "lenient::string")]
    pub msg_id: String,
    /// `text`, `richText`, `picture`, `audio`, `video`, `file` or `unknownMsgType`.
    #[serde(deserialize_with = "lenient::string")]
    pub msgtype: String,
    /// The text, for `msgtype == "text"`.
    pub text: Option<TextContent>,
    /// The content of the other message types.
    pub content: Option<serde_json::Value>,
    /// When the user sent it (ms since the epoch).
    #[serde(deserialize_with = "lenient::millis")]
    pub create_at: i64,
    /// `"1"` single chat, `"2"` group.
    #[serde(deserialize_with = "lenient::string")]
    pub conversation_type: String,
    /// The conversation (for groups, the `openConversationId` used by `groupMessages/send`).
    #[serde(deserialize_with = "lenient::string")]
    pub conversation_id: String,
    /// Group title.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub conversation_title: Option<String>,
    /// Encrypted sender id (not usable for sending).
    #[serde(deserialize_with = "lenient::string")]
    pub sender_id: String,
    /// Sender's display name.
    #[serde(deserialize_with = "lenient::string")]
    pub sender_nick: String,
    /// Sender's userId for `batchSend`; absent until the robot is published.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub sender_staff_id: Option<String>,
    /// Sender's corp.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub sender_corp_id: Option<String>,
    /// The robot's encrypted id.
    #[serde(deserialize_with = "lenient::string")]
    pub chatbot_user_id: String,
    /// The robot code (= app key for internal apps).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub robot_code: Option<String>,
    /// Whether the sender is an admin.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub is_admin: Option<bool>,
    /// Whether the robot was @-mentioned.
    #[serde(deserialize_with = "lenient::opt_bool")]
    pub is_in_at_list: Option<bool>,
    /// The reply webhook of this conversation.
    #[serde(deserialize_with = "lenient::string")]
    pub session_webhook: String,
    /// When `session_webhook` stops working (ms since the epoch).
    #[serde(deserialize_with = "lenient::millis")]
    pub session_webhook_expired_time: i64,
}

/// Deserializers that take what DingTalk sends, not what its docs say.
mod lenient {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    fn to_string(v: Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(to_string(Value::deserialize(d)?).unwrap_or_default())
    }

    pub(super) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(to_string(Value::deserialize(d)?))
    }

    /// Epoch milliseconds: a number, a string of digits, or nothing usable (0).
    pub(super) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .unwrap_or_default(),
            Value::String(s) => s.trim().parse().unwrap_or_default(),
            _ => 0,
        })
    }

    pub(super) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Bool(b) => Some(b),
            Value::String(s) => match s.as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            Value::Number(n) => Some(n.as_i64() != Some(0)),
            _ => None,
        })
    }
}

/// `text` of a text message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TextContent {
    /// What the user wrote (group @-messages keep a leading space).
    #[serde(deserialize_with = "lenient::string")]
    pub content: String,
}

/// The kind of a [`RobotMessage`], with the parts a bot reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageBody {
    /// Plain text.
    Text(String),
    /// Text and pictures; the text parts joined.
    RichText(String),
    /// A picture (its download code).
    Picture {
        /// Code for `messageFiles/download`.
        download_code: String,
    },
    /// A voice message, with DingTalk's speech recognition.
    Audio {
        /// The recognised text, if any.
        recognition: Option<String>,
    },
    /// A file.
    File {
        /// Its name.
        file_name: String,
    },
    /// A video.
    Video,
    /// Anything else.
    Unknown(String),
}

impl RobotMessage {
    /// Parses the callback JSON (the `data` string of a Stream frame, or an HTTP-mode body).
    ///
    /// # Errors
    ///
    /// Fails when the JSON is malformed or a field has the wrong type.
    pub fn from_json(json: &str) -> Result<RobotMessage, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Whether the message came from a group chat.
    pub fn is_group(&self) -> bool {
        self.conversation_type == CONVERSATION_GROUP
    }

    /// The message, typed by its `msgtype`.
    pub fn body(&self) -> MessageBody {
        let content = self.content.as_ref();
        let field = |name: &str| {
            content
                .and_then(|c| c.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        match self.msgtype.as_str() {
            "text" => MessageBody::Text(
                self.text
                    .as_ref()
                    .map(|t| t.content.clone())
                    .unwrap_or_default(),
            ),
            "richText" => {
                let parts = content
                    .and_then(|c| c.get("richText"))
                    .and_then(|v| v.as_array())
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|i| i.get("text").and_then(|t| t.as_str()))
                            .collect::<Vec<_>>()
                            .join("")
                    })
                    .unwrap_or_default();
                MessageBody::RichText(parts)
            }
            "picture" => MessageBody::Picture {
                download_code: field("downloadCode").unwrap_or_default(),
            },
            "audio" => MessageBody::Audio {
                recognition: field("recognition"),
            },
            "file" => MessageBody::File {
                file_name: field("fileName").unwrap_or_default(),
            },
            "video" => MessageBody::Video,
            other => {
                MessageBody::Unknown(field("unknownMsgType").unwrap_or_else(|| other.to_owned()))
            }
        }
    }

    /// The text a bot should act on, trimmed: the text, the rich text's text parts, or the
    /// recognised speech of a voice message. `None` for pictures, files and the like.
    pub fn extract_text(&self) -> Option<String> {
        let text = match self.body() {
            MessageBody::Text(t) | MessageBody::RichText(t) => t,
            MessageBody::Audio {
                recognition: Some(t),
            } => t,
            _ => return None,
        };
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real single-chat callback (see the protocol reference, section 6).
    const SINGLE: &str = r#"{"chatbotCorpId":"dinge19e25c0b3f73fd635c2f4657eb6378f","chatbotUserId":"$:LWCP_v1:$01B/44e/ph+R21B/X+43WLnAcUVO5BKL","conversationId":"cidh6ezDLHQau9V23Es/xSLNoiDDmPuN354KylQ2BaIhuM=","conversationType":"1","createAt":1774080994334,"isAdmin":false,"msgId":"msgBjXREkdlZkfTfrIiQomjAw==","msgtype":"text","openThreadId":"cidh6ezDLHQau9V23Es/xSLNoiDDmPuN354KylQ2BaIhuM=","robotCode":"dingf0apw4ibx5u5ktba","senderCorpId":"dinge19e25c0b3f73fd635c2f4657eb6378f","senderId":"$:LWCP_v1:$gzXDEXQDiM8piyLH4HRRcg==","senderNick":"赵文浩","senderPlatform":"Mac","senderStaffId":"032615015535634423","sessionWebhook":"https://oapi.dingtalk.com/robot/sendBySession?session=3dc9981636af125faaf72220d6242ff7","sessionWebhookExpiredTime":1774086394522,"text":{"content":"hello"}}"#;

    #[test]
    fn parses_a_real_single_chat_text_message() {
        let m = RobotMessage::from_json(SINGLE).unwrap();
        assert_eq!(m.msg_id, "msgBjXREkdlZkfTfrIiQomjAw==");
        assert_eq!(m.sender_staff_id.as_deref(), Some("032615015535634423"));
        assert!(!m.is_group());
        assert_eq!(m.session_webhook_expired_time - m.create_at, 5_400_188);
        assert_eq!(m.extract_text().as_deref(), Some("hello"));
    }

    #[test]
    fn takes_strings_for_numbers_nulls_and_missing_staff_ids() {
        let json = r#"{"msgId":"m","msgtype":"text","createAt":"1690362101894","conversationType":2,
            "senderNick":null,"senderCorpId":null,"isAdmin":"true","isInAtList":null,
            "sessionWebhookExpiredTime":"1690367502152","text":{"content":"hi"},"extra":{"x":1}}"#;
        let m = RobotMessage::from_json(json).unwrap();
        assert_eq!(m.create_at, 1_690_362_101_894);
        assert_eq!(m.session_webhook_expired_time, 1_690_367_502_152);
        assert!(m.is_group());
        assert_eq!(m.sender_nick, "");
        assert_eq!(m.sender_staff_id, None);
        assert_eq!(m.sender_corp_id, None);
        assert_eq!(m.is_admin, Some(true));
        assert_eq!(m.extract_text().as_deref(), Some("hi"));
    }

    #[test]
    fn group_text_keeps_meaning_without_the_leading_space() {
        let json = r#"{"conversationId":"cidAsXSBLnA==","conversationType":"2","msgId":"m1","msgtype":"text","text":{"content":" 测试数据"}}"#;
        let m = RobotMessage::from_json(json).unwrap();
        assert!(m.is_group());
        assert_eq!(m.extract_text().as_deref(), Some("测试数据"));
    }

    #[test]
    fn rich_text_joins_text_parts_and_skips_pictures() {
        let json = r#"{"msgId":"m","msgtype":"richText","content":{"richText":[{"text":"分析"},{"pictureDownloadCode":"x","downloadCode":"y","type":"picture"},{"text":"公司"}]}}"#;
        assert_eq!(
            RobotMessage::from_json(json)
                .unwrap()
                .extract_text()
                .as_deref(),
            Some("分析公司")
        );
    }

    #[test]
    fn audio_uses_the_recognition() {
        let json = r#"{"msgId":"m","msgtype":"audio","content":{"downloadCode":"d","recognition":"生成报告"}}"#;
        let m = RobotMessage::from_json(json).unwrap();
        assert_eq!(m.extract_text().as_deref(), Some("生成报告"));
    }

    #[test]
    fn pictures_files_and_unknown_types_have_no_text() {
        for json in [
            r#"{"msgId":"m","msgtype":"picture","content":{"downloadCode":"d"}}"#,
            r#"{"msgId":"m","msgtype":"file","content":{"fileName":"a.pdf"}}"#,
            r#"{"msgId":"m","msgtype":"unknownMsgType","content":{"unknownMsgType":"用户发送了一条消息，机器人暂不支持接收。"}}"#,
        ] {
            assert_eq!(
                RobotMessage::from_json(json).unwrap().extract_text(),
                None,
                "{json}"
            );
        }
        let file = RobotMessage::from_json(r#"{"msgtype":"file","content":{"fileName":"a.pdf"}}"#)
            .unwrap();
        assert_eq!(
            file.body(),
            MessageBody::File {
                file_name: "a.pdf".into()
            }
        );
    }
}
