//! What runs a task: the [`Handler`] trait and its outcome.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::model::Task;

/// What one attempt is given besides the task.
#[derive(Debug, Clone)]
pub struct AttemptContext {
    /// 1-based number of this attempt (`task.tries + 1`).
    pub attempt: u32,
    /// Fired when the task is cancelled or the engine stops: stop work and return.
    pub cancel: CancellationToken,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// Done; the optional result is stored on the task.
    Success(Option<serde_json::Value>),
    /// Failed; try again later (not before `retry_after` if given).
    Retryable {
        /// What went wrong.
        error: String,
        /// The target's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Failed for good.
    Permanent {
        /// What went wrong.
        error: String,
    },
    /// Not attempted (e.g. the target's breaker is open): due again after `retry_in`,
    /// without spending an attempt.
    ///
    /// With `hold_target`, the deferral speaks for the task's whole target: the engine claims
    /// none of that target's tasks before `retry_in` has passed (other targets go on as
    /// usual). Hold only for reasons that apply to every task of the target, such as its
    /// breaker or rate limit; a reason narrower than the target (the breaker of one endpoint
    /// on a host shared with others) defers this task alone.
    Deferred {
        /// When to try.
        retry_in: Duration,
        /// Why.
        reason: String,
        /// Whether every task of the target waits as well.
        hold_target: bool,
    },
}

/// An attempt's result with what the attempt record keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerOutcome {
    /// How it ended.
    pub result: AttemptResult,
    /// The HTTP status, if any.
    pub status_code: Option<u16>,
    /// The response, truncated, if any.
    pub response: Option<String>,
}

impl HandlerOutcome {
    /// Success without a result.
    pub fn success() -> HandlerOutcome {
        HandlerOutcome::from(AttemptResult::Success(None))
    }

    /// Success with a result stored on the task.
    pub fn success_with(result: serde_json::Value) -> HandlerOutcome {
        HandlerOutcome::from(AttemptResult::Success(Some(result)))
    }

    /// A retryable failure.
    pub fn retryable(error: impl Into<String>) -> HandlerOutcome {
        HandlerOutcome::from(AttemptResult::Retryable {
            error: error.into(),
            retry_after: None,
        })
    }

    /// A permanent failure.
    pub fn permanent(error: impl Into<String>) -> HandlerOutcome {
        HandlerOutcome::from(AttemptResult::Permanent {
            error: error.into(),
        })
    }

    /// Not attempted; due again in `retry_in` without spending an attempt, and the task's
    /// target is held back until then (see [`AttemptResult::Deferred`]).
    pub fn deferred(retry_in: Duration, reason: impl Into<String>) -> HandlerOutcome {
        HandlerOutcome::from(AttemptResult::Deferred {
            retry_in,
            reason: reason.into(),
            hold_target: true,
        })
    }

    /// Not attempted; this task alone is due again in `retry_in` without spending an
    /// attempt. Other tasks of its target go on (see [`AttemptResult::Deferred`]).
    pub fn deferred_task(retry_in: Duration, reason: impl Into<String>) -> HandlerOutcome {
        HandlerOutcome::from(AttemptResult::Deferred {
            retry_in,
            reason: reason.into(),
            hold_target: false,
        })
    }

    /// Adds the HTTP status.
    pub fn with_status(mut self, status: Option<u16>) -> HandlerOutcome {
        self.status_code = status;
        self
    }

    /// Adds the (truncated) response.
    pub fn with_response(mut self, response: Option<String>) -> HandlerOutcome {
        self.response = response;
        self
    }
}

impl From<AttemptResult> for HandlerOutcome {
    fn from(result: AttemptResult) -> Self {
        HandlerOutcome {
            result,
            status_code: None,
            response: None,
        }
    }
}

/// Runs tasks of one kind. Implementations must be cancel-safe: a dropped future is an
/// abandoned attempt whose lease simply expires.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Makes one attempt.
    async fn handle(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome;
}
