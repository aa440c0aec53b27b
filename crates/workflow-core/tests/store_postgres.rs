//! The conformance suite against `PostgresStore`, plus PostgreSQL-only checks: migrations under
//! concurrent starts, two stores (two instances) sharing one database, wakeups across them,
//! the group-committed `finish_attempt` (many concurrent finishes, stale fences, a failed
//! batch, finishers gone) and the group-committed `enqueue` (many concurrent enqueues with
//! keys, duplicates and a queue limit, one batch's own conflicts, a failed batch, a refused
//! value, enqueuers gone).
//!
//! `scripts/with-postgres.sh` serves TLS only and exports a `verify-full` URL, so all of this
//! runs over verified TLS, the `LISTEN` connection too (the wakeup tests); `postgres_tls.rs`
//! checks what is refused.
//!
//! Needs a server: `scripts/with-postgres.sh cargo test -p workflow-core` (CI runs every test
//! under it). Without `TEST_DATABASE_URL` each test prints `skipped: TEST_DATABASE_URL not set`
//! and passes. Every test creates its own database, so they run in parallel.
#![cfg(feature = "postgres")]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use workflow_core::store::POSTGRES_SCHEMA_VERSION;
use workflow_core::store::conformance::{self, fresh_postgres_database};
use workflow_core::{
    Completion, EnqueueLimits, Enqueued, Fence, NewTask, PostgresConfig, PostgresStore, Priority,
    Store, StoreError, Task, TaskStatus,
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
    let client = conformance::postgres_client(&url).await;
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
    // Only t0 matters below: the tasks enqueued while B's listener was still connecting are
    // due at 0, so they would be claimed before t0's lease (ending at 31) is reclaimed.
    for k in 1..i {
        a.cancel(&format!("t{k}"), "not needed", conformance::at(0))
            .await
            .unwrap();
    }
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
        "A reclaims B's expired lease"
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

/// Enqueues `n` tasks due at 0 and claims them all for `owner` at 1.
async fn claimed(s: &PostgresStore, owner: &str, n: usize) -> Vec<Task> {
    let batch = (0..n)
        .map(|i| conformance::new_task(&format!("t{i}"), Priority::ALL[i % 4], conformance::at(0)))
        .collect();
    s.enqueue_batch(batch, NONE).await.unwrap();
    let mut tasks = Vec::with_capacity(n);
    while tasks.len() < n {
        let got = s
            .claim_due(owner, conformance::at(1), LEASE, 200, &[])
            .await
            .unwrap();
        assert!(!got.is_empty(), "all {n} tasks are due");
        tasks.extend(got);
    }
    tasks.sort_by_key(|t| t.seq);
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_finishes_are_group_committed_and_stale_fences_fail_alone() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let s = PostgresStore::connect(PostgresConfig::new(url))
        .await
        .unwrap();
    let tasks = claimed(&s, "w", 500).await;
    // Every task: its own good finish (success, retry or permanent failure by i % 3), except
    // every tenth, which only gets a stale one (it stays processing). Every fifth of the rest
    // also gets a stale finish racing its good one, and some ids are unknown: all in one
    // shuffled stream, finished by 32 callers at once.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Kind {
        Good,
        Stale,
        Missing,
    }
    let mut work: Vec<(Kind, usize, Fence)> = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let good = Fence::of(t);
        let stale = if i % 2 == 0 {
            Fence {
                attempt: good.attempt - 1,
                ..good.clone()
            }
        } else {
            Fence {
                owner: "someone-else".to_owned(),
                ..good.clone()
            }
        };
        if i % 10 == 0 {
            work.push((Kind::Stale, i, stale));
            continue;
        }
        work.push((Kind::Good, i, good));
        if i % 5 == 0 {
            work.push((Kind::Stale, i, stale));
        }
    }
    for m in 0..10 {
        let fence = Fence {
            task_id: format!("missing{m}"),
            attempt: 1,
            owner: "w".to_owned(),
        };
        work.push((Kind::Missing, usize::MAX, fence));
    }
    // A fixed shuffle (a stride coprime with the length), so a failure reproduces.
    let len = work.len();
    let stride = (1..)
        .map(|k| 7 * k + 3)
        .find(|k| gcd(*k, len) == 1)
        .unwrap();
    let work: Arc<Vec<_>> = Arc::new((0..len).map(|j| work[(j * stride) % len].clone()).collect());
    let mut set = tokio::task::JoinSet::new();
    for c in 0..32 {
        let (s, work) = (s.clone(), work.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            for (kind, i, fence) in work.iter().skip(c).step_by(32).cloned() {
                let completion = match i % 3 {
                    0 => Completion::Succeeded {
                        result: Some(serde_json::json!({"i": i})),
                    },
                    1 => Completion::Retry {
                        at: conformance::at(100),
                        error: "HTTP 500".to_owned(),
                    },
                    _ => Completion::Failed {
                        error: "HTTP 410".to_owned(),
                    },
                };
                let ok = i % 3 == 0;
                let r = s
                    .finish_attempt(
                        &fence,
                        conformance::attempt(ok),
                        completion,
                        conformance::at(2),
                    )
                    .await;
                out.push((kind, i, fence, r));
            }
            out
        });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.extend(r.unwrap());
    }
    assert_eq!(results.len(), len);
    for (kind, i, fence, r) in &results {
        match kind {
            Kind::Good => {
                let t = r.as_ref().unwrap_or_else(|e| panic!("{fence:?}: {e}"));
                let want = [
                    TaskStatus::Completed,
                    TaskStatus::Retrying,
                    TaskStatus::Failed,
                ][i % 3];
                assert_eq!((t.status, t.tries), (want, 1), "{fence:?}");
            }
            Kind::Stale => {
                let e = r.as_ref().expect_err("a stale fence is rejected");
                assert!(e.is_fenced(), "{fence:?}: {e}");
            }
            Kind::Missing => {
                let e = r.as_ref().expect_err("no such task");
                assert!(
                    matches!(e, StoreError::NotFound(id) if *id == fence.task_id),
                    "{e}"
                );
            }
        }
    }
    // What is stored: each good finish exactly once, nothing of a stale one.
    for (i, t) in tasks.iter().enumerate() {
        let now = s.get(&t.id).await.unwrap().unwrap();
        let attempts = s.attempts(&t.id).await.unwrap();
        let events = s.events(&t.id).await.unwrap();
        let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
        if i % 10 == 0 {
            assert_eq!(now, *t, "a stale finish writes nothing");
            assert!(attempts.is_empty(), "{attempts:?}");
            assert_eq!(reasons, ["created", "claimed"]);
            continue;
        }
        let want = [
            TaskStatus::Completed,
            TaskStatus::Retrying,
            TaskStatus::Failed,
        ][i % 3];
        assert_eq!(
            (now.status, now.tries, now.lease_owner.as_deref()),
            (want, 1, None)
        );
        assert_eq!(now.status.is_final(), want != TaskStatus::Retrying);
        if want == TaskStatus::Completed {
            assert_eq!(now.result, Some(serde_json::json!({"i": i})));
        } else {
            assert!(now.last_error.is_some());
        }
        assert_eq!(
            attempts
                .iter()
                .map(|a| (a.task_id.as_str(), a.n))
                .collect::<Vec<_>>(),
            [(t.id.as_str(), 1)],
            "one attempt"
        );
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert_eq!(events[2].to, want);
    }
    let counts = s.counts().await.unwrap();
    assert_eq!(
        counts.active(),
        50 + 150,
        "50 stale-only still processing, 150 retrying"
    );
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[tokio::test]
async fn a_database_error_fails_its_whole_batch_and_writes_nothing_of_it() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let s = PostgresStore::connect(PostgresConfig::new(url.clone()))
        .await
        .unwrap();
    let tasks = claimed(&s, "w", 64).await;
    // One attempt record the database refuses.
    let client = conformance::postgres_client(&url).await;
    client
        .batch_execute(
            "ALTER TABLE workflow_attempts ADD CONSTRAINT refuse_boom CHECK (outcome <> 'boom')",
        )
        .await
        .unwrap();
    let finishes = tasks.iter().enumerate().map(|(i, t)| {
        let mut a = conformance::attempt(true);
        if i == 17 {
            a.outcome = "boom".to_owned();
        }
        let s = s.clone();
        async move {
            s.finish_attempt(
                &Fence::of(t),
                a,
                Completion::Succeeded { result: None },
                conformance::at(2),
            )
            .await
        }
    });
    let results = futures::future::join_all(finishes).await;
    let err = results[17].as_ref().expect_err("the refused attempt fails");
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    assert!(chain(err).contains("refuse_boom"), "{}", chain(err));
    for (t, r) in tasks.iter().zip(&results) {
        let now = s.get(&t.id).await.unwrap().unwrap();
        let attempts = s.attempts(&t.id).await.unwrap();
        match r {
            Ok(done) => {
                assert_eq!(done.status, TaskStatus::Completed);
                assert_eq!((now.status, attempts.len()), (TaskStatus::Completed, 1));
            }
            Err(e) => {
                // Failed with the batch: the same error, and nothing of it written.
                assert!(chain(e).contains("refuse_boom"), "{}: {}", t.id, chain(e));
                assert_eq!(now, *t, "rolled back");
                assert!(attempts.is_empty());
            }
        }
    }
    // The finishers go on: the others of the failed batch can finish now.
    for (t, r) in tasks.iter().zip(&results) {
        if r.is_err() && t.id != tasks[17].id {
            s.finish_attempt(
                &Fence::of(t),
                conformance::attempt(true),
                Completion::Succeeded { result: None },
                conformance::at(3),
            )
            .await
            .unwrap();
        }
    }
    assert_eq!(
        s.counts().await.unwrap().active(),
        1,
        "only the refused one is left"
    );
}

/// An error with its sources (a database error's detail is in its source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[test]
fn a_finish_whose_finishers_are_gone_is_an_error_not_a_hang() {
    // The store outlives the runtime that ran its finishers (they were dropped with it).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some((s, t)) = rt.block_on(async {
        let url = fresh_postgres_database().await?;
        let s = PostgresStore::connect(PostgresConfig::new(url))
            .await
            .unwrap();
        let t = claimed(&s, "w", 1).await.remove(0);
        Some((s, t))
    }) else {
        return;
    };
    drop(rt);
    let other = tokio::runtime::Runtime::new().unwrap();
    let r = other.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            s.finish_attempt(
                &Fence::of(&t),
                conformance::attempt(true),
                Completion::Succeeded { result: None },
                conformance::at(2),
            ),
        )
        .await
        .expect("answered, not left waiting")
    });
    let err = r.expect_err("no finisher");
    assert!(matches!(err, StoreError::Closed), "{err}");
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

// === group-committed enqueues ===

fn keyed(id: &str, key: &str) -> NewTask {
    let mut t = conformance::new_task(id, Priority::Low, conformance::at(0));
    t.idempotency_key = Some(key.to_owned());
    t
}

/// A plain client on the test database, for checks behind the store's back.
async fn raw(url: &str) -> tokio_postgres::Client {
    conformance::postgres_client(url).await
}

/// Every task id, and every id's number of `created` events.
async fn ids_and_created_events(url: &str) -> (HashSet<String>, HashMap<String, i64>) {
    let client = raw(url).await;
    let ids = client
        .query("SELECT id FROM workflow_tasks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let events = client
        .query(
            "SELECT task_id, count(*) FROM workflow_events WHERE reason = 'created' GROUP BY task_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (ids, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_are_group_committed_and_each_gets_its_own_answer() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let mut config = PostgresConfig::new(url.clone());
    config.pool_size = 8;
    let s = PostgresStore::connect(config).await.unwrap();
    for j in 0..10 {
        s.enqueue(keyed(&format!("pre{j}"), &format!("pre-key{j}")), NONE)
            .await
            .unwrap();
    }
    // Within a tenth (at least 64) of the limit every enqueue is counted exactly, so exactly
    // 50 more may be created, whatever the batches.
    const LIMIT: u64 = 60;
    let lim = EnqueueLimits {
        max_active: Some(LIMIT),
    };
    // 500 requests: new ids, new ids under 15 repeated keys, ids that exist, 10 ids used five
    // times each, and new ids under the keys of existing tasks.
    let request = |i: usize| -> NewTask {
        match i % 10 {
            0..=4 => conformance::new_task(&format!("a{i}"), Priority::Low, conformance::at(0)),
            5 | 6 => keyed(&format!("b{i}"), &format!("rk{}", (i / 10) % 15)),
            7 => {
                conformance::new_task(&format!("pre{}", i % 10), Priority::Low, conformance::at(0))
            }
            8 => conformance::new_task(
                &format!("d{}", (i / 10) % 10),
                Priority::Low,
                conformance::at(0),
            ),
            _ => keyed(&format!("e{i}"), &format!("pre-key{}", (i / 10) % 10)),
        }
    };
    let workers = (0..32).map(|w| {
        let s = s.clone();
        tokio::spawn(async move {
            let mine = (0..500).filter(|i| i % 32 == w).map(|i| {
                let s = s.clone();
                let t = request(i);
                async move { (i, s.enqueue(t, lim).await) }
            });
            futures::future::join_all(mine).await
        })
    });
    let mut results: Vec<(usize, Result<Enqueued, StoreError>)> = Vec::new();
    for w in futures::future::join_all(workers).await {
        results.extend(w.unwrap());
    }
    assert_eq!(results.len(), 500);
    let mut created: HashSet<String> = HashSet::new();
    let mut key_owner: HashMap<String, String> = HashMap::new();
    let mut existing_of: Vec<(String, String)> = Vec::new(); // (key, id answered)
    let mut duplicate_d: HashSet<String> = HashSet::new();
    let mut full = 0;
    for (i, r) in &results {
        let r = r.as_ref();
        match (i % 10, r) {
            (_, Err(StoreError::QueueFull { limit })) if i % 10 != 7 && i % 10 != 9 => {
                assert_eq!(*limit, LIMIT);
                full += 1;
            }
            (0..=4 | 5 | 6 | 8, Ok(Enqueued::Created(t))) => {
                assert_eq!(t.id, request(*i).id, "request {i}");
                assert!(t.seq > 0);
                assert!(created.insert(t.id.clone()), "{} created twice", t.id);
                if let Some(k) = &t.idempotency_key {
                    assert!(
                        key_owner.insert(k.clone(), t.id.clone()).is_none(),
                        "{k} twice"
                    );
                }
            }
            (5 | 6, Ok(Enqueued::Existing(t))) => {
                let key = request(*i).idempotency_key.unwrap();
                assert_eq!(t.idempotency_key.as_deref(), Some(key.as_str()));
                existing_of.push((key, t.id.clone()));
            }
            (7, Err(StoreError::Duplicate(id))) => assert_eq!(*id, request(*i).id),
            (8, Err(StoreError::Duplicate(id))) => {
                assert_eq!(*id, request(*i).id);
                duplicate_d.insert(id.clone());
            }
            (9, Ok(Enqueued::Existing(t))) => {
                assert_eq!(t.id, format!("pre{}", (i / 10) % 10), "request {i}");
                assert_eq!(t.status, TaskStatus::Pending);
            }
            (_, other) => panic!("request {i}: {other:?}"),
        }
    }
    assert_eq!(created.len() as u64, LIMIT - 10, "exactly up to the limit");
    assert!(full > 0);
    for (key, id) in &existing_of {
        assert_eq!(
            key_owner.get(key),
            Some(id),
            "{key}: existing of its creator"
        );
    }
    for id in &duplicate_d {
        assert!(created.contains(id), "{id} duplicate of a created one");
    }
    assert_eq!(s.counts().await.unwrap().active(), LIMIT);
    let (ids, events) = ids_and_created_events(&url).await;
    let mut expected = created.clone();
    expected.extend((0..10).map(|j| format!("pre{j}")));
    assert_eq!(ids, expected, "the table holds exactly the created tasks");
    assert_eq!(events.len(), expected.len());
    assert!(events.values().all(|n| *n == 1), "one created event each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_enqueueing_the_same_keys_and_ids_create_each_once() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let a = PostgresStore::connect(PostgresConfig::new(url.clone()))
        .await
        .unwrap();
    let b = PostgresStore::connect(PostgresConfig::new(url.clone()))
        .await
        .unwrap();
    // Both instances get the same 300 requests at once: their batches conflict with each
    // other's rows, which they find committed (or in flight) only when inserting.
    let request = |i: usize| -> NewTask {
        if i.is_multiple_of(2) {
            keyed(&format!("k{i}"), &format!("key{}", i % 40))
        } else {
            conformance::new_task(&format!("id{}", i % 50), Priority::Low, conformance::at(0))
        }
    };
    let workers = (0..32).map(|w| {
        let s = if w % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            let mine = (0..600).filter(|i| i % 16 == w / 2).map(|i| {
                let s = s.clone();
                async move { (i % 300, s.enqueue(request(i % 300), NONE).await) }
            });
            futures::future::join_all(mine).await
        })
    });
    let mut created: HashSet<String> = HashSet::new();
    let mut key_owner: HashMap<String, String> = HashMap::new();
    let mut existing: Vec<(String, String)> = Vec::new();
    let mut duplicates: HashSet<String> = HashSet::new();
    for w in futures::future::join_all(workers).await {
        for (i, r) in w.unwrap() {
            let req = request(i);
            match r {
                Ok(Enqueued::Created(t)) => {
                    assert_eq!(t.id, req.id);
                    assert!(created.insert(t.id.clone()), "{} created twice", t.id);
                    if let Some(k) = t.idempotency_key {
                        assert!(key_owner.insert(k.clone(), t.id).is_none(), "{k} twice");
                    }
                }
                Ok(Enqueued::Existing(t)) => {
                    let key = req.idempotency_key.expect("only keyed requests");
                    assert_eq!(t.idempotency_key.as_deref(), Some(key.as_str()));
                    existing.push((key, t.id));
                }
                Err(StoreError::Duplicate(id)) => {
                    assert_eq!(id, req.id);
                    duplicates.insert(id);
                }
                Err(e) => panic!("request {i}: {e:?}"),
            }
        }
    }
    // Even requests use 20 keys (each under a new id), odd ones 25 plain ids.
    assert_eq!(key_owner.len(), 20, "each key created once");
    assert_eq!(created.len(), 45, "each key and each plain id once");
    for (key, id) in &existing {
        assert_eq!(key_owner.get(key), Some(id));
    }
    assert!(duplicates.iter().all(|id| created.contains(id)));
    let (ids, events) = ids_and_created_events(&url).await;
    assert_eq!(ids, created);
    assert_eq!(events.len(), created.len());
    assert!(events.values().all(|n| *n == 1));
}

#[tokio::test]
async fn one_batch_answers_its_own_repeated_keys_and_ids_in_order() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let s = PostgresStore::connect(PostgresConfig::new(url.clone()))
        .await
        .unwrap();
    s.enqueue(keyed("old", "old-key"), NONE).await.unwrap();
    let new = |id: &str| conformance::new_task(id, Priority::Low, conformance::at(0));
    let check = |limits: EnqueueLimits| {
        let s = s.clone();
        async move {
            let p = |x: &str| format!("{x}-{:?}", limits.max_active);
            let requests = vec![
                keyed(&p("a"), &p("k")),
                keyed(&p("b"), &p("k")),
                new(&p("c")),
                new(&p("c")),
                new("old"),
                keyed(&p("d"), "old-key"),
                keyed(&p("c"), &p("k2")),
            ];
            // On this current-thread runtime all of them are queued before an enqueuer runs:
            // one batch, in this order.
            let out =
                futures::future::join_all(requests.into_iter().map(|t| s.enqueue(t, limits))).await;
            assert!(
                matches!(&out[0], Ok(Enqueued::Created(t)) if t.id == p("a")),
                "{out:?}"
            );
            assert!(
                matches!(&out[1], Ok(Enqueued::Existing(t)) if t.id == p("a")),
                "{out:?}"
            );
            assert!(
                matches!(&out[2], Ok(Enqueued::Created(t)) if t.id == p("c")),
                "{out:?}"
            );
            assert!(
                matches!(&out[3], Err(StoreError::Duplicate(id)) if *id == p("c")),
                "{out:?}"
            );
            assert!(
                matches!(&out[4], Err(StoreError::Duplicate(id)) if id == "old"),
                "{out:?}"
            );
            assert!(
                matches!(&out[5], Ok(Enqueued::Existing(t)) if t.id == "old"),
                "{out:?}"
            );
            assert!(
                matches!(&out[6], Err(StoreError::Duplicate(id)) if *id == p("c")),
                "{out:?}"
            );
            assert!(s.get(&p("b")).await.unwrap().is_none());
            assert!(s.get(&p("d")).await.unwrap().is_none());
        }
    };
    check(NONE).await;
    // The same near a limit (counted exactly), with room for all.
    check(EnqueueLimits {
        max_active: Some(10),
    })
    .await;
    // A full queue still answers existing keys and ids; only creations are refused, and
    // only those past the limit, the batch's own earlier creations counted (5 active now).
    let lim = EnqueueLimits {
        max_active: Some(7),
    };
    let requests = vec![
        keyed("x1", "old-key"),
        new("x2"),
        new("old"),
        new("x3"),
        keyed("x4", "kx"),
        keyed("x5", "kx"),
    ];
    let out = futures::future::join_all(requests.into_iter().map(|t| s.enqueue(t, lim))).await;
    assert!(
        matches!(&out[0], Ok(Enqueued::Existing(t)) if t.id == "old"),
        "{out:?}"
    );
    assert!(matches!(&out[1], Ok(Enqueued::Created(_))), "{out:?}");
    assert!(matches!(&out[2], Err(StoreError::Duplicate(_))), "{out:?}");
    assert!(matches!(&out[3], Ok(Enqueued::Created(_))), "{out:?}");
    assert!(
        matches!(&out[4], Err(StoreError::QueueFull { limit: 7 })),
        "{out:?}"
    );
    assert!(
        matches!(&out[5], Err(StoreError::QueueFull { limit: 7 })),
        "{out:?}"
    );
    assert_eq!(s.counts().await.unwrap().active(), 7);
    let (ids, events) = ids_and_created_events(&url).await;
    assert_eq!(ids.len(), 7);
    assert_eq!(events.len(), 7);
    assert!(events.values().all(|n| *n == 1));
}

#[tokio::test]
async fn a_database_error_fails_its_whole_enqueue_batch_and_a_refused_value_only_itself() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let s = PostgresStore::connect(PostgresConfig::new(url.clone()))
        .await
        .unwrap();
    let client = raw(&url).await;
    client
        .batch_execute(
            "ALTER TABLE workflow_tasks ADD CONSTRAINT refuse_boom CHECK (kind <> 'boom')",
        )
        .await
        .unwrap();
    let batch = |bad: usize, how: fn(&mut NewTask)| {
        (0..20).map(move |i| {
            let mut t =
                conformance::new_task(&format!("t{bad}-{i}"), Priority::Low, conformance::at(0));
            if i == bad {
                how(&mut t);
            }
            t
        })
    };
    let out = futures::future::join_all(
        batch(7, |t| t.kind = "boom".to_owned()).map(|t| s.enqueue(t, NONE)),
    )
    .await;
    for r in &out {
        let err = r.as_ref().expect_err("the whole batch fails");
        assert!(matches!(err, StoreError::Backend(_)), "{err}");
        assert!(chain(err).contains("refuse_boom"), "{}", chain(err));
    }
    assert_eq!(
        s.counts().await.unwrap().active(),
        0,
        "nothing of it written"
    );
    // The enqueuers go on; a value the database refuses (a NUL in a text column) fails alone.
    let out = futures::future::join_all(
        batch(3, |t| t.target = Some("a\0b".to_owned())).map(|t| s.enqueue(t, NONE)),
    )
    .await;
    for (i, r) in out.iter().enumerate() {
        if i == 3 {
            assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
        } else {
            assert!(matches!(r, Ok(Enqueued::Created(_))), "{i}: {r:?}");
        }
    }
    assert_eq!(s.counts().await.unwrap().active(), 19);
}

#[test]
fn an_enqueue_whose_enqueuers_are_gone_is_an_error_not_a_hang() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(s) = rt.block_on(async {
        let url = fresh_postgres_database().await?;
        Some(
            PostgresStore::connect(PostgresConfig::new(url))
                .await
                .unwrap(),
        )
    }) else {
        return;
    };
    drop(rt);
    let other = tokio::runtime::Runtime::new().unwrap();
    let r = other.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            s.enqueue(
                conformance::new_task("late", Priority::Low, conformance::at(0)),
                NONE,
            ),
        )
        .await
        .expect("answered, not left waiting")
    });
    let err = r.expect_err("no enqueuer");
    assert!(matches!(err, StoreError::Closed), "{err}");
}

#[tokio::test]
async fn close_answers_what_is_queued_then_refuses_writes() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let s = PostgresStore::connect(PostgresConfig::new(url.clone()))
        .await
        .unwrap();
    let writes: Vec<_> = (0..20)
        .map(|i| {
            let task = conformance::new_task(&format!("c{i}"), Priority::Low, conformance::at(0));
            s.enqueue(task, NONE)
        })
        .collect();
    // Every enqueue is queued before close stops the enqueuers: each is still written.
    let (written, ()) = tokio::join!(futures::future::join_all(writes), s.close());
    for w in written {
        w.expect("queued before close, so written");
    }
    let late = conformance::new_task("late", Priority::Low, conformance::at(0));
    let err = s.enqueue(late, NONE).await.expect_err("closed");
    assert!(matches!(err, StoreError::Closed), "{err}");
    s.close().await; // again: nothing to do
    let other = PostgresStore::connect(PostgresConfig::new(url))
        .await
        .unwrap();
    assert_eq!(other.counts().await.unwrap().active(), 20);
    other.close().await;
}
