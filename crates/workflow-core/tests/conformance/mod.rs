//! The conformance suite every `Store` backend must pass. A backend's test file declares
//! `mod conformance;` and calls `conformance_tests!(async_factory_expression);`.

#![allow(dead_code)] // each backend's test binary uses the whole suite, but rustc checks per file

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use workflow_core::{
    AttemptRecord, CallbackRecord, CancelOutcome, Completion, EnqueueLimits, Enqueued, Fence,
    NewTask, Priority, Release, Store, StoreError, TaskFilter, TaskStatus,
};

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap()
}

pub(crate) fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

pub(crate) fn new_task(id: &str, priority: Priority, run_at: DateTime<Utc>) -> NewTask {
    NewTask {
        id: id.to_owned(),
        kind: "webhook".to_owned(),
        priority,
        payload: serde_json::json!({"id": id}),
        target: Some("https://a.example:443".to_owned()),
        max_attempts: 3,
        run_at,
        idempotency_key: None,
    }
}

pub(crate) fn attempt(ok: bool) -> AttemptRecord {
    AttemptRecord {
        task_id: String::new(),
        n: 0,
        started_at: t0(),
        duration_ms: 12,
        status_code: Some(if ok { 200 } else { 500 }),
        error: (!ok).then(|| "HTTP 500".to_owned()),
        response: Some("body".to_owned()),
        outcome: if ok { "success" } else { "retryable" }.to_owned(),
    }
}

const LEASE: Duration = Duration::from_secs(30);
const NONE: EnqueueLimits = EnqueueLimits { max_active: None };

async fn put(s: &dyn Store, id: &str, p: Priority, run_at: DateTime<Utc>) {
    s.enqueue(new_task(id, p, run_at), NONE).await.unwrap();
}

async fn claim_ids(s: &dyn Store, now: DateTime<Utc>, max: usize) -> Vec<String> {
    s.claim_due("w1", now, LEASE, max, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect()
}

pub(crate) async fn enqueue_then_get_round_trips(s: Arc<dyn Store>) {
    let mut n = new_task("a", Priority::High, at(0));
    n.idempotency_key = Some("k".into());
    let e = s.enqueue(n, NONE).await.unwrap();
    let Enqueued::Created(t) = e else {
        panic!("not created")
    };
    assert_eq!(t.status, TaskStatus::Pending);
    let got = s.get("a").await.unwrap().unwrap();
    assert_eq!(got.id, "a");
    assert_eq!(got.priority, Priority::High);
    assert_eq!(got.payload, serde_json::json!({"id": "a"}));
    assert_eq!(got.next_run_at, Some(at(0)));
    assert_eq!(got.target.as_deref(), Some("https://a.example:443"));
    assert_eq!((got.attempt, got.tries, got.max_attempts), (0, 0, 3));
    assert_eq!(got.idempotency_key.as_deref(), Some("k"));
    assert!(s.get("nope").await.unwrap().is_none());
    let events = s.events("a").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].from, events[0].to), (None, TaskStatus::Pending));
}

pub(crate) async fn idempotency_key_returns_the_existing_task(s: Arc<dyn Store>) {
    let mut a = new_task("a", Priority::Low, at(0));
    a.idempotency_key = Some("same".into());
    let mut b = new_task("b", Priority::Low, at(0));
    b.idempotency_key = Some("same".into());
    s.enqueue(a, NONE).await.unwrap();
    match s.enqueue(b, NONE).await.unwrap() {
        Enqueued::Existing(t) => assert_eq!(t.id, "a"),
        other @ Enqueued::Created(_) => panic!("{other:?}"),
    }
    assert!(s.get("b").await.unwrap().is_none());
}

pub(crate) async fn duplicate_ids_are_refused(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Low, at(0)).await;
    let err = s
        .enqueue(new_task("a", Priority::Low, at(0)), NONE)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(id) if id == "a"));
}

pub(crate) async fn queue_full_counts_only_active_tasks(s: Arc<dyn Store>) {
    let lim = EnqueueLimits {
        max_active: Some(2),
    };
    s.enqueue(new_task("a", Priority::Low, at(0)), lim)
        .await
        .unwrap();
    s.enqueue(new_task("b", Priority::Low, at(0)), lim)
        .await
        .unwrap();
    let err = s
        .enqueue(new_task("c", Priority::Low, at(0)), lim)
        .await
        .unwrap_err();
    assert!(err.is_queue_full());
    let batch = s
        .enqueue_batch(vec![new_task("d", Priority::Low, at(0))], lim)
        .await
        .unwrap_err();
    assert!(batch.is_queue_full());
    assert!(
        s.get("d").await.unwrap().is_none(),
        "batch is all or nothing"
    );
    // Finishing one frees a slot.
    let t = s
        .claim_due("w1", at(0), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    s.finish_attempt(
        &Fence::of(&t),
        attempt(true),
        Completion::Succeeded { result: None },
        at(1),
    )
    .await
    .unwrap();
    s.enqueue(new_task("c", Priority::Low, at(0)), lim)
        .await
        .unwrap();
}

pub(crate) async fn claims_by_priority_then_due_time_then_creation(s: Arc<dyn Store>) {
    put(&*s, "low", Priority::Low, at(0)).await;
    put(&*s, "med-late", Priority::Medium, at(5)).await;
    put(&*s, "med-1", Priority::Medium, at(1)).await;
    put(&*s, "med-2", Priority::Medium, at(1)).await;
    put(&*s, "crit", Priority::Critical, at(2)).await;
    put(&*s, "high-future", Priority::High, at(100)).await;
    assert_eq!(
        claim_ids(&*s, at(10), 10).await,
        ["crit", "med-1", "med-2", "med-late", "low"]
    );
}

pub(crate) async fn claims_in_batches_and_not_before_due(s: Arc<dyn Store>) {
    for i in 0..5 {
        put(&*s, &format!("t{i}"), Priority::Medium, at(i)).await;
    }
    assert_eq!(claim_ids(&*s, at(10), 2).await, ["t0", "t1"]);
    assert_eq!(claim_ids(&*s, at(2), 10).await, ["t2"]);
    assert!(claim_ids(&*s, at(2), 10).await.is_empty());
}

pub(crate) async fn a_claim_sets_lease_owner_and_bumps_the_attempt(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let t = s
        .claim_due("w1", at(1), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(t.status, TaskStatus::Processing);
    assert_eq!(t.attempt, 1);
    assert_eq!(t.lease_owner.as_deref(), Some("w1"));
    assert_eq!(t.lease_until, Some(at(31)));
    assert_eq!(s.get("a").await.unwrap().unwrap(), t);
}

pub(crate) async fn an_expired_lease_is_reclaimed_and_the_stale_fence_rejected(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let first = s
        .claim_due("w1", at(0), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    assert!(
        s.claim_due("w2", at(29), LEASE, 1, &[])
            .await
            .unwrap()
            .is_empty(),
        "lease still held"
    );
    let second = s
        .claim_due("w2", at(30), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.attempt, 2);
    assert_eq!(second.lease_owner.as_deref(), Some("w2"));
    let err = s
        .finish_attempt(
            &Fence::of(&first),
            attempt(true),
            Completion::Succeeded { result: None },
            at(31),
        )
        .await
        .unwrap_err();
    assert!(err.is_fenced(), "{err}");
    assert!(
        s.attempts("a").await.unwrap().is_empty(),
        "nothing written by the stale worker"
    );
    let err = s
        .extend_lease(&Fence::of(&first), at(100))
        .await
        .unwrap_err();
    assert!(err.is_fenced());
    s.finish_attempt(
        &Fence::of(&second),
        attempt(true),
        Completion::Succeeded { result: None },
        at(31),
    )
    .await
    .unwrap();
    assert_eq!(
        s.get("a").await.unwrap().unwrap().status,
        TaskStatus::Completed
    );
}

pub(crate) async fn finishing_records_attempts_events_and_tries(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let t = s
        .claim_due("w1", at(0), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    let t = s
        .finish_attempt(
            &Fence::of(&t),
            attempt(false),
            Completion::Retry {
                at: at(60),
                error: "HTTP 500".into(),
            },
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(t.status, TaskStatus::Retrying);
    assert_eq!(t.tries, 1);
    assert_eq!(t.next_run_at, Some(at(60)));
    assert_eq!(t.last_error.as_deref(), Some("HTTP 500"));
    assert!(t.lease_owner.is_none());
    assert!(claim_ids(&*s, at(59), 5).await.is_empty());
    let t = s
        .claim_due("w1", at(60), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    let t = s
        .finish_attempt(
            &Fence::of(&t),
            attempt(true),
            Completion::Succeeded {
                result: Some(serde_json::json!({"r": 1})),
            },
            at(61),
        )
        .await
        .unwrap();
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.finished_at, Some(at(61)));
    assert_eq!(t.result, Some(serde_json::json!({"r": 1})));
    let attempts = s.attempts("a").await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.n).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(attempts[0].status_code, Some(500));
    assert_eq!(attempts[0].task_id, "a");
    let to: Vec<_> = s
        .events("a")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.to)
        .collect();
    assert_eq!(
        to,
        [
            TaskStatus::Pending,
            TaskStatus::Processing,
            TaskStatus::Retrying,
            TaskStatus::Processing,
            TaskStatus::Completed
        ]
    );
}

pub(crate) async fn a_permanent_failure_is_final(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let t = s
        .claim_due("w1", at(0), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    let t = s
        .finish_attempt(
            &Fence::of(&t),
            attempt(false),
            Completion::Failed {
                error: "gone".into(),
            },
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.last_error.as_deref(), Some("gone"));
    assert!(claim_ids(&*s, at(1000), 5).await.is_empty());
    assert!(matches!(
        s.cancel("a", "x", at(2)).await.unwrap(),
        CancelOutcome::AlreadyFinal(_)
    ));
    assert_eq!(
        s.get("a").await.unwrap().unwrap().status,
        TaskStatus::Failed,
        "final states never change"
    );
}

pub(crate) async fn release_does_not_spend_a_try(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let t = s
        .claim_due("w1", at(0), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    let t = s
        .release(
            &Fence::of(&t),
            Release {
                at: at(45),
                reason: "circuit open".into(),
            },
            at(1),
        )
        .await
        .unwrap();
    assert_eq!((t.status, t.tries), (TaskStatus::Pending, 0));
    assert_eq!(t.next_run_at, Some(at(45)));
    assert!(s.attempts("a").await.unwrap().is_empty());
    assert!(claim_ids(&*s, at(44), 5).await.is_empty());
    assert_eq!(claim_ids(&*s, at(45), 5).await, ["a"]);
}

pub(crate) async fn cancel_is_immediate_unless_processing(s: Arc<dyn Store>) {
    put(&*s, "pending", Priority::Medium, at(0)).await;
    put(&*s, "busy", Priority::Critical, at(0)).await;
    let busy = s
        .claim_due("w1", at(0), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(busy.id, "busy");
    match s
        .cancel("pending", "cancelled by user", at(1))
        .await
        .unwrap()
    {
        CancelOutcome::Cancelled(t) => assert_eq!(t.status, TaskStatus::Cancelled),
        other => panic!("{other:?}"),
    }
    match s.cancel("busy", "cancelled by user", at(1)).await.unwrap() {
        CancelOutcome::Requested(t) => assert!(t.cancel_requested),
        other => panic!("{other:?}"),
    }
    // The worker's failure ends it cancelled instead of retrying.
    let t = s
        .finish_attempt(
            &Fence::of(&busy),
            attempt(false),
            Completion::Retry {
                at: at(60),
                error: "x".into(),
            },
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert!(matches!(
        s.cancel("nope", "x", at(1)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(claim_ids(&*s, at(1000), 5).await.is_empty());
}

pub(crate) async fn retry_now_revives_a_failed_task(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    assert!(matches!(
        s.retry_now("a", at(0)).await,
        Err(StoreError::InvalidState { .. })
    ));
    let t = s
        .claim_due("w1", at(0), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    s.finish_attempt(
        &Fence::of(&t),
        attempt(false),
        Completion::Failed { error: "x".into() },
        at(1),
    )
    .await
    .unwrap();
    let t = s.retry_now("a", at(5)).await.unwrap();
    assert_eq!(t.status, TaskStatus::Pending);
    assert!(t.max_attempts > t.tries, "a fresh budget");
    assert!(t.finished_at.is_none());
    assert_eq!(claim_ids(&*s, at(5), 5).await, ["a"]);
}

pub(crate) async fn callbacks_are_recorded(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let cb = CallbackRecord {
        status: "resolved".into(),
        note: Some("done".into()),
        at: at(9),
    };
    let t = s.record_callback("a", cb.clone()).await.unwrap();
    assert_eq!(t.callback.as_ref(), Some(&cb));
    assert_eq!(
        s.get("a").await.unwrap().unwrap().callback,
        Some(cb.clone())
    );
    assert!(matches!(
        s.record_callback("zz", cb).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn list_filters_and_pages_newest_first(s: Arc<dyn Store>) {
    for i in 0..5 {
        let p = if i % 2 == 0 {
            Priority::High
        } else {
            Priority::Low
        };
        put(&*s, &format!("t{i}"), p, at(0)).await;
    }
    let page = s
        .list(&TaskFilter {
            limit: 2,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t4", "t3"]
    );
    let next = s
        .list(&TaskFilter {
            limit: 2,
            before_seq: page.next_cursor,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t2", "t1"]
    );
    let last = s
        .list(&TaskFilter {
            limit: 2,
            before_seq: next.next_cursor,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(last.tasks.len(), 1);
    assert_eq!(last.next_cursor, None);
    let high = s
        .list(&TaskFilter {
            priority: Some(Priority::High),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(high.tasks.len(), 3);
    let pending = s
        .list(&TaskFilter {
            status: Some(TaskStatus::Pending),
            target: Some("https://a.example:443".into()),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.tasks.len(), 5);
    let none = s
        .list(&TaskFilter {
            status: Some(TaskStatus::Failed),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert!(none.tasks.is_empty());
}

pub(crate) async fn full_targets_are_skipped(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Critical, at(0)).await;
    let mut other = new_task("b", Priority::Low, at(0));
    other.target = Some("https://b.example:443".into());
    s.enqueue(other, NONE).await.unwrap();
    let got = s
        .claim_due("w1", at(0), LEASE, 5, &["https://a.example:443".to_owned()])
        .await
        .unwrap();
    assert_eq!(got.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["b"]);
}

pub(crate) async fn next_due_at_and_counts_follow_the_state(s: Arc<dyn Store>) {
    assert_eq!(s.next_due_at().await.unwrap(), None);
    put(&*s, "a", Priority::Low, at(50)).await;
    put(&*s, "b", Priority::High, at(20)).await;
    assert_eq!(s.next_due_at().await.unwrap(), Some(at(20)));
    let t = s
        .claim_due("w1", at(20), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        s.next_due_at().await.unwrap(),
        Some(at(50)),
        "lease ends at 50 too"
    );
    s.extend_lease(&Fence::of(&t), at(500)).await.unwrap();
    assert_eq!(s.next_due_at().await.unwrap(), Some(at(50)));
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.active(), 2);
    assert!(
        counts
            .by_status_priority
            .contains(&(TaskStatus::Processing, Priority::High, 1))
    );
    assert!(
        counts
            .by_status_priority
            .contains(&(TaskStatus::Pending, Priority::Low, 1))
    );
    assert_eq!(counts.oldest_due_at, Some(at(50)));
}

pub(crate) async fn prune_removes_old_final_tasks_only(s: Arc<dyn Store>) {
    put(&*s, "done", Priority::Low, at(0)).await;
    put(&*s, "open", Priority::Low, at(0)).await;
    let t = s
        .claim_due("w1", at(0), LEASE, 1, &[])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(t.id, "done");
    s.finish_attempt(
        &Fence::of(&t),
        attempt(true),
        Completion::Succeeded { result: None },
        at(1),
    )
    .await
    .unwrap();
    assert_eq!(
        s.prune(at(1)).await.unwrap(),
        0,
        "finished exactly at the cutoff is kept"
    );
    assert_eq!(s.prune(at(2)).await.unwrap(), 1);
    assert!(s.get("done").await.unwrap().is_none());
    assert!(s.attempts("done").await.unwrap().is_empty());
    assert!(s.events("done").await.unwrap().is_empty());
    assert!(s.get("open").await.unwrap().is_some());
}

pub(crate) async fn enqueue_wakes_the_engine(s: Arc<dyn Store>) {
    let wake = s.wakeup();
    let waiter = tokio::spawn(async move { wake.notified().await });
    tokio::task::yield_now().await;
    put(&*s, "a", Priority::Low, at(0)).await;
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();
    s.ping().await.unwrap();
}

/// Stamps out one `#[tokio::test]` per rule for a backend. `$factory` is an expression giving
/// a future of `Arc<dyn Store>` (a fresh, empty store each time).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            enqueue_then_get_round_trips, idempotency_key_returns_the_existing_task,
            duplicate_ids_are_refused, queue_full_counts_only_active_tasks,
            claims_by_priority_then_due_time_then_creation, claims_in_batches_and_not_before_due,
            a_claim_sets_lease_owner_and_bumps_the_attempt,
            an_expired_lease_is_reclaimed_and_the_stale_fence_rejected,
            finishing_records_attempts_events_and_tries, a_permanent_failure_is_final,
            release_does_not_spend_a_try, cancel_is_immediate_unless_processing,
            retry_now_revives_a_failed_task, callbacks_are_recorded,
            list_filters_and_pages_newest_first, full_targets_are_skipped,
            next_due_at_and_counts_follow_the_state, prune_removes_old_final_tasks_only,
            enqueue_wakes_the_engine);
    };
    (@each $factory:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $factory.await;
                conformance::$name(store).await;
            }
        )*
    };
}
