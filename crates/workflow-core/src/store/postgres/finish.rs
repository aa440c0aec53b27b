//! Group-committed finishes: every finish queued at one moment is written in one transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::sql::{Exec, db_err, first_cause, pooled, row_to_task};
use super::write::{insert_attempts, insert_events, save_many};
use crate::error::StoreError;
use crate::model::{AttemptRecord, Task};
use crate::store::batch::{Batch, SharedError};
use crate::store::codec::TASK_COLS;
use crate::store::logic;
use crate::store::{Completion, Fence, StoreResult};

/// The most finishes one group-commit transaction carries: enough to cover every worker of a
/// busy instance, few enough that a batch's statements stay short.
pub(super) const FINISH_BATCH: usize = 256;

/// Background finisher tasks per store: while one batch's commit waits for its WAL flush, the
/// other can run the next batch's statements. One, two and four measured the same
/// (`benches/postgres_claim.rs`, `docs/BENCHMARKS.md`); two keeps the overlap for a slower disk.
pub(super) const FINISHERS: usize = 2;

/// One queued [`Store::finish_attempt`](crate::Store::finish_attempt) call.
pub(super) type FinishWork = (Fence, AttemptRecord, Completion, DateTime<Utc>);

/// A finisher: writes each batch of queued finishes in one transaction.
pub(super) struct Finisher {
    pub(super) pool: Pool,
}

impl Batch for Finisher {
    type Work = FinishWork;
    type Output = Task;
    const NAME: &'static str = "postgres finish";

    async fn run(&mut self, work: Vec<FinishWork>) -> StoreResult<Vec<StoreResult<Task>>> {
        write_finishes(&self.pool, work).await
    }
}

/// Applies a batch of finishes in one transaction: the outcome of each request, in order, or
/// the database error that failed them all (nothing of the batch is then written).
async fn write_finishes(pool: &Pool, work: Vec<FinishWork>) -> StoreResult<Vec<StoreResult<Task>>> {
    let ids: Vec<&str> = work.iter().map(|(f, ..)| f.task_id.as_str()).collect();
    let mut client = pooled(pool).await?;
    let tx = client.transaction().await.map_err(db_err)?;
    // In seq order, as every batch of every instance locks: no two batches wait on each
    // other in a cycle.
    let rows = tx
        .rows(
            &format!(
                "SELECT {TASK_COLS} FROM workflow_tasks WHERE id = ANY($1::text[]) \
                 ORDER BY seq FOR UPDATE"
            ),
            &[&ids],
        )
        .await?;
    let mut tasks: HashMap<String, Result<Task, SharedError>> = HashMap::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get(1).map_err(db_err)?;
        // A row that does not parse fails only its own finishes.
        tasks.insert(id, row_to_task(r).map_err(SharedError::from));
    }
    let mut outcomes = Vec::with_capacity(work.len());
    let mut changed: Vec<String> = Vec::new();
    let mut attempts = Vec::with_capacity(work.len());
    let mut events = Vec::with_capacity(work.len());
    // In request order, each against the row as the requests before it left it (a second
    // finish of one claim in the same batch is fenced, as it would be one after the other).
    for (fence, mut attempt, completion, now) in work {
        let outcome = match tasks.get_mut(&fence.task_id) {
            None => Err(StoreError::NotFound(fence.task_id)),
            Some(Err(e)) => Err(StoreError::Backend(Box::new(e.clone()))),
            Some(Ok(task)) => logic::check_fence(task, &fence).map(|()| {
                events.push(logic::finish_attempt(task, &mut attempt, completion, now));
                attempts.push(attempt);
                if !changed.contains(&fence.task_id) {
                    changed.push(fence.task_id);
                }
                task.clone()
            }),
        };
        outcomes.push(outcome);
    }
    if changed.is_empty() {
        drop(tx); // rolls back: nothing to write, only locks to let go
        return Ok(outcomes);
    }
    let saved: Vec<&Task> = changed
        .iter()
        .filter_map(|id| tasks.get(id).and_then(|t| t.as_ref().ok()))
        .collect();
    let (a, b, c) = tokio::join!(
        save_many(&tx, &saved),
        insert_attempts(&tx, &attempts),
        insert_events(&tx, &events),
    );
    first_cause([a, b, c])?;
    tx.commit().await.map_err(db_err)?;
    Ok(outcomes)
}
