//! The crate's error type.

use crate::ValidationErrors;

/// Result alias with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a package or request could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not JSON, or not the shape of a package (a missing field, a wrong type).
    #[error("malformed task package JSON")]
    Json(#[from] serde_json::Error),
    /// The JSON has the right shape but some fields are invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

impl Error {
    /// Whether the input was not JSON or not the expected shape.
    pub fn is_json(&self) -> bool {
        matches!(self, Error::Json(_))
    }

    /// The invalid fields, when the error is a validation failure.
    pub fn validation_errors(&self) -> Option<&ValidationErrors> {
        match self {
            Error::Invalid(e) => Some(e),
            Error::Json(_) => None,
        }
    }
}
