//! How a SQLite store is opened: the file, `PRAGMA synchronous`, readers, batch size.

use std::path::PathBuf;
use std::time::Duration;

/// `PRAGMA synchronous` level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// No fsync: fastest, may lose recent commits on a crash of the OS (not of the process).
    Off,
    /// fsync at checkpoints: nothing acknowledged is lost when the process crashes.
    #[default]
    Normal,
    /// fsync every commit: nothing acknowledged is lost on power loss either.
    Full,
}

impl Synchronous {
    pub(super) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Where and how to open the database.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file (parent directories are created).
    pub path: PathBuf,
    /// `PRAGMA synchronous` (default NORMAL).
    pub synchronous: Synchronous,
    /// Read-only connections for queries (default 4).
    pub readers: usize,
    /// How long a connection waits for a lock before failing (default 5 s).
    pub busy_timeout: Duration,
    /// Most writes committed in one transaction (default 1,024).
    pub max_batch: usize,
    /// Expire every lease when the file is opened (default true). A SQLite file is used by one
    /// process at a time, so a task still leased at start belongs to a process that died: it is
    /// retried at once instead of after its lease runs out.
    pub recover_leases_on_open: bool,
    /// Page cache of each connection, in MiB (default 8: the writer's working set is the
    /// ends of append-mostly indexes; 32 measured no faster). Resident memory grows with the
    /// database until each connection's cache is full, then stays flat.
    pub cache_mib: u32,
}

impl SqliteConfig {
    /// Defaults for a file.
    pub fn new(path: impl Into<PathBuf>) -> SqliteConfig {
        SqliteConfig {
            path: path.into(),
            synchronous: Synchronous::Normal,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            max_batch: 1024,
            recover_leases_on_open: true,
            cache_mib: 8,
        }
    }
}
