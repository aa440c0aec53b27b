//! Message rendering: a task package as a chat message, in the product's words (risk labels
//! and emoji, the four built-in Chinese templates), for each chat platform's body format.
//!
//! Two steps, each usable alone:
//! 1. [`ChatFields::from_package`]: the values a message shows (risk level with emoji and
//!    colour, brand, source linked to `associated_url`, the evidence fragment cut on a character
//!    boundary, the intervention script, the task id, the callback link).
//! 2. [`render`]: the platform's JSON body, from the built-in template or a [`Template`] of
//!    `{{placeholder}}`s ([`PLACEHOLDERS`] lists them).
//!
//! Sending (signature, POST, the platform's verdict) is transport:
//! [`webhook_client::WebhookClient::send_chat`].
//!
//! Formats follow each platform's documentation: DingTalk `{"msgtype":"markdown","markdown":
//! {"title","text"}}`; WeCom `{"msgtype":"markdown","markdown":{"content"}}` (4,096 bytes at
//! most); Feishu `{"msg_type":"interactive","card":{..}}`; Slack `{"text","blocks":[..]}`.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use task_package::{RiskLevel, TaskPackage};
pub use webhook_client::chat::ChatKind;

/// The placeholders a [`Template`] may use, with what they hold.
pub const PLACEHOLDERS: [(&str, &str); 14] = [
    ("task_id", "the task id (wf_...)"),
    (
        "task_type",
        "the scenario, e.g. negative_evidence_intervention",
    ),
    ("risk_level", "low, medium, high or critical"),
    ("risk_label", "the level in Chinese: 低, 中, 高, 严重"),
    ("risk_emoji", "🟢 low, 🟡 medium, 🟠 high, 🔴 critical"),
    ("risk_color", "#2E7D32, #F9A825, #EF6C00, #C62828 by level"),
    ("brand", "the brand concerned"),
    ("source_name", "where the evidence was published"),
    ("associated_url", "the evidence's URL"),
    (
        "source_link",
        "source_name linked to associated_url in the platform's syntax",
    ),
    (
        "fragment",
        "the evidence fragment, cut on a character boundary (500 characters by default)",
    ),
    ("intervention_script", "the suggested answer or action"),
    ("callback_url", "where the receiver reports back (POST)"),
    (
        "callback_token",
        "the token to report back with (X-Callback-Token)",
    ),
];

/// Default number of characters of the evidence fragment shown.
pub const DEFAULT_FRAGMENT_CHARS: usize = 500;

/// WeCom's markdown `content` limit, in bytes.
pub const WECOM_CONTENT_BYTES: usize = 4096;

/// Slack's limit for a section's text, in characters.
pub const SLACK_SECTION_CHARS: usize = 3000;

/// The values a chat message shows, taken from a task package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatFields {
    values: BTreeMap<&'static str, String>,
}

/// `s` cut to at most `max` characters (never inside a UTF-8 character), with `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some(_) => {
            let keep: String = s.chars().take(max.saturating_sub(1)).collect();
            format!("{}…", keep.trim_end())
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl ChatFields {
    /// The fields of `package` delivered as task `task_id`, the fragment cut to
    /// `fragment_chars` characters. Unset callback fields are empty.
    pub fn from_package(task_id: &str, package: &TaskPackage, fragment_chars: usize) -> ChatFields {
        let ev = &package.evidence_data;
        let (label, emoji, color) = match ev.risk_level {
            RiskLevel::Critical => ("严重", "🔴", "#C62828"),
            RiskLevel::High => ("高", "🟠", "#EF6C00"),
            RiskLevel::Medium => ("中", "🟡", "#F9A825"),
            RiskLevel::Low => ("低", "🟢", "#2E7D32"),
        };
        // A quote is one line in every platform's markdown: newlines would end it.
        let fragment = ev
            .evidence_fragment
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let delivery = &package.delivery_instructions;
        let mut values = BTreeMap::new();
        values.insert("task_id", task_id.to_owned());
        values.insert("task_type", package.task_type.as_str().to_owned());
        values.insert("risk_level", ev.risk_level.as_str().to_owned());
        values.insert("risk_label", label.to_owned());
        values.insert("risk_emoji", emoji.to_owned());
        values.insert("risk_color", color.to_owned());
        values.insert("brand", ev.brand_name.clone());
        values.insert("source_name", ev.source_name.clone());
        values.insert("associated_url", ev.associated_url.clone());
        values.insert("fragment", truncate_chars(&fragment, fragment_chars));
        values.insert("intervention_script", ev.intervention_script.clone());
        values.insert(
            "callback_url",
            delivery.callback_url.clone().unwrap_or_default(),
        );
        values.insert(
            "callback_token",
            delivery.callback_token.clone().unwrap_or_default(),
        );
        ChatFields { values }
    }

    /// One field's value (`""` for an unknown name).
    pub fn get(&self, name: &str) -> &str {
        self.values.get(name).map_or("", String::as_str)
    }

    /// The values as a platform shows them: escaped for its markup, and `source_link` in
    /// its link syntax.
    fn for_kind(&self, kind: ChatKind) -> BTreeMap<&'static str, String> {
        let mut v = self.values.clone();
        let name = self.get("source_name");
        let url = self.get("associated_url");
        let link = match kind {
            ChatKind::Slack => {
                for value in v.values_mut() {
                    *value = slack_escape(value);
                }
                if url.is_empty() {
                    slack_escape(name)
                } else {
                    format!(
                        "<{}|{}>",
                        url.replace('|', "%7C").replace('>', "%3E"),
                        slack_escape(name).replace('|', "¦")
                    )
                }
            }
            _ => {
                if url.is_empty() {
                    name.to_owned()
                } else {
                    format!(
                        "[{}]({})",
                        name.replace('[', "【").replace(']', "】"),
                        url.replace('(', "%28")
                            .replace(')', "%29")
                            .replace(' ', "%20")
                    )
                }
            }
        };
        v.insert("source_link", link);
        v
    }

    /// The one-line title: `🟠 [高风险] 某品牌 · 微博`.
    pub fn title(&self) -> String {
        format!(
            "{} [{}风险] {} · {}",
            self.get("risk_emoji"),
            self.get("risk_label"),
            self.get("brand"),
            self.get("source_name")
        )
    }
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A message template: text with `{{placeholder}}`s (see [`PLACEHOLDERS`]), substituted
/// verbatim (after the platform's escaping). Checked when parsed, so a typo fails at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
}

/// A template names a placeholder that does not exist, or leaves `{{` unclosed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {0}")]
pub struct InvalidTemplate(pub String);

impl Template {
    /// Parses a template, checking every placeholder.
    ///
    /// # Errors
    ///
    /// [`InvalidTemplate`] naming the unknown placeholder.
    pub fn parse(text: &str) -> Result<Template, InvalidTemplate> {
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(InvalidTemplate("unclosed {{".to_owned()));
            };
            let name = after[..end].trim();
            if !PLACEHOLDERS.iter().any(|(p, _)| *p == name) {
                return Err(InvalidTemplate(format!(
                    "unknown placeholder {{{{{name}}}}} (known: {})",
                    PLACEHOLDERS
                        .iter()
                        .map(|(p, _)| *p)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            rest = &after[end + 2..];
        }
        Ok(Template {
            text: text.to_owned(),
        })
    }

    /// The built-in template of a platform.
    pub fn default_for(kind: ChatKind) -> Template {
        let text = match kind {
            ChatKind::DingTalkRobot => DINGTALK_TEMPLATE,
            ChatKind::WeComRobot => WECOM_TEMPLATE,
            ChatKind::FeishuRobot => FEISHU_TEMPLATE,
            ChatKind::Slack => SLACK_TEMPLATE,
        };
        Template {
            text: text.to_owned(),
        }
    }

    /// The text with every placeholder replaced.
    fn fill(&self, values: &BTreeMap<&'static str, String>) -> String {
        let mut out = String::with_capacity(self.text.len() + 256);
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find("}}") {
                Some(end) => {
                    let name = after[..end].trim();
                    out.push_str(values.get(name).map_or("", String::as_str));
                    rest = &after[end + 2..];
                }
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The template's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

const DINGTALK_TEMPLATE: &str = "### <font color={{risk_color}}>{{risk_emoji}} {{risk_label}}风险</font> · {{brand}}\n\n\
**来源**：{{source_link}}\n\n\
**证据**：\n\n> {{fragment}}\n\n\
**建议处置**：{{intervention_script}}\n\n\
**任务**：{{task_id}}（{{task_type}}）\n\n\
**回执**：POST {{callback_url}}（X-Callback-Token: {{callback_token}}）";

const WECOM_TEMPLATE: &str = "### {{risk_emoji}} <font color=\"warning\">{{risk_label}}风险</font> · {{brand}}\n\
> 来源：{{source_link}}\n\
> 证据：<font color=\"comment\">{{fragment}}</font>\n\n\
**建议处置**：{{intervention_script}}\n\
**任务**：{{task_id}}（{{task_type}}）\n\
**回执**：POST {{callback_url}}（X-Callback-Token: {{callback_token}}）";

const FEISHU_TEMPLATE: &str = "**来源**：{{source_link}}\n\
**证据**：{{fragment}}\n\
**建议处置**：{{intervention_script}}\n\
**任务**：{{task_id}}（{{task_type}}）\n\
**回执**：POST {{callback_url}}（X-Callback-Token: {{callback_token}}）";

// Chinese labels like the other kinds: the teams reading these work in Chinese.
const SLACK_TEMPLATE: &str = "*来源*：{{source_link}}\n\
*证据*：\n> {{fragment}}\n\
*建议处置*：{{intervention_script}}\n\
*任务*：`{{task_id}}`（{{task_type}}）\n\
*回执*：`POST {{callback_url}}`（`X-Callback-Token: {{callback_token}}`）";

/// The platform's JSON body for `fields`, with `template` (or the built-in one) as the
/// message text. Unsigned: [`webhook_client::chat::signed_request`] adds the signature at send time.
pub fn render(kind: ChatKind, fields: &ChatFields, template: Option<&Template>) -> Value {
    let default = Template::default_for(kind);
    let text = template.unwrap_or(&default).fill(&fields.for_kind(kind));
    let title = fields.title();
    match kind {
        ChatKind::DingTalkRobot => json!({
            "msgtype": "markdown",
            "markdown": {"title": title, "text": text},
        }),
        ChatKind::WeComRobot => json!({
            "msgtype": "markdown",
            "markdown": {"content": truncate_bytes(&text, WECOM_CONTENT_BYTES)},
        }),
        ChatKind::FeishuRobot => {
            let colour = match fields.get("risk_level") {
                "critical" => "red",
                "high" => "orange",
                "medium" => "yellow",
                "low" => "green",
                _ => "grey",
            };
            let mut elements = vec![json!({
                "tag": "div",
                "text": {"tag": "lark_md", "content": text},
            })];
            let url = fields.get("associated_url");
            if !url.is_empty() {
                elements.push(json!({
                    "tag": "action",
                    "actions": [{
                        "tag": "button",
                        "text": {"tag": "plain_text", "content": "查看原文"},
                        "type": "primary",
                        "url": url,
                    }],
                }));
            }
            json!({
                "msg_type": "interactive",
                "card": {
                    "config": {"wide_screen_mode": true},
                    "header": {
                        "title": {"tag": "plain_text", "content": title},
                        "template": colour,
                    },
                    "elements": elements,
                },
            })
        }
        ChatKind::Slack => json!({
            "text": title,
            "blocks": [
                {
                    "type": "header",
                    "text": {"type": "plain_text", "text": truncate_chars(&title, 150), "emoji": true},
                },
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": truncate_chars(&text, SLACK_SECTION_CHARS)},
                },
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": format!("任务 `{}` · {}风险", fields.get("task_id"), fields.get("risk_label"))}],
                },
            ],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(level: &str) -> TaskPackage {
        serde_json::from_value(json!({
            "task_type": "negative_evidence_intervention",
            "evidence_data": {
                "evidence_fragment": "电池续航\n严重虚标 <b>&",
                "associated_url": "https://weibo.com/1/Ab(c)",
                "source_name": "微博",
                "risk_level": level,
                "brand_name": "某品牌",
                "intervention_script": "请私信订单号",
            },
            "delivery_instructions": {
                "webhook_url": "",
                "callback_url": "http://d/workflow/tasks/wf_1_a/callback",
                "callback_token": "tok",
            },
            "metadata": {"created_at": "2024-01-01T00:00:00Z", "version": "1.0"},
        }))
        .unwrap()
    }

    #[test]
    fn renders_level_link_fragment_and_callback_for_every_kind() {
        let f = ChatFields::from_package("wf_1_a", &package("critical"), 6);
        assert_eq!(f.get("fragment"), "电池续航…");
        let d = render(ChatKind::DingTalkRobot, &f, None);
        assert_eq!(d["msgtype"], "markdown");
        let text = d["markdown"]["text"].as_str().unwrap();
        assert!(text.contains("🔴") && text.contains("#C62828"), "{text}");
        assert!(
            text.contains("[微博](https://weibo.com/1/Ab%28c%29)"),
            "{text}"
        );
        assert!(
            text.contains("wf_1_a") && text.contains("/callback"),
            "{text}"
        );
        let w = render(ChatKind::WeComRobot, &f, None);
        assert!(
            w["markdown"]["content"]
                .as_str()
                .unwrap()
                .contains("某品牌")
        );
        let fs = render(ChatKind::FeishuRobot, &f, None);
        assert_eq!(fs["card"]["header"]["template"], "red");
        assert_eq!(
            fs["card"]["elements"][1]["actions"][0]["url"],
            "https://weibo.com/1/Ab(c)"
        );
        let s = render(
            ChatKind::Slack,
            &ChatFields::from_package("wf_1_a", &package("low"), 500),
            None,
        );
        let section = s["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(
            section.contains("<https://weibo.com/1/Ab(c)|微博>"),
            "{section}"
        );
        assert!(section.contains("&lt;b&gt;&amp;"), "escaped: {section}");
        assert!(s["text"].as_str().unwrap().contains("🟢"));
    }

    #[test]
    fn templates_substitute_and_reject_unknown_placeholders() {
        let t = Template::parse("{{risk_emoji}} {{ brand }}: {{task_id}}").unwrap();
        let f = ChatFields::from_package("wf_9", &package("high"), 500);
        let w = render(ChatKind::WeComRobot, &f, Some(&t));
        assert_eq!(w["markdown"]["content"], "🟠 某品牌: wf_9");
        let e = Template::parse("{{brnad}}").unwrap_err().to_string();
        assert!(e.contains("brnad"), "{e}");
        assert!(Template::parse("{{task_id").is_err());
    }

    #[test]
    fn truncation_never_splits_a_character() {
        let s = "情".repeat(2000);
        let t = truncate_bytes(&s, WECOM_CONTENT_BYTES);
        assert!(t.len() <= WECOM_CONTENT_BYTES && t.ends_with('…'));
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
    }
}
