//! The standard task package and the request that creates it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Priority};

/// The package format version written into [`Metadata::version`].
pub const PACKAGE_VERSION: &str = "1.0";

/// The seed's three scenarios, plus any other snake_case name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskType {
    /// Negative evidence intervention: answer or escalate a negative post, review or article.
    NegativeEvidenceIntervention,
    /// Source engagement (信源攻坚): work with the source (author, outlet) behind the evidence.
    SourceEngagement,
    /// Competitor alert (竞品监控告警): something a competitor did that needs attention.
    CompetitorAlert,
    /// Any other task type, named in snake_case.
    Custom(String),
}

impl TaskType {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            TaskType::NegativeEvidenceIntervention => "negative_evidence_intervention",
            TaskType::SourceEngagement => "source_engagement",
            TaskType::CompetitorAlert => "competitor_alert",
            TaskType::Custom(s) => s,
        }
    }

    /// Parses a wire name: a known scenario, or a custom snake_case name
    /// (`[a-z][a-z0-9_]*`, at most 64 characters).
    pub fn parse(s: &str) -> Option<TaskType> {
        Some(match s {
            "negative_evidence_intervention" => TaskType::NegativeEvidenceIntervention,
            "source_engagement" => TaskType::SourceEngagement,
            "competitor_alert" => TaskType::CompetitorAlert,
            other if is_snake_case(other) => TaskType::Custom(other.to_owned()),
            _ => return None,
        })
    }

    /// The `source_meta` keys this scenario requires (see the crate docs).
    pub fn required_source_meta(&self) -> &'static [&'static str] {
        match self {
            TaskType::SourceEngagement => &["contact", "engagement_goal"],
            TaskType::CompetitorAlert => &["competitor_name", "alert_type"],
            _ => &[],
        }
    }
}

pub(crate) fn is_snake_case(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl FromStr for TaskType {
    type Err = UnknownTaskType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskType::parse(s).ok_or_else(|| UnknownTaskType(s.to_owned()))
    }
}

/// Error returned when a string is not a task type name (not snake_case).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown task type {0:?} (expected a snake_case name such as negative_evidence_intervention)"
)]
pub struct UnknownTaskType(pub String);

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TaskType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How risky the evidence is. Ordered: `Critical > High > Medium > Low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    /// Minor.
    Low,
    /// Worth a look.
    Medium,
    /// Needs action.
    High,
    /// Needs action now.
    Critical,
}

impl RiskLevel {
    /// Every level, least risky first.
    pub const ALL: [RiskLevel; 4] = [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }

    /// Case-insensitive parse.
    pub fn parse(s: &str) -> Option<RiskLevel> {
        RiskLevel::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl FromStr for RiskLevel {
    type Err = UnknownRiskLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RiskLevel::parse(s).ok_or_else(|| UnknownRiskLevel(s.to_owned()))
    }
}

/// Error returned when a string names no [`RiskLevel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown risk level {0:?} (expected low, medium, high or critical)")]
pub struct UnknownRiskLevel(pub String);

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RiskLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The evidence an analyst chose to handle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceData {
    /// The offending text (or its excerpt).
    pub evidence_fragment: String,
    /// Where it was published.
    pub associated_url: String,
    /// The platform or outlet (微博, 小红书, a news site...).
    pub source_name: String,
    /// How risky it is.
    pub risk_level: RiskLevel,
    /// The brand concerned.
    pub brand_name: String,
    /// The suggested answer or action.
    pub intervention_script: String,
    /// Anything else about the source (author, followers, scenario fields).
    #[serde(default = "empty_object")]
    pub source_meta: serde_json::Value,
}

// === impl EvidenceData ===

impl EvidenceData {
    /// A string field of `source_meta`, if present, a string and not blank.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.source_meta
            .get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.trim().is_empty())
    }

    /// The 信源攻坚 fields (`source_meta.contact`, `source_meta.engagement_goal`), if both
    /// are present, whatever the task type.
    pub fn source_engagement(&self) -> Option<SourceEngagement<'_>> {
        Some(SourceEngagement {
            contact: self.meta_str("contact")?,
            engagement_goal: self.meta_str("engagement_goal")?,
        })
    }

    /// The 竞品监控告警 fields (`source_meta.competitor_name`, `source_meta.alert_type`), if
    /// both are present, whatever the task type.
    pub fn competitor_alert(&self) -> Option<CompetitorAlert<'_>> {
        Some(CompetitorAlert {
            competitor_name: self.meta_str("competitor_name")?,
            alert_type: self.meta_str("alert_type")?,
        })
    }
}

/// The scenario fields of a [`TaskType::SourceEngagement`] task (信源攻坚).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceEngagement<'a> {
    /// How to reach the source (e-mail, account handle, phone).
    pub contact: &'a str,
    /// What the engagement should achieve (a correction, an interview...).
    pub engagement_goal: &'a str,
}

/// The scenario fields of a [`TaskType::CompetitorAlert`] task (竞品监控告警).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompetitorAlert<'a> {
    /// The competitor concerned.
    pub competitor_name: &'a str,
    /// What happened, as a short snake_case kind (`product_launch`, `price_cut`...).
    pub alert_type: &'a str,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// The wire format of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum DeliveryFormat {
    /// The task package JSON, signed per Standard Webhooks.
    #[default]
    StandardPayload,
    /// Another format by name (chat formats such as `dingtalk_markdown`).
    Other(String),
}

impl DeliveryFormat {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            DeliveryFormat::StandardPayload => "standard_payload",
            DeliveryFormat::Other(s) => s,
        }
    }
}

impl From<&str> for DeliveryFormat {
    fn from(s: &str) -> Self {
        if s == "standard_payload" {
            DeliveryFormat::StandardPayload
        } else {
            DeliveryFormat::Other(s.to_owned())
        }
    }
}

impl fmt::Display for DeliveryFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DeliveryFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DeliveryFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(DeliveryFormat::from(&*s))
    }
}

fn yes() -> bool {
    true
}

/// Where and how the package is delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryInstructions {
    /// The receiver.
    pub webhook_url: String,
    /// The wire format (default `standard_payload`).
    #[serde(default)]
    pub delivery_format: DeliveryFormat,
    /// Whether the receiver is expected to report back (default true).
    #[serde(default = "yes")]
    pub callback_required: bool,
    /// Where the receiver reports back (`POST` with the token), set by the dispatcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The token the receiver presents when reporting back, set by the dispatcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_token: Option<String>,
}

/// When and in which version the package was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// RFC 3339 UTC, e.g. `2026-11-24T08:00:00Z`.
    pub created_at: String,
    /// `"1.0"`.
    pub version: String,
}

impl Metadata {
    /// Metadata for a package made at `now`.
    pub fn at(now: DateTime<Utc>) -> Metadata {
        Metadata {
            created_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
            version: PACKAGE_VERSION.to_owned(),
        }
    }

    /// `created_at` as a UTC time, if it is a valid RFC 3339 timestamp.
    pub fn created_at_utc(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.created_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The standard task package delivered to receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPackage {
    /// The scenario.
    pub task_type: TaskType,
    /// The evidence.
    pub evidence_data: EvidenceData,
    /// Where and how.
    pub delivery_instructions: DeliveryInstructions,
    /// When and which version.
    pub metadata: Metadata,
}

impl TaskPackage {
    /// The package as compact JSON bytes, fields in the seed's order.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Strings, bools and a `serde_json::Value` with string keys: serialising cannot fail.
        serde_json::to_vec(self).expect("a task package always serialises")
    }

    /// Parses a package from JSON and [validates](TaskPackage::validate) it, as a receiver would.
    ///
    /// Unknown fields are ignored. For a lenient parse without the checks, use
    /// `serde_json::from_slice` directly.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] for malformed JSON, a missing field or a wrong type; [`Error::Invalid`]
    /// listing every invalid field otherwise.
    pub fn from_json_slice(bytes: &[u8]) -> Result<TaskPackage, Error> {
        let package: TaskPackage = serde_json::from_slice(bytes)?;
        package.validate()?;
        Ok(package)
    }
}

/// The body of `POST /workflow/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateTaskRequest {
    /// The scenario.
    pub task_type: TaskType,
    /// The evidence.
    pub evidence_data: EvidenceData,
    /// The receiver. Optional: a request that names no target (no `webhook_url`, `channel`
    /// or `channels`) is routed by the server's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Queue priority (default `medium`).
    #[serde(default)]
    pub priority: Priority,
    /// A preset delivery channel configured on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// More preset channels: the task fans out to every target named (`webhook_url`,
    /// `channel` and these), each a delivery of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

// === impl CreateTaskRequest ===

impl CreateTaskRequest {
    /// Whether the request names any target itself (else the server's routes decide).
    pub fn names_a_target(&self) -> bool {
        self.webhook_url.as_deref().is_some_and(|u| !u.is_empty())
            || self.channel.is_some()
            || !self.channels.is_empty()
    }
}

/// Builds the standard package from a request: the request's evidence, its webhook URL, the
/// default delivery format, `callback_required = true`, and metadata stamped `now`.
///
/// A request that names only a `channel` gives an empty `webhook_url`: the caller resolves the
/// channel and sets [`DeliveryInstructions::webhook_url`] (and the chat `delivery_format`)
/// before delivery. The dispatcher also fills `callback_url` and `callback_token`.
pub fn create_task_package(request: &CreateTaskRequest, now: DateTime<Utc>) -> TaskPackage {
    TaskPackage {
        task_type: request.task_type.clone(),
        evidence_data: request.evidence_data.clone(),
        delivery_instructions: DeliveryInstructions {
            webhook_url: request.webhook_url.clone().unwrap_or_default(),
            delivery_format: DeliveryFormat::StandardPayload,
            callback_required: true,
            callback_url: None,
            callback_token: None,
        },
        metadata: Metadata::at(now),
    }
}
