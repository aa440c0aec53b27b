//! Server-side routing: `[[routes]]` rules that decide which preset channels hear of a task
//! whose request names no target itself (no `webhook_url`, `channel` or `channels`).
//!
//! A rule's `when` lists accepted values per field; every listed field must match (values of
//! one field are alternatives). The first matching rule wins; a rule without `when` matches
//! every task and is the default, so it must come last. Rules are checked against the
//! configured channels when they are built ([`Routes::new`]), so a typo is a start-up (or
//! reload) error naming the rule, never a task that goes nowhere.
//!
//! ```
//! use workflow_dispatch::routing::{RouteList, Routes};
//!
//! let list: RouteList = serde_json::from_value(serde_json::json!([
//!     {"name": "critical-to-pr", "when": {"risk_level": ["high", "critical"]}, "to": ["pr-team", "partner"]},
//!     {"to": ["ops"]},
//! ]))?;
//! let routes = Routes::new(&list, |name| ["pr-team", "partner", "ops"].contains(&name))?;
//! let request = task_package::CreateTaskRequest::from_json_slice(
//!     task_package::examples::SEED_FLAT_REQUEST.as_bytes(),
//! )?;
//! // The seed's example is a high-risk post.
//! assert_eq!(routes.route(&request).unwrap().to, ["pr-team", "partner"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use task_package::{CreateTaskRequest, RiskLevel, TaskType};

/// How many channels one rule may name.
pub const MAX_ROUTE_TARGETS: usize = 16;

/// One `[[routes]]` entry as configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Shown in `GET /workflow/routes`, logs and metrics (default `routes[<index>]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Field -> accepted values (a value or a list). Absent: the default route.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub when: BTreeMap<String, Value>,
    /// The channels a matching task is delivered to.
    #[serde(default)]
    pub to: Vec<String>,
}

/// The `[[routes]]` table, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RouteList(pub Vec<RouteConfig>);

/// What routes can match on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    TaskType,
    RiskLevel,
    BrandName,
    SourceName,
    SourceMeta(String),
}

/// The `when` keys, as errors list them.
const KEYS: &str = "task_type, risk_level, brand_name, source_name or source_meta.<key>";

impl Field {
    fn parse(key: &str) -> Option<Field> {
        Some(match key {
            "task_type" => Field::TaskType,
            "risk_level" => Field::RiskLevel,
            "brand_name" => Field::BrandName,
            "source_name" => Field::SourceName,
            _ => {
                let meta = key.strip_prefix("source_meta.")?;
                if meta.trim().is_empty() {
                    return None;
                }
                Field::SourceMeta(meta.to_owned())
            }
        })
    }

    fn key(&self) -> String {
        match self {
            Field::TaskType => "task_type".to_owned(),
            Field::RiskLevel => "risk_level".to_owned(),
            Field::BrandName => "brand_name".to_owned(),
            Field::SourceName => "source_name".to_owned(),
            Field::SourceMeta(k) => format!("source_meta.{k}"),
        }
    }
}

/// One field's accepted values.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    field: Field,
    /// As configured; enums (`task_type`, `risk_level`) compare without case.
    accepted: Vec<String>,
}

impl Condition {
    fn matches(&self, request: &CreateTaskRequest) -> bool {
        let evidence = &request.evidence_data;
        let any_eq = |value: &str| self.accepted.iter().any(|a| a == value);
        let any_eq_nocase =
            |value: &str| self.accepted.iter().any(|a| a.eq_ignore_ascii_case(value));
        match &self.field {
            Field::TaskType => any_eq_nocase(request.task_type.as_str()),
            Field::RiskLevel => any_eq_nocase(evidence.risk_level.as_str()),
            Field::BrandName => any_eq(&evidence.brand_name),
            Field::SourceName => any_eq(&evidence.source_name),
            Field::SourceMeta(key) => match evidence.source_meta.get(key) {
                // A list (tags, categories) matches when any of its items does.
                Some(Value::Array(items)) => items.iter().filter_map(scalar).any(|v| any_eq(&v)),
                Some(v) => scalar(v).is_some_and(|v| any_eq(&v)),
                None => false,
            },
        }
    }
}

/// A string, number or boolean as text; `None` for anything else.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Its name (configured, or `routes[<index>]`).
    pub name: String,
    conditions: Vec<Condition>,
    /// The channels, in order.
    pub to: Vec<String>,
}

impl Route {
    /// Whether this is a default route (no `when`: it matches every task).
    pub fn is_default(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Whether `request` matches every field the rule lists.
    pub fn matches(&self, request: &CreateTaskRequest) -> bool {
        self.conditions.iter().all(|c| c.matches(request))
    }

    /// What `GET /workflow/routes` shows of it.
    pub fn view(&self) -> RouteView {
        RouteView {
            name: self.name.clone(),
            when: self
                .conditions
                .iter()
                .map(|c| (c.field.key(), c.accepted.clone()))
                .collect(),
            to: self.to.clone(),
            default: self.is_default(),
        }
    }
}

/// A rule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteView {
    /// Its name.
    pub name: String,
    /// Field -> accepted values; empty for the default route.
    pub when: BTreeMap<String, Vec<String>>,
    /// The channels a matching task goes to.
    pub to: Vec<String>,
    /// Whether it matches every task.
    pub default: bool,
}

/// The routes are not valid: every problem, each naming its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid routes: {}", .0.join("; "))]
pub struct RouteConfigError(pub Vec<String>);

/// The checked rules, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// Checks `list` against the channels (`channel_exists`) and builds the rules.
    ///
    /// # Errors
    ///
    /// Every problem at once, each naming its rule: an unknown `when` key, an empty or
    /// malformed value list, an unknown `task_type` or `risk_level` value, an empty `to`, an
    /// unknown or repeated channel, a repeated name, a rule after the default one (it could
    /// never match).
    pub fn new(
        list: &RouteList,
        channel_exists: impl Fn(&str) -> bool,
    ) -> Result<Routes, RouteConfigError> {
        let mut errors = Vec::new();
        let mut routes: Vec<Route> = Vec::with_capacity(list.0.len());
        let mut default: Option<String> = None;
        for (i, config) in list.0.iter().enumerate() {
            let label = match &config.name {
                Some(name) => format!("routes[{i}] ({name:?})"),
                None => format!("routes[{i}]"),
            };
            let mut bad = |what: String| errors.push(format!("{label}: {what}"));
            let name = match &config.name {
                Some(n) if n.trim().is_empty() => {
                    bad("name must not be empty".to_owned());
                    format!("routes[{i}]")
                }
                Some(n) => n.clone(),
                None => format!("routes[{i}]"),
            };
            if routes.iter().any(|r| r.name == name) {
                bad(format!("the name {name:?} is used by an earlier route"));
            }
            if let Some(first) = &default {
                bad(format!(
                    "comes after the default route {first} (a route without `when`), so it never \
                     matches; move the default route last"
                ));
            }
            let mut conditions = Vec::new();
            for (key, value) in flatten_when(&config.when) {
                let Some(field) = Field::parse(&key) else {
                    bad(format!(
                        "when.{key} is not a field routes match on (expected {KEYS})"
                    ));
                    continue;
                };
                match accepted_values(&field, value) {
                    Ok(accepted) => conditions.push(Condition { field, accepted }),
                    Err(why) => bad(format!("when.{key} {why}")),
                }
            }
            if config.to.is_empty() {
                bad("to must name at least one channel".to_owned());
            }
            if config.to.len() > MAX_ROUTE_TARGETS {
                bad(format!("to names more than {MAX_ROUTE_TARGETS} channels"));
            }
            for (j, channel) in config.to.iter().enumerate() {
                if config.to[..j].contains(channel) {
                    bad(format!("to names channel {channel:?} twice"));
                } else if !channel_exists(channel) {
                    bad(format!(
                        "to names channel {channel:?}, which is not configured under [channels]"
                    ));
                }
            }
            if conditions.is_empty() && config.when.is_empty() && default.is_none() {
                default = Some(label.clone());
            }
            routes.push(Route {
                name,
                conditions,
                to: config.to.clone(),
            });
        }
        if errors.is_empty() {
            Ok(Routes { routes })
        } else {
            Err(RouteConfigError(errors))
        }
    }

    /// The first rule `request` matches, if any.
    pub fn route(&self, request: &CreateTaskRequest) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(request))
    }

    /// The rules, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Route> {
        self.routes.iter()
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// What `GET /workflow/routes` shows.
    pub fn views(&self) -> Vec<RouteView> {
        self.routes.iter().map(Route::view).collect()
    }
}

impl fmt::Display for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        write!(f, "{} route(s): {}", names.len(), names.join(", "))
    }
}

/// `when`'s keys with a `source_meta` table (TOML's dotted keys, `source_meta.category = [...]`
/// unquoted) spread into `source_meta.<key>` entries.
fn flatten_when(when: &BTreeMap<String, Value>) -> Vec<(String, &Value)> {
    let mut out = Vec::with_capacity(when.len());
    for (key, value) in when {
        match value {
            Value::Object(meta) if key == "source_meta" => {
                out.extend(meta.iter().map(|(k, v)| (format!("source_meta.{k}"), v)));
            }
            _ => out.push((key.clone(), value)),
        }
    }
    out
}

/// A `when` value: one scalar or a non-empty list of them, checked for enum fields.
fn accepted_values(field: &Field, value: &Value) -> Result<Vec<String>, String> {
    let items: Vec<&Value> = match value {
        Value::Array(items) if items.is_empty() => {
            return Err("must list at least one value".to_owned());
        }
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    let mut accepted = Vec::with_capacity(items.len());
    for item in items {
        let Some(text) = scalar(item) else {
            return Err("must be a value or a list of values (strings, numbers, booleans)".into());
        };
        match field {
            Field::TaskType => {
                text.to_ascii_lowercase()
                    .parse::<TaskType>()
                    .map_err(|e| e.to_string())?;
            }
            Field::RiskLevel => {
                text.parse::<RiskLevel>().map_err(|e| e.to_string())?;
            }
            _ => {}
        }
        accepted.push(text);
    }
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(patch: Value) -> CreateTaskRequest {
        let mut body = task_package::examples::seed_flat_request();
        let Value::Object(patch) = patch else {
            panic!("a patch is an object")
        };
        for (k, v) in patch {
            body[k] = v;
        }
        CreateTaskRequest::from_json_slice(body.to_string().as_bytes()).unwrap()
    }

    fn routes(list: Value) -> Result<Routes, RouteConfigError> {
        Routes::new(&serde_json::from_value(list).unwrap(), |c| {
            ["pr-team", "partner", "strategy", "ops"].contains(&c)
        })
    }

    #[test]
    fn the_first_matching_rule_wins_and_the_default_takes_the_rest() {
        let r = routes(json!([
            {"name": "critical", "when": {"risk_level": ["HIGH", "critical"], "task_type": "negative_evidence_intervention"}, "to": ["pr-team", "partner"]},
            {"when": {"task_type": ["competitor_alert"], "source_meta.category": ["pricing"]}, "to": ["strategy"]},
            {"to": ["ops"]},
        ]))
        .unwrap();
        let high = request(json!({"risk_level": "high"}));
        assert_eq!(r.route(&high).unwrap().name, "critical");
        let low = request(json!({"risk_level": "low"}));
        assert_eq!(r.route(&low).unwrap().to, ["ops"]);
        assert!(r.route(&low).unwrap().is_default());
        let pricing = request(json!({
            "task_type": "competitor_alert", "risk_level": "low",
            "source_meta": {"competitor_name": "X", "alert_type": "price_cut", "category": "pricing"},
        }));
        assert_eq!(r.route(&pricing).unwrap().name, "routes[1]");
        // A list in source_meta matches when one of its items does; other values do not.
        let tagged = request(json!({
            "task_type": "competitor_alert", "risk_level": "low",
            "source_meta": {"competitor_name": "X", "alert_type": "price_cut", "category": ["launch", "pricing"]},
        }));
        assert_eq!(r.route(&tagged).unwrap().name, "routes[1]");
        let other = request(json!({
            "task_type": "competitor_alert", "risk_level": "low",
            "source_meta": {"competitor_name": "X", "alert_type": "price_cut", "category": "Pricing"},
        }));
        assert!(r.route(&other).unwrap().is_default());
    }

    #[test]
    fn without_a_default_an_unmatched_task_has_no_route() {
        let r = routes(json!([{"when": {"brand_name": "品牌名称"}, "to": ["pr-team"]}])).unwrap();
        assert!(r.route(&request(json!({}))).is_some());
        assert!(
            r.route(&request(json!({"brand_name": "别的品牌"})))
                .is_none()
        );
    }

    #[test]
    fn toml_dotted_source_meta_keys_are_spread() {
        let list: RouteList = figment_like(
            r#"[[routes]]
               when = { source_meta.category = ["pricing"] }
               to = ["strategy"]"#,
        );
        let r = Routes::new(&list, |_| true).unwrap();
        assert_eq!(
            r.views()[0].when,
            BTreeMap::from([(
                "source_meta.category".to_owned(),
                vec!["pricing".to_owned()]
            )])
        );
    }

    fn figment_like(toml: &str) -> RouteList {
        #[derive(Deserialize)]
        struct Doc {
            routes: RouteList,
        }
        figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(toml),
        )
        .extract::<Doc>()
        .unwrap()
        .routes
    }

    #[test]
    fn every_problem_is_named_with_its_rule() {
        let err = routes(json!([
            {"name": "a", "when": {"colour": ["red"], "risk_level": ["severe"], "brand_name": []}, "to": []},
            {"to": ["ops", "ops"]},
            {"name": "a", "when": {"task_type": "Not A Type"}, "to": ["nowhere"]},
        ]))
        .unwrap_err();
        let text = err.to_string();
        for part in [
            "routes[0] (\"a\"): when.brand_name must list at least one value",
            "routes[0] (\"a\"): when.colour is not a field routes match on",
            "routes[0] (\"a\"): when.risk_level unknown risk level",
            "routes[0] (\"a\"): to must name at least one channel",
            "routes[1]: to names channel \"ops\" twice",
            "routes[2] (\"a\"): the name \"a\" is used by an earlier route",
            "routes[2] (\"a\"): comes after the default route routes[1]",
            "routes[2] (\"a\"): when.task_type",
            "routes[2] (\"a\"): to names channel \"nowhere\", which is not configured",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }
}
