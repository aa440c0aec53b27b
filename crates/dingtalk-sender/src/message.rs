//! Robot messages: the OpenAPI `msgKey`/`msgParam` forms and the session-webhook bodies.

use serde_json::{Value, json};

use crate::error::Error;

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

    /// A card with one button (`sampleActionCard`).
    pub fn action_card(
        title: impl Into<String>,
        text: impl Into<String>,
        single_title: impl Into<String>,
        single_url: impl Into<String>,
    ) -> Message {
        Message::ActionCard {
            title: title.into(),
            text: text.into(),
            single_title: single_title.into(),
            single_url: single_url.into(),
        }
    }

    /// A card with 2 to 5 vertical buttons (`sampleActionCard2`..`5`), each `(label, link)`.
    /// Another number of buttons is refused at send time with [`Error::InvalidMessage`].
    pub fn action_card_buttons(
        title: impl Into<String>,
        text: impl Into<String>,
        buttons: impl IntoIterator<Item = (String, String)>,
    ) -> Message {
        Message::ActionCardButtons {
            title: title.into(),
            text: text.into(),
            buttons: buttons.into_iter().collect(),
        }
    }

    /// Checks what DingTalk would refuse.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] for an action card without 2 to 5 buttons.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Message::ActionCardButtons { buttons, .. } if !(2..=5).contains(&buttons.len()) => {
                Err(Error::InvalidMessage(format!(
                    "an action card takes 2 to 5 buttons, not {}",
                    buttons.len()
                )))
            }
            _ => Ok(()),
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

    /// The body for a session webhook (the custom-robot formats): `text` or `markdown` with
    /// `at.atUserIds`, or `actionCard` (which cannot mention anyone). DingTalk renders an @ only
    /// if `@userId` also appears in the content, so it is prepended when mentioning.
    pub fn session_body<S: AsRef<str>>(&self, at_user_ids: &[S]) -> Value {
        let at: Vec<&str> = at_user_ids.iter().map(AsRef::as_ref).collect();
        let mention: String = at.iter().map(|u| format!("@{u} ")).collect();
        let mut body = match self {
            Message::Text { content } => {
                json!({"msgtype": "text", "text": {"content": format!("{mention}{content}")}})
            }
            Message::Markdown { title, text } => {
                json!({"msgtype": "markdown", "markdown": {"title": title, "text": format!("{mention}{text}")}})
            }
            Message::ActionCard {
                title,
                text,
                single_title,
                single_url,
            } => json!({"msgtype": "actionCard", "actionCard": {
                "title": title, "text": text, "singleTitle": single_title, "singleURL": single_url,
            }}),
            Message::ActionCardButtons {
                title,
                text,
                buttons,
            } => {
                let btns: Vec<Value> = buttons
                    .iter()
                    .map(|(label, url)| json!({"title": label, "actionURL": url}))
                    .collect();
                json!({"msgtype": "actionCard", "actionCard": {
                    "title": title, "text": text, "btns": btns, "btnOrientation": "0",
                }})
            }
        };
        if !at.is_empty() && matches!(self, Message::Text { .. } | Message::Markdown { .. }) {
            body["at"] = json!({"atUserIds": at, "isAtAll": false});
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
        let b = Message::text("收到").session_body(&["u1"]);
        assert_eq!(b["text"]["content"], "@u1 收到");
        assert_eq!(b["at"]["atUserIds"], json!(["u1"]));
        let b = Message::markdown("t", "x").session_body::<&str>(&[]);
        assert_eq!(
            b,
            json!({"msgtype": "markdown", "markdown": {"title": "t", "text": "x"}})
        );
    }

    #[test]
    fn action_cards_use_the_documented_keys_and_are_validated() {
        let card = Message::action_card("t", "x", "查看", "https://a");
        assert_eq!(card.msg_key(), "sampleActionCard");
        let p: Value = serde_json::from_str(&card.msg_param()).unwrap();
        assert_eq!(p["singleTitle"], "查看");
        assert_eq!(p["singleURL"], "https://a");
        assert_eq!(
            card.session_body(&["u"])["actionCard"]["singleURL"],
            "https://a"
        );
        let one = Message::action_card_buttons("t", "x", [("a".into(), "https://a".into())]);
        assert!(matches!(one.validate(), Err(Error::InvalidMessage(_))));
        let five = Message::action_card_buttons(
            "t",
            "x",
            (0..5).map(|i| (format!("b{i}"), format!("https://b/{i}"))),
        );
        five.validate().unwrap();
        assert_eq!(five.msg_key(), "sampleActionCard5");
        assert_eq!(
            five.session_body::<&str>(&[])["actionCard"]["btns"][4]["actionURL"],
            "https://b/4"
        );
    }
}
