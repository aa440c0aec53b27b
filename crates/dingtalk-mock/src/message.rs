//! Messages a user says to the bot, and the robot callback payload built from them (§6).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Where a message is said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Conversation {
    /// A one-to-one chat with the robot (`conversationType` `"1"`); its `conversationId` is
    /// derived from the sender, so one user always has the same one.
    Single,
    /// An @-message in a group (`conversationType` `"2"`): the text keeps DingTalk's leading
    /// space, and the group becomes a valid `openConversationId` for `groupMessages/send`.
    Group {
        /// The group's `conversationId` (`cid...==`).
        conversation_id: String,
        /// The group's `conversationTitle`.
        title: String,
    },
}

/// The callback's `msgtype`. Non-text kinds carry the documented `content` shape, with the
/// message's text where the kind has one (audio `recognition`, file `fileName`, rich text).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum MsgType {
    /// `text` with `text.content`.
    #[default]
    Text,
    /// `richText` with `content.richText[{text}]`.
    RichText,
    /// `picture` with `content.downloadCode`.
    Picture,
    /// `audio` with `content.recognition` (speech to text) and a `downloadCode`.
    Audio,
    /// `video` with `content.downloadCode`.
    Video,
    /// `file` with `content.fileName` and a `downloadCode`.
    File,
    /// `unknownMsgType`.
    #[serde(rename = "unknownMsgType")]
    Unknown,
}

impl MsgType {
    /// The wire name (`text`, `richText`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MsgType::Text => "text",
            MsgType::RichText => "richText",
            MsgType::Picture => "picture",
            MsgType::Audio => "audio",
            MsgType::Video => "video",
            MsgType::File => "file",
            MsgType::Unknown => "unknownMsgType",
        }
    }
}

/// A message a user says to the bot through [`DingTalkMock::say`](crate::DingTalkMock::say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockMessage {
    /// What the user writes.
    pub text: String,
    /// The user's `senderStaffId` (the user id `batchSend` takes).
    pub sender_staff_id: String,
    /// The user's `senderNick`.
    pub sender_nick: String,
    /// One-to-one or group.
    pub conversation: Conversation,
    /// The callback's `msgtype` (text by default).
    pub msg_type: MsgType,
    /// The `msgId` (generated when `None`); say the same one twice to simulate a duplicate.
    pub msg_id: Option<String>,
    /// Leave `senderStaffId` out, as DingTalk does for external users and before the robot
    /// is published.
    pub omit_sender_staff_id: bool,
    /// Send `createAt` as a string of digits (DingTalk's field table says String).
    pub create_at_as_string: bool,
    /// Send the optional fields as JSON `null` (`senderCorpId`, `senderPlatform`,
    /// `chatbotCorpId`, `conversationTitle`, `isInAtList`, `senderUnionId`, `openThreadId`).
    pub null_fields: bool,
    /// The sender's `isAdmin`.
    pub is_admin: bool,
    /// Other users @-mentioned in a group message (staff ids), listed in `atUsers` besides
    /// the robot.
    pub at_users: Vec<String>,
    /// Pictures in a `richText` message (each a `downloadCode` in the `richText` list).
    pub rich_text_pictures: usize,
}

impl MockMessage {
    /// A one-to-one text message from `staff_id`.
    pub fn single(staff_id: &str, text: &str) -> MockMessage {
        MockMessage {
            text: text.into(),
            sender_staff_id: staff_id.into(),
            sender_nick: "测试用户".into(),
            conversation: Conversation::Single,
            msg_type: MsgType::Text,
            msg_id: None,
            omit_sender_staff_id: false,
            create_at_as_string: false,
            null_fields: false,
            is_admin: false,
            at_users: Vec::new(),
            rich_text_pictures: 0,
        }
    }

    /// An @-message from `staff_id` in the group `conversation_id` (titled "测试群").
    pub fn group(staff_id: &str, conversation_id: &str, text: &str) -> MockMessage {
        MockMessage {
            conversation: Conversation::Group {
                conversation_id: conversation_id.into(),
                title: "测试群".into(),
            },
            ..MockMessage::single(staff_id, text)
        }
    }

    /// Sets the sender's nick.
    #[must_use]
    pub fn nick(mut self, nick: &str) -> Self {
        nick.clone_into(&mut self.sender_nick);
        self
    }

    /// Sets the `msgId` (to simulate a duplicate).
    #[must_use]
    pub fn msg_id(mut self, msg_id: &str) -> Self {
        self.msg_id = Some(msg_id.to_owned());
        self
    }

    /// Sets the `msgtype`.
    #[must_use]
    pub fn msg_type(mut self, msg_type: MsgType) -> Self {
        self.msg_type = msg_type;
        self
    }

    /// Leaves `senderStaffId` out (an external user, or a robot not yet published).
    #[must_use]
    pub fn without_sender_staff_id(mut self) -> Self {
        self.omit_sender_staff_id = true;
        self
    }

    /// Sends `createAt` as a string.
    #[must_use]
    pub fn create_at_as_string(mut self) -> Self {
        self.create_at_as_string = true;
        self
    }

    /// Sends the optional fields as `null`.
    #[must_use]
    pub fn with_null_fields(mut self) -> Self {
        self.null_fields = true;
        self
    }

    /// Marks the sender as an admin (`isAdmin: true`).
    #[must_use]
    pub fn admin(mut self) -> Self {
        self.is_admin = true;
        self
    }

    /// Also @-mentions `staff_id` (a group message's `atUsers`).
    #[must_use]
    pub fn mention(mut self, staff_id: &str) -> Self {
        self.at_users.push(staff_id.to_owned());
        self
    }

    /// A `richText` message: the text, then `pictures` pictures.
    #[must_use]
    pub fn rich_text_with_pictures(mut self, pictures: usize) -> Self {
        self.msg_type = MsgType::RichText;
        self.rich_text_pictures = pictures;
        self
    }

    /// The `conversationId` this message is in.
    pub fn conversation_id(&self) -> String {
        match &self.conversation {
            Conversation::Single => single_conversation_id(&self.sender_staff_id),
            Conversation::Group {
                conversation_id, ..
            } => conversation_id.clone(),
        }
    }
}

/// The body of `POST /_mock/messages`: flat, so it is easy to type with curl.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SayRequest {
    text: String,
    sender_staff_id: String,
    #[serde(default)]
    sender_nick: Option<String>,
    /// Present: a group message in this group.
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    conversation_title: Option<String>,
    #[serde(default)]
    msg_type: MsgType,
    #[serde(default)]
    msg_id: Option<String>,
    /// No `senderStaffId` in the payload.
    #[serde(default)]
    no_sender_staff_id: bool,
    #[serde(default)]
    create_at_as_string: bool,
    #[serde(default)]
    null_fields: bool,
    #[serde(default)]
    is_admin: bool,
    #[serde(default)]
    at_users: Vec<String>,
    #[serde(default)]
    rich_text_pictures: usize,
}

impl From<SayRequest> for MockMessage {
    fn from(r: SayRequest) -> Self {
        let mut m = match r.conversation_id {
            Some(cid) => MockMessage::group(&r.sender_staff_id, &cid, &r.text),
            None => MockMessage::single(&r.sender_staff_id, &r.text),
        };
        if let (Conversation::Group { title, .. }, Some(t)) =
            (&mut m.conversation, r.conversation_title)
        {
            *title = t;
        }
        if let Some(nick) = r.sender_nick {
            m.sender_nick = nick;
        }
        m.msg_type = r.msg_type;
        m.msg_id = r.msg_id;
        m.omit_sender_staff_id = r.no_sender_staff_id;
        m.create_at_as_string = r.create_at_as_string;
        m.null_fields = r.null_fields;
        m.is_admin = r.is_admin;
        m.at_users = r.at_users;
        m.rich_text_pictures = r.rich_text_pictures;
        m
    }
}

/// What [`DingTalkMock::say`](crate::DingTalkMock::say) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Said {
    /// The message's `msgId` (the dedupe key).
    pub msg_id: String,
    /// The `conversationId` it was said in.
    pub conversation_id: String,
    /// The `sessionWebhook` it carried (pointing at the mock).
    pub session_webhook: String,
    /// Its `sessionWebhookExpiredTime` (epoch ms).
    pub session_webhook_expired_time: i64,
    /// Whether it reached the bot: handed to a live, non-draining, non-zombie Stream
    /// connection, or answered with a 2xx in HTTP mode.
    pub delivered: bool,
    /// The `downloadCode`s it carries (pictures, files, audio, video, richText pictures):
    /// `POST /v1.0/robot/messageFiles/download` turns each into a URL serving its bytes.
    pub download_codes: Vec<String>,
}

/// `cid` + base64 of a hash of the user: stable per user, shaped like DingTalk's ids.
pub(crate) fn single_conversation_id(staff_id: &str) -> String {
    let digest = Sha256::digest(format!("single:{staff_id}").as_bytes());
    format!(
        "cid{}",
        base64::engine::general_purpose::STANDARD.encode(&digest[..24])
    )
}

/// Everything the callback payload needs besides the message.
pub(crate) struct Envelope<'a> {
    pub(crate) msg_id: &'a str,
    pub(crate) conversation_id: &'a str,
    pub(crate) create_at: i64,
    pub(crate) session_webhook: &'a str,
    pub(crate) expires_ms: i64,
    pub(crate) robot_code: &'a str,
}

/// The robot message callback (§6): the Stream frame's `data` and the HTTP-mode body.
pub(crate) fn callback_payload(m: &MockMessage, env: &Envelope<'_>) -> (Value, Vec<String>) {
    let group = matches!(m.conversation, Conversation::Group { .. });
    let sender_hash = Sha256::digest(m.sender_staff_id.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD;
    let chatbot_user_id = "$:LWCP_v1:$mockchatbotuserid";
    let create_at = if m.create_at_as_string {
        json!(env.create_at.to_string())
    } else {
        json!(env.create_at)
    };
    let mut data = json!({
        "msgId": env.msg_id,
        "msgtype": m.msg_type.as_str(),
        "createAt": create_at,
        "conversationType": if group { "2" } else { "1" },
        "conversationId": env.conversation_id,
        "senderId": format!("$:LWCP_v1:${}", b64.encode(&sender_hash[..16])),
        "senderNick": m.sender_nick,
        "senderStaffId": m.sender_staff_id,
        "senderCorpId": "dingmockcorpid",
        "senderPlatform": "Mac",
        "chatbotCorpId": "dingmockcorpid",
        "chatbotUserId": chatbot_user_id,
        "robotCode": env.robot_code,
        "isAdmin": m.is_admin,
        "sessionWebhook": env.session_webhook,
        "sessionWebhookExpiredTime": env.expires_ms,
        "openThreadId": env.conversation_id,
    });
    if m.omit_sender_staff_id
        && let Some(o) = data.as_object_mut()
    {
        o.remove("senderStaffId");
    }
    // Group @-messages keep the space left where the @robot mention was.
    let text = if group {
        format!(" {}", m.text)
    } else {
        m.text.clone()
    };
    let new_code = || format!("mockDownloadCode{}", uuid::Uuid::new_v4().simple());
    let mut codes = Vec::new();
    match m.msg_type {
        MsgType::Text => data["text"] = json!({"content": text}),
        MsgType::RichText => {
            let mut parts = vec![json!({"text": text})];
            for _ in 0..m.rich_text_pictures {
                let code = new_code();
                parts.push(
                    json!({"pictureDownloadCode": code, "downloadCode": code, "type": "picture"}),
                );
                codes.push(code);
            }
            data["content"] = json!({"richText": parts});
        }
        MsgType::Picture => {
            let code = new_code();
            data["content"] = json!({"pictureDownloadCode": code, "downloadCode": code});
            codes.push(code);
        }
        MsgType::Audio => {
            let code = new_code();
            data["content"] = json!({"downloadCode": code, "recognition": m.text});
            codes.push(code);
        }
        MsgType::Video => {
            let code = new_code();
            data["content"] = json!({"duration": "3", "videoType": "mp4", "downloadCode": code});
            codes.push(code);
        }
        MsgType::File => {
            let code = new_code();
            data["content"] =
                json!({"spaceId": "1", "fileName": m.text, "downloadCode": code, "fileId": "1"});
            codes.push(code);
        }
        MsgType::Unknown => {
            data["content"] = json!({"unknownMsgType": "用户发送了一条消息，机器人暂不支持接收。"});
        }
    }
    if let Conversation::Group { title, .. } = &m.conversation {
        data["conversationTitle"] = json!(title);
        data["isInAtList"] = json!(true);
        let mut at = vec![json!({"dingtalkId": chatbot_user_id})];
        for staff in &m.at_users {
            let h = Sha256::digest(format!("dingtalk:{staff}").as_bytes());
            at.push(json!({
                "dingtalkId": format!("$:LWCP_v1:${}", b64.encode(&h[..16])),
                "staffId": staff,
            }));
        }
        data["atUsers"] = json!(at);
    }
    if m.null_fields {
        for k in [
            "senderCorpId",
            "senderPlatform",
            "chatbotCorpId",
            "conversationTitle",
            "isInAtList",
            "senderUnionId",
            "openThreadId",
        ] {
            data[k] = Value::Null;
        }
    }
    (data, codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_keeps_one_single_chat_conversation_id() {
        let a = MockMessage::single("u1", "x").conversation_id();
        assert_eq!(a, MockMessage::single("u1", "y").conversation_id());
        assert_ne!(a, MockMessage::single("u2", "x").conversation_id());
        assert!(a.starts_with("cid"));
    }

    #[test]
    fn the_control_api_body_maps_onto_a_group_message() {
        let r: SayRequest = serde_json::from_str(
            r#"{"text":"hi","sender_staff_id":"u1","conversation_id":"cidG==","conversation_title":"T","msg_type":"audio"}"#,
        )
        .unwrap();
        let m = MockMessage::from(r);
        assert_eq!(
            m.conversation,
            Conversation::Group {
                conversation_id: "cidG==".into(),
                title: "T".into()
            }
        );
        assert_eq!(m.msg_type, MsgType::Audio);
    }
}
