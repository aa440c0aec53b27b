//! The standard task package: types, validation, JSON and task ids.
//!
//! When an analyst clicks "handle" on negative evidence, the UI sends a [`CreateTaskRequest`];
//! [`create_task_package`] turns it into the [`TaskPackage`] that receivers get. Field names are
//! exactly the seed's (`task_type`, `evidence_data`, `delivery_instructions`, `metadata`).
//!
//! Scenarios ([`TaskType`]) and the fields each needs, beyond the common evidence fields:
//! - `negative_evidence_intervention`: nothing more;
//! - `source_engagement` (信源攻坚): `source_meta.contact` and `source_meta.engagement_goal`;
//! - `competitor_alert` (竞品监控告警): `source_meta.competitor_name` and `source_meta.alert_type`;
//! - any other snake_case name is a custom type with no extra rule.
//!
//! These scenario fields live in `source_meta` (a free JSON object) rather than in typed
//! per-scenario structs, so the package keeps the seed's exact shape; validation checks them
//! per task type and [`EvidenceData::source_engagement`] / [`EvidenceData::competitor_alert`]
//! read them back typed.
//!
//! Validation reports every invalid field at once, with its JSON path, so an API can answer
//! one 400 that lists them all ([`ValidationErrors`] serialises as `{"errors": [{"field",
//! "reason"}]}`). Limits are in [`limits`]; `null` counts as absent; unknown fields are ignored
//! (forward compatible). [`create_task_package`] stamps `metadata.created_at` and fills the
//! delivery defaults; [`TaskId::generate`] gives ids `wf_<unix seconds>_<8 lowercase hex>`.
//!
//! # Example
//!
//! ```
//! use task_package::{create_task_package, CreateTaskRequest, Priority, TaskId};
//!
//! let body = r#"{
//!   "task_type": "negative_evidence_intervention",
//!   "evidence_data": {
//!     "evidence_fragment": "续航严重虚标", "associated_url": "https://weibo.com/1/A",
//!     "source_name": "微博", "risk_level": "high", "brand_name": "某品牌",
//!     "intervention_script": "请私信订单号", "source_meta": {}
//!   },
//!   "webhook_url": "https://api.example.com/hook",
//!   "priority": "HIGH"
//! }"#;
//! let request = CreateTaskRequest::from_json_slice(body.as_bytes())?;
//! assert_eq!(request.priority, Priority::High);
//! let package = create_task_package(&request, chrono::Utc::now());
//! package.validate()?;
//! assert!(TaskId::is_valid(&TaskId::generate()));
//!
//! let bad = CreateTaskRequest::from_json_slice(br#"{"task_type": "x", "priority": "soon"}"#);
//! assert!(bad.unwrap_err().errors.len() >= 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//!
//! None: this crate is types only (serde), with no I/O and no runtime.
//!
//! # Why not a validation crate
//!
//! Derive-based validators (`validator`, `garde`) run on an already deserialised struct, so a
//! wrong type or a missing field stops serde at the first error and the client learns about
//! one problem per request. We walk the `serde_json::Value` instead, which reports wrong types,
//! missing fields and rule violations together, with exact JSON paths, and costs about 300
//! lines. Ids need a seed-specific format (`wf_<secs>_<hex>`), so `uuid` does not fit either.

mod error;
pub mod examples;
mod id;
mod package;
mod priority;
mod validate;

pub use error::{Error, Result};
pub use id::TaskId;
pub use package::{
    CompetitorAlert, CreateTaskRequest, DeliveryFormat, DeliveryInstructions, EvidenceData,
    Metadata, PACKAGE_VERSION, RiskLevel, SourceEngagement, TaskPackage, TaskType,
    UnknownRiskLevel, UnknownTaskType, create_task_package,
};
pub use priority::{Priority, UnknownPriority};
pub use validate::{EVIDENCE_FIELDS, FieldError, ValidationErrors, check_url, is_blank, limits};
