//! Stream-mode frames: what the gateway sends, and the ACK the client answers with.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Topic of robot message callbacks.
pub const BOT_MESSAGE_TOPIC: &str = "/v1.0/im/bot/messages/get";

/// A frame from the gateway. Every header value is a string and `data` is a JSON string
/// (double-encoded), as DingTalk sends them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownstreamFrame {
    /// `"1.0"`; SYSTEM frames may omit it.
    #[serde(default)]
    pub spec_version: Option<String>,
    /// `CALLBACK`, `EVENT` or `SYSTEM`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `topic`, `messageId`, `contentType`, `time`, and any others (kept, ignored).
    #[serde(default)]
    pub headers: HashMap<String, String>,
    /// The payload, a JSON string.
    #[serde(default)]
    pub data: String,
}

impl DownstreamFrame {
    /// The `topic` header.
    pub fn topic(&self) -> &str {
        self.headers.get("topic").map_or("", String::as_str)
    }

    /// The `messageId` header (what the ACK must echo).
    pub fn message_id(&self) -> &str {
        self.headers.get("messageId").map_or("", String::as_str)
    }
}

/// The client's answer to a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckFrame {
    /// 200 ok, 400 bad request, 404 unknown topic, 500 internal error.
    pub code: u16,
    /// `contentType` and the frame's `messageId`.
    pub headers: HashMap<String, String>,
    /// `"OK"`.
    pub message: String,
    /// A JSON string (for robot callbacks the server ignores it).
    pub data: String,
}

impl AckFrame {
    /// A 200 ACK of `message_id` carrying `data`.
    pub fn ok(message_id: &str, data: String) -> AckFrame {
        let headers = HashMap::from([
            ("contentType".to_owned(), "application/json".to_owned()),
            ("messageId".to_owned(), message_id.to_owned()),
        ]);
        AckFrame {
            code: 200,
            headers,
            message: "OK".to_owned(),
            data,
        }
    }

    /// The ACK of a robot callback: `{"response": null}`, as DingTalk recommends.
    pub fn callback(message_id: &str) -> AckFrame {
        AckFrame::ok(message_id, r#"{"response":null}"#.to_owned())
    }

    /// The answer to a SYSTEM `ping`: its `data` echoed.
    pub fn pong(ping: &DownstreamFrame) -> AckFrame {
        AckFrame::ok(ping.message_id(), ping.data.clone())
    }

    /// The ACK of an EVENT frame (status `SUCCESS`).
    pub fn event_success(message_id: &str) -> AckFrame {
        AckFrame::ok(
            message_id,
            r#"{"status":"SUCCESS","message":"success"}"#.to_owned(),
        )
    }

    /// Serialises the ACK.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an ack of strings always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_callback_frame_with_string_headers() {
        let raw = r#"{"specVersion":"1.0","type":"CALLBACK","headers":{"appId":"939c","connectionId":"0987","contentType":"application/json","messageId":"bbb43a7_fc9","time":"1774098949543","topic":"/v1.0/im/bot/messages/get"},"data":"{\"msgId\":\"m1\",\"msgtype\":\"text\",\"text\":{\"content\":\"?\"}}"}"#;
        let f: DownstreamFrame = serde_json::from_str(raw).unwrap();
        assert_eq!(f.kind, "CALLBACK");
        assert_eq!(f.topic(), BOT_MESSAGE_TOPIC);
        assert_eq!(f.message_id(), "bbb43a7_fc9");
        assert!(f.data.contains("\"msgId\":\"m1\""));
    }

    #[test]
    fn pong_echoes_the_ping_data_and_message_id() {
        let raw = r#"{"type":"SYSTEM","headers":{"topic":"ping","messageId":"p1","contentType":"application/json"},"data":"{\"opaque\":\"123-dsfs\"}"}"#;
        let ping: DownstreamFrame = serde_json::from_str(raw).unwrap();
        let ack: serde_json::Value =
            serde_json::from_str(&AckFrame::pong(&ping).to_json()).unwrap();
        assert_eq!(ack["code"], 200);
        assert_eq!(ack["headers"]["messageId"], "p1");
        assert_eq!(ack["data"], "{\"opaque\":\"123-dsfs\"}");
    }
}
