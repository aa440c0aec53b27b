//! Pruning final tasks, in chunks.

use chrono::{DateTime, Utc};

use super::PostgresStore;
use super::sql::{Exec, db_err};
use crate::store::StoreResult;
use crate::store::codec::ms;

impl PostgresStore {
    /// [`Store::prune`](crate::Store::prune).
    pub(super) async fn prune_before(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        // In chunks, so a first prune of a large backlog never holds locks for long.
        const CHUNK: i64 = 2_000;
        let cutoff = ms(before);
        let mut total = 0u64;
        loop {
            let client = self.client().await?;
            let rows = client
                .rows(
                    "WITH v AS (SELECT seq, id FROM workflow_tasks \
                        WHERE status >= 3 AND finished_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED), \
                     a AS (DELETE FROM workflow_attempts WHERE task_id IN (SELECT id FROM v)), \
                     e AS (DELETE FROM workflow_events WHERE task_id IN (SELECT id FROM v)), \
                     d AS (DELETE FROM workflow_tasks WHERE seq IN (SELECT seq FROM v) RETURNING 1) \
                     SELECT count(*) FROM d",
                    &[&cutoff, &CHUNK],
                )
                .await?;
            let n: i64 = rows
                .first()
                .map_or(Ok(0), |r| r.try_get(0))
                .map_err(db_err)?;
            total += u64::try_from(n).unwrap_or(0);
            if n < CHUNK {
                return Ok(total);
            }
        }
    }
}
