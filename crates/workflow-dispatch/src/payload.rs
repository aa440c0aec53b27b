//! What a delivery task stores: where it goes (a URL or a named channel) and the package.
//!
//! Written by [`DeliveryPayload::to_value`] and read by [`DeliveryPayload::read`], and nowhere
//! else, so the stored shape (`{"url": ..., "package": ...}` or `{"channel": ..., "package":
//! ...}`) is defined once.

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
}

/// The stored payload is not a [`DeliveryPayload`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unreadable delivery payload: expected {{\"url\" or \"channel\": string, \"package\": ...}}"
)]
pub struct UnreadablePayload;

impl DeliveryPayload {
    /// A delivery of `package` to `destination`.
    pub fn new(destination: Destination, package: serde_json::Value) -> DeliveryPayload {
        DeliveryPayload {
            destination,
            package,
            traceparent: None,
        }
    }

    /// The same payload remembering `traceparent` (see [`DeliveryPayload::traceparent`]).
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> DeliveryPayload {
        self.traceparent = traceparent;
        self
    }

    /// The JSON the task stores.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a payload of strings and JSON always serialises")
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
}
