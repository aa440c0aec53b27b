//! Pruning final tasks, in chunks.

use rusqlite::params;

use super::codec::{db_err, status_of};
use super::writer::Writer;
use crate::error::StoreError;
use crate::model::Priority;
use crate::store::StoreResult;

impl Writer {
    /// Deletes up to `max` final tasks finished before `cutoff`, with attempts and events.
    pub(super) fn prune_chunk(&mut self, cutoff: i64, max: usize) -> StoreResult<usize> {
        let victims: Vec<(i64, String, i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT seq, id, status, priority FROM tasks INDEXED BY tasks_finished \
                 WHERE status >= 3 AND finished_at < ?1 LIMIT ?2",
            )
            .map_err(db_err)?
            .query_map(
                params![cutoff, i64::try_from(max).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(db_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db_err)?;
        for (seq, id, status, rank) in &victims {
            for sql in [
                "DELETE FROM attempts WHERE task_id = ?1",
                "DELETE FROM events WHERE task_id = ?1",
            ] {
                self.conn
                    .prepare_cached(sql)
                    .map_err(db_err)?
                    .execute([id])
                    .map_err(db_err)?;
            }
            self.conn
                .prepare_cached("DELETE FROM tasks WHERE seq = ?1")
                .map_err(db_err)?
                .execute([seq])
                .map_err(db_err)?;
            let priority = Priority::from_rank(u8::try_from(*rank).unwrap_or(u8::MAX))
                .ok_or_else(|| StoreError::backend(format!("bad priority rank {rank}")))?;
            self.count(status_of(*status).map_err(db_err)?, priority, false);
        }
        Ok(victims.len())
    }
}
