//! Errors of the store and the engine.

/// Errors from a [`Store`](crate::Store).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Too many non-final tasks.
    #[error("task queue is full ({limit} active tasks)")]
    QueueFull {
        /// The configured limit.
        limit: u64,
    },
    /// A task with this id exists already.
    #[error("task {0} already exists")]
    Duplicate(String),
    /// No task with this id.
    #[error("task {0} not found")]
    NotFound(String),
    /// The claim no longer holds: another worker or a newer attempt owns the task.
    #[error("stale write to task {task_id} (attempt {attempt}) rejected")]
    Fenced {
        /// The task.
        task_id: String,
        /// The attempt number the writer held.
        attempt: u32,
    },
    /// The operation does not apply to the task's current status.
    #[error("task {task_id} is {status}: {message}")]
    InvalidState {
        /// The task.
        task_id: String,
        /// Its status.
        status: crate::model::TaskStatus,
        /// What was refused.
        message: String,
    },
    /// The backend failed (I/O, database, corrupt row).
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store was closed (shutdown).
    #[error("store is closed")]
    Closed,
    /// Another process has the database open (a SQLite file belongs to one process).
    #[error("database {0} is in use by another process")]
    InUse(String),
    /// The store's configuration is invalid, found before connecting: a connection parameter
    /// (`sslmode`, `sslrootcert`, ...) with a bad value or naming a file that cannot be read.
    /// The message never holds a password.
    #[error("invalid {parameter}: {message}")]
    Config {
        /// The parameter at fault (`sslmode`, `sslrootcert`, or `URL` for the whole string).
        parameter: String,
        /// What is wrong with it.
        message: String,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Backend(e.into())
    }

    /// Whether the error means the queue is full (HTTP 503 with `Retry-After`).
    pub fn is_queue_full(&self) -> bool {
        matches!(self, StoreError::QueueFull { .. })
    }

    /// Whether the error is a lost fence.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }

    /// Whether another process holds the database.
    pub fn is_in_use(&self) -> bool {
        matches!(self, StoreError::InUse(_))
    }

    /// Whether the configuration was refused before connecting ([`StoreError::Config`]).
    pub fn is_config(&self) -> bool {
        matches!(self, StoreError::Config { .. })
    }

    pub(crate) fn config(parameter: impl Into<String>, message: impl Into<String>) -> StoreError {
        StoreError::Config {
            parameter: parameter.into(),
            message: message.into(),
        }
    }
}
