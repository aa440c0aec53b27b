//! Robot messages: the OpenAPI `msgKey`/`msgParam` forms and the session-webhook bodies.

use serde_json::{Value, json};

/// A message a robot sends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Plain text (`sampleText`).
    Text {
        /// The text.
        content: String,
    },
    /// Markdown (`sampleMarkdown`); `title` is the notification preview.
    Markdown {
        /// Preview line.
        title: String,
        /// Markdown body.
        text: String,
    },
    /// A card with one button (`sampleActionCard`).
    ActionCard {
        /// Title.
        title: String,
        /// Markdown body.
        text: String,
        /// Button label.
        single_title: String,
        /// Button link.
        single_url: String,
    },
    /// A card with 2 to 5 vertical buttons (`sampleActionCard2`..`5`): (label, link).
    ActionCardButtons {
        /// Title.
        title: String,
        /// Markdown body.
        text: String,
        /// The buttons.
        buttons: Vec<(String, String)>,
    },
}

impl Message {
    /// Text.
    pub fn text(content: impl Into<String>) -> Message {
        Message::Text {
            content: content.into(),
        }
    }

    /// Markdown.
    pub fn markdown(title: impl Into<String>, text: impl Into<String>) -> Message {
        Message::Markdown {
            title: title.into(),
            text: text.into(),
        }
    }

    /// The OpenAPI `msgKey`.
    pub fn msg_key(&self) -> String {
        match self {
            Message::Text { .. } => "sampleText".into(),
            Message::Markdown { .. } => "sampleMarkdown".into(),
            Message::ActionCard { .. } => "sampleActionCard".into(),
            Message::ActionCardButtons { buttons, .. } => {
                format!("sampleActionCard{}", buttons.len().clamp(2, 5))
            }
        }
    }

    /// The OpenAPI `msgParam` (a JSON string, as DingTalk requires).
    pub fn msg_param(&self) -> String {
        let v = match self {
            Message::Text { content } => json!({"content": content}),
            Message::Markdown { title, text } => json!({"title": title, "text": text}),
            Message::ActionCard {
                title,
                text,
                single_title,
                single_url,
            } => {
                json!({"title": title, "text": text, "singleTitle": single_title, "singleURL": single_url})
            }
            Message::ActionCardButtons {
                title,
                text,
                buttons,
            } => {
                let mut v = json!({"title": title, "text": text});
                for (i, (label, url)) in buttons.iter().take(5).enumerate() {
                    v[format!("actionTitle{}", i + 1)] = json!(label);
                    v[format!("actionURL{}", i + 1)] = json!(url);
                }
                v
            }
        };
        v.to_string()
    }

    /// The body for a session webhook (text or markdown; cards are sent as markdown), with
    /// `at.atUserIds`. DingTalk renders an @ only if `@userId` also appears in the content, so
    /// it is prepended when mentioning.
    pub fn session_body(&self, at_user_ids: &[String]) -> Value {
        let mention: String = at_user_ids.iter().map(|u| format!("@{u} ")).collect();
        let mut body = match self {
            Message::Text { content } => {
                json!({"msgtype": "text", "text": {"content": format!("{mention}{content}")}})
            }
            Message::Markdown { title, text }
            | Message::ActionCard { title, text, .. }
            | Message::ActionCardButtons { title, text, .. } => {
                json!({"msgtype": "markdown", "markdown": {"title": title, "text": format!("{mention}{text}")}})
            }
        };
        if !at_user_ids.is_empty() {
            body["at"] = json!({"atUserIds": at_user_ids, "isAtAll": false});
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_param_is_a_json_string_with_the_documented_keys() {
        let m = Message::markdown("任务完成", "### 结果\n- ok");
        assert_eq!(m.msg_key(), "sampleMarkdown");
        let p: Value = serde_json::from_str(&m.msg_param()).unwrap();
        assert_eq!(p, json!({"title": "任务完成", "text": "### 结果\n- ok"}));
        let card = Message::ActionCardButtons {
            title: "t".into(),
            text: "x".into(),
            buttons: vec![
                ("查看".into(), "https://a".into()),
                ("取消".into(), "https://b".into()),
            ],
        };
        assert_eq!(card.msg_key(), "sampleActionCard2");
        let p: Value = serde_json::from_str(&card.msg_param()).unwrap();
        assert_eq!(p["actionTitle2"], "取消");
        assert_eq!(p["actionURL1"], "https://a");
    }

    #[test]
    fn session_body_mentions_in_content_and_at() {
        let b = Message::text("收到").session_body(&["u1".to_owned()]);
        assert_eq!(b["text"]["content"], "@u1 收到");
        assert_eq!(b["at"]["atUserIds"], json!(["u1"]));
    }
}
