//! Run with: cargo run --release -p example-webhook-throughput -- [ATTEMPTS] [CONCURRENCY]
//!
//! Starts a receiver in a child process (so its CPU is not counted), then sends ATTEMPTS signed
//! webhooks over keep-alive connections with CONCURRENCY in flight, and prints attempts/s and the
//! sender's CPU time per attempt (user + system, from /proc/self/stat; Linux only).

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use webhook_client::{SigningSecret, WebhookClient, WebhookRequest};

fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat are utime and stime in clock ticks (100 per second).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    axum::serve(listener, app).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve().await;
    }
    let attempts: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let mut child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let url = format!("http://{}/hook", line.trim());

    let client = WebhookClient::builder()
        .allow_cidrs(vec!["127.0.0.0/8".parse()?])
        .build()?;
    let secrets = Arc::new(vec![SigningSecret::generate()]);
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Warm the connection pool.
    for _ in 0..concurrency {
        let r = WebhookRequest {
            url: &url,
            msg_id: "warmup",
            body: body.clone(),
            secrets: &secrets,
            headers: &[],
        };
        client.send_webhook(&r).await;
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, secrets, body, url, next) = (
            client.clone(),
            secrets.clone(),
            body.clone(),
            url.clone(),
            next.clone(),
        );
        set.spawn(async move {
            let mut ok = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < attempts {
                let r = WebhookRequest {
                    url: &url,
                    msg_id: "wf_1_00000000",
                    body: body.clone(),
                    secrets: &secrets,
                    headers: &[],
                };
                if client.send_webhook(&r).await.outcome.is_success() {
                    ok += 1;
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        ok += r?;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    child.kill().ok();
    println!(
        "{attempts} attempts ({ok} ok), {concurrency} concurrent, 1 KiB bodies: {:.0} attempts/s, sender CPU {:.1} µs per attempt",
        attempts as f64 / wall,
        cpu * 1e6 / attempts as f64
    );
    Ok(())
}
