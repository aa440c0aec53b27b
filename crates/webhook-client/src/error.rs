//! Errors of the webhook client.

use retry_policy::TransportErrorKind;

/// Errors building the client or making an attempt. Never contains secrets or URL queries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target URL is not an absolute http(s) URL.
    #[error("invalid target URL: {0}")]
    InvalidUrl(String),
    /// The client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
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

    /// The kind of transport failure (`Other` for build and URL errors).
    pub fn kind(&self) -> TransportErrorKind {
        match self {
            Error::Transport { kind, .. } => *kind,
            Error::InvalidUrl(_) => TransportErrorKind::Blocked,
            Error::Build(_) => TransportErrorKind::Other,
        }
    }

    /// Whether the attempt timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind() == TransportErrorKind::Timeout
    }

    /// Whether the SSRF guard refused the target.
    pub fn is_blocked(&self) -> bool {
        self.kind() == TransportErrorKind::Blocked
    }

    /// Whether trying again later may work.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Transport { kind, .. } if *kind != TransportErrorKind::Blocked)
    }
}

/// Result of the client's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
