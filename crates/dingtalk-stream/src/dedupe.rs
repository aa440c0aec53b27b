//! Dropping duplicate deliveries: DingTalk redelivers a callback with a new `messageId` but
//! the same `msgId` when an ACK was late or lost.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Remembers message ids for a time-to-live, with memory bounded by a maximum count.
#[derive(Debug)]
pub struct Deduper {
    ttl: Duration,
    max_entries: usize,
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl Deduper {
    /// Remembers ids for `ttl` (at least 10 minutes is recommended), at most `max_entries`.
    pub fn new(ttl: Duration, max_entries: usize) -> Deduper {
        Deduper {
            ttl,
            max_entries: max_entries.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Returns `true` the first time `id` is seen within the TTL, `false` for a duplicate.
    pub fn first_time(&mut self, id: &str) -> bool {
        let now = Instant::now();
        self.expire(now);
        if self.seen.contains_key(id) {
            return false;
        }
        if self.seen.len() >= self.max_entries
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(id.to_owned(), now);
        self.order.push_back((now, id.to_owned()));
        true
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.ttl {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drops_repeats_within_the_ttl_and_forgets_after_it() {
        let mut d = Deduper::new(Duration::from_secs(600), 100);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(!d.first_time("a"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(d.first_time("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let mut d = Deduper::new(Duration::from_secs(600), 3);
        for id in ["a", "b", "c", "d"] {
            assert!(d.first_time(id));
        }
        assert_eq!(d.len(), 3);
        assert!(d.first_time("a"), "the oldest id was evicted");
    }
}
