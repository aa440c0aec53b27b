//! Validation that reports every invalid field at once.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Priority;
use crate::package::{
    CreateTaskRequest, DeliveryFormat, EvidenceData, PACKAGE_VERSION, RiskLevel, TaskPackage,
    TaskType, is_snake_case,
};

/// Size limits: text in characters (Unicode scalar values), URLs, tokens, `source_meta` and
/// the whole body in bytes.
pub mod limits {
    /// `evidence_fragment`.
    pub const FRAGMENT: usize = 10_000;
    /// `intervention_script`.
    pub const SCRIPT: usize = 5_000;
    /// `source_name`, `brand_name`, `channel`, each of `channels`.
    pub const NAME: usize = 200;
    /// How many `channels` one request may name.
    pub const CHANNELS: usize = 16;
    /// Any URL, in bytes.
    pub const URL: usize = 2_048;
    /// `source_meta`, serialised, in bytes.
    pub const SOURCE_META: usize = 16 * 1024;
    /// A request body as sent, in bytes (checked before it is parsed).
    pub const BODY: usize = 64 * 1024;
    /// `delivery_instructions.callback_token`, in bytes.
    pub const TOKEN: usize = 512;
    /// The evidence as the package carries it (`evidence_data` as compact JSON), in bytes.
    ///
    /// This is the one size limit on content: a request and a package are checked against
    /// it alike, so whatever a request may carry, the package made from it is valid too.
    pub const EVIDENCE: usize = 60 * 1024;
    /// The largest package JSON the other limits allow: the evidence plus delivery
    /// instructions and metadata at their limits. It follows from the limits above and is
    /// never reached by a package that passes them.
    pub const PACKAGE: usize = EVIDENCE + 2 * URL + TOKEN + 1024;
}

/// The evidence fields, which the seed's flat request form carries at the top level and
/// the package nests under `evidence_data`.
pub const EVIDENCE_FIELDS: [&str; 7] = [
    "evidence_fragment",
    "associated_url",
    "source_name",
    "risk_level",
    "brand_name",
    "intervention_script",
    "source_meta",
];

/// Whether `c` shows nothing: zero-width and other format characters, controls, fillers.
///
/// A field made only of these (and whitespace) reads as empty to a person, so it counts as
/// blank. Covers Unicode's `Cc` and `Cf` characters that occur in text, plus the fillers and
/// blanks that render as nothing (Hangul fillers, the braille blank).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{0000}'..='\u{001F}' | '\u{007F}'..='\u{009F}'
        | '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}'
        | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{2800}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E007F}')
}

/// Whether `s` is empty to a reader: only whitespace and invisible characters.
pub fn is_blank(s: &str) -> bool {
    s.chars().all(|c| c.is_whitespace() || is_invisible(c))
}

/// One invalid field (also what an API's 400 body lists, so a client decodes it as this type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Its JSON path, e.g. `evidence_data.associated_url` (empty for the whole body).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// An error for `field` (a JSON path, empty for the whole body).
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

/// Every invalid field of a request or package.
///
/// Serialises as `{"errors": [{"field": "...", "reason": "..."}, ...]}`, ready for an HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ValidationErrors {
    /// The invalid fields, in document order.
    pub errors: Vec<FieldError>,
}

// === impl ValidationErrors ===

impl ValidationErrors {
    /// Adds an error for `field` (a JSON path, empty for the whole body).
    pub fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError::new(field, reason));
    }

    /// Whether there is no error.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// How many invalid fields.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// The invalid fields, in document order.
    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.errors.iter()
    }

    /// `Ok(())` when empty, else `Err(self)`.
    ///
    /// # Errors
    ///
    /// `self`, when it holds at least one error.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl From<FieldError> for ValidationErrors {
    fn from(e: FieldError) -> Self {
        ValidationErrors { errors: vec![e] }
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl IntoIterator for ValidationErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} invalid field(s): ", self.errors.len())?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Checks that `url` is an absolute http(s) URL with a host, within [`limits::URL`], without
/// surrounding whitespace or credentials (`user:pass@`), which would end up in logs.
///
/// # Errors
///
/// The reason, ready for a [`FieldError`]; it never repeats the URL.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > limits::URL {
        return Err(format!("must be at most {} bytes", limits::URL));
    }
    if url.trim() != url {
        return Err("must not have surrounding whitespace".to_owned());
    }
    match url::Url::parse(url) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            if u.username().is_empty() && u.password().is_none() {
                Ok(())
            } else {
                Err("must not contain credentials".to_owned())
            }
        }
        _ => Err("must be an absolute http(s) URL".to_owned()),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks a required or optional string field: when present it must be a non-blank string of
/// at most `max_chars` characters. Returns it when valid.
fn string_field<'a>(
    errs: &mut ValidationErrors,
    obj: &'a serde_json::Map<String, Value>,
    prefix: &str,
    name: &str,
    required: bool,
    max_chars: usize,
) -> Option<&'a str> {
    let path = if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    };
    match obj.get(name) {
        None | Some(Value::Null) => {
            if required {
                errs.push(&path, "is required");
            }
            None
        }
        Some(Value::String(s)) => {
            if is_blank(s) {
                errs.push(&path, "must not be empty");
                None
            } else if s.chars().count() > max_chars {
                errs.push(&path, format!("must be at most {max_chars} characters"));
                None
            } else {
                Some(s)
            }
        }
        Some(other) => {
            errs.push(&path, format!("must be a string, not {}", type_name(other)));
            None
        }
    }
}

/// The longest value allowed for a scenario field of `source_meta`.
fn scenario_field_limit(key: &str) -> usize {
    match key {
        "engagement_goal" => limits::SCRIPT,
        _ => limits::NAME,
    }
}

/// The JSON path of `name` under `prefix` (empty: the top level).
fn path_of(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Checks `evidence_data` of the nested form.
fn check_nested_evidence(
    errs: &mut ValidationErrors,
    value: Option<&Value>,
    task_type: Option<&TaskType>,
) {
    match value {
        Some(Value::Object(o)) => check_evidence(errs, o, "evidence_data", task_type),
        None | Some(Value::Null) => errs.push("evidence_data", "is required"),
        Some(other) => errs.push(
            "evidence_data",
            format!("must be an object, not {}", type_name(other)),
        ),
    }
}

/// Checks the evidence fields of `obj`, naming them under `p` (`evidence_data` in the
/// nested form and the package, empty in the seed's flat form).
fn check_evidence(
    errs: &mut ValidationErrors,
    obj: &serde_json::Map<String, Value>,
    p: &str,
    task_type: Option<&TaskType>,
) {
    string_field(errs, obj, p, "evidence_fragment", true, limits::FRAGMENT);
    if let Some(url) = string_field(errs, obj, p, "associated_url", true, usize::MAX)
        && let Err(reason) = check_url(url)
    {
        errs.push(path_of(p, "associated_url"), reason);
    }
    string_field(errs, obj, p, "source_name", true, limits::NAME);
    if let Some(level) = string_field(errs, obj, p, "risk_level", true, 32)
        && let Err(e) = level.parse::<RiskLevel>()
    {
        errs.push(path_of(p, "risk_level"), e.to_string());
    }
    string_field(errs, obj, p, "brand_name", true, limits::NAME);
    string_field(errs, obj, p, "intervention_script", true, limits::SCRIPT);
    let required = task_type.map_or(&[][..], TaskType::required_source_meta);
    match obj.get("source_meta") {
        None | Some(Value::Null) => {
            for key in required {
                errs.push(
                    path_of(p, &format!("source_meta.{key}")),
                    "is required for this task type",
                );
            }
        }
        Some(Value::Object(meta)) => {
            let size = serde_json::to_vec(meta).map_or(usize::MAX, |v| v.len());
            if size > limits::SOURCE_META {
                errs.push(
                    path_of(p, "source_meta"),
                    format!("must be at most {} bytes as JSON", limits::SOURCE_META),
                );
            }
            for key in required {
                let path = path_of(p, &format!("source_meta.{key}"));
                let max = scenario_field_limit(key);
                match meta.get(*key) {
                    Some(Value::String(s)) if is_blank(s) => {
                        errs.push(path, "must not be empty");
                    }
                    Some(Value::String(s)) if s.chars().count() > max => {
                        errs.push(path, format!("must be at most {max} characters"));
                    }
                    Some(Value::String(_)) => {}
                    None | Some(Value::Null) => {
                        errs.push(path, "is required for this task type");
                    }
                    Some(other) => {
                        errs.push(path, format!("must be a string, not {}", type_name(other)))
                    }
                }
            }
        }
        Some(other) => errs.push(
            path_of(p, "source_meta"),
            format!("must be an object, not {}", type_name(other)),
        ),
    }
}

/// The one content limit ([`limits::EVIDENCE`]), on the evidence exactly as the package
/// will carry it. `field` names it in the client's form.
fn check_evidence_size(errs: &mut ValidationErrors, evidence: &EvidenceData, field: &str) {
    let size = serde_json::to_vec(evidence).map_or(usize::MAX, |v| v.len());
    if size > limits::EVIDENCE {
        errs.push(
            field,
            format!(
                "the evidence must be at most {} bytes as JSON (it is {size})",
                limits::EVIDENCE
            ),
        );
    }
}

/// Drops `null` members, which mean "absent" for the optional fields; nulls in required
/// fields have already been reported as missing.
fn drop_nulls(obj: &mut serde_json::Map<String, Value>) {
    obj.retain(|_, v| !v.is_null());
}

impl CreateTaskRequest {
    /// Parses and validates a request body, reporting every invalid field at once.
    ///
    /// Two forms are accepted and make the same request:
    /// - the seed's **flat** form, exactly as its API document prints it: the evidence fields
    ///   ([`EVIDENCE_FIELDS`]) at the top level beside `webhook_url` and `priority`;
    ///   `task_type` is optional there (default `negative_evidence_intervention`);
    /// - the **nested** form: `task_type` and `evidence_data` as in the package itself.
    ///
    /// A body with an `evidence_data` member is the nested form; errors name fields as the
    /// client sent them (`risk_level` in the flat form, `evidence_data.risk_level` in the
    /// nested one). Mixing the forms is an error for each evidence field at the top level of
    /// a nested body.
    ///
    /// Rules: required fields present and not blank (whitespace and invisible characters
    /// alone are blank); `task_type` a known scenario or a snake_case custom name;
    /// `risk_level` and `priority` known values (case-insensitive); URLs absolute http(s)
    /// without credentials; the size [`limits`], the evidence as a whole at most
    /// [`limits::EVIDENCE`] bytes as the package will carry it; the scenario fields of
    /// `source_meta` (see [`TaskType::required_source_meta`]); `channels` 1 to
    /// [`limits::CHANNELS`] distinct names; `webhook_url` required unless a `channel` or
    /// `channels` is named (see [`CreateTaskRequest::from_json_slice_routable`] for a server
    /// with routing rules). `null` counts as absent. Unknown fields are ignored so that
    /// clients can send newer fields to older servers.
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] naming each invalid field; a body that is too large, not JSON or
    /// not an object gives one error with an empty field path.
    pub fn from_json_slice(body: &[u8]) -> Result<CreateTaskRequest, ValidationErrors> {
        Self::parse(body, true)
    }

    /// [`CreateTaskRequest::from_json_slice`] for a server with routing rules: a request may
    /// name no target at all (no `webhook_url`, `channel` or `channels`), and the server's
    /// rules then decide where it goes.
    ///
    /// # Errors
    ///
    /// As [`CreateTaskRequest::from_json_slice`], without the missing-target error.
    pub fn from_json_slice_routable(body: &[u8]) -> Result<CreateTaskRequest, ValidationErrors> {
        Self::parse(body, false)
    }

    fn parse(body: &[u8], target_required: bool) -> Result<CreateTaskRequest, ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if body.len() > limits::BODY {
            errs.push("", format!("body must be at most {} bytes", limits::BODY));
            return Err(errs);
        }
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                errs.push("", format!("malformed JSON: {e}"));
                return Err(errs);
            }
        };
        let Value::Object(mut obj) = value else {
            errs.push(
                "",
                format!("body must be a JSON object, not {}", type_name(&value)),
            );
            return Err(errs);
        };
        let nested = obj.contains_key("evidence_data");
        let task_type =
            string_field(&mut errs, &obj, "", "task_type", nested, 64).and_then(|t| match t
                .parse::<TaskType>()
            {
                Ok(t) => Some(t),
                Err(e) => {
                    errs.push("task_type", e.to_string());
                    None
                }
            });
        let task_type = match (&task_type, obj.get("task_type")) {
            (None, None | Some(Value::Null)) if !nested => {
                Some(TaskType::NegativeEvidenceIntervention)
            }
            _ => task_type,
        };
        if nested {
            check_nested_evidence(&mut errs, obj.get("evidence_data"), task_type.as_ref());
            for name in EVIDENCE_FIELDS {
                if obj.get(name).is_some_and(|v| !v.is_null()) {
                    errs.push(
                        name,
                        "belongs in evidence_data when evidence_data is sent (or send the \
                         flat form, without evidence_data)",
                    );
                }
            }
        } else {
            check_evidence(&mut errs, &obj, "", task_type.as_ref());
        }
        let channel = string_field(&mut errs, &obj, "", "channel", false, limits::NAME);
        let channels = channel_list(&mut errs, obj.get("channels"));
        let no_channel = channel.is_none() && obj.get("channels").is_none_or(Value::is_null);
        match string_field(&mut errs, &obj, "", "webhook_url", false, usize::MAX) {
            Some(url) => {
                if let Err(reason) = check_url(url) {
                    errs.push("webhook_url", reason);
                }
            }
            None if target_required
                && no_channel
                && obj.get("webhook_url").is_none_or(Value::is_null) =>
            {
                errs.push("webhook_url", "is required (or name a preset channel)");
            }
            None => {}
        }
        let priority = match string_field(&mut errs, &obj, "", "priority", false, 32) {
            Some(p) => p
                .parse::<Priority>()
                .map_err(|e| errs.push("priority", e.to_string()))
                .ok(),
            None => Some(Priority::default()),
        };
        errs.into_result()?;
        let mut evidence = if nested {
            // Checked to be an object above; the else branch is never taken.
            let Some(Value::Object(evidence)) = obj.remove("evidence_data") else {
                return Err(FieldError::new("evidence_data", "must be an object").into());
            };
            evidence
        } else {
            let mut evidence = serde_json::Map::new();
            for name in EVIDENCE_FIELDS {
                if let Some(v) = obj.remove(name) {
                    evidence.insert(name.to_owned(), v);
                }
            }
            evidence
        };
        drop_nulls(&mut evidence);
        // Every field was checked above, so this only fails on a rule we forgot to check.
        let evidence_data: EvidenceData = serde_json::from_value(Value::Object(evidence))
            .map_err(|e| ValidationErrors::from(FieldError::new("", e.to_string())))?;
        let mut errs = ValidationErrors::default();
        check_evidence_size(
            &mut errs,
            &evidence_data,
            if nested { "evidence_data" } else { "" },
        );
        errs.into_result()?;
        let text = |name: &str| obj.get(name).and_then(Value::as_str).map(str::to_owned);
        Ok(CreateTaskRequest {
            task_type: task_type.unwrap_or(TaskType::NegativeEvidenceIntervention),
            evidence_data,
            webhook_url: text("webhook_url"),
            priority: priority.unwrap_or_default(),
            channel: text("channel"),
            channels,
        })
    }
}

/// `channels`: absent or `null`, else an array of 1 to [`limits::CHANNELS`] distinct channel
/// names (non-blank strings of at most [`limits::NAME`] characters).
fn channel_list(errs: &mut ValidationErrors, value: Option<&Value>) -> Vec<String> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            errs.push(
                "channels",
                format!(
                    "must be an array of channel names, not {}",
                    type_name(other)
                ),
            );
            return Vec::new();
        }
    };
    if items.is_empty() || items.len() > limits::CHANNELS {
        errs.push(
            "channels",
            format!("must name 1 to {} channels", limits::CHANNELS),
        );
        return Vec::new();
    }
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("channels[{i}]");
        match item.as_str() {
            Some(name) if is_blank(name) => errs.push(path, "must not be empty"),
            Some(name) if name.chars().count() > limits::NAME => {
                errs.push(path, format!("must be at most {} characters", limits::NAME))
            }
            Some(name) if names.iter().any(|n| n == name) => {
                errs.push(path, "names a channel already listed");
            }
            Some(name) => names.push(name.to_owned()),
            None => errs.push(
                path,
                format!("must be a channel name, not {}", type_name(item)),
            ),
        }
    }
    names
}

// === impl TaskPackage ===

impl TaskPackage {
    /// Checks the package: the evidence rules of
    /// [`CreateTaskRequest::from_json_slice`], absolute http(s) `webhook_url` and
    /// `callback_url`, a snake_case `delivery_format`, a non-blank `callback_token` of at most
    /// [`limits::TOKEN`] bytes, `created_at` in RFC 3339 UTC and `version` `"1.0"`. The
    /// evidence limit is the request's ([`limits::EVIDENCE`]), so a package made from any
    /// valid request passes; the whole package is then within [`limits::PACKAGE`].
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] naming each invalid field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        match serde_json::to_value(&self.evidence_data) {
            Ok(Value::Object(evidence)) => {
                check_evidence(&mut errs, &evidence, "evidence_data", Some(&self.task_type));
            }
            Ok(_) => errs.push("evidence_data", "must be an object"),
            Err(e) => errs.push("evidence_data", e.to_string()),
        }
        check_evidence_size(&mut errs, &self.evidence_data, "evidence_data");
        let delivery = &self.delivery_instructions;
        if let Err(reason) = check_url(&delivery.webhook_url) {
            errs.push("delivery_instructions.webhook_url", reason);
        }
        if let DeliveryFormat::Other(name) = &delivery.delivery_format
            && !is_snake_case(name)
        {
            errs.push(
                "delivery_instructions.delivery_format",
                "must be a snake_case name such as standard_payload",
            );
        }
        if let Some(url) = &delivery.callback_url
            && let Err(reason) = check_url(url)
        {
            errs.push("delivery_instructions.callback_url", reason);
        }
        if let Some(token) = &delivery.callback_token {
            if is_blank(token) {
                errs.push("delivery_instructions.callback_token", "must not be empty");
            } else if token.len() > limits::TOKEN {
                errs.push(
                    "delivery_instructions.callback_token",
                    format!("must be at most {} bytes", limits::TOKEN),
                );
            }
        }
        match chrono::DateTime::parse_from_rfc3339(&self.metadata.created_at) {
            Ok(t) if t.offset().local_minus_utc() == 0 => {}
            Ok(_) => errs.push("metadata.created_at", "must be in UTC"),
            Err(_) => errs.push("metadata.created_at", "must be an RFC 3339 timestamp"),
        }
        if self.metadata.version != PACKAGE_VERSION {
            errs.push("metadata.version", format!("must be {PACKAGE_VERSION:?}"));
        }
        errs.into_result()
    }
}
