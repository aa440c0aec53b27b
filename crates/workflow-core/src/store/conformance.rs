//! The conformance suite every [`Store`] backend must pass (cargo feature `conformance`).
//!
//! Each rule is an async function that takes a fresh, empty store and panics (with `assert!`)
//! when the backend breaks the rule: this module is test support, not library code. A backend
//! stamps out one `#[tokio::test]` per rule with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! // tests/store_mine.rs of a backend
//! async fn mine() -> Arc<dyn Store> { Arc::new(MyStore::open_empty().await.unwrap()) }
//! workflow_core::conformance_tests!(mine());
//! ```
//!
//! or runs them all in one test with [`run_all`]. A backend that needs a server uses
//! `conformance_tests!(skippable factory)` with a factory giving `Option<Arc<dyn Store>>`:
//! `None` skips the test (see [`fresh_postgres_database`]). Every rule passes explicit `now` values
//! around [`t0`], far from the wall clock, so no rule depends on real time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::error::StoreError;
use crate::model::{AttemptRecord, CallbackRecord, NewTask, Priority, Task, TaskStatus};
use crate::store::{
    CancelOutcome, Completion, EnqueueLimits, Enqueued, Fence, Release, Store, TaskFilter,
};

/// The suite's epoch: every rule's `now` is an offset from it.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0)
        .single()
        .unwrap_or_default()
}

/// [`t0`] plus `secs` seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

/// A webhook task for target `https://a.example:443`, 3 attempts allowed, due at `run_at`.
pub fn new_task(id: &str, priority: Priority, run_at: DateTime<Utc>) -> NewTask {
    NewTask {
        id: id.to_owned(),
        kind: "webhook".to_owned(),
        priority,
        payload: serde_json::json!({"id": id}),
        target: Some(TARGET_A.to_owned()),
        max_attempts: 3,
        run_at,
        idempotency_key: None,
    }
}

/// An attempt record: HTTP 200 when `ok`, else HTTP 500 (retryable).
pub fn attempt(ok: bool) -> AttemptRecord {
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

/// The target of [`new_task`].
pub const TARGET_A: &str = "https://a.example:443";
const TARGET_B: &str = "https://b.example:443";
const LEASE: Duration = Duration::from_secs(30);
const NONE: EnqueueLimits = EnqueueLimits { max_active: None };

async fn put(s: &dyn Store, id: &str, p: Priority, run_at: DateTime<Utc>) {
    s.enqueue(new_task(id, p, run_at), NONE)
        .await
        .expect("enqueue");
}

async fn claim_ids(s: &dyn Store, now: DateTime<Utc>, max: usize) -> Vec<String> {
    s.claim_due("w1", now, LEASE, max, &[])
        .await
        .expect("claim")
        .into_iter()
        .map(|t| t.id)
        .collect()
}

async fn claim_one(s: &dyn Store, owner: &str, now: DateTime<Utc>) -> Task {
    let mut got = s.claim_due(owner, now, LEASE, 1, &[]).await.expect("claim");
    assert_eq!(got.len(), 1, "one task due at {now}");
    got.remove(0)
}

async fn finish(s: &dyn Store, t: &Task, completion: Completion, now: DateTime<Utc>) -> Task {
    let ok = matches!(completion, Completion::Succeeded { .. });
    s.finish_attempt(&Fence::of(t), attempt(ok), completion, now)
        .await
        .expect("finish")
}

async fn status(s: &dyn Store, id: &str) -> TaskStatus {
    s.get(id).await.expect("get").expect("exists").status
}

/// Consumes a stored wakeup permit, if any, so the next wait proves a new notification.
fn drain(wake: &tokio::sync::Notify) {
    let _ = futures::FutureExt::now_or_never(wake.notified());
}

fn ids(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.id.as_str()).collect()
}

/// `enqueue` stores every field and a `created` event; `get` reads it back.
pub async fn enqueue_then_get_round_trips(s: Arc<dyn Store>) {
    let mut n = new_task("a", Priority::High, at(0));
    n.idempotency_key = Some("k".into());
    let Enqueued::Created(t) = s.enqueue(n, NONE).await.expect("enqueue") else {
        panic!("not created")
    };
    assert_eq!(t.status, TaskStatus::Pending);
    let got = s.get("a").await.expect("get").expect("exists");
    assert_eq!(got, t, "enqueue returns the stored row");
    assert_eq!(got.kind, "webhook");
    assert_eq!(got.priority, Priority::High);
    assert_eq!(got.payload, serde_json::json!({"id": "a"}));
    assert_eq!(got.next_run_at, Some(at(0)));
    assert_eq!(got.target.as_deref(), Some(TARGET_A));
    assert_eq!((got.attempt, got.tries, got.max_attempts), (0, 0, 3));
    assert_eq!(got.idempotency_key.as_deref(), Some("k"));
    assert!(got.lease_owner.is_none() && got.lease_until.is_none() && !got.cancel_requested);
    assert!(got.finished_at.is_none() && got.result.is_none() && got.callback.is_none());
    assert!(s.get("nope").await.expect("get").is_none());
    let events = s.events("a").await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].from, events[0].to), (None, TaskStatus::Pending));
    assert_eq!(events[0].task_id, "a");
    put(&*s, "b", Priority::Low, at(0)).await;
    let b = s.get("b").await.expect("get").expect("exists");
    assert!(b.seq > got.seq, "seq grows with creation order");
}

/// Enqueueing an existing idempotency key returns the existing task and stores nothing.
pub async fn idempotency_key_returns_the_existing_task(s: Arc<dyn Store>) {
    let mut a = new_task("a", Priority::Low, at(0));
    a.idempotency_key = Some("same".into());
    let mut b = new_task("b", Priority::Low, at(0));
    b.idempotency_key = Some("same".into());
    s.enqueue(a, NONE).await.expect("enqueue");
    match s.enqueue(b.clone(), NONE).await.expect("enqueue") {
        Enqueued::Existing(t) => assert_eq!(t.id, "a"),
        other @ Enqueued::Created(_) => panic!("{other:?}"),
    }
    assert!(s.get("b").await.expect("get").is_none());
    // The same in a batch, with a key repeated inside the batch too.
    let mut c = new_task("c", Priority::Low, at(0));
    c.idempotency_key = Some("fresh".into());
    let mut d = new_task("d", Priority::Low, at(0));
    d.idempotency_key = Some("fresh".into());
    let out = s.enqueue_batch(vec![b, c, d], NONE).await.expect("batch");
    assert!(matches!(&out[0], Enqueued::Existing(t) if t.id == "a"));
    assert!(matches!(&out[1], Enqueued::Created(t) if t.id == "c"));
    assert!(matches!(&out[2], Enqueued::Existing(t) if t.id == "c"));
    assert!(s.get("d").await.expect("get").is_none());
    assert_eq!(s.counts().await.expect("counts").active(), 2);
}

/// An id that exists is refused with [`StoreError::Duplicate`]; a batch with one is refused whole.
pub async fn duplicate_ids_are_refused(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Low, at(0)).await;
    let err = s
        .enqueue(new_task("a", Priority::Low, at(0)), NONE)
        .await
        .expect_err("duplicate");
    assert!(
        matches!(err, StoreError::Duplicate(ref id) if id == "a"),
        "{err}"
    );
    let batch = vec![
        new_task("x", Priority::Low, at(0)),
        new_task("a", Priority::Low, at(0)),
    ];
    let err = s.enqueue_batch(batch, NONE).await.expect_err("duplicate");
    assert!(matches!(err, StoreError::Duplicate(_)), "{err}");
    assert!(s.get("x").await.expect("get").is_none(), "all or nothing");
    let twice = vec![
        new_task("y", Priority::Low, at(0)),
        new_task("y", Priority::Low, at(0)),
    ];
    assert!(matches!(
        s.enqueue_batch(twice, NONE).await,
        Err(StoreError::Duplicate(_))
    ));
    assert!(s.get("y").await.expect("get").is_none());
}

/// The queue limit counts non-final tasks only and applies to batches as a whole.
pub async fn queue_full_counts_only_active_tasks(s: Arc<dyn Store>) {
    let lim = EnqueueLimits {
        max_active: Some(2),
    };
    s.enqueue(new_task("a", Priority::Low, at(0)), lim)
        .await
        .expect("a");
    s.enqueue(new_task("b", Priority::Low, at(0)), lim)
        .await
        .expect("b");
    let err = s
        .enqueue(new_task("c", Priority::Low, at(0)), lim)
        .await
        .expect_err("full");
    assert!(err.is_queue_full(), "{err}");
    assert!(matches!(err, StoreError::QueueFull { limit: 2 }));
    let batch = s
        .enqueue_batch(vec![new_task("d", Priority::Low, at(0))], lim)
        .await
        .expect_err("full");
    assert!(batch.is_queue_full());
    assert!(
        s.get("d").await.expect("get").is_none(),
        "batch is all or nothing"
    );
    // Processing tasks still count; finishing one frees a slot.
    let t = claim_one(&*s, "w1", at(0)).await;
    assert!(
        s.enqueue(new_task("c", Priority::Low, at(0)), lim)
            .await
            .is_err()
    );
    finish(&*s, &t, Completion::Succeeded { result: None }, at(1)).await;
    s.enqueue(new_task("c", Priority::Low, at(0)), lim)
        .await
        .expect("a slot was freed");
    // A batch that would cross the limit is refused whole.
    let two = vec![
        new_task("e", Priority::Low, at(0)),
        new_task("f", Priority::Low, at(0)),
    ];
    let lim3 = EnqueueLimits {
        max_active: Some(3),
    };
    assert!(s.enqueue_batch(two, lim3).await.is_err());
    assert!(s.get("e").await.expect("get").is_none());
}

/// Claims go by priority (critical first), then due time, then creation order.
pub async fn claims_by_priority_then_due_time_then_creation(s: Arc<dyn Store>) {
    put(&*s, "low", Priority::Low, at(0)).await;
    put(&*s, "med-late", Priority::Medium, at(5)).await;
    put(&*s, "med-1", Priority::Medium, at(1)).await;
    put(&*s, "med-2", Priority::Medium, at(1)).await;
    put(&*s, "crit", Priority::Critical, at(2)).await;
    put(&*s, "high-future", Priority::High, at(100)).await;
    put(&*s, "high", Priority::High, at(3)).await;
    assert_eq!(
        claim_ids(&*s, at(10), 10).await,
        ["crit", "high", "med-1", "med-2", "med-late", "low"]
    );
}

/// A claim takes at most `max` tasks and never one that is not due yet.
pub async fn claims_in_batches_and_not_before_due(s: Arc<dyn Store>) {
    for i in 0..5 {
        put(&*s, &format!("t{i}"), Priority::Medium, at(i)).await;
    }
    assert!(claim_ids(&*s, at(10), 0).await.is_empty(), "max 0");
    assert_eq!(claim_ids(&*s, at(10), 2).await, ["t0", "t1"]);
    assert_eq!(claim_ids(&*s, at(2), 10).await, ["t2"], "due exactly now");
    assert!(claim_ids(&*s, at(2), 10).await.is_empty());
    assert_eq!(claim_ids(&*s, at(10), 10).await, ["t3", "t4"]);
}

/// A claim sets `processing`, the owner, the lease end and bumps `attempt` (not `tries`).
pub async fn a_claim_sets_lease_owner_and_bumps_the_attempt(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let t = claim_one(&*s, "w1", at(1)).await;
    assert_eq!(t.status, TaskStatus::Processing);
    assert_eq!((t.attempt, t.tries), (1, 0));
    assert_eq!(t.lease_owner.as_deref(), Some("w1"));
    assert_eq!(t.lease_until, Some(at(31)));
    assert_eq!(s.get("a").await.expect("get"), Some(t));
    let events = s.events("a").await.expect("events");
    assert_eq!(
        events.last().map(|e| (e.from, e.to)),
        Some((Some(TaskStatus::Pending), TaskStatus::Processing))
    );
}

/// An expired lease makes the task claimable again with a new attempt number, and the old
/// claim's writes are rejected with [`StoreError::Fenced`] without writing anything.
pub async fn an_expired_lease_is_reclaimed_and_the_stale_fence_rejected(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let first = claim_one(&*s, "w1", at(0)).await;
    assert!(
        s.claim_due("w2", at(29), LEASE, 1, &[])
            .await
            .expect("claim")
            .is_empty(),
        "lease still held"
    );
    let second = claim_one(&*s, "w2", at(30)).await;
    assert_eq!(second.attempt, 2);
    assert_eq!(second.lease_owner.as_deref(), Some("w2"));
    let events_before = s.events("a").await.expect("events").len();
    let stale = Fence::of(&first);
    let err = s
        .finish_attempt(
            &stale,
            attempt(true),
            Completion::Succeeded { result: None },
            at(31),
        )
        .await
        .expect_err("fenced");
    assert!(err.is_fenced(), "{err}");
    let err = s
        .release(
            &stale,
            Release {
                at: at(31),
                reason: "x".into(),
            },
            at(31),
        )
        .await
        .expect_err("fenced");
    assert!(err.is_fenced(), "{err}");
    let err = s.extend_lease(&stale, at(100)).await.expect_err("fenced");
    assert!(err.is_fenced(), "{err}");
    // Same attempt number, other owner: fenced too.
    let mut wrong_owner = Fence::of(&second);
    wrong_owner.owner = "w1".into();
    assert!(s.extend_lease(&wrong_owner, at(100)).await.is_err());
    assert!(
        s.attempts("a").await.expect("attempts").is_empty(),
        "nothing written by the stale worker"
    );
    assert_eq!(s.events("a").await.expect("events").len(), events_before);
    assert_eq!(s.get("a").await.expect("get"), Some(second.clone()));
    let done = finish(&*s, &second, Completion::Succeeded { result: None }, at(31)).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!((done.attempt, done.tries), (2, 1));
}

/// `extend_lease` pushes the lease end, so the task is not reclaimed at the old end.
pub async fn an_extended_lease_is_not_reclaimed(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let t = claim_one(&*s, "w1", at(0)).await;
    s.extend_lease(&Fence::of(&t), at(100))
        .await
        .expect("extend");
    assert!(claim_ids(&*s, at(99), 5).await.is_empty());
    assert_eq!(s.next_due_at().await.expect("next"), Some(at(100)));
    let t = s.get("a").await.expect("get").expect("exists");
    assert_eq!(t.lease_until, Some(at(100)));
    finish(&*s, &t, Completion::Succeeded { result: None }, at(50)).await;
    assert_eq!(status(&*s, "a").await, TaskStatus::Completed);
}

/// Retry, then success: attempts numbered 1, 2 with their records, events for every change.
pub async fn finishing_records_attempts_events_and_tries(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let t = claim_one(&*s, "w1", at(0)).await;
    let t = finish(
        &*s,
        &t,
        Completion::Retry {
            at: at(60),
            error: "HTTP 500".into(),
        },
        at(1),
    )
    .await;
    assert_eq!(t.status, TaskStatus::Retrying);
    assert_eq!(t.tries, 1);
    assert_eq!(t.next_run_at, Some(at(60)));
    assert_eq!(t.last_error.as_deref(), Some("HTTP 500"));
    assert!(t.lease_owner.is_none() && t.lease_until.is_none() && t.finished_at.is_none());
    assert_eq!(s.get("a").await.expect("get"), Some(t));
    assert!(claim_ids(&*s, at(59), 5).await.is_empty());
    let t = claim_one(&*s, "w1", at(60)).await;
    let t = finish(
        &*s,
        &t,
        Completion::Succeeded {
            result: Some(serde_json::json!({"r": 1})),
        },
        at(61),
    )
    .await;
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.finished_at, Some(at(61)));
    assert_eq!(t.result, Some(serde_json::json!({"r": 1})));
    assert_eq!(t.last_error, None, "success clears the error");
    assert_eq!((t.attempt, t.tries), (2, 2));
    assert_eq!(t.next_run_at, None);
    let attempts = s.attempts("a").await.expect("attempts");
    assert_eq!(attempts.iter().map(|a| a.n).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(attempts[0].status_code, Some(500));
    assert_eq!(attempts[0].error.as_deref(), Some("HTTP 500"));
    assert_eq!(attempts[0].outcome, "retryable");
    assert_eq!(attempts[0].duration_ms, 12);
    assert_eq!(attempts[0].started_at, t0());
    assert_eq!(attempts[1].outcome, "success");
    assert!(attempts.iter().all(|a| a.task_id == "a"));
    let to: Vec<_> = s
        .events("a")
        .await
        .expect("events")
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

/// A permanent failure ends `failed`; nothing moves a final task afterwards.
pub async fn a_permanent_failure_is_final(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let t = claim_one(&*s, "w1", at(0)).await;
    let t = finish(
        &*s,
        &t,
        Completion::Failed {
            error: "gone".into(),
        },
        at(1),
    )
    .await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.last_error.as_deref(), Some("gone"));
    assert_eq!(t.finished_at, Some(at(1)));
    assert!(claim_ids(&*s, at(1000), 5).await.is_empty());
    assert_eq!(s.next_due_at().await.expect("next"), None);
    assert_eq!(s.attempts("a").await.expect("attempts").len(), 1);
}

/// Final states never change: no claim, no finish, no release, no cancel moves them.
pub async fn final_states_never_change(s: Arc<dyn Store>) {
    for id in ["done", "failed", "cancelled"] {
        put(&*s, id, Priority::Medium, at(0)).await;
    }
    let done = claim_one(&*s, "w1", at(0)).await;
    let failed = claim_one(&*s, "w1", at(0)).await;
    finish(&*s, &done, Completion::Succeeded { result: None }, at(1)).await;
    finish(
        &*s,
        &failed,
        Completion::Failed { error: "x".into() },
        at(1),
    )
    .await;
    s.cancel("cancelled", "cancelled by user", at(1))
        .await
        .expect("cancel");
    let before: Vec<_> = [&done, &failed].into_iter().map(Fence::of).collect();
    let snapshot = |s: Arc<dyn Store>| async move {
        let mut out = Vec::new();
        for id in ["done", "failed", "cancelled"] {
            out.push(s.get(id).await.expect("get").expect("exists"));
        }
        out
    };
    let frozen = snapshot(s.clone()).await;
    assert!(claim_ids(&*s, at(10_000), 10).await.is_empty());
    for fence in &before {
        let f = s
            .finish_attempt(
                fence,
                attempt(true),
                Completion::Succeeded { result: None },
                at(2),
            )
            .await;
        assert!(matches!(f, Err(StoreError::Fenced { .. })), "{f:?}");
        let r = s
            .release(
                fence,
                Release {
                    at: at(2),
                    reason: "x".into(),
                },
                at(2),
            )
            .await;
        assert!(matches!(r, Err(StoreError::Fenced { .. })), "{r:?}");
    }
    for id in ["done", "failed", "cancelled"] {
        let out = s.cancel(id, "again", at(3)).await.expect("cancel");
        assert!(
            matches!(out, CancelOutcome::AlreadyFinal(ref t) if t.id == id),
            "{out:?}"
        );
    }
    assert!(matches!(
        s.retry_now("done", at(3)).await,
        Err(StoreError::InvalidState {
            status: TaskStatus::Completed,
            ..
        })
    ));
    assert_eq!(snapshot(s.clone()).await, frozen);
}

/// `release` gives a task back without an attempt: `pending` before any try, `retrying` after.
pub async fn release_does_not_spend_a_try(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let t = claim_one(&*s, "w1", at(0)).await;
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
        .expect("release");
    assert_eq!((t.status, t.tries, t.attempt), (TaskStatus::Pending, 0, 1));
    assert_eq!(t.next_run_at, Some(at(45)));
    assert!(t.lease_owner.is_none() && t.lease_until.is_none());
    assert!(s.attempts("a").await.expect("attempts").is_empty());
    let events = s.events("a").await.expect("events");
    assert_eq!(
        events.last().map(|e| e.reason.as_str()),
        Some("circuit open")
    );
    assert!(claim_ids(&*s, at(44), 5).await.is_empty());
    let t = claim_one(&*s, "w1", at(45)).await;
    assert_eq!(t.attempt, 2, "every claim bumps the fence");
    let t = finish(
        &*s,
        &t,
        Completion::Retry {
            at: at(50),
            error: "x".into(),
        },
        at(46),
    )
    .await;
    assert_eq!(t.tries, 1);
    assert_eq!(
        s.attempts("a").await.expect("attempts")[0].n,
        1,
        "attempt records count tries, not claims"
    );
    let t = claim_one(&*s, "w1", at(50)).await;
    let t = s
        .release(
            &Fence::of(&t),
            Release {
                at: at(70),
                reason: "shutdown".into(),
            },
            at(51),
        )
        .await
        .expect("release");
    assert_eq!((t.status, t.tries), (TaskStatus::Retrying, 1));
}

/// Cancel ends pending and retrying tasks at once; a processing task is flagged and its
/// worker's finish ends it `cancelled` (a success still ends `completed`).
pub async fn cancel_is_immediate_unless_processing(s: Arc<dyn Store>) {
    put(&*s, "busy", Priority::Critical, at(0)).await;
    put(&*s, "busy-ok", Priority::Critical, at(0)).await;
    put(&*s, "retrying", Priority::High, at(0)).await;
    put(&*s, "pending", Priority::Medium, at(0)).await;
    let busy = claim_one(&*s, "w1", at(0)).await;
    let busy_ok = claim_one(&*s, "w1", at(0)).await;
    assert_eq!((busy.id.as_str(), busy_ok.id.as_str()), ("busy", "busy-ok"));
    let r = claim_one(&*s, "w1", at(0)).await;
    finish(
        &*s,
        &r,
        Completion::Retry {
            at: at(60),
            error: "x".into(),
        },
        at(0),
    )
    .await;
    for id in ["pending", "retrying"] {
        match s
            .cancel(id, "cancelled by user", at(1))
            .await
            .expect("cancel")
        {
            CancelOutcome::Cancelled(t) => {
                assert_eq!(t.status, TaskStatus::Cancelled);
                assert_eq!(t.finished_at, Some(at(1)));
                assert_eq!(t.next_run_at, None);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(status(&*s, id).await, TaskStatus::Cancelled);
    }
    for t in [&busy, &busy_ok] {
        match s
            .cancel(&t.id, "cancelled by user", at(1))
            .await
            .expect("cancel")
        {
            CancelOutcome::Requested(t) => {
                assert!(t.cancel_requested);
                assert_eq!(t.status, TaskStatus::Processing);
            }
            other => panic!("{other:?}"),
        }
        let stored = s.get(&t.id).await.expect("get").expect("exists");
        assert!(stored.cancel_requested, "the flag is stored");
    }
    let t = finish(
        &*s,
        &busy,
        Completion::Retry {
            at: at(60),
            error: "x".into(),
        },
        at(2),
    )
    .await;
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_eq!(t.finished_at, Some(at(2)));
    let t = finish(&*s, &busy_ok, Completion::Succeeded { result: None }, at(2)).await;
    assert_eq!(t.status, TaskStatus::Completed);
    assert!(matches!(
        s.cancel("nope", "x", at(1)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(claim_ids(&*s, at(1000), 5).await.is_empty());
    assert_eq!(s.counts().await.expect("counts").active(), 0);
}

/// A cancel requested while processing also wins over a release.
pub async fn a_release_after_cancel_request_ends_cancelled(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let t = claim_one(&*s, "w1", at(0)).await;
    s.cancel("a", "cancelled by user", at(1))
        .await
        .expect("cancel");
    let t = s
        .release(
            &Fence::of(&t),
            Release {
                at: at(1),
                reason: "shutdown".into(),
            },
            at(2),
        )
        .await
        .expect("release");
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert!(claim_ids(&*s, at(100), 5).await.is_empty());
}

/// `retry_now` makes a failed task due now with a fresh budget; other statuses are refused.
pub async fn retry_now_revives_a_failed_task(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    assert!(matches!(
        s.retry_now("a", at(0)).await,
        Err(StoreError::InvalidState {
            status: TaskStatus::Pending,
            ..
        })
    ));
    assert!(matches!(
        s.retry_now("zz", at(0)).await,
        Err(StoreError::NotFound(_))
    ));
    let t = claim_one(&*s, "w1", at(0)).await;
    finish(&*s, &t, Completion::Failed { error: "x".into() }, at(1)).await;
    let wake = s.wakeup();
    drain(&wake);
    let t = s.retry_now("a", at(5)).await.expect("retry");
    assert_eq!(t.status, TaskStatus::Pending);
    assert_eq!(t.next_run_at, Some(at(5)));
    assert_eq!(t.max_attempts, 4, "a fresh budget of 3 after 1 try");
    assert!(t.finished_at.is_none());
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("retry_now wakes the engine");
    let t = claim_one(&*s, "w1", at(5)).await;
    assert_eq!(t.id, "a");
    finish(&*s, &t, Completion::Succeeded { result: None }, at(6)).await;
    let ns: Vec<u32> = s
        .attempts("a")
        .await
        .expect("attempts")
        .iter()
        .map(|a| a.n)
        .collect();
    assert_eq!(ns, [1, 2], "attempt numbers stay unique");
}

/// The receiver's report is stored on the task (the latest one wins), and each one is in the
/// task's history.
pub async fn callbacks_are_recorded(s: Arc<dyn Store>) {
    put(&*s, "a", Priority::Medium, at(0)).await;
    let first = CallbackRecord {
        status: "accepted".into(),
        note: None,
        at: at(8),
    };
    let cb = CallbackRecord {
        status: "resolved".into(),
        note: Some("done".into()),
        at: at(9),
    };
    s.record_callback("a", first).await.expect("callback");
    let t = s.record_callback("a", cb.clone()).await.expect("callback");
    assert_eq!(t.callback.as_ref(), Some(&cb));
    assert_eq!(
        s.get("a").await.expect("get").expect("exists").callback,
        Some(cb.clone())
    );
    assert_eq!(
        t.status,
        TaskStatus::Pending,
        "a callback changes no status"
    );
    let history: Vec<(Option<TaskStatus>, TaskStatus, String)> = s
        .events("a")
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.reason.starts_with("callback"))
        .map(|e| (e.from, e.to, e.reason))
        .collect();
    let pending = Some(TaskStatus::Pending);
    assert_eq!(
        history,
        [
            (
                pending,
                TaskStatus::Pending,
                "callback: accepted".to_owned()
            ),
            (
                pending,
                TaskStatus::Pending,
                "callback: resolved: done".to_owned()
            ),
        ]
    );
    assert!(matches!(
        s.record_callback("zz", cb).await,
        Err(StoreError::NotFound(_))
    ));
}

/// `list` filters by status, priority, target and kind, newest first, with cursor paging.
pub async fn list_filters_and_pages_newest_first(s: Arc<dyn Store>) {
    for i in 0..5 {
        let p = if i % 2 == 0 {
            Priority::High
        } else {
            Priority::Low
        };
        let mut t = new_task(&format!("t{i}"), p, at(0));
        if i == 4 {
            t.kind = "bot_job".into();
            t.target = Some(TARGET_B.into());
        }
        s.enqueue(t, NONE).await.expect("enqueue");
    }
    let page = |f: TaskFilter| {
        let s = s.clone();
        async move { s.list(&f).await.expect("list") }
    };
    let first = page(TaskFilter {
        limit: 2,
        ..TaskFilter::default()
    })
    .await;
    assert_eq!(ids(&first.tasks), ["t4", "t3"]);
    let next = page(TaskFilter {
        limit: 2,
        before_seq: first.next_cursor,
        ..TaskFilter::default()
    })
    .await;
    assert_eq!(ids(&next.tasks), ["t2", "t1"]);
    let last = page(TaskFilter {
        limit: 2,
        before_seq: next.next_cursor,
        ..TaskFilter::default()
    })
    .await;
    assert_eq!(ids(&last.tasks), ["t0"]);
    assert_eq!(last.next_cursor, None);
    let exact = page(TaskFilter {
        limit: 5,
        ..TaskFilter::default()
    })
    .await;
    assert_eq!(exact.tasks.len(), 5);
    assert_eq!(exact.next_cursor, None, "no empty last page");
    let all = page(TaskFilter::default()).await;
    assert_eq!(all.tasks.len(), 5, "limit 0 means the default page");
    let high = page(TaskFilter {
        priority: Some(Priority::High),
        ..TaskFilter::default()
    })
    .await;
    assert_eq!(ids(&high.tasks), ["t4", "t2", "t0"]);
    let a = page(TaskFilter {
        status: Some(TaskStatus::Pending),
        target: Some(TARGET_A.into()),
        ..TaskFilter::default()
    })
    .await;
    assert_eq!(ids(&a.tasks), ["t3", "t2", "t1", "t0"]);
    let bot = page(TaskFilter {
        kind: Some("bot_job".into()),
        ..TaskFilter::default()
    })
    .await;
    assert_eq!(ids(&bot.tasks), ["t4"]);
    let high_paged = page(TaskFilter {
        priority: Some(Priority::High),
        limit: 1,
        before_seq: Some(high.tasks[0].seq),
        ..TaskFilter::default()
    })
    .await;
    assert_eq!(ids(&high_paged.tasks), ["t2"]);
    assert!(high_paged.next_cursor.is_some());
    let failed = page(TaskFilter {
        status: Some(TaskStatus::Failed),
        ..TaskFilter::default()
    })
    .await;
    assert!(failed.tasks.is_empty() && failed.next_cursor.is_none());
}

/// Tasks of targets in `skip_targets` are left alone, even when many of them are due first.
pub async fn full_targets_are_skipped(s: Arc<dyn Store>) {
    // More due tasks for the full target than any claim batch, ahead of the others.
    let batch: Vec<NewTask> = (0..300)
        .map(|i| new_task(&format!("a{i}"), Priority::Critical, at(0)))
        .collect();
    s.enqueue_batch(batch, NONE).await.expect("batch");
    let mut b = new_task("b", Priority::Critical, at(1));
    b.target = Some(TARGET_B.into());
    s.enqueue(b, NONE).await.expect("enqueue");
    let mut none = new_task("untargeted", Priority::Low, at(1));
    none.target = None;
    s.enqueue(none, NONE).await.expect("enqueue");
    let got = s
        .claim_due("w1", at(5), LEASE, 5, &[TARGET_A.to_owned()])
        .await
        .expect("claim");
    assert_eq!(ids(&got), ["b", "untargeted"]);
    // Expired leases of a full target are skipped as well; other targets' are reclaimed.
    let a = s
        .claim_due("w1", at(5), LEASE, 1, &[])
        .await
        .expect("claim");
    assert_eq!(ids(&a), ["a0"]);
    let got = s
        .claim_due("w2", at(100), LEASE, 5, &[TARGET_A.to_owned()])
        .await
        .expect("claim");
    assert_eq!(ids(&got), ["b", "untargeted"]);
}

/// `next_due_at` covers due times and lease ends; `counts` groups by status and priority.
pub async fn next_due_at_and_counts_follow_the_state(s: Arc<dyn Store>) {
    assert_eq!(s.next_due_at().await.expect("next"), None);
    assert_eq!(s.counts().await.expect("counts"), Default::default());
    put(&*s, "a", Priority::Low, at(50)).await;
    put(&*s, "b", Priority::High, at(20)).await;
    put(&*s, "c", Priority::Critical, at(40)).await;
    assert_eq!(s.next_due_at().await.expect("next"), Some(at(20)));
    let b = s
        .claim_due("w1", at(20), LEASE, 1, &[])
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(b.id, "b");
    assert_eq!(
        s.next_due_at().await.expect("next"),
        Some(at(40)),
        "c is due before b's lease ends at 50"
    );
    s.extend_lease(&Fence::of(&b), at(500))
        .await
        .expect("extend");
    s.cancel("c", "x", at(21)).await.expect("cancel");
    assert_eq!(s.next_due_at().await.expect("next"), Some(at(50)));
    let counts = s.counts().await.expect("counts");
    assert_eq!(counts.active(), 2);
    let mut rows = counts.by_status_priority.clone();
    rows.sort_by_key(|(st, p, _)| (st.as_str(), p.rank()));
    assert_eq!(
        rows,
        [
            (TaskStatus::Cancelled, Priority::Critical, 1),
            (TaskStatus::Pending, Priority::Low, 1),
            (TaskStatus::Processing, Priority::High, 1),
        ]
    );
    assert_eq!(counts.oldest_due_at, Some(at(50)));
    finish(&*s, &b, Completion::Succeeded { result: None }, at(30)).await;
    let a = claim_one(&*s, "w1", at(50)).await;
    finish(&*s, &a, Completion::Failed { error: "x".into() }, at(51)).await;
    assert_eq!(s.next_due_at().await.expect("next"), None);
    let counts = s.counts().await.expect("counts");
    assert_eq!((counts.active(), counts.oldest_due_at), (0, None));
    let total: u64 = counts.by_status_priority.iter().map(|r| r.2).sum();
    assert_eq!(total, 3);
}

/// `prune` deletes final tasks finished before the cutoff, with their attempts and events.
pub async fn prune_removes_old_final_tasks_only(s: Arc<dyn Store>) {
    let mut done = new_task("done", Priority::Low, at(0));
    done.idempotency_key = Some("key".into());
    s.enqueue(done, NONE).await.expect("enqueue");
    put(&*s, "late", Priority::Low, at(0)).await;
    put(&*s, "open", Priority::Low, at(0)).await;
    let t = claim_one(&*s, "w1", at(0)).await;
    assert_eq!(t.id, "done");
    finish(&*s, &t, Completion::Succeeded { result: None }, at(1)).await;
    let late = claim_one(&*s, "w1", at(0)).await;
    assert_eq!(late.id, "late");
    finish(&*s, &late, Completion::Failed { error: "x".into() }, at(10)).await;
    assert_eq!(
        s.prune(at(1)).await.expect("prune"),
        0,
        "finished exactly at the cutoff is kept"
    );
    assert_eq!(s.prune(at(2)).await.expect("prune"), 1);
    assert!(s.get("done").await.expect("get").is_none());
    assert!(s.attempts("done").await.expect("attempts").is_empty());
    assert!(s.events("done").await.expect("events").is_empty());
    assert!(
        s.get("open").await.expect("get").is_some(),
        "active tasks stay"
    );
    assert!(
        s.get("late").await.expect("get").is_some(),
        "recent ones stay"
    );
    assert_eq!(s.attempts("late").await.expect("attempts").len(), 1);
    // The idempotency key of a pruned task can be used again.
    let mut again = new_task("done2", Priority::Low, at(0));
    again.idempotency_key = Some("key".into());
    assert!(matches!(
        s.enqueue(again, NONE).await.expect("enqueue"),
        Enqueued::Created(_)
    ));
    assert_eq!(s.prune(at(1_000_000)).await.expect("prune"), 1);
}

/// Enqueue and release notify [`Store::wakeup`], and a notification sent while nobody waits
/// is kept for the next waiter (an engine busy claiming never misses an enqueue).
pub async fn enqueue_and_release_wake_the_engine(s: Arc<dyn Store>) {
    let wake = s.wakeup();
    let waiter = tokio::spawn({
        let wake = wake.clone();
        async move { wake.notified().await }
    });
    tokio::task::yield_now().await;
    put(&*s, "a", Priority::Low, at(0)).await;
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken by an enqueue")
        .expect("join");
    // Nobody waits now: the notification must be kept.
    s.enqueue_batch(vec![new_task("b", Priority::Low, at(0))], NONE)
        .await
        .expect("batch");
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("a notification sent while nobody waited is not lost");
    let t = claim_one(&*s, "w1", at(0)).await;
    drain(&wake);
    s.release(
        &Fence::of(&t),
        Release {
            at: at(0),
            reason: "x".into(),
        },
        at(0),
    )
    .await
    .expect("release");
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("woken by a release");
    s.ping().await.expect("ping");
}

/// Many concurrent writers lose nothing, and every task is claimed exactly once.
pub async fn concurrent_writes_lose_nothing(s: Arc<dyn Store>) {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..8 {
        let s = s.clone();
        set.spawn(async move {
            for i in 0..50 {
                s.enqueue(new_task(&format!("w{w}-{i}"), Priority::Low, at(0)), NONE)
                    .await
                    .expect("enqueue");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("join");
    }
    assert_eq!(s.counts().await.expect("counts").active(), 400);
    let mut claimers = tokio::task::JoinSet::new();
    for c in 0..4 {
        let s = s.clone();
        claimers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = s
                    .claim_due(&format!("c{c}"), at(1), LEASE, 16, &[])
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                for t in batch {
                    finish(&*s, &t, Completion::Succeeded { result: None }, at(2)).await;
                    mine.push(t.id);
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = claimers.join_next().await {
        all.extend(r.expect("join"));
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (400, 400), "each task claimed exactly once");
    assert_eq!(s.counts().await.expect("counts").active(), 0);
}

/// [`Store::enqueue_claimed`] stores tasks already claimed for the caller (or, for a backend
/// without claim on insert, unclaimed as [`Store::enqueue_batch`] does); a claimed task is
/// not claimed again before its lease expires, is reclaimed after, and its fence finishes it.
pub async fn enqueue_claimed_claims_on_insert_under_a_lease(s: Arc<dyn Store>) {
    let mut a = new_task("a", Priority::High, at(0));
    a.idempotency_key = Some("key-a".into());
    let b = new_task("b", Priority::Low, at(0));
    let lease = Duration::from_secs(60);
    let out = s
        .enqueue_claimed(vec![a.clone(), b], NONE, "w1", at(0), lease)
        .await
        .expect("enqueue_claimed");
    let created: Vec<Task> = out
        .into_iter()
        .map(|e| match e {
            Enqueued::Created(t) => t,
            other @ Enqueued::Existing(_) => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(created.len(), 2);
    let claimed = created[0].status == TaskStatus::Processing;
    for t in &created {
        let stored = s.get(&t.id).await.expect("get").expect("stored");
        assert_eq!(&stored, t, "the answer is what was stored");
        if !claimed {
            // Without claim on insert: stored as enqueue_batch stores them.
            assert_eq!(t.status, TaskStatus::Pending);
            continue;
        }
        assert_eq!(t.status, TaskStatus::Processing);
        assert_eq!((t.attempt, t.tries), (1, 0));
        assert_eq!(t.lease_owner.as_deref(), Some("w1"));
        assert_eq!(t.next_run_at, None);
        assert_eq!(t.lease_until, Some(at(60)));
        let events = s.events(&t.id).await.expect("events");
        let reasons: Vec<_> = events.iter().map(|e| (e.to, e.reason.as_str())).collect();
        assert_eq!(
            reasons,
            vec![
                (TaskStatus::Pending, "created"),
                (TaskStatus::Processing, "claimed")
            ]
        );
    }
    if !claimed {
        return;
    }
    // A replay of the key answers the claimed task as it is.
    let replay = s
        .enqueue_claimed(vec![a], NONE, "w2", at(1), lease)
        .await
        .expect("replay");
    assert!(matches!(&replay[0], Enqueued::Existing(t) if *t == created[0]));
    // Leased: nobody claims them before the lease expires.
    assert!(
        s.claim_due("w2", at(59), LEASE, 10, &[])
            .await
            .expect("claim")
            .is_empty()
    );
    // The owner finishes one with its fence.
    let done = s
        .finish_attempt(
            &Fence::of(&created[0]),
            attempt(true),
            Completion::Succeeded { result: None },
            at(2),
        )
        .await
        .expect("finish");
    assert_eq!(done.status, TaskStatus::Completed);
    // After the lease, the other one is reclaimed (its owner died) with a new attempt number.
    let reclaimed = s
        .claim_due("w2", at(61), LEASE, 10, &[])
        .await
        .expect("claim");
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].id, "b");
    assert_eq!(reclaimed[0].attempt, 2);
    assert_eq!(s.counts().await.expect("counts").active(), 1);
}

/// One task alone, which a store may write by another path (a group commit): stored as
/// answered, claimed for the owner under the lease or left pending, never anything between.
pub async fn enqueue_claimed_one_task_is_claimed_or_pending(s: Arc<dyn Store>) {
    let lease = Duration::from_secs(60);
    let one = s
        .enqueue_claimed(
            vec![new_task("c", Priority::Medium, at(0))],
            NONE,
            "w1",
            at(0),
            lease,
        )
        .await
        .expect("enqueue_claimed one");
    let [Enqueued::Created(c)] = one.as_slice() else {
        panic!("{one:?}")
    };
    assert_eq!(&s.get("c").await.expect("get").expect("stored"), c);
    match c.status {
        TaskStatus::Processing => {
            assert_eq!((c.attempt, c.lease_owner.as_deref()), (1, Some("w1")));
            assert_eq!(c.lease_until, Some(at(60)));
        }
        TaskStatus::Pending => assert_eq!((c.attempt, c.lease_owner.as_deref()), (0, None)),
        other => panic!("{other:?}"),
    }
}

macro_rules! rules {
    // `$d` is a `$` token, so the generated macro can have metavariables of its own.
    ($d:tt; $($name:ident),* $(,)?) => {
        /// The name of every rule, in the order [`run_all`] runs them.
        pub const RULES: &[&str] = &[$(stringify!($name)),*];

        /// Runs every rule in turn, each on a fresh store from `factory`.
        pub async fn run_all<F, Fut>(factory: F)
        where
            F: Fn() -> Fut,
            Fut: Future<Output = Arc<dyn Store>>,
        {
            $( $name(factory().await).await; )*
        }

        /// Stamps out one `#[tokio::test]` per conformance rule for a backend. `$factory` is an
        /// expression evaluated once per test, giving a future of a fresh, empty
        /// `Arc<dyn Store>`. Needs the `conformance` feature of `workflow-core`.
        #[macro_export]
        macro_rules! conformance_tests {
            (skippable $d factory:expr) => {
                $(
                    #[tokio::test]
                    async fn $name() {
                        // The factory says why when it gives no store (e.g. no test database).
                        let store: ::std::option::Option<::std::sync::Arc<dyn $d crate::Store>> =
                            $d factory.await;
                        let ::std::option::Option::Some(store) = store else {
                            return;
                        };
                        $d crate::store::conformance::$name(store).await;
                    }
                )*
            };
            ($d factory:expr) => {
                $(
                    #[tokio::test]
                    async fn $name() {
                        let store: ::std::sync::Arc<dyn $d crate::Store> = $d factory.await;
                        $d crate::store::conformance::$name(store).await;
                    }
                )*
            };
        }
    };
}

/// The environment variable naming a PostgreSQL server for tests: a URL of a role that may
/// `CREATE DATABASE` (`scripts/with-postgres.sh` exports one for a throwaway cluster).
#[cfg(feature = "postgres")]
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// A fresh, empty database on the server named by [`TEST_DATABASE_URL`], for one test: its
/// URL. `None` (after printing `skipped: TEST_DATABASE_URL not set`) when the variable is
/// unset, so plain `cargo test` passes without a server; a set but unreachable server panics.
#[cfg(feature = "postgres")]
pub async fn fresh_postgres_database() -> Option<String> {
    let Ok(admin) = std::env::var(TEST_DATABASE_URL) else {
        eprintln!("skipped: {TEST_DATABASE_URL} not set");
        return None;
    };
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let (client, driver) = postgres_connection(&admin)
        .await
        .unwrap_or_else(|e| panic!("{TEST_DATABASE_URL} is set but unreachable: {e}"));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    drop(client);
    let _ = driver.await;
    Some(with_database(&admin, &name))
}

/// A plain client on `url`, for checks behind a store's back, connected as the store would be
/// (the URL's TLS parameters included: the test server may accept TLS only). Its connection
/// runs in a spawned task until the client is dropped.
///
/// # Panics
///
/// When the URL is invalid or the server cannot be reached.
#[cfg(feature = "postgres")]
pub async fn postgres_client(url: &str) -> tokio_postgres::Client {
    postgres_connection(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test database: {e}"))
        .0
}

#[cfg(feature = "postgres")]
async fn postgres_connection(
    url: &str,
) -> crate::store::StoreResult<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let (pg, tls) = crate::PostgresConfig::new(url).connector()?;
    crate::store::postgres::connect_one(&pg, tls).await
}

/// `url` with its database name replaced by `name`.
#[cfg(feature = "postgres")]
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

rules!(
    $;
    enqueue_then_get_round_trips,
    idempotency_key_returns_the_existing_task,
    duplicate_ids_are_refused,
    queue_full_counts_only_active_tasks,
    claims_by_priority_then_due_time_then_creation,
    claims_in_batches_and_not_before_due,
    a_claim_sets_lease_owner_and_bumps_the_attempt,
    an_expired_lease_is_reclaimed_and_the_stale_fence_rejected,
    an_extended_lease_is_not_reclaimed,
    finishing_records_attempts_events_and_tries,
    a_permanent_failure_is_final,
    final_states_never_change,
    release_does_not_spend_a_try,
    cancel_is_immediate_unless_processing,
    a_release_after_cancel_request_ends_cancelled,
    retry_now_revives_a_failed_task,
    callbacks_are_recorded,
    list_filters_and_pages_newest_first,
    full_targets_are_skipped,
    next_due_at_and_counts_follow_the_state,
    prune_removes_old_final_tasks_only,
    enqueue_and_release_wake_the_engine,
    concurrent_writes_lose_nothing,
    enqueue_claimed_claims_on_insert_under_a_lease,
    enqueue_claimed_one_task_is_claimed_or_pending,
);
