//! Preset delivery channels: named targets configured on the server (`[[channels]]` or
//! `[channels.<name>]` in the TOML file) that a task names instead of, or as well as, a
//! `webhook_url`.
//!
//! Kinds: `webhook` (the standard signed package), `dingtalk_robot`, `wecom_robot`,
//! `feishu_robot`, `slack` (chat messages rendered by [`crate::render`], sent in the platforms' wire formats of
//! [`webhook_client::chat`]) and
//! `dingtalk_app` (the DingTalk app robot through [`dingtalk_sender`]). Secrets come from
//! `secret_env` (an environment variable's name) or `secret_file` (a file's path), never from
//! the TOML itself. Each channel has its own rate limiter ([`limiter`]) that delays deliveries
//! instead of failing them, and its own circuit breaker (`channel:<name>`).
//!
//! [`Channels::check`] validates settings without side effects (no secret read, no client
//! built): for a service's configuration check. [`Channels::from_config`] builds them, once.

mod handler;
pub mod limiter;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dingtalk_sender::{DingTalkSender, Target};
use serde::{Deserialize, Deserializer, Serialize};
use webhook_client::SigningSecret;
use webhook_client::chat::ChatKind;

pub use handler::ChannelDeliveryHandler;
pub use limiter::{Rate, RateLimiter};

use crate::render::{DEFAULT_FRAGMENT_CHARS, Template};

/// A channel setting is missing, malformed or out of range; the message names the channel and
/// the field (`channels.<name>.<field>: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChannelConfigError(pub String);

use ChannelConfigError as ConfigError;

/// One channel as written in the configuration.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelConfig {
    /// The name tasks use (`"channel": "pr-team"`); in the `[channels.<name>]` form, the key.
    pub name: String,
    /// `webhook`, `dingtalk_robot`, `dingtalk_app`, `wecom_robot`, `feishu_robot` or `slack`.
    pub kind: String,
    /// The webhook URL (for `dingtalk_app`: the OpenAPI base, default `https://api.dingtalk.com`).
    pub url: Option<String>,
    /// Environment variable holding the secret (DingTalk `SEC...`, Feishu signing secret,
    /// `whsec_...` for `webhook`, the app's client secret for `dingtalk_app`).
    pub secret_env: Option<String>,
    /// File holding the secret (trailing whitespace ignored).
    pub secret_file: Option<PathBuf>,
    /// Limits such as `"20/min"` or `["5/s", "100/min"]` (defaults by kind; see the README).
    pub rate_limit: Option<RateList>,
    /// A message template with `{{placeholder}}`s (chat kinds; see [`crate::render`]).
    pub template: Option<String>,
    /// Characters of the evidence fragment shown in chat messages (default 500).
    pub fragment_chars: Option<usize>,
    /// `dingtalk_app`: the app's client id (AppKey).
    pub client_id: Option<String>,
    /// `dingtalk_app`: the robot code (default: the client id).
    pub robot_code: Option<String>,
    /// `dingtalk_app`: the group to send to (`openConversationId`).
    pub open_conversation_id: Option<String>,
    /// `dingtalk_app`: users to send to one-to-one (staff ids), instead of a group.
    pub user_ids: Option<Vec<String>>,
}

impl fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL of a chat robot carries its access token or key.
        f.debug_struct("ChannelConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("secret_env", &self.secret_env)
            .field("secret_file", &self.secret_file)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

/// One rate or several, as a TOML string or array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RateList(pub Vec<String>);

impl<'de> Deserialize<'de> for RateList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(RateList(match Raw::deserialize(d)? {
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        }))
    }
}

/// The configured channels: `[[channels]]` (a list with `name`) or `[channels.<name>]` tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ChannelList(pub Vec<ChannelConfig>);

impl<'de> Deserialize<'de> for ChannelList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<ChannelConfig>),
            Map(BTreeMap<String, ChannelConfig>),
        }
        Ok(ChannelList(match Raw::deserialize(d)? {
            Raw::List(v) => v,
            Raw::Map(m) => m
                .into_iter()
                .map(|(name, mut c)| {
                    if c.name.is_empty() {
                        c.name = name;
                    }
                    c
                })
                .collect(),
        }))
    }
}

/// A channel's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// The standard task package, signed per Standard Webhooks.
    Webhook,
    /// A chat robot's incoming webhook.
    Chat(ChatKind),
    /// The DingTalk app robot (OpenAPI).
    DingTalkApp,
}

impl ChannelKind {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Chat(k) => k.as_str(),
            ChannelKind::DingTalkApp => "dingtalk_app",
        }
    }

    fn parse(s: &str) -> Option<ChannelKind> {
        match s {
            "webhook" => Some(ChannelKind::Webhook),
            "dingtalk_app" => Some(ChannelKind::DingTalkApp),
            other => other.parse().ok().map(ChannelKind::Chat),
        }
    }

    /// The limits used when `rate_limit` is not set: DingTalk custom robots 20 a minute (more
    /// blocks the robot for 10 minutes), WeCom 20 a minute, Feishu 5 a second and 100 a minute,
    /// Slack 1 a second; `webhook` and `dingtalk_app` none (dingtalk-sender paces its own
    /// OpenAPI calls).
    pub fn default_rates(self) -> Vec<Rate> {
        let minute = Duration::from_secs(60);
        let second = Duration::from_secs(1);
        match self {
            ChannelKind::Chat(ChatKind::DingTalkRobot | ChatKind::WeComRobot) => {
                vec![Rate::new(20, minute)]
            }
            ChannelKind::Chat(ChatKind::FeishuRobot) => {
                vec![Rate::new(5, second), Rate::new(100, minute)]
            }
            ChannelKind::Chat(ChatKind::Slack) => vec![Rate::new(1, second)],
            ChannelKind::Webhook | ChannelKind::DingTalkApp => Vec::new(),
        }
    }

    /// The most a platform accepts per minute, which a configured limit may not exceed.
    fn max_per_minute(self) -> Option<f64> {
        match self {
            ChannelKind::Chat(ChatKind::DingTalkRobot | ChatKind::WeComRobot) => Some(20.0),
            ChannelKind::Chat(ChatKind::FeishuRobot) => Some(100.0),
            _ => None,
        }
    }
}

/// Where a `dingtalk_app` channel sends, and with what.
#[derive(Debug, Clone)]
pub struct DingTalkApp {
    /// The OpenAPI client.
    pub sender: DingTalkSender,
    /// The group or users.
    pub target: Target,
}

/// A validated channel, ready to deliver.
#[derive(Clone)]
pub struct Channel {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: ChannelKind,
    /// The webhook URL (empty for `dingtalk_app`).
    pub url: String,
    /// The secret, if any.
    secret: Option<String>,
    /// Signing secret of a `webhook` channel with its own `whsec_` secret.
    pub(crate) signing: Option<Vec<SigningSecret>>,
    /// The limits in force.
    pub rates: Vec<Rate>,
    /// The limiter.
    pub limiter: Arc<RateLimiter>,
    /// The message template (chat kinds and `dingtalk_app`).
    pub template: Option<Template>,
    /// Characters of the evidence fragment shown.
    pub fragment_chars: usize,
    /// The app robot, for `dingtalk_app`.
    pub app: Option<DingTalkApp>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("rates", &self.rates)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// The breaker key of the channel: `channel:<name>`.
    pub fn breaker_key(&self) -> String {
        format!("channel:{}", self.name)
    }

    /// The task `target` (per-target concurrency, list filter): the breaker key.
    pub fn target(&self) -> String {
        self.breaker_key()
    }

    pub(crate) fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }
}

/// What `GET /workflow/channels` shows of a channel: never its URL (chat URLs hold tokens) or
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelView {
    /// The name tasks use.
    pub name: String,
    /// The kind.
    pub kind: String,
    /// The limits in force, e.g. `["20/1m"]`.
    pub rate_limits: Vec<String>,
    /// Whether deliveries carry a signature: always for `webhook` (its own secret or the
    /// server's `signing_secret`); for `dingtalk_robot` and `feishu_robot` when a secret is
    /// configured; never for `wecom_robot` and `slack` (the URL is the credential) or
    /// `dingtalk_app` (OpenAPI access token).
    pub signed: bool,
    /// Whether the template was overridden.
    pub custom_template: bool,
}

/// The channels by name.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    by_name: Arc<BTreeMap<String, Channel>>,
}

/// Whether building a channel may touch the world (read its secret, build its client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Values only: secrets are taken as present, nothing is built.
    Check,
    /// Read secrets and build clients.
    Build,
}

fn read_secret(c: &ChannelConfig, field: &str, mode: Mode) -> Result<Option<String>, ConfigError> {
    let name = &c.name;
    if mode == Mode::Check {
        if c.secret_env.is_some() && c.secret_file.is_some() {
            return Err(ConfigError(format!(
                "channels.{name}: set secret_env or secret_file, not both"
            )));
        }
        return Ok(None);
    }
    match (&c.secret_env, &c.secret_file) {
        (Some(_), Some(_)) => Err(ConfigError(format!(
            "channels.{name}: set secret_env or secret_file, not both"
        ))),
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_owned())),
            _ => Err(ConfigError(format!(
                "channels.{name}.secret_env: environment variable {var} is not set ({field})"
            ))),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_owned())),
            Ok(_) => Err(ConfigError(format!(
                "channels.{name}.secret_file: {} is empty",
                path.display()
            ))),
            Err(e) => Err(ConfigError(format!(
                "channels.{name}.secret_file: cannot read {}: {e}",
                path.display()
            ))),
        },
        (None, None) => Ok(None),
    }
}

fn build_channel(
    c: &ChannelConfig,
    mode: Mode,
    proxy: Option<&webhook_client::EgressProxy>,
) -> Result<Option<Channel>, ConfigError> {
    let name = &c.name;
    let err = |field: &str, why: String| ConfigError(format!("channels.{name}.{field}: {why}"));
    let kind = ChannelKind::parse(&c.kind).ok_or_else(|| {
        err(
            "kind",
            format!(
                "unknown kind {:?} (expected webhook, dingtalk_robot, dingtalk_app, wecom_robot, feishu_robot or slack)",
                c.kind
            ),
        )
    })?;
    let app_only = [
        ("client_id", c.client_id.is_some()),
        ("robot_code", c.robot_code.is_some()),
        ("open_conversation_id", c.open_conversation_id.is_some()),
        ("user_ids", c.user_ids.is_some()),
    ];
    if kind != ChannelKind::DingTalkApp
        && let Some((field, _)) = app_only.iter().find(|(_, set)| *set)
    {
        return Err(err(field, "only for kind dingtalk_app".to_owned()));
    }
    // WeCom group robots and Slack incoming webhooks have no signature (the key in the URL
    // is the credential): a secret there would be silently unused, and the channel listed as
    // signed when it is not.
    if matches!(
        kind,
        ChannelKind::Chat(ChatKind::WeComRobot | ChatKind::Slack)
    ) && let Some(field) = match (&c.secret_env, &c.secret_file) {
        (Some(_), _) => Some("secret_env"),
        (None, Some(_)) => Some("secret_file"),
        (None, None) => None,
    } {
        return Err(err(
            field,
            format!(
                "{} messages are not signed (the key in the URL is the credential); remove the secret",
                kind.as_str()
            ),
        ));
    }
    let secret = read_secret(c, "the secret", mode)?;
    let has_secret = secret.is_some() || c.secret_env.is_some() || c.secret_file.is_some();
    let url = match (&c.url, kind) {
        (Some(u), _) => {
            task_package::check_url(u).map_err(|r| err("url", r))?;
            u.clone()
        }
        (None, ChannelKind::DingTalkApp) => dingtalk_sender::DEFAULT_API_BASE.to_owned(),
        (None, _) => return Err(err("url", "is required".to_owned())),
    };
    let rates = match &c.rate_limit {
        None => kind.default_rates(),
        Some(list) => list
            .0
            .iter()
            .map(|r| {
                r.parse::<Rate>()
                    .map_err(|e| err("rate_limit", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    // Several windows hold together: the tightest one bounds the sends in a minute.
    let allowed = rates
        .iter()
        .map(Rate::per_minute)
        .fold(f64::INFINITY, f64::min);
    if let Some(max) = kind.max_per_minute()
        && allowed > max
    {
        let shown = rates.iter().map(Rate::to_string).collect::<Vec<_>>();
        return Err(err(
            "rate_limit",
            format!(
                "{shown:?} allows more than {} accepts ({max} a minute)",
                kind.as_str()
            ),
        ));
    }
    if kind != ChannelKind::Webhook && c.template.is_none() && c.fragment_chars == Some(0) {
        return Err(err("fragment_chars", "must be at least 1".to_owned()));
    }
    let template = match &c.template {
        Some(_) if kind == ChannelKind::Webhook => {
            return Err(err(
                "template",
                "a webhook channel sends the standard package; templates are for chat kinds"
                    .to_owned(),
            ));
        }
        Some(t) => Some(Template::parse(t).map_err(|e| err("template", e.to_string()))?),
        None => None,
    };
    let signing = match (kind, &secret) {
        (ChannelKind::Webhook, Some(s)) => Some(vec![SigningSecret::parse(s).map_err(|_| {
            err(
                "secret",
                "a webhook channel's secret must be whsec_ followed by base64".to_owned(),
            )
        })?]),
        _ => None,
    };
    if kind == ChannelKind::Chat(ChatKind::DingTalkRobot)
        && let Some(s) = &secret
        && !s.starts_with("SEC")
    {
        return Err(err(
            "secret",
            "a DingTalk robot's signing secret starts with SEC".to_owned(),
        ));
    }
    let app = if kind == ChannelKind::DingTalkApp {
        let client_id = c
            .client_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| err("client_id", "is required for dingtalk_app".to_owned()))?;
        if !has_secret {
            return Err(err(
                "secret_env",
                "the app's client secret is required (secret_env or secret_file)".to_owned(),
            ));
        }
        let client_secret = secret.clone().unwrap_or_default();
        let target = match (&c.open_conversation_id, &c.user_ids) {
            (Some(cid), None) if !cid.is_empty() => Target::Group(cid.clone()),
            (None, Some(users)) if !users.is_empty() && users.len() <= 100 => {
                Target::Users(users.clone())
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "open_conversation_id",
                    "set open_conversation_id or user_ids, not both".to_owned(),
                ));
            }
            _ => {
                return Err(err(
                    "open_conversation_id",
                    "dingtalk_app needs open_conversation_id or 1 to 100 user_ids".to_owned(),
                ));
            }
        };
        if mode == Mode::Check {
            return Ok(None);
        }
        let mut builder = DingTalkSender::builder()
            .client_id(client_id)
            .client_secret(client_secret)
            .api_base(url.trim_end_matches('/'));
        if let Some(code) = &c.robot_code {
            builder = builder.robot_code(code.clone());
        }
        // The app's calls leave through the same egress proxy as every delivery.
        let base = url::Url::parse(&url).ok();
        if let Some(via) = proxy.zip(base.as_ref()).and_then(|(p, u)| p.for_url(u)) {
            builder = builder.proxy(via.as_str());
        } else if proxy.is_some() {
            // Bypassed (NO_PROXY): connect directly, not through the environment's proxy.
            builder = builder.direct();
        }
        let sender = builder.build().map_err(|e| err("url", e.to_string()))?;
        Some(DingTalkApp { sender, target })
    } else {
        None
    };
    if mode == Mode::Check {
        return Ok(None);
    }
    Ok(Some(Channel {
        name: name.clone(),
        kind,
        url: if kind == ChannelKind::DingTalkApp {
            String::new()
        } else {
            url
        },
        secret,
        signing,
        limiter: Arc::new(RateLimiter::new(&rates)),
        rates,
        template,
        fragment_chars: c.fragment_chars.unwrap_or(DEFAULT_FRAGMENT_CHARS),
        app,
    }))
}

/// The configured channels, after checking that each name is valid and used once.
fn each_named(list: &ChannelList) -> Result<&[ChannelConfig], ChannelConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in list.0.iter().enumerate() {
        let name = c.name.trim();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
        if !valid {
            return Err(ConfigError(format!(
                "channels[{i}].name: must be 1 to 64 letters, digits, '-', '_' or '.' (got {:?})",
                c.name
            )));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(ConfigError(format!(
                "channels.{name}.name: the name is used twice"
            )));
        }
    }
    Ok(&list.0)
}

impl Channels {
    /// Validates the configured channels, reads their secrets and builds their clients.
    ///
    /// # Errors
    ///
    /// A [`ChannelConfigError`] naming the channel and field: a missing or duplicate name,
    /// unknown kind, missing URL, unreadable secret, bad rate (or one above the platform's
    /// limit), bad template, or incomplete `dingtalk_app` settings.
    /// `dingtalk_app` channels call DingTalk through `proxy` when one is given (as the
    /// delivery client's, honouring its `NO_PROXY` list).
    pub fn from_config(
        list: &ChannelList,
        proxy: Option<&webhook_client::EgressProxy>,
    ) -> Result<Channels, ChannelConfigError> {
        let mut by_name = BTreeMap::new();
        for c in each_named(list)? {
            if let Some(channel) = build_channel(c, Mode::Build, proxy)? {
                by_name.insert(channel.name.clone(), channel);
            }
        }
        Ok(Channels {
            by_name: Arc::new(by_name),
        })
    }

    /// Validates the configured channels' values without side effects: no secret is read and
    /// no client built (an unreadable secret is found by [`Channels::from_config`]).
    ///
    /// # Errors
    ///
    /// As [`Channels::from_config`], except for the secrets' contents.
    pub fn check(list: &ChannelList) -> Result<(), ChannelConfigError> {
        for c in each_named(list)? {
            build_channel(c, Mode::Check, None)?;
        }
        Ok(())
    }

    /// A channel by name.
    pub fn get(&self, name: &str) -> Option<&Channel> {
        self.by_name.get(name)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether none are configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// What the API shows, by name.
    pub fn views(&self) -> Vec<ChannelView> {
        self.by_name
            .values()
            .map(|c| ChannelView {
                name: c.name.clone(),
                kind: c.kind.as_str().to_owned(),
                rate_limits: c.rates.iter().map(Rate::to_string).collect(),
                signed: match c.kind {
                    ChannelKind::Webhook => true,
                    ChannelKind::Chat(_) => c.secret.is_some(),
                    ChannelKind::DingTalkApp => false,
                },
                custom_template: c.template.is_some(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Channels, ConfigError> {
        use figment::providers::Format as _;
        #[derive(Deserialize)]
        struct Wrap {
            #[serde(default)]
            channels: ChannelList,
        }
        let w: Wrap = figment::Figment::from(figment::providers::Toml::string(toml))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        Channels::from_config(&w.channels, None)
    }

    #[test]
    fn both_table_forms_and_defaults_by_kind() {
        let list = load(
            r#"
            [[channels]]
            name = "pr-team"
            kind = "dingtalk_robot"
            url = "https://oapi.dingtalk.com/robot/send?access_token=t"
            [[channels]]
            name = "ops"
            kind = "slack"
            url = "https://hooks.slack.com/services/T/B/X"
            "#,
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.get("pr-team").unwrap().rates,
            vec![Rate::new(20, Duration::from_secs(60))]
        );
        let map = load(
            r#"
            [channels.lark]
            kind = "feishu_robot"
            url = "https://open.feishu.cn/open-apis/bot/v2/hook/x"
            rate_limit = ["2/s", "60/min"]
            template = "{{risk_emoji}} {{brand}}"
            "#,
        )
        .unwrap();
        let lark = map.get("lark").unwrap();
        assert_eq!(
            lark.rates,
            vec![
                Rate::new(2, Duration::from_secs(1)),
                Rate::new(60, Duration::from_secs(60))
            ]
        );
        assert!(lark.template.is_some());
        assert_eq!(map.views()[0].kind, "feishu_robot");
    }

    #[test]
    fn errors_name_the_channel_and_field() {
        let e = |toml: &str| load(toml).unwrap_err().0;
        let bad_kind = e("[channels.a]\nkind = \"teams\"\nurl = \"https://x.example/\"");
        assert!(
            bad_kind.contains("channels.a.kind") && bad_kind.contains("teams"),
            "{bad_kind}"
        );
        assert!(e("[channels.a]\nkind = \"slack\"").contains("channels.a.url"));
        let fast = e(
            "[channels.a]\nkind = \"dingtalk_robot\"\nurl = \"https://x.example/\"\nrate_limit = \"1/s\"",
        );
        assert!(
            fast.contains("channels.a.rate_limit") && fast.contains("20"),
            "{fast}"
        );
        assert!(e("[channels.a]\nkind = \"slack\"\nurl = \"https://x.example/\"\ntemplate = \"{{nope}}\"").contains("channels.a.template"));
        assert!(e("[channels.a]\nkind = \"dingtalk_robot\"\nurl = \"https://x.example/\"\nsecret_env = \"DISPATCHER_TEST_SURELY_UNSET_VAR\"").contains("channels.a.secret_env"));
        let unsigned = e(
            "[channels.a]\nkind = \"wecom_robot\"\nurl = \"https://x.example/\"\nsecret_file = \"/nonexistent\"",
        );
        assert!(
            unsigned.contains("channels.a.secret_file") && unsigned.contains("not signed"),
            "{unsigned}"
        );
        assert!(
            e("[channels.a]\nkind = \"dingtalk_app\"\nclient_id = \"c\"")
                .contains("channels.a.secret_env")
        );
        assert!(
            e("[channels.a]\nkind = \"slack\"\nurl = \"https://x.example/\"\nuser_ids = [\"u\"]")
                .contains("channels.a.user_ids")
        );
        assert!(
            e("[[channels]]\nname = \"a b\"\nkind = \"slack\"\nurl = \"https://x.example/\"")
                .contains("channels[0].name")
        );
        assert!(e("[[channels]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://x.example/\"\n[[channels]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://y.example/\"").contains("used twice"));
    }

    #[test]
    fn secrets_come_from_files_and_are_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sec");
        std::fs::write(&path, "SECabc123\n").unwrap();
        let list = load(&format!(
            "[channels.d]\nkind = \"dingtalk_robot\"\nurl = \"https://oapi.dingtalk.com/robot/send?access_token=tok\"\nsecret_file = {:?}",
            path.display().to_string()
        ))
        .unwrap();
        let d = list.get("d").unwrap();
        assert_eq!(d.secret(), Some("SECabc123"));
        let shown = format!("{:?} {}", d, serde_json::to_string(&list.views()).unwrap());
        assert!(
            !shown.contains("SECabc") && !shown.contains("tok"),
            "{shown}"
        );
    }
}
