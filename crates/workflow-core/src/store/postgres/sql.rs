//! Running statements (a pooled client or a transaction, with cached preparation), reading
//! rows through the shared codec, and classifying database errors.

use deadpool_postgres::Pool;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::error::StoreError;
use crate::model::Task;
use crate::store::StoreResult;
use crate::store::codec::{self, Columns};

pub(super) fn db_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::backend(e)
}

impl Columns for Row {
    type Error = StoreError;

    fn int(&self, i: usize) -> StoreResult<Option<i64>> {
        // The schema's integers are SMALLINT, INTEGER or BIGINT; the driver reads each as is.
        let ty = self.columns().get(i).map(|c| c.type_().clone());
        match ty {
            Some(Type::INT2) => Ok(self
                .try_get::<_, Option<i16>>(i)
                .map_err(db_err)?
                .map(i64::from)),
            Some(Type::INT4) => Ok(self
                .try_get::<_, Option<i32>>(i)
                .map_err(db_err)?
                .map(i64::from)),
            _ => self.try_get(i).map_err(db_err),
        }
    }

    fn text(&self, i: usize) -> StoreResult<Option<String>> {
        self.try_get(i).map_err(db_err)
    }

    fn flag(&self, i: usize) -> StoreResult<bool> {
        self.try_get(i).map_err(db_err)
    }

    fn invalid(&self, i: usize, why: Box<dyn std::error::Error + Send + Sync>) -> StoreError {
        StoreError::backend(format!("column {i}: {why}"))
    }
}

pub(super) fn row_to_task(r: &Row) -> StoreResult<Task> {
    codec::decode_task(r)
}

pub(super) fn rows_to_tasks(rows: &[Row]) -> StoreResult<Vec<Task>> {
    rows.iter().map(row_to_task).collect()
}

/// The error of a pipelined group of writes in one transaction: the statement that failed,
/// not the ones after it, which only say "current transaction is aborted" (and may be the
/// first to complete, so `try_join!` would report them instead).
pub(super) fn first_cause<const N: usize>(results: [StoreResult<()>; N]) -> StoreResult<()> {
    let mut aborted = None;
    for r in results {
        match r {
            Ok(()) => {}
            Err(e) if is_aborted_transaction(&e) => {
                aborted.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    aborted.map_or(Ok(()), Err)
}

pub(super) fn is_aborted_transaction(e: &StoreError) -> bool {
    let StoreError::Backend(inner) = e else {
        return false;
    };
    inner
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
}

/// Anything that runs statements with cached preparation: a pooled client or a transaction.
pub(super) trait Exec {
    async fn stmt(&self, sql: &str) -> StoreResult<tokio_postgres::Statement>;
    async fn rows(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>>;
    async fn exec(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<u64>;
}

macro_rules! impl_exec {
    ($t:ty) => {
        impl Exec for $t {
            async fn stmt(&self, sql: &str) -> StoreResult<tokio_postgres::Statement> {
                self.prepare_cached(sql).await.map_err(db_err)
            }
            async fn rows(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
                let st = self.stmt(sql).await?;
                self.query(&st, args).await.map_err(db_err)
            }
            async fn exec(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
                let st = self.stmt(sql).await?;
                self.execute(&st, args).await.map_err(db_err)
            }
        }
    };
}

impl_exec!(deadpool_postgres::Object);
impl_exec!(deadpool_postgres::Transaction<'_>);

/// A pooled connection; a pool error is counted for `workflow_store_pool_errors_total`.
pub(super) async fn pooled(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    pool.get().await.map_err(|e| {
        metrics::counter!("workflow_store_pool_errors_total").increment(1);
        StoreError::backend(format!("PostgreSQL pool: {e}"))
    })
}

/// A database error about the values of a row (SQLSTATE class 22, data exception, or 54,
/// program limit exceeded) rather than the database or the connection.
pub(super) fn is_row_error(e: &StoreError) -> bool {
    let StoreError::Backend(inner) = e else {
        return false;
    };
    inner
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("54"))
}

/// A transaction PostgreSQL aborted to break a deadlock (SQLSTATE 40P01) or a serialization
/// failure (40001): nothing of it was written, and running it again is safe.
pub(super) fn is_transient_conflict(e: &StoreError) -> bool {
    let StoreError::Backend(inner) = e else {
        return false;
    };
    inner
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|c| c.code() == "40P01" || c.code() == "40001")
}

/// How often a transaction aborted by [`is_transient_conflict`] is run again before its
/// error is returned.
pub(super) const CONFLICT_RETRIES: u32 = 5;

/// Runs `op` (one whole transaction) and runs it again, after a short pause, while PostgreSQL
/// aborts it as a deadlock victim or a serialization failure. Two batches that insert rows
/// sharing an id or idempotency key in different orders deadlock on the unique indexes; the
/// victim's batch was rolled back whole, so the retry sees the other's rows and answers them
/// as `Existing` or `Duplicate`.
pub(super) async fn retry_conflicts<T, F, Fut>(mut op: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(e) if tries < CONFLICT_RETRIES && is_transient_conflict(&e) => {
                tries += 1;
                metrics::counter!("workflow_store_conflict_retries_total").increment(1);
                tracing::debug!(error = ?e, tries, "postgres transaction aborted by a conflict; running it again");
                // A few milliseconds, growing, so the two sides do not meet again at once.
                let pause = 2u64.pow(tries) + rand::random_range(0..4u64);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}
