//! Run with: cargo run -p example-client --bin example-client -- [DISPATCHER_URL] [API_KEY] [WEBHOOK_URL]
//!
//! Submits one task of each priority (critical, high, medium, low) to a running dispatcher
//! with [`dispatcher_client::Client`] and follows each until it is final and, when a receiver
//! reports back, until its callback arrives. The arguments default to the environment
//! (`DISPATCHER_URL`, `DISPATCHER_API_KEY`, `WEBHOOK_URL`), then to
//! `http://127.0.0.1:8080`, no key and `http://127.0.0.1:3000/hook` (where
//! `example-receiver` listens). For example:
//!
//! ```text
//! dispatcher --api-keys demo-key --signing-secret whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD \
//!     --allowed-target-cidrs 127.0.0.0/8 &
//! SIGNING_SECRET=whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD cargo run -p example-client --bin example-receiver &
//! cargo run -p example-client --bin example-client -- http://127.0.0.1:8080 demo-key
//! ```

use std::time::{Duration, Instant};

use dispatcher_client::{Client, NewTask, Priority};

/// The `n`th argument, else the environment variable, else the default.
fn setting(n: usize, env: &str, default: &str) -> String {
    std::env::args()
        .nth(n)
        .or_else(|| std::env::var(env).ok())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = setting(1, "DISPATCHER_URL", "http://127.0.0.1:8080");
    let key = setting(2, "DISPATCHER_API_KEY", "");
    let hook = setting(3, "WEBHOOK_URL", "http://127.0.0.1:3000/hook");
    let client = Client::builder()
        .base_url(url)
        .api_key(key)
        .timeout(Duration::from_secs(10))
        .build()?;

    let mut tasks = Vec::new();
    for priority in Priority::ALL {
        let mut body = task_package::examples::seed_flat_request();
        body["webhook_url"] = hook.as_str().into();
        let created = client
            .create_task(NewTask::from(body).priority(priority))
            .await?;
        println!("submitted {} ({priority})", created.task_id());
        tasks.push(created.response.task_id);
    }

    // Follow each task: final status first, then (for a delivered one) the receiver's report.
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in tasks {
        loop {
            let task = client.get_task(&id).await?;
            let is_final = matches!(task.status.as_str(), "completed" | "failed" | "cancelled");
            let reported = task.callback.as_ref().map(|c| c.status.as_str());
            let done = is_final
                && (task.status != "completed"
                    || matches!(reported, Some("resolved" | "rejected")));
            if done || Instant::now() > deadline {
                println!(
                    "{id}: {} after {} attempt(s), priority {}, receiver said {}",
                    task.status,
                    task.attempts.len(),
                    task.priority,
                    reported.unwrap_or("nothing (yet)")
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
