//! Writing rows: one task, many tasks, their events and attempts (pipelined inside the
//! caller's transaction).

use super::sql::{Exec, row_to_task};
use crate::error::StoreError;
use crate::model::{AttemptRecord, Task, TaskEvent};
use crate::store::StoreResult;
use crate::store::codec::{TASK_COLS, json_text, ms, status_code};

pub(super) async fn load_for_update(tx: &impl Exec, id: &str) -> StoreResult<Task> {
    let rows = tx
        .rows(
            &format!("SELECT {TASK_COLS} FROM workflow_tasks WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?;
    match rows.first() {
        Some(r) => row_to_task(r),
        None => Err(StoreError::NotFound(id.to_owned())),
    }
}

const SAVE_SQL: &str = "UPDATE workflow_tasks SET status = $2, attempt = $3, tries = $4, max_attempts = $5, \
     next_run_at = $6, lease_owner = $7, lease_until = $8, cancel_requested = $9, updated_at = $10, \
     finished_at = $11, last_error = $12, result = $13, callback = $14 WHERE seq = $1";

pub(super) async fn save(tx: &impl Exec, t: &Task) -> StoreResult<()> {
    let result = t.result.as_ref().map(json_text);
    let callback = t.callback.as_ref().map(json_text);
    tx.exec(
        SAVE_SQL,
        &[
            &t.seq,
            &status_code(t.status),
            &i64::from(t.attempt),
            &i64::from(t.tries),
            &i64::from(t.max_attempts),
            &t.next_run_at.map(ms),
            &t.lease_owner,
            &t.lease_until.map(ms),
            &t.cancel_requested,
            &ms(t.updated_at),
            &t.finished_at.map(ms),
            &t.last_error,
            &result,
            &callback,
        ],
    )
    .await
    .map(drop)
}

pub(super) async fn insert_events(tx: &impl Exec, events: &[TaskEvent]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.task_id.as_str()).collect();
    let ats: Vec<i64> = events.iter().map(|e| ms(e.at)).collect();
    let froms: Vec<Option<i16>> = events.iter().map(|e| e.from.map(status_code)).collect();
    let tos: Vec<i16> = events.iter().map(|e| status_code(e.to)).collect();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    tx.exec(
        "INSERT INTO workflow_events (task_id, at, from_status, to_status, reason) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::smallint[], $4::smallint[], $5::text[])",
        &[&ids, &ats, &froms, &tos, &reasons],
    )
    .await
    .map(drop)
}

/// Writes the attempt records of a finish batch, one statement for all. `ON CONFLICT` keeps a
/// rewritten attempt number idempotent, as the single-row insert was.
pub(super) async fn insert_attempts(tx: &impl Exec, attempts: &[AttemptRecord]) -> StoreResult<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = attempts.iter().map(|a| a.task_id.as_str()).collect();
    let ns: Vec<i64> = attempts.iter().map(|a| i64::from(a.n)).collect();
    let started: Vec<i64> = attempts.iter().map(|a| ms(a.started_at)).collect();
    let durations: Vec<i64> = attempts
        .iter()
        .map(|a| i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
        .collect();
    let codes: Vec<Option<i32>> = attempts
        .iter()
        .map(|a| a.status_code.map(i32::from))
        .collect();
    let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
    let responses: Vec<Option<&str>> = attempts.iter().map(|a| a.response.as_deref()).collect();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    tx.exec(
        "INSERT INTO workflow_attempts (task_id, n, started_at, duration_ms, status_code, error, response, outcome) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::integer[], \
           $6::text[], $7::text[], $8::text[]) \
         ON CONFLICT (task_id, n) DO UPDATE SET started_at = EXCLUDED.started_at, \
         duration_ms = EXCLUDED.duration_ms, status_code = EXCLUDED.status_code, error = EXCLUDED.error, \
         response = EXCLUDED.response, outcome = EXCLUDED.outcome",
        &[
            &ids, &ns, &started, &durations, &codes, &errors, &responses, &outcomes,
        ],
    )
    .await
    .map(drop)
}

/// Writes the new state of many locked rows in one statement (every column [`save`] writes).
pub(super) async fn save_many(tx: &impl Exec, tasks: &[&Task]) -> StoreResult<()> {
    if tasks.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = tasks.iter().map(|t| t.seq).collect();
    let statuses: Vec<i16> = tasks.iter().map(|t| status_code(t.status)).collect();
    let attempts: Vec<i64> = tasks.iter().map(|t| i64::from(t.attempt)).collect();
    let tries: Vec<i64> = tasks.iter().map(|t| i64::from(t.tries)).collect();
    let max_attempts: Vec<i64> = tasks.iter().map(|t| i64::from(t.max_attempts)).collect();
    let next_run_at: Vec<Option<i64>> = tasks.iter().map(|t| t.next_run_at.map(ms)).collect();
    let owners: Vec<Option<&str>> = tasks.iter().map(|t| t.lease_owner.as_deref()).collect();
    let lease_until: Vec<Option<i64>> = tasks.iter().map(|t| t.lease_until.map(ms)).collect();
    let cancel: Vec<bool> = tasks.iter().map(|t| t.cancel_requested).collect();
    let updated: Vec<i64> = tasks.iter().map(|t| ms(t.updated_at)).collect();
    let finished: Vec<Option<i64>> = tasks.iter().map(|t| t.finished_at.map(ms)).collect();
    let errors: Vec<Option<&str>> = tasks.iter().map(|t| t.last_error.as_deref()).collect();
    let results: Vec<Option<String>> = tasks
        .iter()
        .map(|t| t.result.as_ref().map(json_text))
        .collect();
    let callbacks: Vec<Option<String>> = tasks
        .iter()
        .map(|t| t.callback.as_ref().map(json_text))
        .collect();
    tx.exec(
        "UPDATE workflow_tasks AS t SET status = u.status, attempt = u.attempt, tries = u.tries, \
           max_attempts = u.max_attempts, next_run_at = u.next_run_at, lease_owner = u.lease_owner, \
           lease_until = u.lease_until, cancel_requested = u.cancel_requested, \
           updated_at = u.updated_at, finished_at = u.finished_at, last_error = u.last_error, \
           result = u.result, callback = u.callback \
         FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[], $5::bigint[], \
           $6::bigint[], $7::text[], $8::bigint[], $9::boolean[], $10::bigint[], $11::bigint[], \
           $12::text[], $13::text[], $14::text[]) \
           AS u(seq, status, attempt, tries, max_attempts, next_run_at, lease_owner, lease_until, \
             cancel_requested, updated_at, finished_at, last_error, result, callback) \
         WHERE t.seq = u.seq",
        &[
            &seqs,
            &statuses,
            &attempts,
            &tries,
            &max_attempts,
            &next_run_at,
            &owners,
            &lease_until,
            &cancel,
            &updated,
            &finished,
            &errors,
            &results,
            &callbacks,
        ],
    )
    .await
    .map(drop)
}
