//! Reading the shared row codec's columns from rusqlite rows.

use rusqlite::Row;

use crate::error::StoreError;
use crate::model::{AttemptRecord, Task, TaskEvent};
use crate::store::codec::{self, Columns};

impl Columns for Row<'_> {
    type Error = rusqlite::Error;

    fn int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }

    fn text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }

    fn flag(&self, i: usize) -> rusqlite::Result<bool> {
        Ok(self.get::<_, i64>(i)? != 0)
    }

    fn invalid(&self, i: usize, why: Box<dyn std::error::Error + Send + Sync>) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, why)
    }
}

pub(super) fn row_to_task(r: &Row<'_>) -> rusqlite::Result<Task> {
    codec::decode_task(r)
}

pub(super) fn row_to_attempt(r: &Row<'_>) -> rusqlite::Result<AttemptRecord> {
    codec::decode_attempt(r)
}

pub(super) fn row_to_event(r: &Row<'_>) -> rusqlite::Result<TaskEvent> {
    codec::decode_event(r)
}

/// A status as this schema stores it.
pub(super) fn status_code(s: crate::model::TaskStatus) -> i64 {
    i64::from(codec::status_code(s))
}

/// A stored status code, as rusqlite reports a value out of range.
pub(super) fn status_of(code: i64) -> rusqlite::Result<crate::model::TaskStatus> {
    codec::status_from(code).ok_or(rusqlite::Error::IntegralValueOutOfRange(0, code))
}

pub(super) fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::backend(e)
}
