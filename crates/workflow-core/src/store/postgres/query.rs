//! The read-only queries and the counts.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::PostgresStore;
use super::sql::{Exec, db_err, row_to_task, rows_to_tasks};
use crate::model::{AttemptRecord, Task, TaskEvent};
use crate::store::codec::{
    self, ATTEMPT_COLS, Columns, EVENT_COLS, TASK_COLS, page, page_size, status_code, time,
};
use crate::store::{Counts, Page, StoreResult, TaskFilter};

/// The earliest `next_run_at` of a pending or retrying task: one index probe per priority.
const EARLIEST_DUE: &str = "(SELECT min(d) FROM (\
     (SELECT next_run_at AS d FROM workflow_tasks WHERE status IN (0, 2) AND priority = 0 ORDER BY next_run_at LIMIT 1) UNION ALL \
     (SELECT next_run_at FROM workflow_tasks WHERE status IN (0, 2) AND priority = 1 ORDER BY next_run_at LIMIT 1) UNION ALL \
     (SELECT next_run_at FROM workflow_tasks WHERE status IN (0, 2) AND priority = 2 ORDER BY next_run_at LIMIT 1) UNION ALL \
     (SELECT next_run_at FROM workflow_tasks WHERE status IN (0, 2) AND priority = 3 ORDER BY next_run_at LIMIT 1)) AS due)";

pub(super) async fn get(c: &impl Exec, id: &str) -> StoreResult<Option<Task>> {
    let rows = c
        .rows(
            &format!("SELECT {TASK_COLS} FROM workflow_tasks WHERE id = $1"),
            &[&id],
        )
        .await?;
    rows.first().map(row_to_task).transpose()
}

pub(super) async fn attempts(c: &impl Exec, id: &str) -> StoreResult<Vec<AttemptRecord>> {
    let sql = format!("SELECT {ATTEMPT_COLS} FROM workflow_attempts WHERE task_id = $1 ORDER BY n");
    let rows = c.rows(&sql, &[&id]).await?;
    rows.iter().map(codec::decode_attempt).collect()
}

pub(super) async fn events(c: &impl Exec, id: &str) -> StoreResult<Vec<TaskEvent>> {
    let sql = format!("SELECT {EVENT_COLS} FROM workflow_events WHERE task_id = $1 ORDER BY id");
    let rows = c.rows(&sql, &[&id]).await?;
    rows.iter().map(codec::decode_event).collect()
}

/// Newest first: one statement for every filter shape.
pub(super) async fn list(c: &impl Exec, filter: &TaskFilter) -> StoreResult<Page> {
    let limit = page_size(filter.limit);
    let status = filter.status.map(status_code);
    let priority = filter.priority.map(|p| i16::from(p.rank()));
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    // One statement for every filter shape: a NULL parameter disables its condition.
    let sql = format!(
        "SELECT {TASK_COLS} FROM workflow_tasks \
             WHERE ($1::smallint IS NULL OR status = $1) AND ($2::smallint IS NULL OR priority = $2) \
               AND ($3::text IS NULL OR target = $3) AND ($4::text IS NULL OR kind = $4) \
               AND ($5::bigint IS NULL OR seq < $5) \
             ORDER BY seq DESC LIMIT $6"
    );
    let rows = c
        .rows(
            &sql,
            &[
                &status,
                &priority,
                &filter.target,
                &filter.kind,
                &filter.before_seq,
                &fetch,
            ],
        )
        .await?;
    Ok(page(rows_to_tasks(&rows)?, limit))
}

/// The earliest due time or lease end.
pub(super) async fn next_due_at(c: &impl Exec) -> StoreResult<Option<DateTime<Utc>>> {
    let rows = c
            .rows(
                &format!(
                    "SELECT LEAST({EARLIEST_DUE}, \
                     (SELECT lease_until FROM workflow_tasks WHERE status = 1 ORDER BY lease_until LIMIT 1))"
                ),
                &[],
            )
            .await?;
    let v: Option<i64> = rows
        .first()
        .map_or(Ok(None), |r| r.try_get(0))
        .map_err(db_err)?;
    Ok(v.map(time))
}

impl PostgresStore {
    /// [`Store::counts`](crate::Store::counts), refreshing the active-count estimate.
    pub(super) async fn count_tasks(&self) -> StoreResult<Counts> {
        let client = self.client().await?;
        let due_sql = format!("SELECT {EARLIEST_DUE}");
        let (rows, due) = tokio::try_join!(
            client.rows(
                "SELECT status, priority, count(*) FROM workflow_tasks GROUP BY status, priority",
                &[],
            ),
            client.rows(&due_sql, &[]),
        )?;
        let mut by_status_priority = Vec::new();
        let mut active = 0u64;
        for r in &rows {
            let (status, priority) = (r.status(0)?, r.priority(1)?);
            let n = u64::try_from(r.req_int(2)?).unwrap_or(0);
            if n > 0 {
                by_status_priority.push((status, priority, n));
            }
            if !status.is_final() {
                active += n;
            }
        }
        by_status_priority.sort_by_key(|(s, p, _)| (status_code(*s), p.rank()));
        *self.inner.active_estimate.lock() = Some((active, Instant::now()));
        let oldest: Option<i64> = due
            .first()
            .map_or(Ok(None), |r| r.try_get(0))
            .map_err(db_err)?;
        let (size, idle, waiting) = self.pool_status();
        metrics::gauge!("workflow_store_pool_connections").set(size as f64);
        metrics::gauge!("workflow_store_pool_idle").set(idle as f64);
        metrics::gauge!("workflow_store_pool_waiting").set(waiting as f64);
        Ok(Counts {
            by_status_priority,
            oldest_due_at: oldest.map(time),
        })
    }
}
