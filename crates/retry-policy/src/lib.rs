//! Backoff schedules, `Retry-After` handling and outcome classification.
//!
//! The seed's schedule is the default: at most 3 retries, and before retry `n` (0-based) a
//! delay of `min(30 s · 2ⁿ + U(0, 10 s), 3600 s)`. Every number is configurable, the jitter is
//! selectable ([`Jitter`]), and the random source is injected so tests are deterministic.
//!
//! [`Classifier`] turns an HTTP status or a transport failure into an [`Outcome`]: success,
//! retryable (with the server's `Retry-After`, if any) or permanent. The default is the seed's
//! rule: retry every non-2xx, timeouts and connection errors. [`parse_retry_after`] reads a
//! `Retry-After` header (delta seconds or HTTP date) and [`RetryPolicy::next_delay`] lets it
//! raise, never lower, the next delay, still capped by `max_delay`.
//!
//! [`ExponentialBackoff`] is the schedule alone, with a checked constructor
//! ([`ExponentialBackoff::try_new`]) in the style of tower's and linkerd's.
//!
//! Why not `backoff` / `backon`: they are retry *executors* with their own jitter formulas; we
//! need the seed's exact schedule as pure arithmetic (the engine persists `next_run_at` instead
//! of sleeping), `Retry-After` handling and the status classifier, which they do not provide.
//! The whole crate is a few hundred lines with no runtime dependency.
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
//! None (no tower `Policy` yet: the engine schedules retries itself).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use rand::Rng;

/// How random the delays are.
///
/// Every strategy keeps the seed's guarantee that retry `n` waits at least the un-jittered step
/// `min(base · 2ⁿ, max)`: jitter only ever adds time. (Classic "full jitter", `U(0, step)`,
/// would break that floor, so [`Jitter::Full`] spreads over the step's full width above it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly `base · 2ⁿ` (capped).
    None,
    /// The seed's rule: `base · 2ⁿ + U(0, max_extra)`, then capped.
    Additive(Duration),
    /// Proportional jitter: `U(step, 2 · step)`, then capped, where `step = base · 2ⁿ`. The
    /// spread grows with the delay, so many clients that failed together drift apart.
    Full,
}

/// An exponential backoff: `min(min · 2ⁿ + jitter, max)`, without a retry limit.
///
/// [`RetryPolicy`] adds the limit; build one from the other with [`RetryPolicy::backoff`] /
/// [`ExponentialBackoff::with_max_retries`]. [`ExponentialBackoff::try_new`] checks the numbers
/// (like tower's and linkerd's `ExponentialBackoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExponentialBackoff {
    min: Duration,
    max: Duration,
    jitter: Jitter,
}

impl ExponentialBackoff {
    /// A checked backoff starting at `min`, doubling, capped at `max`.
    ///
    /// # Errors
    ///
    /// [`InvalidBackoff`] when `max` is zero or below `min`.
    pub fn try_new(
        min: Duration,
        max: Duration,
        jitter: Jitter,
    ) -> Result<ExponentialBackoff, InvalidBackoff> {
        if max.is_zero() {
            return Err(InvalidBackoff::ZeroMax);
        }
        if min > max {
            return Err(InvalidBackoff::BaseAboveMax { base: min, max });
        }
        Ok(ExponentialBackoff { min, max, jitter })
    }

    /// The first (smallest) step.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The jitter strategy.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// A [`RetryPolicy`] allowing `max_retries` retries on this schedule.
    pub fn with_max_retries(self, max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base_delay: self.min,
            max_delay: self.max,
            jitter: self.jitter,
        }
    }

    /// The un-jittered delay before retry `n` (0-based): `min(min · 2ⁿ, max)`.
    pub fn base_step(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.min(31));
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry `n` (0-based), with jitter drawn from `rng`: never above `max`
    /// and never below [`ExponentialBackoff::base_step`].
    pub fn delay(&self, n: u32, rng: &mut impl Rng) -> Duration {
        let step = self.base_step(n);
        let extra = match self.jitter {
            Jitter::None => Duration::ZERO,
            Jitter::Additive(extra) => uniform_up_to(extra, rng),
            Jitter::Full => uniform_up_to(step, rng),
        };
        step.saturating_add(extra).min(self.max)
    }

    /// [`ExponentialBackoff::delay`], raised (never lowered) by a server's `Retry-After` and
    /// still capped by `max`: the delay before retry `n` when the target said when to come back.
    pub fn delay_honouring(
        &self,
        n: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let delay = self.delay(n, rng);
        match retry_after {
            Some(ra) => delay.max(ra).min(self.max),
            None => delay,
        }
    }
}

/// `U(0, upper)` at millisecond resolution (sub-millisecond bounds give zero).
fn uniform_up_to(upper: Duration, rng: &mut impl Rng) -> Duration {
    let upper_ms = u64::try_from(upper.as_millis()).unwrap_or(u64::MAX);
    if upper_ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(rng.random_range(0..=upper_ms))
    }
}

/// A retry schedule: how many retries, and the backoff between them.
///
/// The fields are public for struct-literal configuration; [`RetryPolicy::try_new`] checks them.
/// A policy with `base_delay > max_delay` behaves as if every step were `max_delay`.
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

/// A backoff whose numbers make no sense. The crate's only error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidBackoff {
    /// The maximum delay is zero.
    #[error("max delay must be greater than zero")]
    ZeroMax,
    /// The base (minimum) delay is greater than the maximum.
    #[error("base delay ({base:?}) must not exceed max delay ({max:?})")]
    BaseAboveMax {
        /// The base.
        base: Duration,
        /// The max.
        max: Duration,
    },
}

/// The crate's error type: only [`InvalidBackoff`] can go wrong here.
pub type Error = InvalidBackoff;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    ) -> Result<RetryPolicy> {
        ExponentialBackoff::try_new(base_delay, max_delay, jitter)
            .map(|b| b.with_max_retries(max_retries))
    }

    /// The schedule without the retry limit.
    pub fn backoff(&self) -> ExponentialBackoff {
        ExponentialBackoff {
            min: self.base_delay,
            max: self.max_delay,
            jitter: self.jitter,
        }
    }

    /// Attempts in total: the first one plus the retries.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// The un-jittered delay before retry `retry_index` (0-based): `min(base · 2ⁿ, max)`.
    pub fn base_step(&self, retry_index: u32) -> Duration {
        self.backoff().base_step(retry_index)
    }

    /// The delay before retry `retry_index` (0-based), with jitter drawn from `rng`, never above
    /// `max_delay` and never below [`RetryPolicy::base_step`].
    pub fn delay(&self, retry_index: u32, rng: &mut impl Rng) -> Duration {
        self.backoff().delay(retry_index, rng)
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
        Some(
            self.backoff()
                .delay_honouring(retries_done, retry_after, rng),
        )
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

impl TransportErrorKind {
    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Turns attempt results into [`Outcome`]s.
///
/// The default is the seed's rule: 2xx is success, every other status and every transport
/// failure is retryable, except a target refused by the SSRF guard
/// ([`TransportErrorKind::Blocked`]), which stays refused. Statuses and transport kinds can be
/// made permanent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classifier {
    permanent: BTreeSet<u16>,
    permanent_kinds: u16,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier {
            permanent: BTreeSet::new(),
            permanent_kinds: TransportErrorKind::Blocked.bit(),
        }
    }
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

    /// Adds transport failures that are never retried (e.g. [`TransportErrorKind::Redirect`]
    /// when a redirecting target means a misconfigured URL).
    pub fn with_permanent_transport(
        mut self,
        kinds: impl IntoIterator<Item = TransportErrorKind>,
    ) -> Self {
        for kind in kinds {
            self.permanent_kinds |= kind.bit();
        }
        self
    }

    /// Makes transport failures retryable again (including
    /// [`TransportErrorKind::Blocked`], which is permanent by default).
    pub fn with_retryable_transport(
        mut self,
        kinds: impl IntoIterator<Item = TransportErrorKind>,
    ) -> Self {
        for kind in kinds {
            self.permanent_kinds &= !kind.bit();
        }
        self
    }

    /// The statuses that are never retried.
    pub fn permanent_statuses(&self) -> impl Iterator<Item = u16> + '_ {
        self.permanent.iter().copied()
    }

    /// Classifies an HTTP status: 2xx success; a configured permanent status permanent;
    /// anything else retryable, keeping the server's `retry_after`.
    pub fn classify_status(&self, status: u16, retry_after: Option<Duration>) -> Outcome {
        if (200..300).contains(&status) {
            Outcome::Success
        } else if self.permanent.contains(&status) {
            Outcome::Permanent
        } else {
            Outcome::Retryable { retry_after }
        }
    }

    /// Classifies a failure without a response: a configured permanent kind (by default only
    /// [`TransportErrorKind::Blocked`]) is permanent; timeouts, connection, DNS, TLS, oversized
    /// bodies and redirects are retryable, as the seed retries every failure.
    pub fn classify_transport(&self, kind: TransportErrorKind) -> Outcome {
        if self.permanent_kinds & kind.bit() != 0 {
            Outcome::Permanent
        } else {
            Outcome::Retryable { retry_after: None }
        }
    }
}

/// Parses a `Retry-After` header: delta seconds (`"120"`) or an HTTP date, as a delay from
/// `now`. A date in the past gives zero; garbage gives `None`. A number of seconds too large
/// for a `u64` is still a (huge) delay, not garbage: callers cap it like any long one.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
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
    fn transport_kinds_are_configurable() {
        let c = Classifier::default().with_permanent_transport([TransportErrorKind::Redirect]);
        assert_eq!(
            c.classify_transport(TransportErrorKind::Redirect),
            Outcome::Permanent
        );
        assert!(
            c.classify_transport(TransportErrorKind::Timeout)
                .is_retryable()
        );
        let c = c.with_retryable_transport([TransportErrorKind::Blocked]);
        assert!(
            c.classify_transport(TransportErrorKind::Blocked)
                .is_retryable()
        );
        assert!(
            Classifier::default()
                .classify_transport(TransportErrorKind::Redirect)
                .is_retryable(),
            "the seed retries redirects"
        );
    }

    #[test]
    fn full_jitter_spreads_over_one_step_above_the_floor() {
        let p = RetryPolicy {
            jitter: Jitter::Full,
            ..RetryPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<_> = (0..200).map(|_| p.delay(1, &mut rng)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(60) && *d <= Duration::from_secs(120))
        );
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "full jitter must actually vary");
    }

    #[test]
    fn exponential_backoff_checks_its_bounds() {
        let s = Duration::from_secs;
        assert_eq!(
            ExponentialBackoff::try_new(s(1), Duration::ZERO, Jitter::None),
            Err(InvalidBackoff::ZeroMax)
        );
        assert!(matches!(
            ExponentialBackoff::try_new(s(10), s(5), Jitter::None),
            Err(InvalidBackoff::BaseAboveMax { .. })
        ));
        let b = ExponentialBackoff::try_new(s(1), s(5), Jitter::None).unwrap();
        let steps: Vec<_> = (0..5).map(|n| b.base_step(n).as_secs()).collect();
        assert_eq!(steps, [1, 2, 4, 5, 5]);
        assert_eq!(b.with_max_retries(2).backoff(), b);
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
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        let p = RetryPolicy::default();
        assert!(
            p.next_delay(0, parse_retry_after("99999999999999999999999", now))
                .is_some_and(|d| d <= p.max_delay)
        );
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
