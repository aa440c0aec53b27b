//! The PostgreSQL schema and its migrations.

use super::sql::db_err;
use crate::error::StoreError;
use crate::store::StoreResult;

/// Advisory lock key (an arbitrary constant, namespaced by this crate's use).
const MIGRATION_LOCK: i64 = 0x5746_4d49_4752_0001; // "WFMIGR" 1

const MIGRATION_1: &str = "
CREATE TABLE IF NOT EXISTS workflow_tasks (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    priority         SMALLINT NOT NULL,
    status           SMALLINT NOT NULL,
    payload          TEXT NOT NULL,
    target           TEXT,
    attempt          BIGINT NOT NULL,
    tries            BIGINT NOT NULL,
    max_attempts     BIGINT NOT NULL,
    next_run_at      BIGINT,
    lease_owner      TEXT,
    lease_until      BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    last_error       TEXT,
    result           TEXT,
    idempotency_key  TEXT UNIQUE,
    callback         TEXT
);
-- The claim: due tasks of one priority in due order, over active rows only.
CREATE INDEX IF NOT EXISTS workflow_tasks_due ON workflow_tasks (priority, next_run_at, seq)
    WHERE status IN (0, 2);
-- Crash recovery: expired leases.
CREATE INDEX IF NOT EXISTS workflow_tasks_lease ON workflow_tasks (lease_until) WHERE status = 1;
-- Pruning and listing.
CREATE INDEX IF NOT EXISTS workflow_tasks_finished ON workflow_tasks (finished_at) WHERE status >= 3;
CREATE INDEX IF NOT EXISTS workflow_tasks_status_seq ON workflow_tasks (status, seq);
CREATE TABLE IF NOT EXISTS workflow_attempts (
    task_id     TEXT NOT NULL,
    n           BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    response    TEXT,
    outcome     TEXT NOT NULL,
    PRIMARY KEY (task_id, n)
);
CREATE TABLE IF NOT EXISTS workflow_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     TEXT NOT NULL,
    at          BIGINT NOT NULL,
    from_status SMALLINT,
    to_status   SMALLINT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS workflow_events_task ON workflow_events (task_id, id);
";

/// Schema migrations, in order; `workflow_schema_migrations` records the ones applied. Never
/// edit one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[MIGRATION_1];

/// The schema version this build migrates to.
pub const POSTGRES_SCHEMA_VERSION: usize = MIGRATIONS.len();

pub(super) async fn migrate_raw(client: &mut tokio_postgres::Client) -> StoreResult<usize> {
    let tx = client.transaction().await.map_err(db_err)?;
    // Held until commit: a second instance starting now waits here, then sees our rows.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS workflow_schema_migrations (\
           version    INTEGER PRIMARY KEY, \
           applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(db_err)?;
    let row = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM workflow_schema_migrations",
            &[],
        )
        .await
        .map_err(db_err)?;
    let version: i32 = row.try_get(0).map_err(db_err)?;
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::backend(format!(
            "database schema version {version} is newer than this build supports ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql).await.map_err(db_err)?;
        let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO workflow_schema_migrations (version) VALUES ($1)",
            &[&v],
        )
        .await
        .map_err(db_err)?;
        tracing::info!(version = v, "postgres schema migrated");
    }
    tx.commit().await.map_err(db_err)?;
    Ok(MIGRATIONS.len())
}
