//! Several real dispatcher processes on one PostgreSQL database: every task accepted by any of
//! them is delivered, none twice in a clean run, and when one is killed with SIGKILL the other
//! finishes its work (at-least-once: only the killed instance's in-flight deliveries may be
//! repeated).
//!
//! Needs `TEST_DATABASE_URL` (`scripts/with-postgres.sh cargo test -p dispatcher`); without it
//! each test prints `skipped: TEST_DATABASE_URL not set` and passes. `SCALE_OUT_TASKS` changes
//! the number of tasks (default 20,000). The tasks/s printed are end to end: from the first
//! submission to the last delivery, with submitter, receiver, PostgreSQL and the dispatchers
//! all on this machine.

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use workflow_core::store::conformance::fresh_postgres_database;

use crate::{KEY, Seen, free_port, http, receiver, seed_body, spawn, wait_healthy};

fn tasks() -> usize {
    std::env::var("SCALE_OUT_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

struct Instance {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(url: &str) -> Instance {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = spawn(
        dir.path(),
        port,
        &[
            "--database-url",
            url,
            "--database-pool-size",
            "24",
            // A killed instance's deliveries resume after this.
            "--lease",
            "3s",
            "--max-retries",
            "20",
            "--task-queue-size",
            "1000000",
            "--max-in-flight",
            "256",
            "--per-target-in-flight",
            "256",
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&http(), &base).await;
    Instance {
        child,
        base,
        _dir: dir,
    }
}

/// Submits `n` tasks round-robin over `bases` from 16 concurrent clients; returns the ids
/// accepted. A submission to an instance that died is retried on the next one.
async fn submit(
    bases: Vec<String>,
    hook: &str,
    n: usize,
    submitted: Arc<AtomicUsize>,
) -> Vec<String> {
    let body = seed_body(hook);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (http, bases, body, next, submitted) = (
            http(),
            bases.clone(),
            body.clone(),
            next.clone(),
            submitted.clone(),
        );
        set.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return mine;
                }
                let mut tries = 0;
                loop {
                    let base = &bases[(i + tries) % bases.len()];
                    let r = http
                        .post(format!("{base}/workflow/tasks"))
                        .bearer_auth(KEY)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    if let Ok(r) = r
                        && r.status() == 200
                    {
                        let v: serde_json::Value = r.json().await.unwrap();
                        mine.push(v["task_id"].as_str().unwrap().to_owned());
                        submitted.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    tries += 1;
                    assert!(tries < 50, "no instance accepts task {i}");
                }
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

/// Waits until every id in `accepted` was delivered (or gives up after a long while);
/// returns how many are still missing.
async fn wait_delivered(seen: &Seen, accepted: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            accepted.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn duplicates(seen: &Seen) -> u32 {
    seen.lock().unwrap().values().map(|n| n - 1).sum()
}

async fn clean_run(instances: usize) -> Option<()> {
    let url = fresh_postgres_database().await?;
    let (hook, seen) = receiver().await;
    let mut running = Vec::new();
    for _ in 0..instances {
        running.push(start(&url).await);
    }
    let n = tasks();
    let started = Instant::now();
    let bases = running.iter().map(|i| i.base.clone()).collect();
    let accepted = submit(bases, &hook, n, Arc::default()).await;
    let submitted_in = started.elapsed();
    assert_eq!(accepted.len(), n);
    let missing = wait_delivered(&seen, &accepted).await;
    let took = started.elapsed();
    let dups = duplicates(&seen);
    println!(
        "{instances} instance(s) on PostgreSQL: {n} tasks submitted in {:.1} s and delivered in {:.1} s \
         ({:.0} tasks/s end to end), duplicates {dups}, missing {missing}",
        submitted_in.as_secs_f64(),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    assert_eq!(missing, 0, "every accepted task is delivered");
    assert_eq!(dups, 0, "no task is delivered twice in a clean run");
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_deliver_every_task_exactly_once() {
    clean_run(2).await;
}

/// The one-instance figure for the README (`--ignored`; the two-instance run is the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn one_instance_on_postgres_throughput() {
    clean_run(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_one_of_two_instances_and_the_other_delivers_everything() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let (hook, seen) = receiver().await;
    let mut victim = start(&url).await;
    let survivor = start(&url).await;
    let n = tasks();
    let submitted = Arc::new(AtomicUsize::new(0));
    // Everything is submitted to both; once the victim is gone, only the survivor answers.
    let submitting = tokio::spawn({
        let (bases, hook, submitted) = (
            vec![survivor.base.clone(), victim.base.clone()],
            hook.clone(),
            submitted.clone(),
        );
        async move { submit(bases, &hook, n, submitted).await }
    });
    // Kill it midway: while tasks are still being submitted and delivered by both.
    while seen.lock().unwrap().len() < n / 3 {
        assert!(
            !submitting.is_finished(),
            "submission ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.child.kill().expect("SIGKILL");
    victim.child.wait().unwrap();
    let delivered_at_kill = seen.lock().unwrap().len();
    let accepted = submitting.await.unwrap();
    assert_eq!(accepted.len(), n);
    let missing = wait_delivered(&seen, &accepted).await;
    let dups = duplicates(&seen);
    println!(
        "SIGKILL of one of two instances after {delivered_at_kill} of {n} deliveries: \
         the survivor delivered the rest, missing {missing}, duplicates {dups} \
         (at most the killed instance's deliveries in flight)"
    );
    assert_eq!(missing, 0, "the survivor delivers every accepted task");
    // At-least-once: a task the victim delivered but had not yet recorded is delivered again
    // by the survivor after its lease ran out; nothing else may be repeated.
    assert!(
        dups <= 256,
        "duplicates beyond the victim's in-flight cap: {dups}"
    );
    drop(survivor);
}
