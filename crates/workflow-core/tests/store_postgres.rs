//! The conformance suite against `PostgresStore`, plus PostgreSQL-only checks: migrations under
//! concurrent starts, two stores (two instances) sharing one database, wakeups across them.
//!
//! Needs a server: `scripts/with-postgres.sh cargo test -p workflow-core` (CI runs every test
//! under it). Without `TEST_DATABASE_URL` each test prints `skipped: TEST_DATABASE_URL not set`
//! and passes. Every test creates its own database, so they run in parallel.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::Duration;

use workflow_core::store::POSTGRES_SCHEMA_VERSION;
use workflow_core::store::conformance::{self, fresh_postgres_database};
use workflow_core::{
    Completion, EnqueueLimits, Fence, PostgresConfig, PostgresStore, Priority, Store, StoreError,
    TaskStatus,
};

async fn postgres() -> Option<Arc<dyn Store>> {
    let url = fresh_postgres_database().await?;
    let mut config = PostgresConfig::new(url);
    config.pool_size = 8;
    Some(Arc::new(
        PostgresStore::connect(config).await.expect("connect"),
    ))
}

workflow_core::conformance_tests!(skippable postgres());

const NONE: EnqueueLimits = EnqueueLimits { max_active: None };
const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn concurrent_starts_migrate_once_and_newer_schemas_are_refused() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let starts = (0..4).map(|_| PostgresStore::connect(PostgresConfig::new(url.clone())));
    let stores = futures::future::join_all(starts).await;
    for s in &stores {
        s.as_ref().expect("every concurrent start succeeds");
    }
    assert_eq!(
        PostgresStore::migrate(&PostgresConfig::new(url.clone()))
            .await
            .expect("migrate again"),
        POSTGRES_SCHEMA_VERSION
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT count(*) FROM workflow_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, POSTGRES_SCHEMA_VERSION as i64, "each step recorded once");
    client
        .execute(
            "INSERT INTO workflow_schema_migrations (version) VALUES ($1)",
            &[&(POSTGRES_SCHEMA_VERSION as i32 + 1)],
        )
        .await
        .unwrap();
    let err = PostgresStore::connect(PostgresConfig::new(url))
        .await
        .expect_err("newer schema");
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[tokio::test]
async fn two_instances_share_tasks_and_wake_each_other() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let a = PostgresStore::connect(PostgresConfig::new(url.clone()))
        .await
        .unwrap();
    let b = PostgresStore::connect(PostgresConfig::new(url))
        .await
        .unwrap();
    let wake_b = b.wakeup();
    // The listener connects in the background: enqueue until B hears one (a NOTIFY sent
    // before its LISTEN is not delivered, which is what the engine's slow poll covers).
    let mut i = 0;
    let heard = loop {
        a.enqueue(
            conformance::new_task(&format!("t{i}"), Priority::High, conformance::at(0)),
            NONE,
        )
        .await
        .unwrap();
        i += 1;
        if tokio::time::timeout(Duration::from_millis(200), wake_b.notified())
            .await
            .is_ok()
        {
            break true;
        }
        if i == 50 {
            break false;
        }
    };
    assert!(heard, "an enqueue on A wakes B through LISTEN/NOTIFY");
    // B claims what A stored; A's stale fence after B reclaims is rejected.
    let t = b
        .claim_due("b", conformance::at(1), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(t.id, "t0");
    let again = a
        .claim_due("a", conformance::at(31), LEASE, 1, &[])
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t0"],
        "A reclaims B's expired lease before newer due tasks of the same priority"
    );
    let err = b
        .finish_attempt(
            &Fence::of(&t),
            conformance::attempt(true),
            Completion::Succeeded { result: None },
            conformance::at(32),
        )
        .await
        .expect_err("fenced");
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    let done = a
        .finish_attempt(
            &Fence::of(&again[0]),
            conformance::attempt(true),
            Completion::Succeeded { result: None },
            conformance::at(32),
        )
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(b.get("t0").await.unwrap(), Some(done));
}

#[tokio::test]
async fn many_claimers_on_two_instances_claim_each_task_once() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let a = PostgresStore::connect(PostgresConfig::new(url.clone()))
        .await
        .unwrap();
    let b = PostgresStore::connect(PostgresConfig::new(url))
        .await
        .unwrap();
    let batch = (0..1000)
        .map(|i| {
            let p = Priority::ALL[i % 4];
            conformance::new_task(&format!("t{i}"), p, conformance::at(0))
        })
        .collect();
    a.enqueue_batch(batch, NONE).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..8 {
        let s = if c % 2 == 0 { a.clone() } else { b.clone() };
        set.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s
                    .claim_due(&format!("c{c}"), conformance::at(1), LEASE, 25, &[])
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                for t in got {
                    s.finish_attempt(
                        &Fence::of(&t),
                        conformance::attempt(true),
                        Completion::Succeeded { result: None },
                        conformance::at(2),
                    )
                    .await
                    .unwrap();
                    mine.push(t.id);
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (1000, 1000));
    assert_eq!(a.counts().await.unwrap().active(), 0);
}

#[tokio::test]
async fn an_unreachable_server_is_a_backend_error() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = PostgresConfig::new(format!("postgres://u:pw@127.0.0.1:{port}/db"));
    config.connect_timeout = Duration::from_secs(2);
    let err = PostgresStore::connect(config).await.expect_err("no server");
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    assert!(!err.to_string().contains("pw@"), "{err}");
}
