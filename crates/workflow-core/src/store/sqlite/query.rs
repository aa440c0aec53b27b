//! The read-only queries, run on the reader connections.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};

use super::codec::{db_err, row_to_attempt, row_to_event, row_to_task, status_code};
use crate::model::{AttemptRecord, Task, TaskEvent};
use crate::store::codec::{ATTEMPT_COLS, EVENT_COLS, TASK_COLS, page, page_size, time};
use crate::store::{Page, StoreResult, TaskFilter};

pub(super) fn get(c: &Connection, id: &str) -> StoreResult<Option<Task>> {
    c.prepare_cached(&format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"))
        .map_err(db_err)?
        .query_row([id], row_to_task)
        .optional()
        .map_err(db_err)
}

pub(super) fn attempts(c: &Connection, id: &str) -> StoreResult<Vec<AttemptRecord>> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE task_id = ?1 ORDER BY n"
        ))
        .map_err(db_err)?;
    let rows = stmt.query_map([id], row_to_attempt).map_err(db_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
}

pub(super) fn events(c: &Connection, id: &str) -> StoreResult<Vec<TaskEvent>> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLS} FROM events WHERE task_id = ?1 ORDER BY rowid"
        ))
        .map_err(db_err)?;
    let rows = stmt.query_map([id], row_to_event).map_err(db_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
}

/// Newest first; the SQL names only the filters set, so each shape is its own cached statement.
pub(super) fn list(c: &Connection, filter: &TaskFilter) -> StoreResult<Page> {
    let limit = page_size(filter.limit);
    let mut sql = format!("SELECT {TASK_COLS} FROM tasks WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(s) = filter.status {
        sql.push_str(" AND status = ?");
        args.push(status_code(s).into());
    }
    if let Some(p) = filter.priority {
        sql.push_str(" AND priority = ?");
        args.push(i64::from(p.rank()).into());
    }
    if let Some(t) = &filter.target {
        sql.push_str(" AND target = ?");
        args.push(t.clone().into());
    }
    if let Some(k) = &filter.kind {
        sql.push_str(" AND kind = ?");
        args.push(k.clone().into());
    }
    if let Some(b) = filter.before_seq {
        sql.push_str(" AND seq < ?");
        args.push(b.into());
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
    let mut stmt = c.prepare_cached(&sql).map_err(db_err)?;
    let tasks = stmt
        .query_map(rusqlite::params_from_iter(args), row_to_task)
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    Ok(page(tasks, limit))
}

/// The earliest due time or lease end.
pub(super) fn next_due_at(c: &Connection) -> StoreResult<Option<DateTime<Utc>>> {
    let lease: Option<i64> = c
        .prepare_cached(
            "SELECT lease_until FROM tasks INDEXED BY tasks_lease WHERE status = 1 \
             ORDER BY lease_until LIMIT 1",
        )
        .map_err(db_err)?
        .query_row([], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    Ok(min_opt(earliest_due(c)?, lease).map(time))
}

/// The earliest `next_run_at` of a pending or retrying task: one index probe per priority.
pub(super) fn earliest_due(c: &Connection) -> StoreResult<Option<i64>> {
    let mut earliest: Option<i64> = None;
    let mut stmt = c
        .prepare_cached(
            "SELECT next_run_at FROM tasks INDEXED BY tasks_due_v2 \
             WHERE status IN (0, 2) AND priority = ?1 ORDER BY next_run_at LIMIT 1",
        )
        .map_err(db_err)?;
    for rank in 0..4i64 {
        let v: Option<i64> = stmt
            .query_row([rank], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        earliest = min_opt(earliest, v);
    }
    Ok(earliest)
}

pub(super) fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
