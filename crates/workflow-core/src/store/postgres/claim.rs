//! Claiming due tasks: one short transaction of pipelined `FOR UPDATE SKIP LOCKED` selects,
//! one `UPDATE ... FROM unnest(...)` and one insert of the events.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;

use deadpool_postgres::Pool;

use super::sql::{Exec, db_err, first_cause, pooled, rows_to_tasks};
use super::write::insert_events;
use crate::model::Task;
use crate::store::StoreResult;
use crate::store::codec::{TASK_COLS, ms};
use crate::store::logic;

/// [`Store::claim_due`](crate::Store::claim_due), skipping the targets in `skip`.
pub(super) async fn claim(
    pool: &Pool,
    owner: &str,
    now: DateTime<Utc>,
    lease: Duration,
    max: usize,
    skip: &[&str],
) -> StoreResult<Vec<Task>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    let now_ms = ms(now);
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let mut client = pooled(pool).await?;
    let tx = client.transaction().await.map_err(db_err)?;
    let due_sql = format!(
        "SELECT {TASK_COLS} FROM workflow_tasks \
             WHERE status IN (0, 2) AND priority = $1 AND next_run_at <= $2 \
               AND (target IS NULL OR target <> ALL($3::text[])) \
             ORDER BY next_run_at, seq LIMIT $4 FOR UPDATE SKIP LOCKED"
    );
    let lease_sql = format!(
        "SELECT {TASK_COLS} FROM workflow_tasks \
             WHERE status = 1 AND lease_until <= $1 \
               AND (target IS NULL OR target <> ALL($2::text[])) \
             ORDER BY lease_until, seq LIMIT $3 FOR UPDATE SKIP LOCKED"
    );
    let ranks: [i16; 4] = [0, 1, 2, 3];
    // Every query at once (pipelined on the one connection): one round trip.
    let a0: [&(dyn ToSql + Sync); 4] = [&ranks[0], &now_ms, &skip, &limit];
    let a1: [&(dyn ToSql + Sync); 4] = [&ranks[1], &now_ms, &skip, &limit];
    let a2: [&(dyn ToSql + Sync); 4] = [&ranks[2], &now_ms, &skip, &limit];
    let a3: [&(dyn ToSql + Sync); 4] = [&ranks[3], &now_ms, &skip, &limit];
    let al: [&(dyn ToSql + Sync); 3] = [&now_ms, &skip, &limit];
    let (p0, p1, p2, p3, expired) = tokio::try_join!(
        tx.rows(&due_sql, &a0),
        tx.rows(&due_sql, &a1),
        tx.rows(&due_sql, &a2),
        tx.rows(&due_sql, &a3),
        tx.rows(&lease_sql, &al),
    )?;
    let mut candidates = Vec::new();
    for rows in [p0, p1, p2, p3, expired] {
        candidates.extend(rows_to_tasks(&rows)?);
    }
    if candidates.is_empty() {
        drop(tx); // rolls back: nothing was locked
        return Ok(Vec::new());
    }
    // Claim order: priority, then due time (or lease end), then creation order.
    candidates.sort_by_key(|t| {
        let due = t.next_run_at.or(t.lease_until).map_or(i64::MIN, ms);
        (t.priority.rank(), due, t.seq)
    });
    candidates.truncate(max);
    let mut events = Vec::with_capacity(candidates.len());
    for t in &mut candidates {
        events.push(logic::claim(t, owner, now, lease));
    }
    let seqs: Vec<i64> = candidates.iter().map(|t| t.seq).collect();
    let attempts: Vec<i64> = candidates.iter().map(|t| i64::from(t.attempt)).collect();
    let lease_until: Vec<Option<i64>> = candidates.iter().map(|t| t.lease_until.map(ms)).collect();
    let update_args: [&(dyn ToSql + Sync); 5] = [&seqs, &attempts, &owner, &now_ms, &lease_until];
    let update = tx.exec(
        "UPDATE workflow_tasks AS t SET status = 1, attempt = u.attempt, lease_owner = $3, \
               lease_until = u.lease_until, next_run_at = NULL, updated_at = $4 \
             FROM unnest($1::bigint[], $2::bigint[], $5::bigint[]) AS u(seq, attempt, lease_until) \
             WHERE t.seq = u.seq",
        &update_args,
    );
    let (a, b) = tokio::join!(update, insert_events(&tx, &events));
    first_cause([a.map(drop), b])?;
    tx.commit().await.map_err(db_err)?;
    metrics::histogram!("workflow_store_claim_seconds").record(started.elapsed().as_secs_f64());
    Ok(candidates)
}
