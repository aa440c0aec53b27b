//! Claiming due tasks: the head of each priority's due range, then expired leases.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::codec::db_err;
use super::writer::Writer;
use crate::model::Task;
use crate::store::StoreResult;
use crate::store::codec::ms;
use crate::store::logic;

impl Writer {
    pub(super) fn claim(
        &mut self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
        skip: &[String],
    ) -> StoreResult<Vec<Task>> {
        let now_ms = ms(now);
        // Full targets are filtered in SQL (on the covering due index), so a long run of due
        // tasks for a full target never hides other targets' tasks behind it.
        let not_skipped = if skip.is_empty() {
            String::new()
        } else {
            let marks = vec!["?"; skip.len()].join(", ");
            format!(" AND (target IS NULL OR target NOT IN ({marks}))")
        };
        // The LIMIT is written into the SQL, not bound: SQLite plans a bound LIMIT as a
        // constant, so rebinding it expired the cached statements and every claim re-prepared
        // them (9 % of the dispatcher's instructions under callgrind). Rounding up to a power of
        // two keeps the cached variants few; `candidates.truncate(max)` below takes what was asked.
        let limit = max.max(1).next_power_of_two();
        // (rank, due, seq) candidates: the head of each priority's due range (one index range
        // each: a single ORDER BY priority would walk every not-yet-due row of a priority before
        // reaching the next), then expired leases (crash recovery).
        let mut candidates: Vec<(i64, i64, i64)> = Vec::new();
        let due_sql = format!(
            "SELECT next_run_at, seq FROM tasks INDEXED BY tasks_due_v2 \
             WHERE status IN (0, 2) AND priority = ? AND next_run_at <= ?{not_skipped} \
             ORDER BY next_run_at, seq LIMIT {limit}"
        );
        for rank in 0..4i64 {
            if candidates.len() >= max {
                break;
            }
            let mut args: Vec<rusqlite::types::Value> = vec![rank.into(), now_ms.into()];
            args.extend(skip.iter().map(|t| t.clone().into()));
            let mut stmt = self.conn.prepare_cached(&due_sql).map_err(db_err)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((rank, r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(db_err)?;
            for row in rows {
                candidates.push(row.map_err(db_err)?);
            }
        }
        let lease_sql = format!(
            "SELECT priority, lease_until, seq FROM tasks INDEXED BY tasks_lease \
             WHERE status = 1 AND lease_until <= ?{not_skipped} ORDER BY lease_until LIMIT {limit}"
        );
        let mut args: Vec<rusqlite::types::Value> = vec![now_ms.into()];
        args.extend(skip.iter().map(|t| t.clone().into()));
        let mut stmt = self.conn.prepare_cached(&lease_sql).map_err(db_err)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db_err)?;
        for row in rows {
            candidates.push(row.map_err(db_err)?);
        }
        drop(stmt);
        candidates.sort_unstable();
        candidates.truncate(max);
        let mut out = Vec::with_capacity(candidates.len());
        for (_, _, seq) in candidates {
            let task = self.load_seq(seq)?;
            let (task, ev) = self.apply(task, |t| Ok(logic::claim(t, owner, now, lease)))?;
            self.event(&ev)?;
            out.push(task);
        }
        Ok(out)
    }
}
