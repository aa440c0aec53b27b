//! A tiny client-side token bucket, one per DingTalk API.
//!
//! Why not `governor`: it keeps its own clock (`quanta`), so tests with paused tokio time could
//! not drive it, and we need ~40 lines, not a crate. This one reserves a slot under a lock and
//! sleeps outside it, so waiters are served in arrival order without spinning.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    /// (tokens available — negative when callers have reserved future tokens, last refill).
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `rate` calls a second (at least 1), with a burst of `burst` calls (at least 1).
    pub(crate) fn new(rate: u32, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// How long the caller must wait before its call; the slot is reserved at once.
    fn reserve(&self) -> Duration {
        let mut state = self.state.lock();
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        let left = refilled - 1.0;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.rate)
        }
    }

    /// Waits for a slot. Dropping the future while it waits forfeits the reserved slot.
    pub(crate) async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn forty_calls_at_twenty_a_second_take_about_two_seconds() {
        let bucket = std::sync::Arc::new(TokenBucket::new(20, 1));
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let b = bucket.clone();
            set.spawn(async move {
                b.acquire().await;
                Instant::now()
            });
        }
        let mut times = Vec::new();
        while let Some(t) = set.join_next().await {
            times.push(t.unwrap().duration_since(start));
        }
        times.sort();
        // Paused time is exact: call k waits k/20 s.
        assert_eq!(times[0], Duration::ZERO);
        assert!(times[39] >= Duration::from_millis(1940));
        assert!(times[39] <= Duration::from_millis(1960));
        // No one-second window holds more than 20 calls.
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(in_window <= 20, "{in_window} calls within a second");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_allows_its_burst_at_once() {
        let bucket = TokenBucket::new(10, 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        let start = Instant::now();
        for _ in 0..5 {
            bucket.acquire().await;
        }
        assert_eq!(Instant::now(), start);
        bucket.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_millis(100));
    }
}
