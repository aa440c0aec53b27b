//! The crate's error type.

/// What can go wrong when starting the mock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening address could not be bound (or its local address read).
    #[error("cannot bind the DingTalk mock")]
    Bind(#[source] std::io::Error),
    /// TLS mode could not be set up (certificate generation, an unreadable certificate or
    /// key).
    #[error("cannot set up TLS for the DingTalk mock: {0}")]
    Tls(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
