//! The client's one error type: opaque, with predicates and the server's error body.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use task_package::FieldError;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Anything that went wrong talking to the dispatcher.
///
/// Opaque, in the style of `reqwest::Error`: ask it what happened with [`Error::status`],
/// [`Error::code`], [`Error::field_errors`], [`Error::is_retryable`] and the other `is_*`
/// predicates. Its message never contains a URL, an API key or a callback token.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    status: Option<StatusCode>,
    code: Option<String>,
    message: String,
    field_errors: Vec<FieldError>,
    retry_after: Option<Duration>,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The builder's settings are unusable.
    Builder,
    /// The server answered with an error status.
    Api,
    /// The request never got an answer: connect failure, timeout, reset.
    Transport { connect: bool, timeout: bool },
    /// The server answered 2xx with a body that is not the expected JSON.
    Decode,
}

/// The body of every dispatcher error (`bins/dispatcher/src/error.rs`'s `ErrorBody`, which
/// serialises borrowed `&'static str`s and so cannot be deserialised itself). Only read here;
/// callers see it through [`Error`]'s accessors, its `details` as the server's own
/// [`FieldError`]s.
#[derive(serde::Deserialize)]
struct WireError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Vec<FieldError>,
}

// === impl Error ===

impl Error {
    fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                status: None,
                code: None,
                message: message.into(),
                field_errors: Vec::new(),
                retry_after: None,
                source: None,
            }),
        }
    }

    pub(crate) fn builder(message: impl Into<String>) -> Error {
        Error::new(Kind::Builder, message)
    }

    pub(crate) fn decode(source: impl Into<BoxError>) -> Error {
        let mut e = Error::new(Kind::Decode, "unexpected response body");
        e.inner.source = Some(source.into());
        e
    }

    /// A transport failure; the URL is stripped so it never reaches a log.
    pub(crate) fn transport(source: reqwest::Error) -> Error {
        let (connect, timeout) = (source.is_connect(), source.is_timeout());
        let message = if timeout {
            "request timed out"
        } else if connect {
            "could not connect to the dispatcher"
        } else {
            "request failed"
        };
        let mut e = Error::new(Kind::Transport { connect, timeout }, message);
        e.inner.source = Some(Box::new(source.without_url()));
        e
    }

    /// An error answer: `status`, the JSON error body if there is one, and `Retry-After`.
    pub(crate) fn api(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Error {
        let wire: Option<WireError> = serde_json::from_slice(body).ok();
        let (code, message, details) = match wire {
            Some(w) => (w.code, w.message, w.details),
            None => (None, None, Vec::new()),
        };
        let message = message.unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase()
        });
        let mut e = Error::new(Kind::Api, message);
        e.inner.status = Some(status);
        e.inner.code = code;
        e.inner.field_errors = details;
        e.inner.retry_after = retry_after;
        e
    }

    /// The HTTP status the dispatcher answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The machine-readable `code` of the dispatcher's error body, e.g. `validation_failed`,
    /// `unauthorized`, `not_found`, `invalid_state`, `queue_full`.
    pub fn code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// The human-readable message (the server's, for an error answer).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Each invalid field of a 400, as the server named it (`evidence_data.risk_level`,
    /// `webhook_url`, `Idempotency-Key`, ...); empty for other errors.
    pub fn field_errors(&self) -> &[FieldError] {
        &self.inner.field_errors
    }

    /// The server's `Retry-After`, if it sent one (503 and 429 answers).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// Whether trying again later may succeed: a 503 or 429 answer, or a request that got no
    /// answer (connect failure, timeout). Other 4xx never are. The client has already retried
    /// these within its [`RetryPolicy`](retry_policy::RetryPolicy) before returning them.
    pub fn is_retryable(&self) -> bool {
        match self.inner.kind {
            Kind::Api => self.inner.status.is_some_and(retryable_status),
            Kind::Transport { .. } => true,
            Kind::Builder | Kind::Decode => false,
        }
    }

    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, Kind::Transport { timeout: true, .. })
    }

    /// Whether the connection to the dispatcher could not be made (the request was not sent).
    pub fn is_connect(&self) -> bool {
        matches!(self.inner.kind, Kind::Transport { connect: true, .. })
    }

    /// Whether the builder's settings were unusable.
    pub fn is_builder(&self) -> bool {
        self.inner.kind == Kind::Builder
    }

    /// Whether a successful answer could not be decoded.
    pub fn is_decode(&self) -> bool {
        self.inner.kind == Kind::Decode
    }
}

/// The statuses the client retries: the server is busy or limiting, not refusing.
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("dispatcher_client::Error");
        d.field("kind", &self.inner.kind);
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(code) = &self.inner.code {
            d.field("code", code);
        }
        d.field("message", &self.inner.message);
        if !self.inner.field_errors.is_empty() {
            d.field("field_errors", &self.inner.field_errors);
        }
        if let Some(ra) = self.inner.retry_after {
            d.field("retry_after", &ra);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.inner.status, &self.inner.code) {
            (Some(status), Some(code)) => write!(
                f,
                "dispatcher answered {} ({code}): {}",
                status.as_u16(),
                self.inner.message
            )?,
            (Some(status), None) => write!(
                f,
                "dispatcher answered {}: {}",
                status.as_u16(),
                self.inner.message
            )?,
            _ => f.write_str(&self.inner.message)?,
        }
        for (i, fe) in self.inner.field_errors.iter().enumerate() {
            f.write_str(if i == 0 { " (" } else { "; " })?;
            write!(f, "{fe}")?;
        }
        if !self.inner.field_errors.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_body_gives_code_and_field_errors() {
        let body = br#"{"status":"error","code":"validation_failed","message":"request is invalid",
            "details":[{"field":"risk_level","reason":"unknown"},{"field":"webhook_url","reason":"is required"}]}"#;
        let e = Error::api(StatusCode::BAD_REQUEST, body, None);
        assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(e.code(), Some("validation_failed"));
        assert_eq!(e.field_errors().len(), 2);
        assert_eq!(e.field_errors()[1].field, "webhook_url");
        assert!(!e.is_retryable());
        let shown = e.to_string();
        assert!(shown.contains("400 (validation_failed)"), "{shown}");
        assert!(shown.contains("risk_level: unknown"), "{shown}");
    }

    #[test]
    fn busy_answers_are_retryable_and_other_4xx_are_not() {
        let e = Error::api(
            StatusCode::SERVICE_UNAVAILABLE,
            b"not json",
            Some(Duration::from_secs(2)),
        );
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.code(), None);
        assert_eq!(e.message(), "service unavailable");
        assert!(Error::api(StatusCode::TOO_MANY_REQUESTS, b"", None).is_retryable());
        for s in [400, 401, 404, 409, 413, 415] {
            let status = StatusCode::from_u16(s).unwrap();
            assert!(!Error::api(status, b"", None).is_retryable(), "{s}");
        }
    }
}
