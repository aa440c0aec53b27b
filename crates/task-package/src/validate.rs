//! Validation that reports every invalid field at once.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::Priority;
use crate::package::{
    CreateTaskRequest, DeliveryFormat, PACKAGE_VERSION, RiskLevel, TaskPackage, TaskType,
    is_snake_case,
};

/// Size limits: text in characters (Unicode scalar values), URLs, tokens, `source_meta` and
/// the whole body in bytes.
pub mod limits {
    /// `evidence_fragment`.
    pub const FRAGMENT: usize = 10_000;
    /// `intervention_script`.
    pub const SCRIPT: usize = 5_000;
    /// `source_name`, `brand_name`, `channel`.
    pub const NAME: usize = 200;
    /// Any URL, in bytes.
    pub const URL: usize = 2_048;
    /// `source_meta`, serialised, in bytes.
    pub const SOURCE_META: usize = 16 * 1024;
    /// The whole request or package, in bytes.
    pub const BODY: usize = 64 * 1024;
    /// `delivery_instructions.callback_token`, in bytes.
    pub const TOKEN: usize = 512;
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
            if s.trim().is_empty() {
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

fn check_evidence(
    errs: &mut ValidationErrors,
    value: Option<&Value>,
    task_type: Option<&TaskType>,
) {
    let obj = match value {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) => {
            errs.push("evidence_data", "is required");
            return;
        }
        Some(other) => {
            errs.push(
                "evidence_data",
                format!("must be an object, not {}", type_name(other)),
            );
            return;
        }
    };
    let p = "evidence_data";
    string_field(errs, obj, p, "evidence_fragment", true, limits::FRAGMENT);
    if let Some(url) = string_field(errs, obj, p, "associated_url", true, usize::MAX)
        && let Err(reason) = check_url(url)
    {
        errs.push("evidence_data.associated_url", reason);
    }
    string_field(errs, obj, p, "source_name", true, limits::NAME);
    if let Some(level) = string_field(errs, obj, p, "risk_level", true, 32)
        && let Err(e) = level.parse::<RiskLevel>()
    {
        errs.push("evidence_data.risk_level", e.to_string());
    }
    string_field(errs, obj, p, "brand_name", true, limits::NAME);
    string_field(errs, obj, p, "intervention_script", true, limits::SCRIPT);
    let required = task_type.map_or(&[][..], TaskType::required_source_meta);
    match obj.get("source_meta") {
        None | Some(Value::Null) => {
            for key in required {
                errs.push(
                    format!("evidence_data.source_meta.{key}"),
                    "is required for this task type",
                );
            }
        }
        Some(Value::Object(meta)) => {
            let size = serde_json::to_vec(meta).map_or(usize::MAX, |v| v.len());
            if size > limits::SOURCE_META {
                errs.push(
                    "evidence_data.source_meta",
                    format!("must be at most {} bytes as JSON", limits::SOURCE_META),
                );
            }
            for key in required {
                let path = format!("evidence_data.source_meta.{key}");
                let max = scenario_field_limit(key);
                match meta.get(*key) {
                    Some(Value::String(s)) if s.trim().is_empty() => {
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
            "evidence_data.source_meta",
            format!("must be an object, not {}", type_name(other)),
        ),
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
    /// Rules: required fields present and non-blank; `task_type` a known scenario or a
    /// snake_case custom name; `risk_level` and `priority` known values (case-insensitive);
    /// URLs absolute http(s) without credentials; the size [`limits`]; the scenario fields of
    /// `source_meta` (see [`TaskType::required_source_meta`]); `webhook_url` required unless a
    /// `channel` is named. `null` counts as absent. Unknown fields, at the top level and in
    /// `evidence_data`, are ignored so that clients can send newer fields to older servers.
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] naming each invalid field; a body that is too large, not JSON or
    /// not an object gives one error with an empty field path.
    pub fn from_json_slice(body: &[u8]) -> Result<CreateTaskRequest, ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if body.len() > limits::BODY {
            errs.push("", format!("body must be at most {} bytes", limits::BODY));
            return Err(errs);
        }
        let mut value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                errs.push("", format!("malformed JSON: {e}"));
                return Err(errs);
            }
        };
        let Value::Object(obj) = &mut value else {
            errs.push(
                "",
                format!("body must be a JSON object, not {}", type_name(&value)),
            );
            return Err(errs);
        };
        let task_type =
            string_field(&mut errs, obj, "", "task_type", true, 64).and_then(|t| {
                match t.parse::<TaskType>() {
                    Ok(t) => Some(t),
                    Err(e) => {
                        errs.push("task_type", e.to_string());
                        None
                    }
                }
            });
        check_evidence(&mut errs, obj.get("evidence_data"), task_type.as_ref());
        let channel = string_field(&mut errs, obj, "", "channel", false, limits::NAME);
        match string_field(&mut errs, obj, "", "webhook_url", false, usize::MAX) {
            Some(url) => {
                if let Err(reason) = check_url(url) {
                    errs.push("webhook_url", reason);
                }
            }
            None if channel.is_none() && obj.get("webhook_url").is_none_or(Value::is_null) => {
                errs.push("webhook_url", "is required (or name a preset channel)");
            }
            None => {}
        }
        if let Some(p) = string_field(&mut errs, obj, "", "priority", false, 32)
            && let Err(e) = p.parse::<Priority>()
        {
            errs.push("priority", e.to_string());
        }
        errs.into_result()?;
        drop_nulls(obj);
        if let Some(Value::Object(evidence)) = obj.get_mut("evidence_data") {
            drop_nulls(evidence);
        }
        // Every field was checked above, so this only fails on a rule we forgot to check.
        serde_json::from_value(value).map_err(|e| FieldError::new("", e.to_string()).into())
    }
}

// === impl TaskPackage ===

impl TaskPackage {
    /// Checks the package: the evidence rules of
    /// [`CreateTaskRequest::from_json_slice`], absolute http(s) `webhook_url` and
    /// `callback_url`, a snake_case `delivery_format`, a non-blank `callback_token` of at most
    /// [`limits::TOKEN`] bytes, `created_at` in RFC 3339 UTC, `version` `"1.0"`, and at most
    /// [`limits::BODY`] bytes of JSON in all.
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] naming each invalid field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if self.to_json_bytes().len() > limits::BODY {
            errs.push(
                "",
                format!("package must be at most {} bytes", limits::BODY),
            );
        }
        match serde_json::to_value(&self.evidence_data) {
            Ok(evidence) => check_evidence(&mut errs, Some(&evidence), Some(&self.task_type)),
            Err(e) => errs.push("evidence_data", e.to_string()),
        }
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
            if token.trim().is_empty() {
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
