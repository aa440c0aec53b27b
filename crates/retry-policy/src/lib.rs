//! Backoff schedules, `Retry-After` handling and outcome classification.
//!
//! The seed's schedule is the default: at most 3 retries, and before retry `n` (0-based) a
//! delay of `min(30 s · 2ⁿ + U(0, 10 s), 3600 s)`. Every number is configurable, the jitter is
//! selectable ([`Jitter`]), and the random source is injected so tests are deterministic.
//!
//! [`Classifier`] turns an HTTP status or a transport failure into an [`Outcome`]: success,
//! retryable (with the server's `Retry-After`, if any) or permanent. The default is the seed's
//! rule: retry every non-2xx, timeouts and connection errors.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use rand::SeedableRng;
//! use retry_policy::{Classifier, Jitter, Outcome, RetryPolicy};
//!
//! let policy = RetryPolicy::default();
//! let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let first = policy.delay(0, &mut rng);
//! assert!(first >= Duration::from_secs(30) && first <= Duration::from_secs(40));
//! assert_eq!(policy.max_attempts(), 4);
//!
//! let exact = RetryPolicy { jitter: Jitter::None, ..RetryPolicy::default() };
//! assert_eq!(exact.next_delay(1, None), Some(Duration::from_secs(60)));
//! assert_eq!(exact.next_delay(3, None), None); // retries exhausted
//!
//! let classifier = Classifier::default().with_permanent_statuses([400, 404, 410]);
//! assert_eq!(classifier.classify_status(404, None), Outcome::Permanent);
//! assert!(classifier.classify_status(503, Some(Duration::from_secs(5))).is_retryable());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//!
//! None.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use rand::Rng;

/// How random the delays are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly `base · 2ⁿ` (capped).
    None,
    /// The seed's rule: `base · 2ⁿ + U(0, max_extra)`, then capped.
    Additive(Duration),
    /// "Full jitter": `U(base, base · 2ⁿ)`, spreading retries of many clients evenly while
    /// never going below the base delay.
    Full,
}

/// A retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (the seed's `max_retries`).
    pub max_retries: u32,
    /// The delay before the first retry, doubled for each later one.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// How random the delays are.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// The seed's defaults: 3 retries, 30 s base, 1 h cap, up to 10 s of additive jitter.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(3600),
            jitter: Jitter::Additive(Duration::from_secs(10)),
        }
    }
}

/// A policy whose numbers make no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidBackoff {
    /// `max_delay` is zero.
    #[error("max delay must be greater than zero")]
    ZeroMax,
    /// `base_delay` is greater than `max_delay`.
    #[error("base delay ({base:?}) must not exceed max delay ({max:?})")]
    BaseAboveMax {
        /// The base.
        base: Duration,
        /// The max.
        max: Duration,
    },
}

impl RetryPolicy {
    /// A checked policy.
    ///
    /// # Errors
    ///
    /// [`InvalidBackoff`] when `max_delay` is zero or below `base_delay`.
    pub fn try_new(
        max_retries: u32,
        base_delay: Duration,
        max_delay: Duration,
        jitter: Jitter,
    ) -> Result<RetryPolicy, InvalidBackoff> {
        if max_delay.is_zero() {
            return Err(InvalidBackoff::ZeroMax);
        }
        if base_delay > max_delay {
            return Err(InvalidBackoff::BaseAboveMax {
                base: base_delay,
                max: max_delay,
            });
        }
        Ok(RetryPolicy {
            max_retries,
            base_delay,
            max_delay,
            jitter,
        })
    }

    /// Attempts in total: the first one plus the retries.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// The un-jittered delay before retry `retry_index` (0-based): `min(base · 2ⁿ, max)`.
    pub fn base_step(&self, retry_index: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry_index.min(31));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay before retry `retry_index` (0-based), with jitter drawn from `rng`, never above
    /// `max_delay` and never below [`RetryPolicy::base_step`].
    pub fn delay(&self, retry_index: u32, rng: &mut impl Rng) -> Duration {
        let step = self.base_step(retry_index);
        let jittered = match self.jitter {
            Jitter::None => step,
            Jitter::Additive(extra) => {
                let extra_ms = u64::try_from(extra.as_millis()).unwrap_or(u64::MAX);
                let add = if extra_ms == 0 {
                    0
                } else {
                    rng.random_range(0..=extra_ms)
                };
                step.saturating_add(Duration::from_millis(add))
            }
            Jitter::Full => {
                let lo = u64::try_from(self.base_delay.min(step).as_millis()).unwrap_or(u64::MAX);
                let hi = u64::try_from(step.as_millis()).unwrap_or(u64::MAX);
                // Full jitter never drops below the base step's floor: draw within [step, step]
                // when base == step, otherwise in [lo, hi] then lifted to at least the step.
                let ms = if hi > lo {
                    rng.random_range(lo..=hi)
                } else {
                    hi
                };
                Duration::from_millis(ms).max(step)
            }
        };
        jittered.min(self.max_delay)
    }

    /// The delay before the next attempt after `retries_done` retries (0 after the first
    /// failure), or `None` when the retries are exhausted. A server's `Retry-After` raises the
    /// delay (never lowers it), capped by `max_delay`. Uses the thread's random generator.
    pub fn next_delay(&self, retries_done: u32, retry_after: Option<Duration>) -> Option<Duration> {
        self.next_delay_with(retries_done, retry_after, &mut rand::rng())
    }

    /// [`RetryPolicy::next_delay`] with an injected random source.
    pub fn next_delay_with(
        &self,
        retries_done: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        if retries_done >= self.max_retries {
            return None;
        }
        let delay = self.delay(retries_done, rng);
        Some(match retry_after {
            Some(ra) => delay.max(ra).min(self.max_delay),
            None => delay,
        })
    }
}

/// What an attempt's result means for the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Success,
    /// Try again later, not before `retry_after` if the server said so.
    Retryable {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Do not try again.
    Permanent,
}

impl Outcome {
    /// Whether it succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// Whether it may be retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Retryable { .. })
    }

    /// `success`, `retryable` or `permanent`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retryable { .. } => "retryable",
            Outcome::Permanent => "permanent",
        }
    }
}

/// Why an attempt got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// No answer in time.
    Timeout,
    /// The connection was refused or reset.
    Connect,
    /// The name did not resolve.
    Dns,
    /// The TLS handshake failed.
    Tls,
    /// The response body was larger than allowed.
    BodyTooLarge,
    /// The target is not allowed (SSRF guard): never sent.
    Blocked,
    /// The target answered with a redirect, which is never followed.
    Redirect,
    /// Anything else.
    Other,
}

impl TransportErrorKind {
    /// A short snake_case name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            TransportErrorKind::Timeout => "timeout",
            TransportErrorKind::Connect => "connect",
            TransportErrorKind::Dns => "dns",
            TransportErrorKind::Tls => "tls",
            TransportErrorKind::BodyTooLarge => "body_too_large",
            TransportErrorKind::Blocked => "blocked",
            TransportErrorKind::Redirect => "redirect",
            TransportErrorKind::Other => "other",
        }
    }
}

/// Turns attempt results into [`Outcome`]s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Classifier {
    permanent: BTreeSet<u16>,
}

impl Classifier {
    /// The seed's rule: every non-2xx status is retryable. Same as `Classifier::default()`.
    pub fn seed() -> Classifier {
        Classifier::default()
    }

    /// The statuses that svix and most webhook senders treat as final:
    /// 400, 401, 403, 404, 405, 410, 413, 422.
    pub fn conventional() -> Classifier {
        Classifier::default().with_permanent_statuses([400, 401, 403, 404, 405, 410, 413, 422])
    }

    /// Adds statuses that are never retried.
    pub fn with_permanent_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.permanent.extend(statuses);
        self
    }

    /// The statuses that are never retried.
    pub fn permanent_statuses(&self) -> impl Iterator<Item = u16> + '_ {
        self.permanent.iter().copied()
    }

    /// Classifies an HTTP status: 2xx success; a configured permanent status permanent;
    /// anything else retryable, with `retry_after` kept for 429 and 503 (and any other status
    /// that sent one).
    pub fn classify_status(&self, status: u16, retry_after: Option<Duration>) -> Outcome {
        if (200..300).contains(&status) {
            Outcome::Success
        } else if self.permanent.contains(&status) {
            Outcome::Permanent
        } else {
            Outcome::Retryable { retry_after }
        }
    }

    /// Classifies a failure without a response: a blocked target is permanent (it will stay
    /// blocked); timeouts, connection, DNS, TLS, oversized bodies and redirects are retryable,
    /// as the seed retries every failure.
    pub fn classify_transport(&self, kind: TransportErrorKind) -> Outcome {
        match kind {
            TransportErrorKind::Blocked => Outcome::Permanent,
            _ => Outcome::Retryable { retry_after: None },
        }
    }
}

/// Parses a `Retry-After` header: delta seconds (`"120"`) or an HTTP date, as a delay from
/// `now`. A date in the past gives zero; garbage gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn seed_schedule_without_jitter_doubles_from_thirty_seconds() {
        let p = RetryPolicy {
            jitter: Jitter::None,
            ..RetryPolicy::default()
        };
        let got: Vec<_> = (0..3)
            .map(|n| p.next_delay(n, None).unwrap().as_secs())
            .collect();
        assert_eq!(got, [30, 60, 120]);
        assert_eq!(p.next_delay(3, None), None);
        assert_eq!(
            p.base_step(10),
            Duration::from_secs(3600),
            "capped at an hour"
        );
    }

    #[test]
    fn additive_jitter_stays_within_ten_seconds() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(42);
        for _ in 0..1000 {
            let d = p.delay(1, &mut rng);
            assert!(
                d >= Duration::from_secs(60) && d <= Duration::from_secs(70),
                "{d:?}"
            );
        }
    }

    #[test]
    fn same_seed_gives_same_schedule() {
        let p = RetryPolicy::default();
        let a: Vec<_> = (0..3)
            .map(|n| p.delay(n, &mut StdRng::seed_from_u64(9)))
            .collect();
        let b: Vec<_> = (0..3)
            .map(|n| p.delay(n, &mut StdRng::seed_from_u64(9)))
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn retry_after_raises_but_never_lowers_and_is_capped() {
        let p = RetryPolicy {
            jitter: Jitter::None,
            max_delay: Duration::from_secs(100),
            ..RetryPolicy::default()
        };
        assert_eq!(
            p.next_delay(0, Some(Duration::from_secs(5))),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            p.next_delay(0, Some(Duration::from_secs(50))),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            p.next_delay(0, Some(Duration::from_secs(500))),
            Some(Duration::from_secs(100))
        );
    }

    #[test]
    fn try_new_rejects_nonsense() {
        let s = Duration::from_secs;
        assert_eq!(
            RetryPolicy::try_new(3, s(1), s(0), Jitter::None),
            Err(InvalidBackoff::ZeroMax)
        );
        assert!(matches!(
            RetryPolicy::try_new(3, s(10), s(5), Jitter::None),
            Err(InvalidBackoff::BaseAboveMax { .. })
        ));
        assert!(RetryPolicy::try_new(0, s(0), s(5), Jitter::Full).is_ok());
    }

    #[test]
    fn seed_classifier_retries_every_non_2xx() {
        let c = Classifier::seed();
        assert_eq!(c.classify_status(200, None), Outcome::Success);
        assert_eq!(c.classify_status(204, None), Outcome::Success);
        for s in [301, 400, 404, 408, 410, 429, 500, 503] {
            assert!(c.classify_status(s, None).is_retryable(), "{s}");
        }
        assert_eq!(
            c.classify_status(429, Some(Duration::from_secs(7))),
            Outcome::Retryable {
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn configured_statuses_are_permanent() {
        let c = Classifier::conventional();
        assert_eq!(c.classify_status(410, None), Outcome::Permanent);
        assert_eq!(c.classify_status(422, None), Outcome::Permanent);
        assert!(c.classify_status(429, None).is_retryable());
        assert!(c.classify_status(408, None).is_retryable());
    }

    #[test]
    fn transport_failures_retry_except_blocked() {
        let c = Classifier::default();
        assert_eq!(
            c.classify_transport(TransportErrorKind::Blocked),
            Outcome::Permanent
        );
        for k in [
            TransportErrorKind::Timeout,
            TransportErrorKind::Connect,
            TransportErrorKind::Dns,
            TransportErrorKind::Tls,
        ] {
            assert!(c.classify_transport(k).is_retryable(), "{k:?}");
        }
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
