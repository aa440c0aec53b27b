//! `bench`: drives the real `dispatcher` binary end to end.
//!
//! Starts a receiver (counts deliveries, verifies signatures), starts the dispatcher with a temp
//! data dir, sends N `POST /workflow/tasks` with C in flight using the seed's body, waits until
//! every task is delivered, and prints accepted/s, delivered/s, API latency percentiles,
//! create-to-delivered latency, the dispatcher's CPU seconds and peak RSS, and errors.
//!
//! Build both, then run: `cargo build --release -p dispatcher -p bench && target/release/bench -n 50000 -c 32`

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use parking_lot::Mutex;

const KEY: &str = "bench-key";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[derive(Debug, Parser)]
#[command(about = "End-to-end load test of the dispatcher")]
struct Args {
    /// Requests to send.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    requests: usize,
    /// Requests in flight.
    #[arg(short = 'c', long, default_value_t = 32)]
    concurrency: usize,
    /// The dispatcher binary (default: next to this one).
    #[arg(long)]
    dispatcher: Option<std::path::PathBuf>,
    /// Print JSON only.
    #[arg(long)]
    json: bool,
    /// Run the dispatcher inside this process instead of the binary (for the CI smoke test;
    /// CPU and RSS then include the load generator).
    #[arg(long)]
    in_process: bool,
}

fn proc_stats(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ((ticks(11) + ticks(12)) / 100.0, hwm_kb)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Default)]
struct Seen {
    sent_at: HashMap<String, Instant>,
    delivered: HashMap<String, Instant>,
    duplicates: usize,
    bad_signatures: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let secret = webhook_client::SigningSecret::parse(SECRET).context("secret")?;
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (s, secret) = (s.clone(), secret.clone());
                async move {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    let ok =
                        webhook_client::verify_headers(&[secret], &headers, &body, now).is_ok();
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let mut s = s.lock();
                    if !ok {
                        s.bad_signatures += 1;
                    }
                    if s.delivered.insert(id, Instant::now()).is_some() {
                        s.duplicates += 1;
                    }
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = None;
    let mut in_process = None;
    if args.in_process {
        let config = dispatcher::Config {
            listen: format!("127.0.0.1:{port}").parse()?,
            data_dir: dir.path().to_path_buf(),
            api_keys: dispatcher::config::List(vec![KEY.into()]),
            signing_secret: dispatcher::config::List(vec![SECRET.into()]),
            allowed_target_cidrs: dispatcher::config::List(vec!["127.0.0.0/8".into()]),
            per_target_in_flight: 256,
            ..dispatcher::Config::default()
        };
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(dispatcher::run(config, listener, async move {
            let _ = stopped.await;
        }));
        in_process = Some((stop, task));
    } else {
        let exe = match args.dispatcher.clone() {
            Some(p) => p,
            None => std::env::current_exe()?.with_file_name("dispatcher"),
        };
        child = Some(
            Command::new(&exe)
                .args([
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--api-keys",
                    KEY,
                    "--signing-secret",
                    SECRET,
                ])
                .args([
                    "--allowed-target-cidrs",
                    "127.0.0.0/8",
                    "--per-target-in-flight",
                    "256",
                    "--max-in-flight",
                    "512",
                ])
                .arg("--data-dir")
                .arg(dir.path())
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!(
                        "while starting {} (build it with cargo build --release -p dispatcher)",
                        exe.display()
                    )
                })?,
        );
    }
    let pid = child.as_ref().map_or_else(std::process::id, Child::id);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    for _ in 0..500 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (cpu0, _) = proc_stats(pid);
    let seed = include_str!("../../../crates/task-package/tests/golden/seed_request.json");
    let mut body: serde_json::Value = serde_json::from_str(seed)?;
    body["webhook_url"] = hook.into();
    let body = body.to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.requests)));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (http, base, body, next, errors, latencies, seen) = (
            http.clone(),
            base.clone(),
            body.clone(),
            next.clone(),
            errors.clone(),
            latencies.clone(),
            seen.clone(),
        );
        let n = args.requests;
        set.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let start = Instant::now();
                let r = http
                    .post(format!("{base}/workflow/tasks"))
                    .bearer_auth(KEY)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) if r.status() == 200 => r.json::<serde_json::Value>().await.ok(),
                    _ => None,
                };
                latencies
                    .lock()
                    .push(start.elapsed().as_secs_f64() * 1000.0);
                match ok.and_then(|v| v["task_id"].as_str().map(str::to_owned)) {
                    Some(id) => {
                        seen.lock().sent_at.insert(id, start);
                    }
                    None => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let accepted_in = t0.elapsed().as_secs_f64();
    let accepted = seen.lock().sent_at.len();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = {
            let s = seen.lock();
            s.sent_at
                .keys()
                .filter(|k| s.delivered.contains_key(*k))
                .count()
        };
        if done >= accepted || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = t0.elapsed().as_secs_f64();
    let (cpu1, rss_kb) = proc_stats(pid);
    if let Some(mut c) = child {
        c.kill().ok();
        c.wait().ok();
    }
    if let Some((stop, task)) = in_process {
        let _ = stop.send(());
        task.await??;
    }

    let mut api = latencies.lock().clone();
    api.sort_by(f64::total_cmp);
    let s = seen.lock();
    let mut e2e: Vec<f64> = s
        .sent_at
        .iter()
        .filter_map(|(id, sent)| {
            s.delivered
                .get(id)
                .map(|d| d.duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect();
    e2e.sort_by(f64::total_cmp);
    let delivered = e2e.len();
    let report = serde_json::json!({
        "requests": args.requests,
        "concurrency": args.concurrency,
        "accepted": accepted,
        "delivered": delivered,
        "errors": errors.load(Ordering::Relaxed),
        "duplicates": s.duplicates,
        "bad_signatures": s.bad_signatures,
        "accepted_per_sec": accepted as f64 / accepted_in,
        "delivered_per_sec_end_to_end": delivered as f64 / total,
        "api_latency_ms": {"p50": pct(&api, 0.5), "p90": pct(&api, 0.9), "p99": pct(&api, 0.99), "max": api.last().copied().unwrap_or(0.0)},
        "create_to_delivered_ms": {"p50": pct(&e2e, 0.5), "p99": pct(&e2e, 0.99)},
        "dispatcher_cpu_seconds": cpu1 - cpu0,
        "dispatcher_peak_rss_mib": rss_kb as f64 / 1024.0,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "requests {} at concurrency {}",
            args.requests, args.concurrency
        );
        println!(
            "  accepted            {accepted} ({:.0}/s)",
            report["accepted_per_sec"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  delivered           {delivered} ({:.0}/s end to end)",
            report["delivered_per_sec_end_to_end"]
                .as_f64()
                .unwrap_or(0.0)
        );
        println!(
            "  API latency ms      p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            pct(&api, 0.5),
            pct(&api, 0.9),
            pct(&api, 0.99),
            api.last().copied().unwrap_or(0.0)
        );
        println!(
            "  create->delivered   p50 {:.1} ms  p99 {:.1} ms",
            pct(&e2e, 0.5),
            pct(&e2e, 0.99)
        );
        println!(
            "  dispatcher          {:.2} CPU s, peak RSS {:.1} MiB",
            cpu1 - cpu0,
            rss_kb as f64 / 1024.0
        );
        println!(
            "  errors {}  duplicates {}  bad signatures {}",
            report["errors"], s.duplicates, s.bad_signatures
        );
        println!("{report}");
    }
    if delivered < accepted || s.bad_signatures > 0 {
        anyhow::bail!(
            "{} accepted tasks were not delivered, {} bad signatures",
            accepted - delivered,
            s.bad_signatures
        );
    }
    Ok(())
}
