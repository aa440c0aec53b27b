//! Enterprise chat formats: a task package rendered for DingTalk custom robots, WeCom group
//! robots, Feishu/Lark custom bots and Slack incoming webhooks, with each platform's signature
//! and its way of saying "failed" inside an HTTP 200.
//!
//! Three steps, each usable alone:
//! 1. [`ChatFields::from_package`]: the values a message shows (risk level with emoji and
//!    colour, brand, source linked to `associated_url`, the evidence fragment cut on a character
//!    boundary, the intervention script, the task id, the callback link).
//! 2. [`render`]: the platform's JSON body, from the built-in template or a [`Template`] of
//!    `{{placeholder}}`s ([`PLACEHOLDERS`] lists them).
//! 3. [`WebhookClient::send_chat`](crate::WebhookClient::send_chat): signs (DingTalk: `timestamp`
//!    and `sign` query parameters; Feishu: `timestamp` and `sign` in the body), posts through the
//!    same SSRF guard, breaker and body cap as a webhook, and classifies the platform's answer
//!    with [`classify_response`] (`errcode`/`code` != 0 is a failure; throttles are retryable).
//!
//! Formats follow each platform's documentation: DingTalk `{"msgtype":"markdown","markdown":
//! {"title","text"}}`; WeCom `{"msgtype":"markdown","markdown":{"content"}}` (4,096 bytes at
//! most); Feishu `{"msg_type":"interactive","card":{..}}`; Slack `{"text","blocks":[..]}`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use retry_policy::Outcome;
use serde_json::{Value, json};
use sha2::Sha256;

/// A chat platform whose incoming webhook we render for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatKind {
    /// DingTalk custom group robot (`oapi.dingtalk.com/robot/send?access_token=`), markdown.
    DingTalkRobot,
    /// WeCom (企业微信) group robot (`qyapi.weixin.qq.com/cgi-bin/webhook/send?key=`), markdown.
    WeComRobot,
    /// Feishu/Lark custom bot (`open.feishu.cn/open-apis/bot/v2/hook/..`), interactive card.
    FeishuRobot,
    /// Slack incoming webhook (`hooks.slack.com/services/..`), blocks.
    Slack,
}

impl ChatKind {
    /// Every kind.
    pub const ALL: [ChatKind; 4] = [
        ChatKind::DingTalkRobot,
        ChatKind::WeComRobot,
        ChatKind::FeishuRobot,
        ChatKind::Slack,
    ];

    /// The configuration name: `dingtalk_robot`, `wecom_robot`, `feishu_robot`, `slack`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::DingTalkRobot => "dingtalk_robot",
            ChatKind::WeComRobot => "wecom_robot",
            ChatKind::FeishuRobot => "feishu_robot",
            ChatKind::Slack => "slack",
        }
    }

    /// The `delivery_format` name written into packages sent this way.
    pub fn delivery_format(self) -> &'static str {
        match self {
            ChatKind::DingTalkRobot => "dingtalk_markdown",
            ChatKind::WeComRobot => "wecom_markdown",
            ChatKind::FeishuRobot => "feishu_card",
            ChatKind::Slack => "slack_blocks",
        }
    }
}

impl fmt::Display for ChatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not a [`ChatKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown chat kind {0:?} (expected dingtalk_robot, wecom_robot, feishu_robot or slack)")]
pub struct UnknownChatKind(pub String);

impl FromStr for ChatKind {
    type Err = UnknownChatKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChatKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownChatKind(s.to_owned()))
    }
}

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

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
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
    /// The fields of `package` (the task package JSON) delivered as task `task_id`, the
    /// fragment cut to `fragment_chars` characters. Missing fields are empty.
    pub fn from_package(task_id: &str, package: &Value, fragment_chars: usize) -> ChatFields {
        let ev = |k: &str| str_at(package, &["evidence_data", k]);
        let level = ev("risk_level").to_ascii_lowercase();
        let (label, emoji, color) = match level.as_str() {
            "critical" => ("严重", "🔴", "#C62828"),
            "high" => ("高", "🟠", "#EF6C00"),
            "medium" => ("中", "🟡", "#F9A825"),
            "low" => ("低", "🟢", "#2E7D32"),
            _ => ("未知", "⚪", "#757575"),
        };
        // A quote is one line in every platform's markdown: newlines would end it.
        let fragment = ev("evidence_fragment")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mut values = BTreeMap::new();
        values.insert("task_id", task_id.to_owned());
        values.insert("task_type", str_at(package, &["task_type"]).to_owned());
        values.insert("risk_level", level);
        values.insert("risk_label", label.to_owned());
        values.insert("risk_emoji", emoji.to_owned());
        values.insert("risk_color", color.to_owned());
        values.insert("brand", ev("brand_name").to_owned());
        values.insert("source_name", ev("source_name").to_owned());
        values.insert("associated_url", ev("associated_url").to_owned());
        values.insert("fragment", truncate_chars(&fragment, fragment_chars));
        values.insert("intervention_script", ev("intervention_script").to_owned());
        values.insert(
            "callback_url",
            str_at(package, &["delivery_instructions", "callback_url"]).to_owned(),
        );
        values.insert(
            "callback_token",
            str_at(package, &["delivery_instructions", "callback_token"]).to_owned(),
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
/// message text. Unsigned: [`signed_request`] adds the signature at send time.
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

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    B64.encode(mac.finalize().into_bytes())
}

/// DingTalk's custom robot signature: base64(HMAC-SHA256(key = secret, message =
/// `"{timestamp_ms}\n{secret}"`)), not yet URL-encoded.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    hmac_b64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// Feishu/Lark's custom bot signature: base64(HMAC-SHA256(key = `"{timestamp_s}\n{secret}"`,
/// message = empty)).
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    hmac_b64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

/// The URL and body to send at `now_ms` (Unix milliseconds): DingTalk gets `timestamp` (ms)
/// and `sign` appended to the query (form-encoded, so `+ / =` are escaped); Feishu gets
/// `timestamp` (s) and `sign` in the body. Without a secret, or for WeCom and Slack (whose
/// secret is the URL itself), both are returned unchanged.
///
/// # Errors
///
/// [`crate::Error::InvalidUrl`] when `url` does not parse.
pub fn signed_request(
    kind: ChatKind,
    url: &str,
    secret: Option<&str>,
    body: &Value,
    now_ms: i64,
) -> crate::Result<(String, Value)> {
    let mut url = url::Url::parse(url)
        .map_err(|_| crate::Error::InvalidUrl("not an absolute http(s) URL".into()))?;
    let mut body = body.clone();
    match (kind, secret.filter(|s| !s.is_empty())) {
        (ChatKind::DingTalkRobot, Some(secret)) => {
            let sign = dingtalk_sign(secret, now_ms);
            url.query_pairs_mut()
                .append_pair("timestamp", &now_ms.to_string())
                .append_pair("sign", &sign);
        }
        (ChatKind::FeishuRobot, Some(secret)) => {
            let ts = now_ms.div_euclid(1000);
            if let Some(obj) = body.as_object_mut() {
                obj.insert("timestamp".into(), Value::String(ts.to_string()));
                obj.insert("sign".into(), Value::String(feishu_sign(secret, ts)));
            }
        }
        _ => {}
    }
    Ok((url.into(), body))
}

/// How long a throttled platform asks us to wait, by its documented limits: DingTalk blocks a
/// robot for 10 minutes after 20 messages a minute; WeCom allows 20 a minute; Feishu 100 a minute.
fn throttle_wait(kind: ChatKind) -> Duration {
    match kind {
        ChatKind::DingTalkRobot => Duration::from_secs(600),
        ChatKind::WeComRobot => Duration::from_secs(60),
        ChatKind::FeishuRobot => Duration::from_secs(10),
        ChatKind::Slack => Duration::from_secs(1),
    }
}

/// The platform's verdict on a response, given the outcome its HTTP status already had.
///
/// - DingTalk and WeCom answer HTTP 200 with `errcode`: 0 is success; DingTalk `130101` (send
///   too fast) and WeCom `45009` (api freq out of limit) are throttles, retryable after the
///   platform's window; `-1` (system busy) is retryable; any other code (bad signature
///   `310000`, unknown token, keyword mismatch, bad key `93000`...) is permanent.
/// - Feishu answers `code` (or `StatusCode` in the older shape): 0 is success; `9499` and
///   `11232` (frequency limits) are retryable; others (`19021` sign mismatch...) permanent.
/// - Slack answers `ok` with 200; 400 `invalid_payload`, 403, 404 and 410 are permanent; 429
///   keeps its `Retry-After`.
///
/// Returns the outcome and, for a failure read from the body, a description.
pub fn classify_response(
    kind: ChatKind,
    status: u16,
    body: Option<&str>,
    http_outcome: Outcome,
) -> (Outcome, Option<String>) {
    if !(200..300).contains(&status) {
        if kind == ChatKind::Slack && matches!(status, 400 | 403 | 404 | 410) {
            let why = body.unwrap_or("").trim();
            return (
                Outcome::Permanent,
                Some(format!("slack: HTTP {status} {why}")),
            );
        }
        return (http_outcome, None);
    }
    let parsed = body.and_then(|b| serde_json::from_str::<Value>(b).ok());
    let field = |names: &[&str]| -> Option<(i64, String)> {
        let v = parsed.as_ref()?;
        let code = names
            .iter()
            .find_map(|n| v.get(*n).and_then(Value::as_i64))?;
        let msg = ["errmsg", "msg", "StatusMessage"]
            .iter()
            .find_map(|n| v.get(*n).and_then(Value::as_str))
            .unwrap_or("")
            .to_owned();
        Some((code, msg))
    };
    let (code, msg, throttles): (i64, String, &[i64]) = match kind {
        ChatKind::DingTalkRobot => match field(&["errcode"]) {
            Some((c, m)) => (c, m, &[130_101, -1]),
            None => return (Outcome::Success, None),
        },
        ChatKind::WeComRobot => match field(&["errcode"]) {
            Some((c, m)) => (c, m, &[45_009, -1]),
            None => return (Outcome::Success, None),
        },
        ChatKind::FeishuRobot => match field(&["code", "StatusCode"]) {
            Some((c, m)) => (c, m, &[9499, 11_232]),
            None => return (Outcome::Success, None),
        },
        ChatKind::Slack => return (Outcome::Success, None),
    };
    if code == 0 {
        return (Outcome::Success, None);
    }
    let error = format!("{kind}: code {code} {msg}");
    if throttles.contains(&code) {
        let retry_after = (code != -1).then(|| throttle_wait(kind));
        (Outcome::Retryable { retry_after }, Some(error))
    } else {
        (Outcome::Permanent, Some(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(level: &str) -> Value {
        json!({
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
        })
    }

    #[test]
    fn dingtalk_signature_matches_the_documented_algorithm() {
        let s = dingtalk_sign("SECmockrobotsecret", 1_700_000_000_000);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"SECmockrobotsecret").unwrap();
        mac.update(b"1700000000000\nSECmockrobotsecret");
        assert_eq!(s, B64.encode(mac.finalize().into_bytes()));
        assert_ne!(s, dingtalk_sign("SECmockrobotsecret", 1_700_000_000_001));
        let (url, _) = signed_request(
            ChatKind::DingTalkRobot,
            "https://oapi.dingtalk.com/robot/send?access_token=t",
            Some("SECmockrobotsecret"),
            &json!({}),
            1_700_000_000_000,
        )
        .unwrap();
        let u = url::Url::parse(&url).unwrap();
        let q: BTreeMap<_, _> = u.query_pairs().collect();
        assert_eq!(q["access_token"], "t");
        assert_eq!(q["timestamp"], "1700000000000");
        assert_eq!(q["sign"], s);
        assert!(!url.contains('+') && !url.contains("=="), "{url}");
    }

    #[test]
    fn feishu_signature_keys_the_hmac_with_timestamp_and_secret() {
        let (_, body) = signed_request(
            ChatKind::FeishuRobot,
            "https://open.feishu.cn/open-apis/bot/v2/hook/x",
            Some("s3"),
            &json!({"msg_type": "interactive"}),
            1_700_000_000_999,
        )
        .unwrap();
        assert_eq!(body["timestamp"], "1700000000");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"1700000000\ns3").unwrap();
        mac.update(b"");
        assert_eq!(body["sign"], B64.encode(mac.finalize().into_bytes()));
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

    #[test]
    fn errcodes_are_failures_and_throttles_are_retryable() {
        let ok = Outcome::Success;
        let c = |k, s, b: &str| classify_response(k, s, Some(b), ok).0;
        assert_eq!(
            c(
                ChatKind::DingTalkRobot,
                200,
                r#"{"errcode":0,"errmsg":"ok"}"#
            ),
            Outcome::Success
        );
        assert_eq!(
            c(
                ChatKind::DingTalkRobot,
                200,
                r#"{"errcode":130101,"errmsg":"send too fast"}"#
            ),
            Outcome::Retryable {
                retry_after: Some(Duration::from_secs(600))
            }
        );
        assert_eq!(
            c(
                ChatKind::DingTalkRobot,
                200,
                r#"{"errcode":310000,"errmsg":"sign not match"}"#
            ),
            Outcome::Permanent
        );
        assert!(matches!(
            c(
                ChatKind::WeComRobot,
                200,
                r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
            ),
            Outcome::Retryable { .. }
        ));
        assert_eq!(
            c(
                ChatKind::FeishuRobot,
                200,
                r#"{"code":19021,"msg":"sign match fail"}"#
            ),
            Outcome::Permanent
        );
        assert_eq!(
            c(
                ChatKind::FeishuRobot,
                200,
                r#"{"StatusCode":0,"StatusMessage":"success"}"#
            ),
            Outcome::Success
        );
        assert_eq!(c(ChatKind::Slack, 200, "ok"), Outcome::Success);
        assert_eq!(
            classify_response(
                ChatKind::Slack,
                404,
                Some("no_service"),
                Outcome::Retryable { retry_after: None }
            )
            .0,
            Outcome::Permanent
        );
        let ra = Outcome::Retryable {
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(classify_response(ChatKind::Slack, 429, None, ra).0, ra);
    }
}
