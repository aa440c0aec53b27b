//! Opening the store a `database_url` names.

use std::sync::Arc;

use anyhow::Context as _;
use workflow_core::store::{Database, redact_database_url};
use workflow_core::{SqliteConfig, SqliteStore, Store};

/// An open store and how logs show it.
#[derive(Debug, Clone)]
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The database as logs show it: the SQLite path, or the PostgreSQL URL without its
    /// password.
    pub shown: String,
}

/// Opens `database`: a SQLite file (created with its directory's parent existing, recovering
/// tasks a previous process left behind), or a PostgreSQL database (migrated, listening for
/// other instances' enqueues). `sqlite_cache_mib` is each SQLite connection's page cache
/// (ignored for PostgreSQL). Must be called inside a tokio runtime.
///
/// # Errors
///
/// The database cannot be opened or reached; the message names it without its password.
pub async fn open_store(database: &Database, sqlite_cache_mib: u32) -> anyhow::Result<OpenedStore> {
    match database {
        Database::Sqlite(path) => {
            let config = SqliteConfig {
                cache_mib: sqlite_cache_mib,
                ..SqliteConfig::new(path)
            };
            let store = SqliteStore::open(config)
                .with_context(|| format!("while opening {}", path.display()))?;
            Ok(OpenedStore {
                store: Arc::new(store),
                shown: path.display().to_string(),
            })
        }
        Database::Postgres { url, pool_size } => postgres(url, *pool_size).await,
    }
}

async fn postgres(url: &str, pool_size: usize) -> anyhow::Result<OpenedStore> {
    let shown = redact_database_url(url);
    let mut config = workflow_core::PostgresConfig::new(url);
    config.pool_size = pool_size;
    let store = workflow_core::PostgresStore::connect(config)
        .await
        .with_context(|| format!("while connecting to {shown}"))?;
    Ok(OpenedStore {
        store: Arc::new(store),
        shown,
    })
}

/// The services' administrative subcommands (`dispatcher backup PATH`, `dingtalk-bot backup
/// PATH`). Flatten into a clap `Cli` with `#[command(subcommand)]`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AdminCommand {
    /// Write a consistent copy of the SQLite database to PATH (a new file), safe while the
    /// service runs. Restore: stop the service, put the copy in place of the database file,
    /// remove the `-wal` and `-shm` files beside it, start.
    Backup {
        /// Where to write the copy.
        path: std::path::PathBuf,
    },
}

/// Runs `command` against `database`, printing what it did on stdout.
///
/// # Errors
///
/// The backup failed, or the database is PostgreSQL (back it up with `pg_dump`).
pub fn run_admin(command: &AdminCommand, database: &Database) -> anyhow::Result<()> {
    match (command, database) {
        (AdminCommand::Backup { path }, Database::Sqlite(source)) => {
            let report = workflow_core::store::sqlite_backup(source, path)
                .with_context(|| format!("while backing up {}", source.display()))?;
            println!(
                "backed up {} to {}: {} tasks, {} bytes, quick_check ok",
                source.display(),
                report.path.display(),
                report.tasks,
                report.bytes
            );
            Ok(())
        }
        (AdminCommand::Backup { .. }, Database::Postgres { url, .. }) => anyhow::bail!(
            "{} is PostgreSQL: back it up with pg_dump (or your provider's snapshots)",
            redact_database_url(url)
        ),
    }
}
