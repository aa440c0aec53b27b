//! Which store a service runs on, from its `database_url` setting: one parser for every binary.

use std::path::PathBuf;

/// Where a service keeps its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by every instance given the same URL.
    Postgres {
        /// The connection URL (may hold a password: never log it unredacted).
        url: String,
        /// Connections in this instance's pool.
        pool_size: usize,
    },
}

/// A `database_url` that names no supported database. The message never shows a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDatabaseUrl(String);

impl Database {
    /// The database `url` names: absent or empty means SQLite at `default_sqlite`;
    /// `sqlite://PATH`; or `postgres://...` / `postgresql://...` with `pool_size` connections.
    ///
    /// # Errors
    ///
    /// An empty SQLite path, a malformed PostgreSQL URL, or any other scheme.
    pub fn from_url(
        url: Option<&str>,
        default_sqlite: PathBuf,
        pool_size: usize,
    ) -> Result<Database, InvalidDatabaseUrl> {
        match url {
            None | Some("") => Ok(Database::Sqlite(default_sqlite)),
            Some(url) if url.starts_with("sqlite://") => {
                let path = url.trim_start_matches("sqlite://");
                if path.is_empty() {
                    return Err(InvalidDatabaseUrl("sqlite:// needs a path".into()));
                }
                Ok(Database::Sqlite(PathBuf::from(path)))
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                postgres_url(url, pool_size)
            }
            Some(_) => Err(InvalidDatabaseUrl(
                "expected sqlite://PATH or postgres://USER@HOST/DATABASE".into(),
            )),
        }
    }
}

#[cfg(feature = "postgres")]
fn postgres_url(url: &str, pool_size: usize) -> Result<Database, InvalidDatabaseUrl> {
    crate::PostgresConfig::new(url)
        .validate()
        .map_err(|e| InvalidDatabaseUrl(e.to_string()))?;
    Ok(Database::Postgres {
        url: url.to_owned(),
        pool_size,
    })
}

#[cfg(not(feature = "postgres"))]
fn postgres_url(_: &str, _: usize) -> Result<Database, InvalidDatabaseUrl> {
    Err(InvalidDatabaseUrl(
        "PostgreSQL support is not compiled in (cargo feature `postgres`)".into(),
    ))
}
