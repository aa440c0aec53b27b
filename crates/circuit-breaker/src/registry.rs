//! A keyed registry: one breaker per target, with bounded memory.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::breaker::{BreakerConfig, CircuitBreaker, CircuitOpen, Permit, State};

/// A breaker changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange<K> {
    /// Whose breaker.
    pub key: K,
    /// The old state.
    pub from: State,
    /// The new state.
    pub to: State,
}

/// One breaker per key (e.g. per target `scheme://host:port`).
///
/// Memory is bounded: past `max_entries`, breakers that are closed, clean and idle for
/// `idle_ttl` are dropped (they hold nothing worth keeping), oldest first.
pub struct BreakerRegistry<K> {
    config: BreakerConfig,
    breakers: Mutex<HashMap<K, Arc<CircuitBreaker>>>,
    max_entries: usize,
    idle_ttl: Duration,
    events: broadcast::Sender<StateChange<K>>,
}

impl<K: fmt::Debug> fmt::Debug for BreakerRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("config", &self.config)
            .field("entries", &self.breakers.lock().len())
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl<K> BreakerRegistry<K>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    /// A registry whose breakers use `config`; at most 10,000 idle entries kept, idle after 10 min.
    pub fn new(config: BreakerConfig) -> BreakerRegistry<K> {
        BreakerRegistry::with_limits(config, 10_000, Duration::from_secs(600))
    }

    /// A registry with explicit memory bounds.
    pub fn with_limits(
        config: BreakerConfig,
        max_entries: usize,
        idle_ttl: Duration,
    ) -> BreakerRegistry<K> {
        let (events, _) = broadcast::channel(1024);
        BreakerRegistry {
            config,
            breakers: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
            idle_ttl,
            events,
        }
    }

    /// The breaker of `key`, created closed if missing.
    pub fn get(&self, key: &K) -> Arc<CircuitBreaker> {
        let mut map = self.breakers.lock();
        if let Some(b) = map.get(key) {
            return b.clone();
        }
        if map.len() >= self.max_entries {
            Self::evict(&mut map, self.max_entries, self.idle_ttl);
        }
        let events = self.events.clone();
        let k = key.clone();
        let listener = Box::new(move |from, to| {
            let _ = events.send(StateChange {
                key: k.clone(),
                from,
                to,
            });
        });
        let breaker = Arc::new(CircuitBreaker::with_listener(self.config, Some(listener)));
        map.insert(key.clone(), breaker.clone());
        breaker
    }

    /// The breaker of `key`, if one exists (without creating it).
    pub fn peek(&self, key: &K) -> Option<Arc<CircuitBreaker>> {
        self.breakers.lock().get(key).cloned()
    }

    /// Asks `key`'s breaker for a call.
    ///
    /// # Errors
    ///
    /// [`CircuitOpen`] while it is open.
    pub fn try_acquire(&self, key: &K) -> Result<Permit, CircuitOpen> {
        self.get(key).try_acquire()
    }

    /// While `key`'s breaker is open, how long until it lets a probe through.
    pub fn retry_in(&self, key: &K) -> Option<Duration> {
        self.peek(key).and_then(|b| b.retry_in())
    }

    /// State changes of every breaker, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange<K>> {
        self.events.subscribe()
    }

    /// How many breakers are kept.
    pub fn len(&self) -> usize {
        self.breakers.lock().len()
    }

    /// Whether no breaker is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn evict(map: &mut HashMap<K, Arc<CircuitBreaker>>, max: usize, idle_ttl: Duration) {
        let now = Instant::now();
        let mut idle: Vec<(Duration, K)> = map
            .iter()
            // A breaker someone still holds is in use: keep it.
            .filter(|(_, b)| Arc::strong_count(b) == 1)
            .filter_map(|(k, b)| {
                let (idle, clean) = b.idle_and_closed(now);
                clean.then(|| (idle, k.clone()))
            })
            .collect();
        idle.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        let over = (map.len() + 1).saturating_sub(max);
        for (i, (age, key)) in idle.into_iter().enumerate() {
            if i >= over && age < idle_ttl {
                break;
            }
            map.remove(&key);
        }
    }
}
