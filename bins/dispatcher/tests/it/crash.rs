//! The real binary killed with SIGKILL under load and restarted on the same SQLite file
//! delivers every task it accepted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{KEY, free_port, http, receiver, seed_body, spawn, wait_healthy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_then_restart_delivers_every_accepted_task() {
    let (hook, counts) = receiver().await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = http();
    let mut child = spawn(dir.path(), port, &["--max-retries", "20"]);
    wait_healthy(&http, &base).await;

    let body = seed_body(&hook);
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, base, body, accepted) =
            (http.clone(), base.clone(), body.clone(), accepted.clone());
        submitters.spawn(async move {
            for _ in 0..250 {
                let r = http
                    .post(format!("{base}/workflow/tasks"))
                    .bearer_auth(KEY)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        accepted
                            .lock()
                            .unwrap()
                            .push(v["task_id"].as_str().unwrap().to_owned());
                    }
                    // The process died mid-request: not accepted as far as the client knows.
                    _ => break,
                }
            }
        });
    }
    // Kill it while submissions and deliveries are in full swing.
    while accepted.lock().unwrap().len() < 600 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    while submitters.join_next().await.is_some() {}
    let accepted: Vec<String> = accepted.lock().unwrap().clone();
    let delivered_before = counts.lock().unwrap().len();
    assert!(accepted.len() >= 600);

    let mut child = spawn(dir.path(), port, &["--max-retries", "20"]);
    wait_healthy(&http, &base).await;
    let mut missing = accepted.len();
    for _ in 0..1500 {
        missing = {
            let seen = counts.lock().unwrap();
            accepted.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().ok();
    child.wait().ok();
    let seen: HashMap<String, u32> = counts.lock().unwrap().clone();
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    println!(
        "accepted {}, delivered before the kill {}, delivered in all {}, duplicates {}",
        accepted.len(),
        delivered_before,
        seen.len(),
        duplicates
    );
    assert_eq!(missing, 0, "accepted tasks never delivered after restart");
}
