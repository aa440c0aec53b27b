//! What an attempt's outcome means for its task: a pure function, so every rule (budget,
//! backoff, `Retry-After`, user cancel, deferral) is tested without a store or a clock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use retry_policy::ExponentialBackoff;

use crate::events::millis;
use crate::handler::{AttemptResult, HandlerOutcome};
use crate::model::{AttemptRecord, Task};
use crate::store::Completion;

/// What the engine does after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not attempted: give the task back, due at `until`, without spending an attempt.
    Defer {
        /// When it is due again.
        until: DateTime<Utc>,
        /// Why (kept in the task's events).
        reason: String,
        /// Whether the task's whole target waits until then.
        hold_target: bool,
    },
    /// Attempted: record it and move the task on.
    Finish {
        /// The attempt, as its record keeps it.
        attempt: AttemptRecord,
        /// Where the task goes.
        completion: Completion,
    },
}

impl Decision {
    /// Whether the task will be tried again after this attempt.
    pub fn will_retry(&self) -> bool {
        matches!(
            self,
            Decision::Finish {
                completion: Completion::Retry { .. },
                ..
            }
        )
    }
}

/// The facts of one finished attempt besides its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Attempted {
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// How long it ran.
    pub elapsed: Duration,
    /// Whether a user cancelled the task while it ran.
    pub cancelled: bool,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Decides what `outcome` means for `task` (whose `tries` do not yet count this attempt):
///
/// - deferred: due again after `retry_in`, no attempt spent;
/// - success: completed with the handler's result;
/// - permanent: failed;
/// - retryable: failed if a user cancelled it while it ran or its budget
///   (`task.max_attempts`) is spent, else due again after the backoff's step for this retry,
///   raised by the target's `Retry-After` and capped by the backoff's maximum.
pub fn decide(
    task: &Task,
    outcome: HandlerOutcome,
    attempted: Attempted,
    backoff: &ExponentialBackoff,
    rng: &mut impl Rng,
) -> Decision {
    let Attempted {
        started_at,
        elapsed,
        cancelled,
        now,
    } = attempted;
    let n = task.tries + 1;
    let (outcome_name, error, completion) = match outcome.result {
        AttemptResult::Deferred {
            retry_in,
            reason,
            hold_target,
        } => {
            return Decision::Defer {
                until: now + TimeDelta::from_std(retry_in).unwrap_or(TimeDelta::MAX),
                reason,
                hold_target,
            };
        }
        AttemptResult::Success(result) => ("success", None, Completion::Succeeded { result }),
        AttemptResult::Permanent { error } => (
            "permanent",
            Some(error.clone()),
            Completion::Failed { error },
        ),
        AttemptResult::Retryable { error, retry_after } => {
            let completion = if cancelled {
                // The user cancelled it while it ran: no further attempt (the store ends it
                // `cancelled`).
                Completion::Failed {
                    error: error.clone(),
                }
            } else if n >= task.max_attempts {
                Completion::Failed {
                    error: format!("attempts exhausted ({n}); last error: {error}"),
                }
            } else {
                let delay = backoff.delay_honouring(task.tries, retry_after, rng);
                Completion::Retry {
                    at: now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX),
                    error: error.clone(),
                }
            };
            ("retryable", Some(error), completion)
        }
    };
    Decision::Finish {
        attempt: AttemptRecord {
            task_id: task.id.clone(),
            n,
            started_at,
            duration_ms: millis(elapsed),
            status_code: outcome.status_code,
            error,
            response: outcome.response,
            outcome: outcome_name.to_owned(),
        },
        completion,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use retry_policy::Jitter;

    use super::*;
    use crate::model::{Priority, TaskStatus};

    fn task(tries: u32, max_attempts: u32) -> Task {
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("valid");
        Task {
            id: "t".into(),
            kind: "k".into(),
            priority: Priority::High,
            status: TaskStatus::Processing,
            payload: serde_json::json!({}),
            target: Some("host".into()),
            attempt: tries + 1,
            tries,
            max_attempts,
            next_run_at: None,
            lease_owner: None,
            lease_until: None,
            cancel_requested: false,
            created_at: at,
            updated_at: at,
            finished_at: None,
            last_error: None,
            result: None,
            idempotency_key: None,
            callback: None,
            seq: 1,
        }
    }

    fn facts(cancelled: bool) -> Attempted {
        Attempted {
            started_at: DateTime::from_timestamp(1_700_000_100, 0).expect("valid"),
            elapsed: Duration::from_millis(1500),
            cancelled,
            now: DateTime::from_timestamp(1_700_000_101, 0).expect("valid"),
        }
    }

    fn backoff() -> ExponentialBackoff {
        ExponentialBackoff::try_new(
            Duration::from_secs(30),
            Duration::from_secs(3600),
            Jitter::None,
        )
        .expect("valid")
    }

    fn decide_now(task: &Task, outcome: HandlerOutcome, cancelled: bool) -> Decision {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        decide(task, outcome, facts(cancelled), &backoff(), &mut rng)
    }

    #[test]
    fn a_retryable_failure_within_the_budget_waits_the_backoff_step_for_its_retry() {
        let now = facts(false).now;
        for (tries, wait) in [(0, 30), (1, 60), (2, 120)] {
            let d = decide_now(&task(tries, 4), HandlerOutcome::retryable("503"), false);
            let Decision::Finish {
                attempt,
                completion: Completion::Retry { at, error },
            } = d
            else {
                panic!("expected a retry, got {d:?}");
            };
            assert_eq!(at, now + TimeDelta::seconds(wait));
            assert_eq!(error, "503");
            assert_eq!(attempt.n, tries + 1);
            assert_eq!(attempt.outcome, "retryable");
            assert_eq!(attempt.duration_ms, 1500);
            assert_eq!(attempt.error.as_deref(), Some("503"));
        }
    }

    #[test]
    fn retry_after_raises_the_delay_but_never_past_the_cap() {
        let now = facts(false).now;
        let later = |secs| HandlerOutcome {
            result: AttemptResult::Retryable {
                error: "429".into(),
                retry_after: Some(Duration::from_secs(secs)),
            },
            status_code: Some(429),
            response: None,
        };
        let at = |d: Decision| match d {
            Decision::Finish {
                completion: Completion::Retry { at, .. },
                ..
            } => at,
            other => panic!("expected a retry, got {other:?}"),
        };
        assert_eq!(
            at(decide_now(&task(0, 4), later(90), false)),
            now + TimeDelta::seconds(90)
        );
        assert_eq!(
            at(decide_now(&task(0, 4), later(10), false)),
            now + TimeDelta::seconds(30),
            "a shorter Retry-After does not shorten the backoff"
        );
        assert_eq!(
            at(decide_now(&task(0, 4), later(99_999), false)),
            now + TimeDelta::seconds(3600)
        );
    }

    #[test]
    fn the_last_attempt_in_the_budget_fails_the_task_naming_the_count() {
        let d = decide_now(&task(3, 4), HandlerOutcome::retryable("timeout"), false);
        assert!(!d.will_retry());
        let Decision::Finish {
            completion: Completion::Failed { error },
            ..
        } = d
        else {
            panic!("expected failure, got {d:?}");
        };
        assert_eq!(error, "attempts exhausted (4); last error: timeout");
    }

    #[test]
    fn a_cancelled_task_is_not_retried() {
        let d = decide_now(&task(0, 4), HandlerOutcome::retryable("cancelled"), true);
        assert!(matches!(
            d,
            Decision::Finish {
                completion: Completion::Failed { .. },
                ..
            }
        ));
    }

    #[test]
    fn success_and_permanent_failure_keep_status_and_response() {
        let ok = HandlerOutcome::success_with(serde_json::json!({"ok": true}))
            .with_status(Some(200))
            .with_response(Some("fine".into()));
        let Decision::Finish {
            attempt,
            completion,
        } = decide_now(&task(0, 4), ok, false)
        else {
            panic!("expected finish");
        };
        assert_eq!(
            completion,
            Completion::Succeeded {
                result: Some(serde_json::json!({"ok": true}))
            }
        );
        assert_eq!(
            (attempt.status_code, attempt.response.as_deref()),
            (Some(200), Some("fine"))
        );
        assert_eq!(attempt.error, None);
        let gone = HandlerOutcome::permanent("410 gone").with_status(Some(410));
        let d = decide_now(&task(0, 4), gone, false);
        assert_eq!(
            d,
            Decision::Finish {
                attempt: AttemptRecord {
                    task_id: "t".into(),
                    n: 1,
                    started_at: facts(false).started_at,
                    duration_ms: 1500,
                    status_code: Some(410),
                    error: Some("410 gone".into()),
                    response: None,
                    outcome: "permanent".into(),
                },
                completion: Completion::Failed {
                    error: "410 gone".into()
                },
            }
        );
    }

    #[test]
    fn a_deferral_spends_no_attempt_and_says_whether_the_target_waits() {
        let now = facts(false).now;
        let d = decide_now(
            &task(2, 4),
            HandlerOutcome::deferred(Duration::from_secs(5), "circuit open"),
            false,
        );
        assert_eq!(
            d,
            Decision::Defer {
                until: now + TimeDelta::seconds(5),
                reason: "circuit open".into(),
                hold_target: true,
            }
        );
        let d = decide_now(
            &task(2, 4),
            HandlerOutcome::deferred_task(Duration::from_secs(5), "endpoint open"),
            false,
        );
        assert!(matches!(
            d,
            Decision::Defer {
                hold_target: false,
                ..
            }
        ));
    }
}
