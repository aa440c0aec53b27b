//! What a delivery task stores: where it goes (a URL or a named channel) and the package.
//!
//! Written by [`DeliveryPayload::to_value`] and read by [`DeliveryPayload::read`], and nowhere
//! else, so the stored shape (`{"url": ..., "package": ...}` or `{"channel": ..., "package":
//! ...}`) is defined once.
//!
//! A task that fans out to several targets is one engine task per delivery: the first has the
//! task's id and lists every delivery (`fanout`); the others have ids `<task id>.<n>`
//! ([`delivery_id`]) and name their task (`parent`).

use serde::{Deserialize, Serialize};

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// A webhook URL: the standard signed package is POSTed there.
    Url(String),
    /// A preset channel, by name (not its URL, which may hold a token), resolved again at every
    /// attempt so a retry after a restart uses the channel as configured then.
    Channel(String),
}

/// The payload of a delivery task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryPayload {
    /// Where it goes (stored as a `url` or a `channel` key).
    #[serde(flatten)]
    pub destination: Destination,
    /// The JSON body delivered, as is (any JSON object, not only a `task_package::TaskPackage`).
    pub package: serde_json::Value,
    /// The W3C `traceparent` of the span that created the task, so its attempts join that
    /// trace; only kept while traces are exported (absent in payloads stored before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// For a later delivery of a task that fans out: the task's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For the first delivery of a task that fans out: every delivery, this one first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fanout: Vec<DeliveryRef>,
}

/// A stored payload seen in place, without copying its package.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PayloadRef<'a> {
    /// The webhook URL, for a URL delivery.
    pub url: Option<&'a str>,
    /// The channel's name, for a channel delivery.
    pub channel: Option<&'a str>,
    /// The package.
    pub package: &'a serde_json::Value,
    /// The creating span's `traceparent`, if one was kept.
    pub traceparent: Option<&'a str>,
    /// The task this delivery belongs to, when it is a later delivery of a fan-out.
    pub parent: Option<&'a str>,
}

impl PayloadRef<'_> {
    /// How the API names the target: the URL, or the channel's name.
    pub fn label(&self) -> &str {
        self.url.or(self.channel).unwrap_or_default()
    }
}

/// The id of the task that `task` (a delivery) belongs to: its `parent`, else its own.
pub fn task_id_of(task: &workflow_core::Task) -> &str {
    task.payload
        .get("parent")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(&task.id)
}

/// The stored payload is not a [`DeliveryPayload`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unreadable delivery payload: expected {{\"url\" or \"channel\": string, \"package\": ...}}"
)]
pub struct UnreadablePayload;

/// One delivery of a task that fans out, as the task's first delivery lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryRef {
    /// The delivery's engine task id (the task's own id for the first).
    pub id: String,
    /// Where it goes: the webhook URL or the channel's name ([`PayloadRef::label`]).
    pub target: String,
}

/// Most deliveries one task fans out to: a `webhook_url`, a `channel` and up to 16
/// `channels` (or a route's 16).
pub const MAX_DELIVERIES: usize = 18;

/// The engine task id of delivery `n` (0-based) of task `task_id`: the task's own id for the
/// first, `<task id>.<n>` for the others, so a delivery's id and callback token follow from the
/// task's without a lookup.
pub fn delivery_id(task_id: &str, n: usize) -> String {
    if n == 0 {
        task_id.to_owned()
    } else {
        format!("{task_id}.{n}")
    }
}

// === impl DeliveryPayload ===

impl DeliveryPayload {
    /// A delivery of `package` to `destination`.
    pub fn new(destination: Destination, package: serde_json::Value) -> DeliveryPayload {
        DeliveryPayload {
            destination,
            package,
            traceparent: None,
            parent: None,
            fanout: Vec::new(),
        }
    }

    /// The same payload as a later delivery of task `task_id`.
    pub fn of_task(mut self, task_id: &str) -> DeliveryPayload {
        self.parent = Some(task_id.to_owned());
        self
    }

    /// The same payload as the first delivery of a task listing all of its `deliveries`.
    pub fn listing(mut self, deliveries: Vec<DeliveryRef>) -> DeliveryPayload {
        self.fanout = deliveries;
        self
    }

    /// The deliveries a stored first delivery lists (empty for a task with one target).
    pub fn fanout_of(payload: &serde_json::Value) -> Vec<DeliveryRef> {
        payload
            .get("fanout")
            .and_then(|f| Vec::<DeliveryRef>::deserialize(f).ok())
            .unwrap_or_default()
    }

    /// The same payload remembering `traceparent` (see [`DeliveryPayload::traceparent`]).
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> DeliveryPayload {
        self.traceparent = traceparent;
        self
    }

    /// The JSON the task stores.
    pub fn to_value(&self) -> serde_json::Value {
        self.clone().into_value()
    }

    /// [`DeliveryPayload::to_value`], moving the package in: `serde_json::to_value` would
    /// copy its whole tree, which showed at ~1 % of the dispatcher's CPU under load. The
    /// shape is the serde derive's (a test holds them equal).
    pub fn into_value(self) -> serde_json::Value {
        use serde_json::Value;
        let mut map = serde_json::Map::new();
        let (key, to) = match self.destination {
            Destination::Url(u) => ("url", u),
            Destination::Channel(c) => ("channel", c),
        };
        map.insert(key.to_owned(), Value::String(to));
        map.insert("package".to_owned(), self.package);
        if let Some(t) = self.traceparent {
            map.insert("traceparent".to_owned(), Value::String(t));
        }
        if let Some(p) = self.parent {
            map.insert("parent".to_owned(), Value::String(p));
        }
        if !self.fanout.is_empty() {
            let fanout = self.fanout.into_iter().map(|d| {
                let mut m = serde_json::Map::new();
                m.insert("id".to_owned(), Value::String(d.id));
                m.insert("target".to_owned(), Value::String(d.target));
                Value::Object(m)
            });
            map.insert("fanout".to_owned(), Value::Array(fanout.collect()));
        }
        Value::Object(map)
    }

    /// Reads a stored payload in place: cloning and deserialising the whole package tree per
    /// attempt would cost more than sending it.
    ///
    /// # Errors
    ///
    /// [`UnreadablePayload`] when neither `url` nor `channel` is a string, or `package` is
    /// missing.
    pub fn read(payload: &serde_json::Value) -> Result<PayloadRef<'_>, UnreadablePayload> {
        let text = |key: &str| payload.get(key).and_then(serde_json::Value::as_str);
        let (url, channel) = (text("url"), text("channel"));
        match payload.get("package") {
            Some(package) if url.is_some() || channel.is_some() => Ok(PayloadRef {
                url,
                channel,
                package,
                traceparent: text("traceparent"),
                parent: text("parent"),
            }),
            _ => Err(UnreadablePayload),
        }
    }
}

/// The engine's queue priority of a package's priority: the same four classes, two types so
/// that the engine depends on no product crate.
pub fn queue_priority(p: task_package::Priority) -> workflow_core::Priority {
    use task_package::Priority as P;
    use workflow_core::Priority as Q;
    match p {
        P::Critical => Q::Critical,
        P::High => Q::High,
        P::Medium => Q::Medium,
        P::Low => Q::Low,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_destinations_round_trip_in_the_stored_shape() {
        let package = serde_json::json!({"task_type": "competitor_alert"});
        let url = DeliveryPayload::new(
            Destination::Url("https://r.example/h".into()),
            package.clone(),
        );
        let stored = url.to_value();
        assert_eq!(
            stored,
            serde_json::json!({"url": "https://r.example/h", "package": package})
        );
        let seen = DeliveryPayload::read(&stored).unwrap();
        assert_eq!(
            (seen.url, seen.channel),
            (Some("https://r.example/h"), None)
        );
        let channel = DeliveryPayload::new(Destination::Channel("ops".into()), package.clone());
        let stored = channel.to_value();
        assert_eq!(
            stored,
            serde_json::json!({"channel": "ops", "package": package})
        );
        let back: DeliveryPayload = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(back, channel);
        assert_eq!(DeliveryPayload::read(&stored).unwrap().channel, Some("ops"));
        assert_eq!(
            DeliveryPayload::read(&serde_json::json!({"url": 1, "package": {}})),
            Err(UnreadablePayload)
        );
    }

    #[test]
    fn a_traceparent_is_kept_only_when_there_is_one() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let traced =
            DeliveryPayload::new(Destination::Channel("ops".into()), serde_json::json!({}))
                .with_traceparent(Some(traceparent.into()));
        let stored = traced.to_value();
        assert_eq!(stored["traceparent"], traceparent);
        assert_eq!(
            DeliveryPayload::read(&stored).unwrap().traceparent,
            Some(traceparent)
        );
        // Payloads stored before traces existed still read, and untraced ones stay as they were.
        let old = serde_json::json!({"url": "https://r.example/h", "package": {}});
        let back: DeliveryPayload = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(back.traceparent, None);
        assert_eq!(back.to_value(), old);
    }

    #[test]
    fn into_value_writes_what_the_serde_derive_writes() {
        let package = serde_json::json!({"task_type": "competitor_alert", "n": [1, {"a": null}]});
        let full = DeliveryPayload::new(Destination::Url("https://r.example/h".into()), package)
            .with_traceparent(Some(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            ))
            .of_task("wf_1_00000001")
            .listing(vec![
                DeliveryRef {
                    id: "wf_1_00000001".into(),
                    target: "https://r.example/h".into(),
                },
                DeliveryRef {
                    id: "wf_1_00000001.1".into(),
                    target: "ops".into(),
                },
            ]);
        let bare = DeliveryPayload::new(Destination::Channel("ops".into()), serde_json::json!({}));
        for p in [full, bare] {
            assert_eq!(p.clone().into_value(), serde_json::to_value(&p).unwrap());
        }
    }
}
