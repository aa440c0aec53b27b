//! The row codec both SQL stores share: the task columns, the status and priority codes, the
//! instant encoding, and decoding a task, an attempt or an event from any row type that
//! implements [`Columns`].
//!
//! Both schemas store the same values the same way (integer-millisecond instants, status and
//! priority as small integers, JSON as text), so only reading one column differs per driver.

use chrono::{DateTime, Utc};

use crate::model::{AttemptRecord, Priority, Task, TaskEvent, TaskStatus};

/// The columns of a task row, in the order [`decode_task`] reads them.
pub(crate) const TASK_COLS: &str = "seq, id, kind, priority, status, payload, target, attempt, tries, max_attempts, \
     next_run_at, lease_owner, lease_until, cancel_requested, created_at, updated_at, finished_at, \
     last_error, result, idempotency_key, callback";

/// The columns of an attempt row, in the order [`decode_attempt`] reads them.
pub(crate) const ATTEMPT_COLS: &str =
    "task_id, n, started_at, duration_ms, status_code, error, response, outcome";

/// The columns of an event row, in the order [`decode_event`] reads them.
pub(crate) const EVENT_COLS: &str = "task_id, at, from_status, to_status, reason";

/// A status as stored (the partial indexes name these codes: active = 0, 1, 2).
pub(crate) fn status_code(s: TaskStatus) -> i16 {
    match s {
        TaskStatus::Pending => 0,
        TaskStatus::Processing => 1,
        TaskStatus::Retrying => 2,
        TaskStatus::Completed => 3,
        TaskStatus::Failed => 4,
        TaskStatus::Cancelled => 5,
    }
}

/// The status a stored code names.
pub(crate) fn status_from(code: i64) -> Option<TaskStatus> {
    TaskStatus::ALL
        .into_iter()
        .find(|s| i64::from(status_code(*s)) == code)
}

/// The priority a stored rank names.
pub(crate) fn priority_from(rank: i64) -> Option<Priority> {
    u8::try_from(rank).ok().and_then(Priority::from_rank)
}

/// An instant as stored: milliseconds since the epoch.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored instant.
pub(crate) fn time(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

/// JSON as stored (text, so any payload round-trips byte for byte).
pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Reads one column of a result row: what each driver does its own way.
pub(crate) trait Columns {
    /// The driver's error.
    type Error;
    /// An integer column of any width (`NULL` is `None`).
    fn int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    /// A text column (`NULL` is `None`).
    fn text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    /// A boolean column.
    fn flag(&self, i: usize) -> Result<bool, Self::Error>;
    /// The error for a value in column `i` that does not decode.
    fn invalid(&self, i: usize, why: Box<dyn std::error::Error + Send + Sync>) -> Self::Error;

    /// A `NOT NULL` integer column.
    fn req_int(&self, i: usize) -> Result<i64, Self::Error> {
        self.int(i)?
            .ok_or_else(|| self.invalid(i, "unexpected NULL".into()))
    }

    /// A `NOT NULL` text column.
    fn req_text(&self, i: usize) -> Result<String, Self::Error> {
        self.text(i)?
            .ok_or_else(|| self.invalid(i, "unexpected NULL".into()))
    }

    /// A count or an attempt number (saturating).
    fn u32(&self, i: usize) -> Result<u32, Self::Error> {
        Ok(u32::try_from(self.req_int(i)?).unwrap_or(u32::MAX))
    }

    /// A stored instant, if any.
    fn instant(&self, i: usize) -> Result<Option<DateTime<Utc>>, Self::Error> {
        Ok(self.int(i)?.map(time))
    }

    /// A stored status code.
    fn status(&self, i: usize) -> Result<TaskStatus, Self::Error> {
        let code = self.req_int(i)?;
        status_from(code).ok_or_else(|| self.invalid(i, format!("bad status code {code}").into()))
    }

    /// A stored priority rank.
    fn priority(&self, i: usize) -> Result<Priority, Self::Error> {
        let rank = self.req_int(i)?;
        priority_from(rank)
            .ok_or_else(|| self.invalid(i, format!("bad priority rank {rank}").into()))
    }

    /// A JSON text column, if not `NULL`.
    fn json<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<Option<T>, Self::Error> {
        self.text(i)?
            .map(|s| serde_json::from_str(&s).map_err(|e| self.invalid(i, Box::new(e))))
            .transpose()
    }
}

/// A task from a row of [`TASK_COLS`].
pub(crate) fn decode_task<R: Columns>(r: &R) -> Result<Task, R::Error> {
    Ok(Task {
        seq: r.req_int(0)?,
        id: r.req_text(1)?,
        kind: r.req_text(2)?,
        priority: r.priority(3)?,
        status: r.status(4)?,
        payload: r
            .json(5)?
            .ok_or_else(|| r.invalid(5, "unexpected NULL".into()))?,
        target: r.text(6)?,
        attempt: r.u32(7)?,
        tries: r.u32(8)?,
        max_attempts: r.u32(9)?,
        next_run_at: r.instant(10)?,
        lease_owner: r.text(11)?,
        lease_until: r.instant(12)?,
        cancel_requested: r.flag(13)?,
        created_at: time(r.req_int(14)?),
        updated_at: time(r.req_int(15)?),
        finished_at: r.instant(16)?,
        last_error: r.text(17)?,
        result: r.json(18)?,
        idempotency_key: r.text(19)?,
        callback: r.json(20)?,
    })
}

/// An attempt from a row of [`ATTEMPT_COLS`].
pub(crate) fn decode_attempt<R: Columns>(r: &R) -> Result<AttemptRecord, R::Error> {
    Ok(AttemptRecord {
        task_id: r.req_text(0)?,
        n: r.u32(1)?,
        started_at: time(r.req_int(2)?),
        duration_ms: u64::try_from(r.req_int(3)?).unwrap_or(0),
        status_code: r.int(4)?.and_then(|c| u16::try_from(c).ok()),
        error: r.text(5)?,
        response: r.text(6)?,
        outcome: r.req_text(7)?,
    })
}

/// An event from a row of [`EVENT_COLS`].
pub(crate) fn decode_event<R: Columns>(r: &R) -> Result<TaskEvent, R::Error> {
    Ok(TaskEvent {
        task_id: r.req_text(0)?,
        at: time(r.req_int(1)?),
        from: match r.int(2)? {
            Some(_) => Some(r.status(2)?),
            None => None,
        },
        to: r.status(3)?,
        reason: r.req_text(4)?,
    })
}

/// What a page of [`crate::store::Store::list`] holds: its size from the filter's `limit`
/// (0 means 100, at most 1,000).
pub(crate) fn page_size(limit: usize) -> usize {
    match limit {
        0 => 100,
        n => n.min(1000),
    }
}

/// Cuts the `limit + 1` rows a list fetched to a page, with the cursor of the next one.
pub(crate) fn page(mut tasks: Vec<Task>, limit: usize) -> crate::store::Page {
    let more = tasks.len() > limit;
    tasks.truncate(limit);
    let next_cursor = if more {
        tasks.last().map(|t| t.seq)
    } else {
        None
    };
    crate::store::Page { tasks, next_cursor }
}
