//! The access-token cache: early refresh, one refresh in flight however many callers ask.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::time::Instant;

use crate::error::Result;

/// An access token. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccessToken(pub(crate) String);

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

#[derive(Debug, Clone)]
struct Cached {
    token: AccessToken,
    /// From here on, callers refresh it.
    refresh_at: Instant,
    /// From here on, DingTalk refuses it.
    expires_at: Instant,
}

/// Caches one token. Reads take a short read lock; a refresh holds an async mutex so that
/// concurrent callers wait for the one refresh in flight instead of starting their own.
#[derive(Debug)]
pub(crate) struct TokenCache {
    current: RwLock<Option<Cached>>,
    refresh: tokio::sync::Mutex<()>,
    margin: Duration,
}

impl TokenCache {
    /// Refresh `margin` before expiry (capped at half the lifetime, for short-lived tokens).
    pub(crate) fn new(margin: Duration) -> TokenCache {
        TokenCache {
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            margin,
        }
    }

    fn fresh(&self) -> Option<AccessToken> {
        self.current
            .read()
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    /// The cached token, or a new one from `fetch` (which returns the token and its lifetime).
    /// If the refresh fails while the old token has not yet expired, the old token is used.
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<AccessToken>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration)>>,
    {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _refreshing = self.refresh.lock().await;
        // Whoever held the lock before us may have refreshed it already.
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        match fetch().await {
            Ok((value, ttl)) => {
                let now = Instant::now();
                let token = AccessToken(value);
                *self.current.write() = Some(Cached {
                    token: token.clone(),
                    refresh_at: now + ttl.saturating_sub(self.margin.min(ttl / 2)),
                    expires_at: now + ttl,
                });
                tracing::debug!(ttl_secs = ttl.as_secs(), "dingtalk access token refreshed");
                Ok(token)
            }
            Err(e) => {
                let still_valid = self
                    .current
                    .read()
                    .as_ref()
                    .filter(|c| Instant::now() < c.expires_at)
                    .map(|c| c.token.clone());
                match still_valid {
                    Some(t) => {
                        tracing::warn!(error = %e, "dingtalk token refresh failed; using the current token until it expires");
                        Ok(t)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Forgets `stale` after DingTalk refused it, unless it was already replaced.
    pub(crate) fn invalidate(&self, stale: &AccessToken) {
        let mut current = self.current.write();
        if current.as_ref().is_some_and(|c| c.token == *stale) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refreshes_five_minutes_before_expiry_once_for_all_callers() {
        let cache = Arc::new(TokenCache::new(Duration::from_secs(300)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let get = |cache: Arc<TokenCache>, fetches: Arc<AtomicUsize>| async move {
            cache
                .get(|| async move {
                    let n = fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok((format!("t{n}"), Duration::from_secs(7200)))
                })
                .await
                .unwrap()
        };
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            set.spawn(get(cache.clone(), fetches.clone()));
        }
        while let Some(t) = set.join_next().await {
            assert_eq!(t.unwrap().0, "t0");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(6899)).await;
        assert_eq!(get(cache.clone(), fetches.clone()).await.0, "t0");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(get(cache.clone(), fetches.clone()).await.0, "t1");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidating_a_replaced_token_keeps_the_new_one() {
        let cache = TokenCache::new(Duration::from_secs(300));
        let first = cache
            .get(|| async { Ok(("a".to_owned(), Duration::from_secs(7200))) })
            .await
            .unwrap();
        cache.invalidate(&first);
        let second = cache
            .get(|| async { Ok(("b".to_owned(), Duration::from_secs(7200))) })
            .await
            .unwrap();
        cache.invalidate(&first);
        let again = cache
            .get(|| async { Ok(("c".to_owned(), Duration::from_secs(7200))) })
            .await
            .unwrap();
        assert_eq!(second, again);
        assert_eq!(format!("{again:?}"), "AccessToken(<redacted>)");
    }
}
