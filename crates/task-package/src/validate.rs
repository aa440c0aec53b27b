//! Validation that reports every invalid field at once.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::Priority;
use crate::package::{CreateTaskRequest, RiskLevel, TaskPackage, TaskType};

/// Size limits, in characters (URLs and the whole body in bytes).
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
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Its JSON path, e.g. `evidence_data.associated_url` (empty for the whole body).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Every invalid field of a request or package.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ValidationErrors {
    /// The invalid fields, in document order.
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    fn push(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_owned(),
            reason: reason.into(),
        });
    }

    /// Whether there is no error.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    fn into_result(self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} invalid field(s): ", self.errors.len())?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if e.field.is_empty() {
                write!(f, "{}", e.reason)?;
            } else {
                write!(f, "{}: {}", e.field, e.reason)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Checks that `url` is an absolute http(s) URL with a host, within the size limit.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > limits::URL {
        return Err(format!("must be at most {} bytes", limits::URL));
    }
    match url::Url::parse(url) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
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

/// Checks a required or optional string field.
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
            if required && s.trim().is_empty() {
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
        && RiskLevel::parse(level).is_none()
    {
        errs.push(
            "evidence_data.risk_level",
            format!("unknown risk level {level:?} (expected low, medium, high or critical)"),
        );
    }
    string_field(errs, obj, p, "brand_name", true, limits::NAME);
    string_field(errs, obj, p, "intervention_script", true, limits::SCRIPT);
    match obj.get("source_meta") {
        None | Some(Value::Null) => {
            for key in task_type.map_or(&[][..], TaskType::required_source_meta) {
                errs.push(
                    &format!("evidence_data.source_meta.{key}"),
                    "is required for this task type",
                );
            }
        }
        Some(Value::Object(meta)) => {
            let size = serde_json::to_vec(meta).map_or(0, |v| v.len());
            if size > limits::SOURCE_META {
                errs.push(
                    "evidence_data.source_meta",
                    format!("must be at most {} bytes as JSON", limits::SOURCE_META),
                );
            }
            for key in task_type.map_or(&[][..], TaskType::required_source_meta) {
                match meta.get(*key) {
                    Some(Value::String(s)) if !s.trim().is_empty() => {}
                    _ => errs.push(
                        &format!("evidence_data.source_meta.{key}"),
                        "is required for this task type (a non-empty string)",
                    ),
                }
            }
        }
        Some(other) => errs.push(
            "evidence_data.source_meta",
            format!("must be an object, not {}", type_name(other)),
        ),
    }
}

impl CreateTaskRequest {
    /// Parses and validates a request body, reporting every invalid field at once.
    ///
    /// Unknown top-level fields are ignored, so clients can send newer fields to older servers.
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] naming each invalid field; a body that is not JSON gives one error
    /// with an empty field path.
    pub fn from_json_slice(body: &[u8]) -> Result<CreateTaskRequest, ValidationErrors> {
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
        let Value::Object(obj) = &value else {
            errs.push(
                "",
                format!("body must be a JSON object, not {}", type_name(&value)),
            );
            return Err(errs);
        };
        let task_type = match string_field(&mut errs, obj, "", "task_type", true, 64) {
            Some(t) => match TaskType::parse(t) {
                Some(t) => Some(t),
                None => {
                    errs.push("task_type", format!("unknown task type {t:?} (expected a snake_case name such as negative_evidence_intervention)"));
                    None
                }
            },
            None => None,
        };
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
            && p.parse::<Priority>().is_err()
        {
            errs.push(
                "priority",
                format!("unknown priority {p:?} (expected critical, high, medium or low)"),
            );
        }
        errs.into_result()?;
        serde_json::from_value(value).map_err(|e| {
            let mut errs = ValidationErrors::default();
            errs.push("", e.to_string());
            errs
        })
    }
}

impl TaskPackage {
    /// Checks the package: required fields, URLs, sizes, scenario fields.
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] naming each invalid field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let value = serde_json::to_value(self).expect("a task package always serialises");
        let mut errs = ValidationErrors::default();
        if serde_json::to_vec(self).map_or(0, |v| v.len()) > limits::BODY {
            errs.push(
                "",
                format!("package must be at most {} bytes", limits::BODY),
            );
        }
        check_evidence(&mut errs, value.get("evidence_data"), Some(&self.task_type));
        if let Err(reason) = check_url(&self.delivery_instructions.webhook_url) {
            errs.push("delivery_instructions.webhook_url", reason);
        }
        if let Some(url) = &self.delivery_instructions.callback_url
            && let Err(reason) = check_url(url)
        {
            errs.push("delivery_instructions.callback_url", reason);
        }
        if chrono::DateTime::parse_from_rfc3339(&self.metadata.created_at).is_err() {
            errs.push("metadata.created_at", "must be an RFC 3339 timestamp");
        }
        if self.metadata.version != crate::package::PACKAGE_VERSION {
            errs.push(
                "metadata.version",
                format!("must be {:?}", crate::package::PACKAGE_VERSION),
            );
        }
        errs.into_result()
    }
}
