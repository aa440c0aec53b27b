//! Attempts against a local keep-alive receiver, 64 in flight.
//!
//! Run with: `cargo bench -p webhook-client -- --warm-up-time 1 --measurement-time 5`
//!
//! The receiver runs on its own thread and runtime; the client runs on the bench's
//! current-thread runtime, so every bit of client work (signing, reqwest, hyper's connection
//! tasks, classifying) happens on the main thread. After criterion's runs, a fixed batch of
//! attempts is timed with that thread's CPU clock (`/proc/thread-self/schedstat`, Linux), which
//! gives the client's CPU per attempt without the receiver's.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use webhook_client::{SigningSecret, WebhookClient, WebhookRequest, sign};

const CONCURRENCY: usize = 64;
const CPU_BATCH: usize = 20_000;

/// Starts the receiver on its own thread; returns its URL.
fn start_receiver() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("receiver runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
            axum::serve(listener, app).await.expect("serve");
        });
    });
    let addr = rx.recv().expect("receiver address");
    format!("http://{addr}/hook")
}

struct Load {
    client: WebhookClient,
    url: Arc<str>,
    secrets: Arc<[SigningSecret]>,
    body: Bytes,
}

impl Load {
    fn new() -> Load {
        Load {
            client: WebhookClient::builder()
                .allow_cidrs(vec!["127.0.0.0/8".parse().expect("cidr")])
                .build()
                .expect("client"),
            url: start_receiver().into(),
            secrets: Arc::new([SigningSecret::generate()]),
            body: Bytes::from(vec![b'x'; 1024]),
        }
    }

    /// Makes `total` attempts with [`CONCURRENCY`] in flight; returns how many succeeded.
    async fn run(&self, total: usize) -> usize {
        let next = AtomicUsize::new(0);
        let ok = AtomicUsize::new(0);
        let worker = || async {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let report = self
                    .client
                    .send_webhook(&WebhookRequest {
                        url: &self.url,
                        msg_id: "wf_1732435200_0a1b2c3d",
                        body: self.body.clone(),
                        secrets: &self.secrets,
                        headers: &[],
                    })
                    .await;
                if report.outcome.is_success() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        futures::future::join_all((0..CONCURRENCY).map(|_| worker())).await;
        ok.into_inner()
    }
}

/// CPU time of the calling thread: nanoseconds on CPU from `/proc/thread-self/schedstat`.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}

fn attempts(c: &mut Criterion) {
    let rt = runtime();
    let load = Load::new();
    rt.block_on(load.run(CONCURRENCY)); // open the keep-alive connections

    let mut group = c.benchmark_group("webhook_attempts");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    group.bench_function("64_concurrent_keep_alive_1KiB", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let load = &load;
            async move {
                let total = iters as usize * CONCURRENCY;
                let started = Instant::now();
                let ok = load.run(total).await;
                assert_eq!(ok, total, "every attempt succeeds");
                started.elapsed()
            }
        });
    });
    group.finish();

    let mut group = c.benchmark_group("webhook_signing");
    group.throughput(Throughput::Bytes(1024));
    let secret = SigningSecret::generate();
    let body = vec![b'x'; 1024];
    group.bench_function("sign_1KiB", |b| {
        b.iter(|| sign(&secret, "wf_1732435200_0a1b2c3d", 1_732_435_200, &body));
    });
    group.finish();
}

/// A fixed batch timed with the client thread's CPU clock (skipped in `--test` / `--list`).
fn cpu_per_attempt() {
    let rt = runtime();
    let load = Load::new();
    rt.block_on(load.run(CONCURRENCY * 4)); // warm the pool
    let (Some(cpu0), wall0) = (thread_cpu(), Instant::now()) else {
        println!("cpu per attempt: /proc/thread-self/schedstat unavailable, skipped");
        return;
    };
    let ok = rt.block_on(load.run(CPU_BATCH));
    let wall = wall0.elapsed();
    let cpu = thread_cpu().unwrap_or(cpu0) - cpu0;
    println!(
        "cpu per attempt: {CPU_BATCH} attempts ({ok} ok), {CONCURRENCY} concurrent, 1 KiB \
         bodies: {:.0} attempts/s, client CPU {:.1} µs per attempt",
        CPU_BATCH as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / CPU_BATCH as f64,
    );
}

criterion_group!(benches, attempts);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    if !quick {
        cpu_per_attempt();
    }
}
