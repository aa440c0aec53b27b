//! The crate's error type.

/// What can go wrong when starting the mock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening address could not be bound (or its local address read).
    #[error("cannot bind the DingTalk mock")]
    Bind(#[source] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
