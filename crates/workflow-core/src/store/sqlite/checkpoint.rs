//! Checkpoints on a thread of their own, off the writer's path.
//!
//! A checkpoint copies the WAL into the database file and fsyncs both. Left to SQLite's
//! auto-checkpoint it runs inside the writer's `COMMIT`, so every write queued behind it waits:
//! under a steady load the WAL's fsync took 100–110 ms on the benchmark machine (strace), and
//! that was the API's p99 (docs/BENCHMARKS.md). Here a second read-write connection runs a
//! `PASSIVE` checkpoint, which never blocks the writer, a few times a second after commits.
//! A passive checkpoint cannot let the WAL start over while commits keep coming, so once the
//! WAL is long a `RESTART` checkpoint follows: it waits for the writer's current transaction
//! and holds the next one only while it copies and syncs what the passive one left, which is
//! little. The writer keeps SQLite's auto-checkpoint at a far larger size as a backstop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::StoreError;
use crate::store::StoreResult;

/// How often the thread looks for new commits to checkpoint.
const EVERY: Duration = Duration::from_millis(250);
/// WAL frames (pages) after which the WAL is made to start over: 64 MiB of 4 KiB pages.
const RESTART_FRAMES: i64 = 16_384;
/// The writer's own auto-checkpoint, in frames, should this thread fall behind or fail.
pub(super) const WRITER_BACKSTOP_FRAMES: i64 = 65_536;
/// The writer's auto-checkpoint, in frames, where no checkpoint thread runs (a database
/// without a file of its own): 32 MiB of WAL, fewer and larger checkpoints than SQLite's 4 MiB.
pub(super) const WRITER_ALONE_FRAMES: i64 = 8_192;

/// The checkpoint thread. [`Checkpointer::stop`] ends it; dropping it does too.
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing through `conn` (a read-write connection of its own) whenever
    /// `commits`, which the writer bumps at each commit, has moved.
    pub(super) fn start(conn: Connection, commits: Arc<AtomicU64>) -> StoreResult<Checkpointer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &commits, &stopped))
            .map_err(StoreError::backend)?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop (it closes its connection as it ends) and hands back its
    /// handle for joining, once.
    pub(super) fn stop(&mut self) -> Option<JoinHandle<()>> {
        self.stop.take();
        self.thread.take()
    }
}

fn run(conn: &Connection, commits: &AtomicU64, stopped: &mpsc::Receiver<()>) {
    // Nothing seen yet: the first round checkpoints whatever WAL the open found.
    let mut seen = u64::MAX;
    loop {
        match stopped.recv_timeout(EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = commits.load(Ordering::Relaxed);
        if now == seen {
            continue; // idle: nothing new in the WAL
        }
        seen = now;
        match checkpoint(conn, "PASSIVE") {
            Ok(frames) if frames >= RESTART_FRAMES => {
                if let Err(e) = checkpoint(conn, "RESTART") {
                    tracing::warn!(error = %e, frames, "sqlite WAL restart checkpoint failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed"),
        }
    }
}

/// Runs one checkpoint: the WAL's length in frames when it ran.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_after_commits_and_stops_when_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).expect("open");
        writer
            .query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .expect("wal");
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no auto-checkpoint");
        writer
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("write");
        // Nothing is checkpointed yet: the table is only in the WAL.
        let before = std::fs::metadata(&path).expect("stat").len();
        let commits = Arc::new(AtomicU64::new(0));
        let mut c =
            Checkpointer::start(Connection::open(&path).expect("open"), commits.clone()).unwrap();
        commits.fetch_add(1, Ordering::Relaxed);
        // The thread copies the WAL into the database file, which grows.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&path).expect("stat").len() <= before {
            assert!(std::time::Instant::now() < deadline, "never checkpointed");
            std::thread::sleep(Duration::from_millis(50));
        }
        let thread = c.stop().expect("a thread to join");
        thread.join().expect("the thread ends when told");
        assert!(c.stop().is_none(), "stop hands the thread back once");
    }
}
