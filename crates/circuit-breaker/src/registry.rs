//! A keyed registry: one breaker per target, with bounded memory.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::breaker::{BreakerConfig, CircuitBreaker, CircuitOpen, Permit, Snapshot, State};

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
/// Memory is bounded. A breaker that is closed, has no failure streak and is not held by anyone
/// holds nothing worth keeping, so it may be evicted. When a new key would exceed
/// `max_entries`, every such breaker idle for `idle_ttl` goes, and then the longest-idle ones
/// until the map is down to 7/8 of `max_entries` (so the scan is amortized over many inserts).
/// Open and half-open breakers are never evicted: forgetting them would reopen the target to
/// traffic. [`BreakerRegistry::purge_idle`] drops idle ones on demand (e.g. from a periodic task).
///
/// Every breaker's state changes are published on one broadcast channel
/// ([`BreakerRegistry::subscribe`]); a slow subscriber lags (and is told so) rather than
/// slowing callers.
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
    /// A registry whose breakers use `config`; at most 10,000 entries (plus open ones), idle
    /// after 10 min.
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
            let target = self.max_entries - self.max_entries / 8 - 1;
            Self::evict(&mut map, target, self.idle_ttl);
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

    /// The configuration every breaker here uses.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// How many breakers have a key for which `f` holds.
    pub fn count_keys(&self, f: impl Fn(&K) -> bool) -> usize {
        self.breakers.lock().keys().filter(|k| f(k)).count()
    }

    /// Every breaker's state and counts, e.g. for a metrics scrape or a status endpoint.
    pub fn snapshot(&self) -> Vec<(K, Snapshot)> {
        let breakers: Vec<(K, Arc<CircuitBreaker>)> = self
            .breakers
            .lock()
            .iter()
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect();
        // Each breaker is locked after the map lock is released: no lock nesting.
        breakers
            .into_iter()
            .map(|(k, b)| (k, b.snapshot()))
            .collect()
    }

    /// Drops every evictable breaker idle for at least the registry's idle time; returns how
    /// many were dropped.
    pub fn purge_idle(&self) -> usize {
        let mut map = self.breakers.lock();
        let before = map.len();
        Self::evict(&mut map, usize::MAX, self.idle_ttl);
        before - map.len()
    }

    /// Removes evictable breakers idle past `idle_ttl`, then the longest-idle ones until at
    /// most `target` entries remain (if enough are evictable).
    fn evict(map: &mut HashMap<K, Arc<CircuitBreaker>>, target: usize, idle_ttl: Duration) {
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
        let over = map.len().saturating_sub(target);
        for (i, (age, key)) in idle.into_iter().enumerate() {
            if i >= over && age < idle_ttl {
                break;
            }
            map.remove(&key);
        }
    }
}
