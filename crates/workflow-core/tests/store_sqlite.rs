//! The conformance suite against `SqliteStore`, plus SQLite-only checks: durability across
//! close and reopen, migrations, lease recovery on open.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use workflow_core::store::{SQLITE_SCHEMA_VERSION, conformance};
use workflow_core::{
    Completion, EnqueueLimits, Fence, Priority, SqliteConfig, SqliteStore, Store, StoreError,
    Synchronous, TaskFilter, TaskStatus,
};

async fn sqlite() -> Arc<dyn Store> {
    // Each test gets its own file; the directory lives as long as the process (tests are short).
    let dir = tempfile::tempdir().unwrap().keep();
    Arc::new(SqliteStore::open_path(dir.join("t.db")).unwrap())
}

workflow_core::conformance_tests!(sqlite());

const NONE: EnqueueLimits = EnqueueLimits { max_active: None };
const LEASE: Duration = Duration::from_secs(30);

fn user_version(path: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn everything_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/t.db");
    let (done, pending) = {
        let s = SqliteStore::open_path(&path).unwrap();
        let batch = (0..50)
            .map(|i| conformance::new_task(&format!("t{i}"), Priority::Medium, conformance::at(i)))
            .collect();
        s.enqueue_batch(batch, NONE).await.unwrap();
        let t = s
            .claim_due("w1", conformance::at(100), LEASE, 1, &[])
            .await
            .unwrap()
            .remove(0);
        let done = s
            .finish_attempt(
                &Fence::of(&t),
                conformance::attempt(true),
                Completion::Succeeded {
                    result: Some(serde_json::json!({"ok": true})),
                },
                conformance::at(101),
            )
            .await
            .unwrap();
        (done, s.get("t1").await.unwrap().unwrap())
    };
    let s = SqliteStore::open_path(&path).unwrap();
    assert_eq!(s.get("t0").await.unwrap(), Some(done));
    assert_eq!(s.get("t1").await.unwrap(), Some(pending));
    assert_eq!(s.attempts("t0").await.unwrap().len(), 1);
    assert_eq!(s.events("t0").await.unwrap().len(), 3);
    let all = s
        .list(&TaskFilter {
            limit: 1000,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.tasks.len(), 50);
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.active(), 49, "counts are rebuilt on open");
    assert!(
        counts
            .by_status_priority
            .contains(&(TaskStatus::Completed, Priority::Medium, 1))
    );
    // The queue limit still applies after a reopen.
    let err = s
        .enqueue(
            conformance::new_task("x", Priority::Low, conformance::at(0)),
            EnqueueLimits {
                max_active: Some(49),
            },
        )
        .await
        .unwrap_err();
    assert!(err.is_queue_full());
    // New tasks keep a higher seq than every old one.
    let created = s
        .enqueue(
            conformance::new_task("y", Priority::Low, conformance::at(0)),
            NONE,
        )
        .await
        .unwrap();
    assert!(created.task().seq > all.tasks[0].seq);
}

#[tokio::test]
async fn a_lease_left_by_a_dead_process_is_due_again_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let first = {
        let s = SqliteStore::open_path(&path).unwrap();
        s.enqueue(conformance::new_task("a", Priority::High, Utc::now()), NONE)
            .await
            .unwrap();
        s.claim_due("dead", Utc::now(), Duration::from_secs(3600), 1, &[])
            .await
            .unwrap()
            .remove(0)
    };
    let s = SqliteStore::open_path(&path).unwrap();
    let again = s
        .claim_due("alive", Utc::now(), LEASE, 1, &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "not after the hour-long lease, at once");
    assert_eq!(again[0].attempt, first.attempt + 1);
    assert!(
        s.extend_lease(&Fence::of(&first), Utc::now())
            .await
            .unwrap_err()
            .is_fenced()
    );
    // Opt-out: leases are kept (a shared file whose other user may still be alive).
    drop(s);
    let mut config = SqliteConfig::new(&path);
    config.recover_leases_on_open = false;
    let s = SqliteStore::open(config).unwrap();
    assert!(
        s.claim_due("other", Utc::now(), LEASE, 1, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn opening_twice_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqliteStore::open_path(&path).unwrap());
    assert_eq!(user_version(&path), SQLITE_SCHEMA_VERSION as i64);
    let s = SqliteStore::open_path(&path).unwrap();
    s.ping().await.unwrap();
    assert_eq!(user_version(&path), SQLITE_SCHEMA_VERSION as i64);
}

#[tokio::test]
async fn a_version_1_file_is_upgraded_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    {
        let s = SqliteStore::open_path(&path).unwrap();
        s.enqueue(
            conformance::new_task("old", Priority::Low, conformance::at(0)),
            NONE,
        )
        .await
        .unwrap();
    }
    // Turn the file back into schema version 1 (the due index before it held `target`).
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "DROP INDEX tasks_due_v2;
             CREATE INDEX tasks_due ON tasks (priority, next_run_at, seq) WHERE status IN (0, 2);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let s = SqliteStore::open_path(&path).unwrap();
    assert_eq!(user_version(&path), SQLITE_SCHEMA_VERSION as i64);
    let got = s
        .claim_due("w", conformance::at(1), LEASE, 5, &["x".to_owned()])
        .await
        .unwrap();
    assert_eq!(got[0].id, "old");
}

#[tokio::test]
async fn a_file_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqliteStore::open_path(&path).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 999).unwrap();
    }
    let err = SqliteStore::open_path(&path).unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[tokio::test]
async fn every_synchronous_level_opens_and_stores() {
    for level in [Synchronous::Off, Synchronous::Normal, Synchronous::Full] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SqliteConfig::new(dir.path().join("t.db"));
        config.synchronous = level;
        config.readers = 1;
        let s = SqliteStore::open(config).unwrap();
        s.enqueue(
            conformance::new_task("a", Priority::Low, conformance::at(0)),
            NONE,
        )
        .await
        .unwrap();
        assert!(s.get("a").await.unwrap().is_some(), "{level:?}");
    }
}

#[tokio::test]
async fn reads_run_while_the_writer_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::open_path(dir.path().join("t.db")).unwrap());
    s.enqueue(
        conformance::new_task("seen", Priority::Low, conformance::at(0)),
        NONE,
    )
    .await
    .unwrap();
    // Keep the writer busy with large batches while reading from the read pool.
    let writer = tokio::spawn({
        let s = s.clone();
        async move {
            for b in 0..5 {
                let batch = (0..2_000)
                    .map(|i| {
                        conformance::new_task(
                            &format!("b{b}-{i}"),
                            Priority::Low,
                            conformance::at(0),
                        )
                    })
                    .collect();
                s.enqueue_batch(batch, NONE).await.unwrap();
            }
        }
    });
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        assert!(s.get("seen").await.unwrap().is_some());
        reads += 1;
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert_eq!(s.counts().await.unwrap().active(), 10_001);
}

/// Scale check: the claim and the due-time lookups stay fast with 100,000 stored tasks.
/// Prints timings; run with `cargo test -p workflow-core --release --test store_sqlite -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale check, about 10 s in debug builds"]
async fn scale_100k_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::open_path(dir.path().join("t.db")).unwrap());
    let start = std::time::Instant::now();
    for b in 0..100 {
        let batch = (0..1_000)
            .map(|i| {
                let p = Priority::ALL[(i % 4) as usize];
                conformance::new_task(&format!("t{b}-{i}"), p, conformance::at(i))
            })
            .collect();
        s.enqueue_batch(batch, NONE).await.unwrap();
    }
    println!("enqueue 100k in batches of 1,000: {:?}", start.elapsed());
    let start = std::time::Instant::now();
    let mut n = 0;
    loop {
        let got = s
            .claim_due("w", conformance::at(2_000), LEASE, 256, &[])
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        let mut set = tokio::task::JoinSet::new();
        for t in got {
            n += 1;
            let s = s.clone();
            set.spawn(async move {
                s.finish_attempt(
                    &Fence::of(&t),
                    conformance::attempt(true),
                    Completion::Succeeded { result: None },
                    conformance::at(2_001),
                )
                .await
                .unwrap();
            });
        }
        set.join_all().await;
    }
    assert_eq!(n, 100_000);
    println!("claim + finish 100k: {:?}", start.elapsed());
    let start = std::time::Instant::now();
    for _ in 0..1_000 {
        s.next_due_at().await.unwrap();
        s.counts().await.unwrap();
    }
    println!("1,000 x (next_due_at + counts): {:?}", start.elapsed());
    assert_eq!(s.counts().await.unwrap().active(), 0);
    assert_eq!(s.prune(conformance::at(3_000)).await.unwrap(), 100_000);
}

#[tokio::test]
async fn a_file_open_in_one_store_is_refused_to_another_until_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let first = SqliteStore::open_path(&path).unwrap();
    first
        .enqueue(conformance::new_task("a", Priority::High, Utc::now()), NONE)
        .await
        .unwrap();
    first
        .claim_due("alive", Utc::now(), Duration::from_secs(3600), 1, &[])
        .await
        .unwrap();
    // A second opener would expire the live lease (as after a crash): it is refused instead.
    let err = SqliteStore::open_path(&path).unwrap_err();
    assert!(err.is_in_use(), "{err}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    assert_eq!(
        first
            .get("a")
            .await
            .unwrap()
            .unwrap()
            .lease_owner
            .as_deref(),
        Some("alive")
    );
    drop(first);
    let again = SqliteStore::open_path(&path).unwrap();
    assert_eq!(
        again.get("a").await.unwrap().unwrap().status,
        TaskStatus::Processing
    );
}

#[tokio::test]
async fn close_commits_what_is_queued_checkpoints_the_wal_and_refuses_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteStore::open_path(&path).unwrap();
    let writes: Vec<_> = (0..50)
        .map(|i| {
            let task = conformance::new_task(&format!("t{i}"), Priority::Low, Utc::now());
            store.enqueue(task, NONE)
        })
        .collect();
    // Every write is queued before close asks the writer to stop: each is still committed.
    let (written, ()) = tokio::join!(futures::future::join_all(writes), store.close());
    for w in written {
        w.expect("queued before close, so committed");
    }
    let late = conformance::new_task("late", Priority::Low, Utc::now());
    let err = store.enqueue(late, NONE).await.expect_err("closed");
    assert!(matches!(err, StoreError::Closed), "{err}");
    // The WAL was copied into the database file and removed, its index too.
    for suffix in ["-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        assert!(
            !std::path::Path::new(&file).exists(),
            "{suffix} left after close"
        );
    }
    // Reads are refused too, and closing again does nothing.
    let err = store.get("t0").await.expect_err("closed");
    assert!(matches!(err, StoreError::Closed), "{err}");
    store.close().await;
    drop(store);
    let again = SqliteStore::open_path(&path).unwrap();
    assert_eq!(again.counts().await.unwrap().active(), 50);
    again.close().await;
}

/// A store at `path` holding `n` tasks, still open.
async fn with_tasks(path: &std::path::Path, n: usize) -> SqliteStore {
    let s = SqliteStore::open_path(path).unwrap();
    let batch = (0..n)
        .map(|i| conformance::new_task(&format!("t{i}"), Priority::Medium, conformance::at(0)))
        .collect();
    s.enqueue_batch(batch, NONE).await.unwrap();
    s
}

/// The database file and its `-wal` and `-shm`, as a crash would leave them: copied while
/// the store that wrote them is still open.
fn crash_copy(from: &std::path::Path, to: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let src = format!("{}{suffix}", from.display());
        if std::path::Path::new(&src).exists() {
            std::fs::copy(&src, format!("{}{suffix}", to.display())).unwrap();
        }
    }
}

fn wal_of(path: &std::path::Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}-wal", path.display()))
}

async fn task_count(s: &SqliteStore) -> usize {
    s.list(&TaskFilter {
        limit: 1000,
        ..TaskFilter::default()
    })
    .await
    .unwrap()
    .tasks
    .len()
}

fn refused(path: &std::path::Path) -> String {
    let err = SqliteStore::open_path(path).expect_err("a damaged database was opened");
    let text = err.to_string();
    assert!(text.contains("damaged"), "{text}");
    text
}

#[tokio::test]
async fn after_a_clean_close_the_database_file_alone_holds_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = with_tasks(&path, 20).await;
    s.close().await;
    drop(s);
    assert!(
        std::fs::metadata(wal_of(&path)).map_or(0, |m| m.len()) == 0,
        "the WAL was not emptied at close"
    );
    // Only the .db file, as a naive copy of a stopped service would take it.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    let reopened = SqliteStore::open_path(&copy).unwrap();
    assert_eq!(task_count(&reopened).await, 20);
}

#[tokio::test]
async fn a_wal_with_a_corrupt_header_is_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let s = with_tasks(&live, 20).await;
    // The tasks are in the WAL only: the crash copy proves it, then a damaged copy is refused.
    let intact = dir.path().join("intact.db");
    crash_copy(&live, &intact);
    let damaged = dir.path().join("damaged.db");
    crash_copy(&live, &damaged);
    drop(s);
    let mut wal = std::fs::read(wal_of(&damaged)).unwrap();
    wal[16] ^= 0xff; // a salt: SQLite would ignore the whole log
    std::fs::write(wal_of(&damaged), wal).unwrap();
    let text = refused(&damaged);
    assert!(text.contains("header of its WAL"), "{text}");
    let recovered = SqliteStore::open_path(&intact).unwrap();
    assert_eq!(task_count(&recovered).await, 20);
}

#[tokio::test]
async fn a_missing_or_empty_database_next_to_a_wal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let s = with_tasks(&live, 5).await;
    let empty = dir.path().join("empty.db");
    crash_copy(&live, &empty);
    let missing = dir.path().join("missing.db");
    crash_copy(&live, &missing);
    drop(s);
    std::fs::write(&empty, b"").unwrap();
    assert!(refused(&empty).contains("is empty"));
    std::fs::remove_file(&missing).unwrap();
    assert!(refused(&missing).contains("is missing"));
    assert!(
        !missing.exists(),
        "a fresh database was created in its place"
    );
}

#[tokio::test]
async fn a_database_failing_quick_check_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = with_tasks(&path, 200).await;
    s.close().await;
    drop(s);
    // Scribble over every page but the header page.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192, "{} bytes", bytes.len());
    for b in &mut bytes[4096..] {
        *b = 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    refused(&path);
}

#[tokio::test]
async fn a_backup_of_a_live_database_is_complete_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = with_tasks(&path, 20).await;
    let dest = dir.path().join("backup.db");
    // The store stays open (and locked) while another connection copies it.
    let report = workflow_core::store::sqlite_backup(&path, &dest).unwrap();
    assert_eq!(report.tasks, 20);
    assert!(report.bytes > 0);
    let again = workflow_core::store::sqlite_backup(&path, &dest).unwrap_err();
    assert!(again.to_string().contains("exists"), "{again}");
    s.close().await;
    drop(s);
    let restored = SqliteStore::open_path(&dest).unwrap();
    assert_eq!(task_count(&restored).await, 20);
    assert_eq!(restored.get("t7").await.unwrap().unwrap().id, "t7");
}
