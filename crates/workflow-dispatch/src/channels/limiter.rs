//! Per-channel rate limits that delay rather than fail.
//!
//! A sliding log per window: a send is allowed when fewer than `n` sends started within the
//! last `window`; otherwise the caller learns how long until the oldest leaves the window.
//! Why not a GCRA (governor): a GCRA with a burst of `b` lets `b` plus one per interval through
//! in any window (39 in a minute for "20 a minute" with a burst of 20), and DingTalk blocks a
//! custom robot for 10 minutes past 20 in a minute. The log is exact, keeps bursts, and holds at
//! most `n` instants per window (20 for DingTalk). Each window is widened by a small margin (a
//! twentieth, at most 1 s) so send-time jitter on the way to the platform cannot make two sends
//! a window apart arrive inside one.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use std::sync::{Mutex, PoisonError};
use tokio::time::Instant;

/// At most `count` sends per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sends allowed in a window.
    pub count: u32,
    /// The window.
    pub per: Duration,
}

impl Rate {
    /// `count` per `per`.
    pub const fn new(count: u32, per: Duration) -> Rate {
        Rate { count, per }
    }

    /// Sends per minute this rate allows at most (for comparing with a platform's limit).
    pub fn per_minute(&self) -> f64 {
        f64::from(self.count) * 60.0 / self.per.as_secs_f64()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

/// The text is not `N/unit` (`20/min`, `5/s`, `100/1m`, `1/2s`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a rate: expected N/UNIT such as 20/min, 5/s or 100/1m")]
pub struct InvalidRate(pub String);

impl FromStr for Rate {
    type Err = InvalidRate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidRate(s.to_owned());
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let unit = unit.trim();
        let per = match unit {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0 || per.is_zero() {
            return Err(bad());
        }
        Ok(Rate { count, per })
    }
}

#[derive(Debug)]
struct Window {
    rate: Rate,
    span: Duration,
    sends: VecDeque<Instant>,
}

/// The limits of one channel (every window must have room).
#[derive(Debug)]
pub struct RateLimiter {
    windows: Mutex<Vec<Window>>,
}

impl RateLimiter {
    /// A limiter enforcing every rate in `rates` at once.
    pub fn new(rates: &[Rate]) -> RateLimiter {
        RateLimiter {
            windows: Mutex::new(
                rates
                    .iter()
                    .map(|&rate| Window {
                        rate,
                        span: rate.per + (rate.per / 20).min(Duration::from_secs(1)),
                        sends: VecDeque::with_capacity(rate.count as usize),
                    })
                    .collect(),
            ),
        }
    }

    /// Takes a send permit now, or says how long until one may be free (nothing is taken then).
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> Result<(), Duration> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut wait = Duration::ZERO;
        for w in windows.iter_mut() {
            while w
                .sends
                .front()
                .is_some_and(|t| now.duration_since(*t) >= w.span)
            {
                w.sends.pop_front();
            }
            if w.sends.len() >= w.rate.count as usize
                && let Some(oldest) = w.sends.front()
            {
                wait = wait.max(w.span - now.duration_since(*oldest));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for w in windows.iter_mut() {
            w.sends.push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!("20/min".parse(), Ok(Rate::new(20, Duration::from_secs(60))));
        assert_eq!("5/s".parse(), Ok(Rate::new(5, Duration::from_secs(1))));
        assert_eq!(
            " 100 / 1m ".parse(),
            Ok(Rate::new(100, Duration::from_secs(60)))
        );
        assert_eq!("1/2s".parse(), Ok(Rate::new(1, Duration::from_secs(2))));
        assert!("0/min".parse::<Rate>().is_err());
        assert!("20".parse::<Rate>().is_err());
        assert!("x/min".parse::<Rate>().is_err());
        assert_eq!(Rate::new(20, Duration::from_secs(60)).per_minute(), 20.0);
    }

    #[test]
    fn never_more_than_n_in_any_window_and_says_when() {
        let mut now = Instant::now();
        let limiter = RateLimiter::new(&[Rate::new(20, Duration::from_secs(60))]);
        for _ in 0..20 {
            limiter.try_acquire_at(now).unwrap();
        }
        let wait = limiter.try_acquire_at(now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(61), "a minute plus the margin");
        now += Duration::from_secs(30);
        assert_eq!(
            limiter.try_acquire_at(now).unwrap_err(),
            Duration::from_secs(31)
        );
        now += Duration::from_secs(31);
        // The whole first burst left the window: 20 more, not 21.
        for _ in 0..20 {
            limiter.try_acquire_at(now).unwrap();
        }
        assert!(limiter.try_acquire_at(now).is_err());
    }

    #[test]
    fn every_window_must_have_room() {
        let mut now = Instant::now();
        let limiter = RateLimiter::new(&[
            Rate::new(5, Duration::from_secs(1)),
            Rate::new(7, Duration::from_secs(60)),
        ]);
        for _ in 0..5 {
            limiter.try_acquire_at(now).unwrap();
        }
        assert!(limiter.try_acquire_at(now).is_err(), "5 a second");
        now += Duration::from_secs(2);
        limiter.try_acquire_at(now).unwrap();
        limiter.try_acquire_at(now).unwrap();
        let wait = limiter.try_acquire_at(now).unwrap_err();
        assert!(wait > Duration::from_secs(50), "7 a minute: {wait:?}");
    }
}
