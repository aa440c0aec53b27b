//! The crate's error.

use std::time::Duration;

use workflow_core::EngineError;

/// Why a task was not created or a report not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request names channels that are not configured: `(field, name)` for each
    /// (`channel`, `channels[2]`).
    #[error("unknown channel(s): {}", .0.iter().map(|(f, n)| format!("{f} {n:?}")).collect::<Vec<_>>().join(", "))]
    UnknownChannels(Vec<(String, String)>),
    /// The request names no target (`webhook_url`, `channel`, `channels`) and no route
    /// matches it (none does, and there is no default route).
    #[error("the request names no target and no route matches it")]
    NoRoute,
    /// More targets than one task may fan out to.
    #[error("a task may reach at most {0} targets")]
    TooManyTargets(usize),
    /// The task has no delivery of that id or target.
    #[error("the task has no delivery {0:?}")]
    UnknownDelivery(String),
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
