//! The request bodies of the task API as OpenAPI schemas (feature `openapi`), for a service
//! that publishes the dispatcher's API: the seed's flat form, the nested form, and
//! [`restrict_channels`] to state the channels an instance knows.
//!
//! The request body is parsed by `task_package::CreateTaskRequest::from_json_slice` (which
//! reports every invalid field at once); these mirrors only describe it, so task-package stays
//! free of an OpenAPI dependency.

use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, Schema};
use utoipa::{PartialSchema, ToSchema};

/// An OpenAPI document `doc` (with these schemas) as an instance serves it: `channel` and
/// `channels` limited to the channels it has configured (a name it does not know is refused,
/// so the schema says so too).
pub fn restrict_channels(mut doc: serde_json::Value, channels: &[String]) -> serde_json::Value {
    let mut allowed: Vec<serde_json::Value> = channels.iter().map(|c| c.as_str().into()).collect();
    // `null` means "no channel", as the server reads it.
    allowed.push(serde_json::Value::Null);
    for body in ["FlatTaskBody", "CreateTaskBody"] {
        let pointer = format!("/components/schemas/{body}/properties/channel");
        if let Some(channel) = doc.pointer_mut(&pointer).and_then(|c| c.as_object_mut()) {
            channel.insert("enum".to_owned(), allowed.clone().into());
        }
        let pointer = format!("/components/schemas/{body}/properties/channels");
        if let Some(list) = doc.pointer_mut(&pointer).and_then(|c| c.as_object_mut()) {
            if channels.is_empty() {
                // No channel to name: only `null` (absent) is accepted.
                list.retain(|k, _| k == "description");
                list.insert("type".to_owned(), "null".into());
            } else {
                list.insert("uniqueItems".to_owned(), true.into());
                if let Some(items) = list.get_mut("items").and_then(|i| i.as_object_mut()) {
                    items.insert(
                        "enum".to_owned(),
                        allowed[..allowed.len() - 1].to_vec().into(),
                    );
                }
            }
        }
    }
    doc
}

// The patterns and lengths below state the server's rules as far as JSON Schema can, so that a
// generated request that fits the schema is accepted and one that does not is refused (the
// checks Schemathesis runs): text must hold a visible character (the same invisible set as
// `task_package::is_blank`), URLs are absolute http(s) without credentials (described with a
// host name whose last label starts with a letter: a numeric one is read as an IPv4 address,
// which the SSRF guard judges), risk levels and
// priorities are case-insensitive and may carry surrounding spaces.

/// The body of `POST /workflow/tasks`: the seed's flat form or the nested package form.
// Serialize is derived only so that `serde(untagged)` is understood: utoipa then describes a
// plain `oneOf` of the two bodies, not objects wrapped in a `Flat`/`Nested` key (which no
// client sends, and which Schemathesis found the server rightly refusing).
#[derive(Debug, ToSchema, serde::Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
// Read by utoipa's derive only.
// Never constructed (it only describes the body), so the variants' sizes cost nothing.
#[allow(clippy::large_enum_variant)]
pub enum CreateTaskForms {
    /// The seed's request, evidence fields at the top level.
    Flat(FlatTaskBody),
    /// The nested form, as the package is delivered.
    Nested(CreateTaskBody),
}

/// The seed's request body, exactly as its API document prints it: the evidence's fields
/// ([`EvidenceDataBody`]) at the top level beside the nested form's `webhook_url`, `channel`,
/// `channels` and `priority` ([`CreateTaskBody`]), so each field's rules are written once;
/// what this form says differently is `FlatWording`.
// Serialize only because `CreateTaskForms` derives it (see there).
#[derive(Debug, serde::Serialize)]
pub struct FlatTaskBody;

impl ToSchema for FlatTaskBody {}

impl PartialSchema for FlatTaskBody {
    fn schema() -> RefOr<Schema> {
        let mut flat = object(EvidenceDataBody::schema());
        let nested = object(CreateTaskBody::schema());
        for field in ["webhook_url", "channel", "channels", "priority"] {
            if let Some(property) = nested.properties.get(field) {
                flat.properties.insert(field.to_owned(), property.clone());
            }
            if nested.required.iter().any(|r| r == field) {
                flat.required.push(field.to_owned());
            }
        }
        for (field, wording) in object(FlatWording::schema()).properties {
            match (flat.properties.get_mut(&field), wording) {
                (Some(RefOr::T(Schema::Object(shared))), RefOr::T(Schema::Object(wording))) => {
                    shared.description = wording.description;
                }
                (_, wording) => {
                    flat.properties.insert(field, wording);
                }
            }
        }
        flat.description =
            Some("The seed's request body, exactly as its API document prints it.".to_owned());
        flat.example = Some(json!({
            "evidence_fragment": "负面证据片段内容",
            "associated_url": "https://example.com/source",
            "source_name": "信源名称",
            "risk_level": "High",
            "brand_name": "品牌名称",
            "intervention_script": "干预脚本内容",
            "source_meta": {"platform": "信源平台", "category": "内容类别"},
            "webhook_url": "https://hooks.example.com/webhook",
            "priority": "medium"
        }));
        RefOr::T(Schema::Object(flat))
    }
}

/// What the flat form says differently from the shared fields: its own `task_type`, and the
/// descriptions (only) of the fields it shares.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Read by utoipa's derive only.
struct FlatWording {
    /// The scenario (default `negative_evidence_intervention`).
    #[schema(pattern = r"^[a-z][a-z0-9_]{0,63}$")]
    task_type: Option<String>,
    /// `low`, `medium`, `high` or `critical`, case-insensitive.
    risk_level: String,
    /// Where to deliver (http or https). Described as required because a request needs it
    /// or `channel`/`channels` unless a route matches, which OpenAPI cannot say of several
    /// fields; a request naming only channels is accepted too, and one naming no target is
    /// routed by the server's rules (`GET /workflow/routes`).
    webhook_url: String,
    /// A preset channel (see `GET /workflow/channels`).
    channel: Option<String>,
}

/// `schema` as the object the derives make of a struct with named fields.
fn object(schema: RefOr<Schema>) -> Object {
    match schema {
        RefOr::T(Schema::Object(object)) => object,
        _ => unreachable!("a struct with named fields derives an object schema"),
    }
}

/// The nested form of `POST /workflow/tasks`.
#[derive(Debug, ToSchema, serde::Serialize)]
#[schema(example = json!({
    "task_type": "negative_evidence_intervention",
    "evidence_data": {
        "evidence_fragment": "某品牌手机电池续航严重虚标，用户实测不到宣传的一半",
        "associated_url": "https://weibo.com/1234567890/AbCdEf",
        "source_name": "微博",
        "risk_level": "high",
        "brand_name": "某品牌",
        "intervention_script": "您好，我们已关注到您反馈的续航问题，请私信提供订单号，我们将安排专人跟进。",
        "source_meta": {"author": "数码测评君", "followers": 250000}
    },
    "webhook_url": "https://api.example.com/webhooks/intervention",
    "priority": "high"
}))]
#[allow(dead_code)] // Read by utoipa's derive only.
pub struct CreateTaskBody {
    /// `negative_evidence_intervention`, `source_engagement`, `competitor_alert` or any
    /// other snake_case name.
    #[schema(pattern = r"^[a-z][a-z0-9_]{0,63}$")]
    task_type: String,
    /// The evidence.
    evidence_data: EvidenceDataBody,
    /// Where to deliver (http or https). Described as required because a request needs it
    /// or `channel`/`channels` unless a route matches; a request naming only channels is
    /// accepted too (with both, the task fans out: one delivery per target), and one naming
    /// no target is routed by the server's rules.
    #[schema(
        max_length = 2048,
        pattern = r"^https?://([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~%!$&()*+,;=:@/-]*)?$"
    )]
    webhook_url: String,
    /// A preset channel (see `GET /workflow/channels`), instead of or as well as `webhook_url`.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]"
    )]
    channel: Option<String>,
    /// More preset channels: the task fans out to every target named (`webhook_url`,
    /// `channel` and these), each a delivery of its own. Naming none of them lets the
    /// server's routes decide (`GET /workflow/routes`).
    /// (Served with `uniqueItems` and the configured names: see [`restrict_channels`].)
    #[schema(min_items = 1, max_items = 16)]
    channels: Option<Vec<String>>,
    /// `critical`, `high`, `medium` (default) or `low`, case-insensitive.
    #[schema(
        max_length = 32,
        pattern = r"^\s*([Cc][Rr][Ii][Tt][Ii][Cc][Aa][Ll]|[Hh][Ii][Gg][Hh]|[Mm][Ee][Dd][Ii][Uu][Mm]|[Ll][Oo][Ww])\s*$"
    )]
    priority: Option<String>,
}

/// The evidence of a task.
#[derive(Debug, ToSchema, serde::Serialize)]
#[allow(dead_code)] // Read by utoipa's derive only.
pub struct EvidenceDataBody {
    /// The text of the negative evidence.
    #[schema(
        min_length = 1,
        max_length = 10000,
        pattern = r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]"
    )]
    evidence_fragment: String,
    /// Where it was found (http or https).
    #[schema(
        max_length = 2048,
        pattern = r"^https?://([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~%!$&()*+,;=:@/-]*)?$"
    )]
    associated_url: String,
    /// Platform name, e.g. 微博.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]"
    )]
    source_name: String,
    /// `low`, `medium`, `high` or `critical`.
    #[schema(
        max_length = 32,
        pattern = r"^\s*([Ll][Oo][Ww]|[Mm][Ee][Dd][Ii][Uu][Mm]|[Hh][Ii][Gg][Hh]|[Cc][Rr][Ii][Tt][Ii][Cc][Aa][Ll])\s*$"
    )]
    risk_level: String,
    /// The brand concerned.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]"
    )]
    brand_name: String,
    /// The suggested reply.
    #[schema(
        min_length = 1,
        max_length = 5000,
        pattern = r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]"
    )]
    intervention_script: String,
    /// Free-form metadata about the source (an object).
    #[schema(value_type = Option<Object>)]
    source_meta: Option<serde_json::Value>,
}
