//! The crate's error.

use std::time::Duration;

use workflow_core::EngineError;

/// Why a task was not created or a report not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request names a channel that is not configured.
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    /// The target's circuit breaker is open and the policy is to reject new tasks for it.
    #[error("the target's circuit breaker is open")]
    BreakerOpen {
        /// When the breaker lets a probe through.
        retry_in: Duration,
    },
    /// The engine or its store failed (queue full, not found, invalid state...).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<workflow_core::StoreError> for Error {
    fn from(e: workflow_core::StoreError) -> Self {
        Error::Engine(e.into())
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
