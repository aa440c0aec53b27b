//! Errors of the webhook client.

use retry_policy::TransportErrorKind;

use crate::signing::InvalidSecret;

/// Errors building the client or making an attempt. Never contains secrets, credentials or
/// URL queries: transport messages are built from errors stripped of their URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target URL is not an absolute http(s) URL.
    #[error("invalid target URL: {0}")]
    InvalidUrl(String),
    /// The client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
    /// A signing secret is not `whsec_` + base64.
    #[error(transparent)]
    InvalidSecret(#[from] InvalidSecret),
    /// The receiver answered, but its body says the message was refused (a chat platform's
    /// non-zero `errcode`/`code`).
    #[error("{0}")]
    Rejected(String),
    /// The attempt failed without a usable response.
    #[error("{kind_name} error: {message}", kind_name = kind.as_str())]
    Transport {
        /// What kind of failure.
        kind: TransportErrorKind,
        /// A description without the URL.
        message: String,
    },
}

impl Error {
    pub(crate) fn transport(kind: TransportErrorKind, message: impl Into<String>) -> Error {
        Error::Transport {
            kind,
            message: message.into(),
        }
    }

    /// The kind of transport failure ([`TransportErrorKind::Other`] for errors that are not
    /// about transport: invalid URL, secret or builder settings).
    pub fn kind(&self) -> TransportErrorKind {
        match self {
            Error::Transport { kind, .. } => *kind,
            Error::InvalidUrl(_)
            | Error::Build(_)
            | Error::InvalidSecret(_)
            | Error::Rejected(_) => TransportErrorKind::Other,
        }
    }

    /// Whether the attempt timed out (connect or total timeout).
    pub fn is_timeout(&self) -> bool {
        self.kind() == TransportErrorKind::Timeout
    }

    /// Whether the SSRF guard refused the target.
    pub fn is_blocked(&self) -> bool {
        self.kind() == TransportErrorKind::Blocked
    }

    /// Whether trying again later may work: every transport failure except a refused target.
    /// (The [`Classifier`](retry_policy::Classifier) in the attempt report has the final say.)
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Transport { kind, .. } if *kind != TransportErrorKind::Blocked)
    }
}

/// Result of the client's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
