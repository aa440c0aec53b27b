//! The queue limit: an estimate of the active tasks, refreshed in the background, and the
//! exact count under an advisory lock when the estimate is near the limit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use parking_lot::Mutex;

use super::sql::{Exec, db_err, pooled};
use crate::store::StoreResult;

/// Advisory lock key (an arbitrary constant, namespaced by this crate's use).
const LIMIT_LOCK: i64 = 0x5746_4c49_4d54_0001; // "WFLIMT" 1

const ACTIVE_COUNT: &str = "SELECT count(*) FROM workflow_tasks WHERE status IN (0, 1, 2)";

/// This instance's last active-task count and when it was taken.
pub(super) type Estimate = Arc<Mutex<Option<(u64, Instant)>>>;

/// Whether a recent count (under five seconds old) says the queue is far enough below `limit`
/// (by more than a tenth of it, at least 64) to add `adding` tasks without an exact count.
pub(super) fn far_below_limit(estimate: Option<(u64, Instant)>, limit: u64, adding: u64) -> bool {
    let slack = (limit / 10).max(64);
    matches!(estimate, Some((n, at))
        if n.saturating_add(adding).saturating_add(slack) < limit
            && at.elapsed() < Duration::from_secs(5))
}

/// Exact active count, under a lock that serialises near-limit enqueues (held to the end of
/// the transaction); it also refreshes the estimate.
pub(super) async fn locked_active_count(tx: &impl Exec, estimate: &Estimate) -> StoreResult<u64> {
    tx.exec("SELECT pg_advisory_xact_lock($1)", &[&LIMIT_LOCK])
        .await?;
    let rows = tx.rows(ACTIVE_COUNT, &[]).await?;
    let n: i64 = rows
        .first()
        .map_or(Ok(0), |r| r.try_get(0))
        .map_err(db_err)?;
    let n = u64::try_from(n).unwrap_or(0);
    *estimate.lock() = Some((n, Instant::now()));
    Ok(n)
}

impl super::PostgresStore {
    /// Whether the queue limit needs an exact count now: when this instance has no recent
    /// count, or the count is within a tenth of the limit. A count older than a second is
    /// refreshed in the background by one caller while the others go on with it (the store
    /// owns that task: [`Store::close`](crate::Store::close) joins it).
    pub(super) fn limit_needs_check(&self, limit: u64, adding: u64) -> bool {
        let inner = &self.inner;
        let estimate = *inner.active_estimate.lock();
        if let Some((_, at)) = estimate
            && far_below_limit(estimate, limit, adding)
            && at.elapsed() >= Duration::from_secs(1)
            && !inner.stop.is_cancelled()
            && !inner.refreshing.swap(true, Ordering::AcqRel)
        {
            let (pool, estimate, refreshing) = (
                inner.pool.clone(),
                inner.active_estimate.clone(),
                inner.refreshing.clone(),
            );
            let task = tokio::spawn(async move {
                if let Err(e) = refresh_estimate(&pool, &estimate).await {
                    tracing::debug!(error = %e, "could not refresh the active count");
                }
                refreshing.store(false, Ordering::Release);
            });
            // Only one refresh runs at a time, so the one replaced here has finished.
            *inner.refresh.lock() = Some(task);
        }
        !far_below_limit(estimate, limit, adding)
    }

    pub(super) fn bump_estimate(&self, added: u64) {
        if let Some((n, _)) = self.inner.active_estimate.lock().as_mut() {
            *n = n.saturating_add(added);
        }
    }

    /// Exact active count, under a lock that serialises near-limit enqueues.
    pub(super) async fn locked_active_count(&self, tx: &impl Exec) -> StoreResult<u64> {
        locked_active_count(tx, &self.inner.active_estimate).await
    }
}

async fn refresh_estimate(pool: &Pool, estimate: &Estimate) -> StoreResult<()> {
    let client = pooled(pool).await?;
    let rows = client.rows(ACTIVE_COUNT, &[]).await?;
    let n: i64 = rows
        .first()
        .map_or(Ok(0), |r| r.try_get(0))
        .map_err(db_err)?;
    *estimate.lock() = Some((u64::try_from(n).unwrap_or(0), Instant::now()));
    Ok(())
}
