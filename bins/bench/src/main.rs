//! `bench`: drives the real `dispatcher` binary end to end.
//!
//! Starts a receiver (verifies every signature, records each task's first arrival), starts one or
//! more dispatchers with a temp data dir, sends N `POST /workflow/tasks` with C in flight using
//! the seed's body, waits until every accepted task is delivered, and prints accepted/s,
//! delivered/s end to end, API latency percentiles, create-to-delivered latency, the
//! dispatchers' CPU seconds and peak RSS, retries and errors: a table, or JSON with `--json`.
//!
//! Scenarios (`--scenario`):
//! - `steady`: a fast receiver; N=50,000 by default (run it at `-c 32` and `-c 256`).
//! - `slow`: every delivery takes 1 s; 10,000 tasks, all in flight at once (the dispatcher is
//!   started with room for them): peak memory and completion time.
//! - `failing`: half the delivery attempts are answered 500; short retry delays, a retry budget
//!   large enough that every task is delivered, breakers queue instead of rejecting. Reports the
//!   retries, the gaps between a failure and the next try, and CPU seconds (no spin).
//! - `priority`: a receiver slower than the API (10 ms per delivery, 32 at once per target)
//!   saturated by 90 % `low` and 10 % `critical` tasks: create-to-delivered per priority.
//! - `flapping` (the soak): tasks at a steady `--rate` (10 % critical, 20 % high, 30 % medium,
//!   40 % low) for `--duration-secs` (600) into a receiver that answers 503 for the last
//!   `--down-secs` (20) of every `--period-secs` (60); breakers queue, retries outlast an
//!   outage. Afterwards every task must be delivered exactly once; reports the resident
//!   memory at 20 % and 90 % of the run (minutes 2 and 9 of 10) and how often breakers
//!   opened and closed (from `/metrics`).
//!
//! `--reference nginx` (steady only) also measures the rig's ceiling in the same run: Debian's
//! nginx forwards the same requests, unsigned and not stored, over kept-alive connections to
//! the receiver (`reference.rs`), and the report gives the dispatcher's rate as a share of it;
//! `--reference-only` measures nginx alone.
//!
//! Build both, then run:
//! `cargo build --release -p dispatcher -p bench && target/release/bench --scenario steady -c 32`.
//! The dispatcher binary is looked up next to this one (`--dispatcher` overrides).

mod procstat;
mod receiver;
mod reference;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use parking_lot::Mutex;
use serde_json::json;

use procstat::pct;

const KEY: &str = "bench-key";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// What load to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// A fast receiver.
    Steady,
    /// Each delivery takes 1 s; everything in flight at once.
    Slow,
    /// Half of all attempts answered 500; every task must still be delivered.
    Failing,
    /// 90 % low and 10 % critical into a saturated dispatcher.
    Priority,
    /// A steady rate into a receiver that is down a third of the time, for minutes.
    Flapping,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Slow => "slow",
            Scenario::Failing => "failing",
            Scenario::Priority => "priority",
            Scenario::Flapping => "flapping",
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "End-to-end load test of the dispatcher")]
struct Args {
    /// The scenario.
    #[arg(long, value_enum, default_value_t = Scenario::Steady)]
    scenario: Scenario,
    /// Requests to send [default: steady 50000, slow 10000, failing 10000, priority 20000].
    #[arg(short = 'n', long)]
    requests: Option<usize>,
    /// Requests in flight [default: 32].
    #[arg(short = 'c', long, default_value_t = 32)]
    concurrency: usize,
    /// The dispatcher binary (default: `dispatcher` next to this one).
    #[arg(long)]
    dispatcher: Option<std::path::PathBuf>,
    /// Passed to every dispatcher as `--database-url` (default: SQLite in a temp dir). With
    /// PostgreSQL use an empty database: tasks left by an earlier run would be delivered too.
    #[arg(long)]
    database_url: Option<String>,
    /// Dispatcher processes sharing the database; requests go to them round robin. More than
    /// one needs a shared database (`--database-url postgres://...`).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Receiver delay per delivery in ms [default: slow 1000, priority 10, else 0].
    #[arg(long)]
    receiver_delay_ms: Option<u64>,
    /// Share of attempts the receiver answers 500 [default: failing 0.5, else 0].
    #[arg(long)]
    fail_rate: Option<f64>,
    /// Percent of requests sent as `critical` (the rest `low`) [default: priority 10, else 0:
    /// every request keeps the seed's `high`].
    #[arg(long)]
    critical_percent: Option<u32>,
    /// Dispatcher `--max-in-flight` [default: slow max(N, 512), else 512].
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Dispatcher `--per-target-in-flight` [default: slow max(N, 512), priority 32, else 256].
    #[arg(long)]
    per_target_in_flight: Option<usize>,
    /// After everything is delivered, measure the dispatchers' CPU while idle for this long.
    #[arg(long, default_value_t = 0)]
    idle_secs: u64,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Print JSON only.
    #[arg(long)]
    json: bool,
    /// Each SQLite connection's page cache in MiB (the dispatcher's `sqlite_cache_mib`).
    #[arg(long)]
    sqlite_cache_mib: Option<u32>,
    /// Flapping: how long tasks are sent.
    #[arg(long, default_value_t = 600)]
    duration_secs: u64,
    /// Flapping: tasks per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Flapping: one up-then-down cycle of the receiver, in seconds.
    #[arg(long, default_value_t = 60)]
    period_secs: u64,
    /// Flapping: the down part of each cycle, in seconds.
    #[arg(long, default_value_t = 20)]
    down_secs: u64,
    /// Also measure the rig's ceiling in the same run (steady only): `nginx` forwards the same
    /// requests, unsigned and not stored, over kept-alive connections to the receiver; the
    /// report gives the dispatcher's end-to-end rate as a share of it.
    #[arg(long, value_enum)]
    reference: Option<Reference>,
    /// Measure the reference only, not the dispatcher.
    #[arg(long)]
    reference_only: bool,
    /// The nginx binary [default: `nginx` on the PATH, else /usr/sbin/nginx].
    #[arg(long)]
    nginx: Option<std::path::PathBuf>,
    /// Run the dispatchers inside this process instead of the binary (for the CI smoke test;
    /// CPU and RSS then include the load generator and the receiver).
    #[arg(long)]
    in_process: bool,
}

/// A reference forwarder to measure the rig's ceiling with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Reference {
    /// Debian's nginx, `proxy_pass` to the receiver.
    Nginx,
}

/// The dispatcher settings a scenario needs.
#[derive(Debug, Clone)]
struct Settings {
    max_in_flight: usize,
    per_target_in_flight: usize,
    max_retries: u32,
    base_retry_delay: Duration,
    max_retry_delay: Duration,
    /// Breakers queue new tasks instead of answering 503.
    breaker_queue: bool,
    breaker_open_wait: Duration,
    task_queue_size: u64,
    database_url: Option<String>,
}

/// Everything derived from the arguments.
#[derive(Debug)]
struct Plan {
    requests: usize,
    behaviour: receiver::Behaviour,
    critical_percent: u32,
    settings: Settings,
}

fn plan(args: &Args) -> anyhow::Result<Plan> {
    let s = args.scenario;
    let requests = args.requests.unwrap_or(match s {
        Scenario::Steady => 50_000,
        Scenario::Slow | Scenario::Failing => 10_000,
        Scenario::Priority => 20_000,
        Scenario::Flapping => (args.duration_secs * u64::from(args.rate)) as usize,
    });
    if s == Scenario::Flapping {
        anyhow::ensure!(args.rate >= 1, "--rate is at least 1");
        anyhow::ensure!(
            args.down_secs < args.period_secs,
            "--down-secs must be shorter than --period-secs"
        );
    }
    let delay_ms = args.receiver_delay_ms.unwrap_or(match s {
        Scenario::Slow => 1000,
        Scenario::Priority => 10,
        Scenario::Steady | Scenario::Failing | Scenario::Flapping => 0,
    });
    let fail_rate = args
        .fail_rate
        .unwrap_or(if s == Scenario::Failing { 0.5 } else { 0.0 });
    anyhow::ensure!(
        (0.0..1.0).contains(&fail_rate),
        "--fail-rate must be in [0, 1)"
    );
    let critical_percent = args.critical_percent.unwrap_or(match s {
        // Flapping sends its own mix; 10 % critical is what it reports apart.
        Scenario::Priority | Scenario::Flapping => 10,
        _ => 0,
    });
    anyhow::ensure!(critical_percent <= 100, "--critical-percent is at most 100");
    anyhow::ensure!(
        s == Scenario::Steady || (args.reference.is_none() && !args.reference_only),
        "--reference and --reference-only compare the steady scenario (the forwarder's sink \
         answers at once, without delays or failures)"
    );
    anyhow::ensure!(args.instances >= 1, "--instances is at least 1");
    let shared_db = args
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
    anyhow::ensure!(
        args.instances == 1 || shared_db,
        "--instances above 1 needs a shared database (--database-url postgres://...): a SQLite \
         file belongs to one process"
    );
    let everything = requests.max(512);
    let settings = Settings {
        max_in_flight: args.max_in_flight.unwrap_or(match s {
            Scenario::Slow => everything,
            _ => 512,
        }),
        per_target_in_flight: args.per_target_in_flight.unwrap_or(match s {
            Scenario::Slow => everything,
            Scenario::Priority => 32,
            Scenario::Steady | Scenario::Failing | Scenario::Flapping => 256,
        }),
        // Failing: with half of all attempts failing, 40 retries leave a chance of 2^-41 per
        // task of running out, so every task is delivered. Flapping: 20 retries up to 5 s
        // apart outlast any outage of a minute.
        max_retries: match s {
            Scenario::Failing => 40,
            Scenario::Flapping => 20,
            _ => 3,
        },
        base_retry_delay: match s {
            Scenario::Failing => Duration::from_millis(50),
            Scenario::Flapping => Duration::from_millis(500),
            _ => Duration::from_secs(1),
        },
        max_retry_delay: match s {
            Scenario::Failing => Duration::from_millis(500),
            Scenario::Flapping => Duration::from_secs(5),
            _ => Duration::from_secs(60),
        },
        breaker_queue: matches!(s, Scenario::Failing | Scenario::Flapping),
        breaker_open_wait: match s {
            Scenario::Failing => Duration::from_millis(200),
            Scenario::Flapping => Duration::from_secs(2),
            _ => Duration::from_secs(30),
        },
        task_queue_size: (requests as u64 * 2).max(100_000),
        database_url: args.database_url.clone(),
    };
    Ok(Plan {
        requests,
        behaviour: receiver::Behaviour {
            delay: Duration::from_millis(delay_ms),
            fail_rate,
            flap: (s == Scenario::Flapping).then(|| receiver::Flap {
                period: Duration::from_secs(args.period_secs),
                down: Duration::from_secs(args.down_secs),
            }),
        },
        critical_percent,
        settings,
    })
}

/// The dispatchers under test.
enum Dispatchers {
    Processes(Vec<Child>),
    InProcess(
        Vec<(
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<anyhow::Result<()>>,
        )>,
    ),
}

impl Dispatchers {
    fn pids(&self) -> Vec<u32> {
        match self {
            Dispatchers::Processes(c) => c.iter().map(Child::id).collect(),
            Dispatchers::InProcess(_) => vec![std::process::id()],
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Dispatchers::Processes(children) => {
                for mut c in children {
                    c.kill().ok();
                    c.wait().ok();
                }
            }
            Dispatchers::InProcess(tasks) => {
                for (stop, task) in tasks {
                    let _ = stop.send(());
                    task.await??;
                }
            }
        }
        Ok(())
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Starts `args.instances` dispatchers; returns them and their base URLs.
async fn start_dispatchers(
    args: &Args,
    settings: &Settings,
    dir: &std::path::Path,
) -> anyhow::Result<(Dispatchers, Vec<String>)> {
    let mut bases = Vec::new();
    let mut children = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..args.instances {
        let data_dir = dir.join(format!("instance-{i}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        bases.push(format!("http://127.0.0.1:{port}"));
        if args.in_process {
            let config = dispatcher::Config {
                listen: format!("127.0.0.1:{port}").parse()?,
                data_dir,
                database_url: settings.database_url.clone(),
                api_keys: dispatcher::config::OneOrMany(vec![KEY.into()]),
                signing_secret: dispatcher::config::OneOrMany(vec![SECRET.into()]),
                allowed_target_cidrs: dispatcher::config::OneOrMany(vec!["127.0.0.0/8".into()]),
                max_in_flight: settings.max_in_flight,
                per_target_in_flight: settings.per_target_in_flight,
                max_retries: settings.max_retries,
                base_retry_delay: settings.base_retry_delay,
                max_retry_delay: settings.max_retry_delay,
                breaker_open_policy: if settings.breaker_queue {
                    dispatcher::BreakerOpenPolicy::Queue
                } else {
                    dispatcher::BreakerOpenPolicy::Reject
                },
                breaker_open_wait: settings.breaker_open_wait,
                task_queue_size: settings.task_queue_size,
                sqlite_cache_mib: args
                    .sqlite_cache_mib
                    .unwrap_or(dispatcher::Config::default().sqlite_cache_mib),
                ..dispatcher::Config::default()
            };
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(dispatcher::run(config, listener, async move {
                let _ = stopped.await;
            }));
            tasks.push((stop, task));
        } else {
            let exe = match args.dispatcher.clone() {
                Some(p) => p,
                None => std::env::current_exe()?.with_file_name("dispatcher"),
            };
            let mut cmd = Command::new(&exe);
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(["--api-keys", KEY, "--signing-secret", SECRET])
                .args(["--allowed-target-cidrs", "127.0.0.0/8"])
                .arg("--max-in-flight")
                .arg(settings.max_in_flight.to_string())
                .arg("--per-target-in-flight")
                .arg(settings.per_target_in_flight.to_string())
                .arg("--max-retries")
                .arg(settings.max_retries.to_string())
                .arg("--base-retry-delay")
                .arg(ms(settings.base_retry_delay))
                .arg("--max-retry-delay")
                .arg(ms(settings.max_retry_delay))
                .arg("--task-queue-size")
                .arg(settings.task_queue_size.to_string())
                .arg("--breaker-open-policy")
                .arg(if settings.breaker_queue {
                    "queue"
                } else {
                    "reject"
                })
                .arg("--data-dir")
                .arg(&data_dir)
                // No flag for it; the environment layer of the configuration takes it.
                .env(
                    "DISPATCHER_BREAKER_OPEN_WAIT",
                    ms(settings.breaker_open_wait),
                )
                .env("RUST_LOG", "error")
                .stdout(Stdio::null());
            if let Some(url) = &settings.database_url {
                cmd.arg("--database-url").arg(url);
            }
            if let Some(mib) = args.sqlite_cache_mib {
                cmd.env("DISPATCHER_SQLITE_CACHE_MIB", mib.to_string());
            }
            children.push(cmd.spawn().with_context(|| {
                format!(
                    "while starting {} (build it with cargo build --release -p dispatcher)",
                    exe.display()
                )
            })?);
        }
    }
    let dispatchers = if args.in_process {
        Dispatchers::InProcess(tasks)
    } else {
        Dispatchers::Processes(children)
    };
    Ok((dispatchers, bases))
}

/// Waits until every dispatcher answers `/healthz`.
async fn wait_healthy(
    http: &reqwest::Client,
    bases: &[String],
    dispatchers: &mut Dispatchers,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for base in bases {
        loop {
            if http
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if let Dispatchers::Processes(children) = dispatchers {
                for c in children.iter_mut() {
                    if let Some(status) = c.try_wait()? {
                        anyhow::bail!("a dispatcher exited at start: {status}");
                    }
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{base} did not become healthy in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// What the load generator recorded.
#[derive(Debug, Default)]
struct Sent {
    /// Accepted task id -> (when its POST was sent, critical?).
    accepted: HashMap<String, (Instant, bool)>,
    /// Milliseconds per request, accepted or not.
    latencies_ms: Vec<f64>,
    /// Rejections by HTTP status (0: no answer).
    errors: HashMap<u16, usize>,
}

/// Sends `requests` POSTs with `concurrency` in flight, round robin over `bases`.
async fn drive(
    http: &reqwest::Client,
    bases: &[String],
    hook: &str,
    requests: usize,
    concurrency: usize,
    critical_percent: u32,
) -> anyhow::Result<Sent> {
    // The seed document's flat request, as a UI written from it sends it.
    let seed = include_str!("../../../crates/task-package/tests/golden/seed_flat_request.json");
    let mut body: serde_json::Value = serde_json::from_str(seed)?;
    body["webhook_url"] = hook.into();
    let seed_body = body.to_string();
    body["priority"] = "critical".into();
    let critical_body = body.to_string();
    body["priority"] = "low".into();
    let low_body = body.to_string();
    let bodies = Arc::new([seed_body, critical_body, low_body]);
    let urls: Arc<Vec<String>> = Arc::new(
        bases
            .iter()
            .map(|b| format!("{b}/workflow/tasks"))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(Mutex::new(Sent {
        latencies_ms: Vec::with_capacity(requests),
        ..Sent::default()
    }));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (http, urls, bodies, next, sent) = (
            http.clone(),
            urls.clone(),
            bodies.clone(),
            next.clone(),
            sent.clone(),
        );
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                // Spread critical requests evenly: request i is critical when the running
                // share of critical ones falls behind the target percentage.
                let critical = critical_percent > 0
                    && (i as u64 * u64::from(critical_percent)) % 100 < u64::from(critical_percent);
                let body = match (critical_percent, critical) {
                    (0, _) => &bodies[0],
                    (_, true) => &bodies[1],
                    (_, false) => &bodies[2],
                };
                let start = Instant::now();
                let answer = create_task(&http, &urls[i % urls.len()], body).await;
                let took = start.elapsed().as_secs_f64() * 1000.0;
                let mut s = sent.lock();
                s.latencies_ms.push(took);
                match answer {
                    Ok(id) => {
                        s.accepted.insert(id, (start, critical));
                    }
                    Err(status) => *s.errors.entry(status).or_default() += 1,
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r?;
    }
    let sent = std::mem::take(&mut *sent.lock());
    Ok(sent)
}

/// `POST /workflow/tasks` with `body`: the new task's id, or the status that refused it (0: no
/// answer; 200: an answer without a task id).
async fn create_task(http: &reqwest::Client, url: &str, body: &str) -> Result<String, u16> {
    let r = http
        .post(url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await;
    match r {
        Ok(r) if r.status() == 200 => r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["task_id"].as_str().map(str::to_owned))
            .ok_or(200),
        Ok(r) => Err(r.status().as_u16()),
        Err(_) => Err(0),
    }
}

/// The 1-minute load average (other work on the machine skews every figure).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    json!({
        "count": v.len(),
        "p50": pct(&v, 0.5),
        "p90": pct(&v, 0.9),
        "p99": pct(&v, 0.99),
        "max": v.last().copied().unwrap_or(0.0),
    })
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = plan(&args)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secret = webhook_client::SigningSecret::parse(SECRET).context("secret")?;
    let (recv, sink, hook) = receiver::start(secret, plan.behaviour).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .build()?;

    let ours = if args.reference_only {
        None
    } else {
        Some(measure_dispatcher(&args, &plan, &recv, &hook, &http).await?)
    };
    let reference = if args.reference_only || args.reference.is_some() {
        Some(measure_nginx(&args, &plan, &recv, sink, &http).await?)
    } else {
        None
    };
    let report = match (ours, reference) {
        (Some(mut ours), Some(reference)) => {
            let share = f(&ours["delivered_per_sec_end_to_end"])
                / f(&reference["forwarded_per_sec_end_to_end"]).max(f64::MIN_POSITIVE);
            ours["reference"] = reference;
            ours["share_of_reference"] = json!(share);
            ours
        }
        (Some(ours), None) => ours,
        (None, Some(reference)) => json!({ "reference": reference }),
        (None, None) => unreachable!("either the dispatcher or the reference is measured"),
    };
    if args.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    if report.get("accepted").is_some() {
        let missing =
            report["accepted"].as_u64().unwrap_or(0) - report["delivered"].as_u64().unwrap_or(0);
        let bad = report["bad_signatures"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            missing == 0 && bad == 0,
            "{missing} accepted tasks were not delivered, {bad} bad signatures"
        );
    }
    if let Some(r) = report.get("reference") {
        let lost = r["accepted"].as_u64().unwrap_or(0) - r["forwarded"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            lost == 0,
            "nginx answered {lost} requests it did not forward"
        );
    }
    Ok(())
}

/// Runs the scenario against the dispatchers: the report, before the reference run is added.
async fn measure_dispatcher(
    args: &Args,
    plan: &Plan,
    recv: &receiver::Receiver,
    hook: &str,
    http: &reqwest::Client,
) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let (mut dispatchers, bases) = start_dispatchers(args, &plan.settings, dir.path()).await?;
    let started = wait_healthy(http, &bases, &mut dispatchers).await;
    if let Err(e) = started {
        dispatchers.stop().await.ok();
        return Err(e);
    }
    let pids = dispatchers.pids();
    let before: Vec<_> = pids.iter().map(|p| procstat::sample(*p)).collect();
    let me_before = procstat::sample(std::process::id());

    let t0 = Instant::now();
    let flapping = args.scenario == Scenario::Flapping;
    let rss = flapping.then(|| RssSampler::start(pids.clone()));
    let sent = if flapping {
        let sent = drive_for(
            http,
            &bases,
            hook,
            Duration::from_secs(args.duration_secs),
            args.rate,
        )
        .await?;
        recv.stop_flapping();
        sent
    } else {
        drive(
            http,
            &bases,
            hook,
            plan.requests,
            args.concurrency,
            plan.critical_percent,
        )
        .await?
    };
    let accepted_in = t0.elapsed().as_secs_f64();
    let accepted = sent.accepted.len();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    while recv.delivered.load(Ordering::Relaxed) < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = t0.elapsed().as_secs_f64();
    let after: Vec<_> = pids.iter().map(|p| procstat::sample(*p)).collect();
    let me_after = procstat::sample(std::process::id());
    let idle = if args.idle_secs > 0 {
        tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
        let later: Vec<_> = pids.iter().map(|p| procstat::sample(*p)).collect();
        Some(
            after
                .iter()
                .zip(&later)
                .map(|(a, b)| b.ticks.saturating_sub(a.ticks))
                .sum::<u64>(),
        )
    } else {
        None
    };
    let end = pids
        .iter()
        .map(|p| procstat::sample(*p))
        .collect::<Vec<_>>();
    let breakers = breaker_transitions(http, &bases).await;
    let rss = match rss {
        Some(sampler) => Some(sampler.stop().await),
        None => None,
    };
    dispatchers.stop().await?;

    let seen = recv.seen.lock();
    let mut e2e = Vec::with_capacity(accepted);
    let mut e2e_critical = Vec::new();
    let mut e2e_low = Vec::new();
    let mut tries = Vec::with_capacity(accepted);
    for (id, (at, critical)) in &sent.accepted {
        let Some(d) = seen.by_id.get(id) else {
            continue;
        };
        tries.push(d.requests);
        if let Some(delivered) = d.delivered_at {
            let ms = delivered.duration_since(*at).as_secs_f64() * 1000.0;
            e2e.push(ms);
            if plan.critical_percent > 0 {
                if *critical {
                    e2e_critical.push(ms);
                } else {
                    e2e_low.push(ms);
                }
            }
        }
    }
    let delivered = e2e.len();
    let completion = recv
        .last_response
        .lock()
        .map_or(total, |at| at.duration_since(t0).as_secs_f64());
    let cpu: f64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| b.cpu_seconds_to(*a))
        .sum();
    let peak_rss: Vec<f64> = end.iter().map(|s| s.peak_rss_kib as f64 / 1024.0).collect();
    let attempts: u64 = tries.iter().map(|n| u64::from(*n)).sum();
    let errors: usize = sent.errors.values().sum();
    let mut report = json!({
        "scenario": args.scenario.name(),
        "requests": plan.requests,
        "concurrency": args.concurrency,
        "instances": args.instances,
        "database": if args.database_url.is_some() { "external" } else { "sqlite" },
        "in_process": args.in_process,
        "receiver": {"delay_ms": plan.behaviour.delay.as_millis() as u64, "fail_rate": plan.behaviour.fail_rate},
        "accepted": accepted,
        "delivered": delivered,
        "errors": errors,
        "errors_by_status": sent.errors.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "duplicates": seen.duplicates,
        "bad_signatures": seen.bad_signatures,
        "accept_seconds": accepted_in,
        "total_seconds": total,
        "completion_seconds": completion,
        "accepted_per_sec": accepted as f64 / accepted_in,
        "delivered_per_sec_end_to_end": delivered as f64 / total,
        "api_latency_ms": summary(sent.latencies_ms),
        "create_to_delivered_ms": summary(e2e),
        "attempts": attempts,
        "retries": attempts.saturating_sub(delivered as u64),
        "failures_sent": seen.failures_sent,
        "retry_gap_ms": summary(seen.retry_gaps_ms.clone()),
        "receiver_max_in_flight": recv.max_in_flight.load(Ordering::Relaxed),
        "dispatcher_cpu_seconds": cpu,
        "dispatcher_cpu_ms_per_task": if delivered > 0 { cpu * 1000.0 / delivered as f64 } else { 0.0 },
        "load_generator_and_receiver_cpu_seconds": if args.in_process { serde_json::Value::Null } else { json!(me_before.cpu_seconds_to(me_after)) },
        "load_average_1m_at_end": load_average(),
        "dispatcher_peak_rss_mib": peak_rss.iter().copied().fold(0.0, f64::max),
        "dispatcher_peak_rss_mib_each": peak_rss,
    });
    if plan.critical_percent > 0 {
        report["critical_create_to_delivered_ms"] = summary(e2e_critical);
        report["low_create_to_delivered_ms"] = summary(e2e_low);
    }
    if let Some(samples) = rss {
        let duration = args.duration_secs as f64;
        let at = |share: f64| {
            samples
                .iter()
                .find(|(t, _)| *t >= duration * share)
                .or(samples.last())
                .map_or(0.0, |(_, kib)| *kib as f64 / 1024.0)
        };
        let (early, late) = (at(0.2), at(0.9));
        report["flapping"] = json!({
            "duration_secs": args.duration_secs,
            "rate_per_sec": args.rate,
            "period_secs": args.period_secs,
            "down_secs": args.down_secs,
            "rss_mib_at_20pct": early,
            "rss_mib_at_90pct": late,
            "rss_growth_pct": if early > 0.0 { (late - early) * 100.0 / early } else { 0.0 },
            "rss_mib_by_minute": samples
                .iter()
                .filter(|(t, _)| t.fract() < 1.0 && (*t as u64).is_multiple_of(60))
                .map(|(_, kib)| *kib as f64 / 1024.0)
                .collect::<Vec<_>>(),
            "breaker_opened": breakers.0,
            "breaker_closed": breakers.1,
        });
    }
    if let Some(ticks) = idle {
        report["idle_seconds"] = json!(args.idle_secs);
        report["idle_cpu_ticks"] = json!(ticks);
    }
    Ok(report)
}

/// The reference run: the same requests, at the same concurrency, through nginx to the sink.
/// Its API latency includes the forwarding (nginx answers once the sink has).
async fn measure_nginx(
    args: &Args,
    plan: &Plan,
    recv: &receiver::Receiver,
    sink: std::net::SocketAddr,
    http: &reqwest::Client,
) -> anyhow::Result<serde_json::Value> {
    let binary = nginx_binary(args);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let nginx = reference::Nginx::start(&binary, sink, workers).await?;
    let pids = nginx.pids();
    let before: Vec<_> = pids.iter().map(|p| procstat::sample(*p)).collect();
    let already = recv.forwarded.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let sent = drive(
        http,
        std::slice::from_ref(&nginx.base),
        "http://unused.invalid/",
        plan.requests,
        args.concurrency,
        0,
    )
    .await;
    let total = t0.elapsed().as_secs_f64();
    let after: Vec<_> = pids.iter().map(|p| procstat::sample(*p)).collect();
    drop(nginx);
    let sent = sent?;
    let forwarded = recv.forwarded.load(Ordering::Relaxed) - already;
    let accepted = sent.accepted.len();
    let cpu: f64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| b.cpu_seconds_to(*a))
        .sum();
    Ok(json!({
        "name": "nginx",
        "version": reference::Nginx::version(&binary),
        "workers": workers,
        "requests": plan.requests,
        "concurrency": args.concurrency,
        "accepted": accepted,
        "forwarded": forwarded,
        "errors": sent.errors.values().sum::<usize>(),
        "total_seconds": total,
        "forwarded_per_sec_end_to_end": forwarded as f64 / total,
        "api_latency_ms": summary(sent.latencies_ms),
        "nginx_cpu_seconds": cpu,
        "nginx_cpu_ms_per_task": if forwarded > 0 { cpu * 1000.0 / forwarded as f64 } else { 0.0 },
        "load_average_1m_at_end": load_average(),
    }))
}

/// `--nginx`, else `nginx` on the `PATH`, else Debian's `/usr/sbin/nginx` (not on a normal
/// user's `PATH`).
fn nginx_binary(args: &Args) -> std::path::PathBuf {
    if let Some(p) = &args.nginx {
        return p.clone();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "/usr/sbin/nginx".into())
}

/// Sends tasks at `rate` per second for `duration` (at most 256 requests in flight), round
/// robin over `bases`, with the soak's priority mix: 10 % critical, 20 % high, 30 % medium,
/// 40 % low. `Sent::accepted` marks the critical ones.
async fn drive_for(
    http: &reqwest::Client,
    bases: &[String],
    hook: &str,
    duration: Duration,
    rate: u32,
) -> anyhow::Result<Sent> {
    let seed = include_str!("../../../crates/task-package/tests/golden/seed_flat_request.json");
    let mut body: serde_json::Value = serde_json::from_str(seed)?;
    body["webhook_url"] = hook.into();
    let mut bodies = Vec::new();
    for priority in ["critical", "high", "medium", "low"] {
        body["priority"] = priority.into();
        bodies.push(body.to_string());
    }
    // i % 10 -> priority: 0 critical, 1-2 high, 3-5 medium, 6-9 low.
    const MIX: [usize; 10] = [0, 1, 1, 2, 2, 2, 3, 3, 3, 3];
    let bodies = Arc::new(bodies);
    let sent = Arc::new(Mutex::new(Sent::default()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut set = tokio::task::JoinSet::new();
    let mut i = 0usize;
    while Instant::now() < end {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let kind = MIX[i % MIX.len()];
        let (http, url, bodies, sent) = (
            http.clone(),
            format!("{}/workflow/tasks", bases[i % bases.len()]),
            bodies.clone(),
            sent.clone(),
        );
        set.spawn(async move {
            let _permit = permit;
            let start = Instant::now();
            let answer = create_task(&http, &url, &bodies[kind]).await;
            let mut s = sent.lock();
            s.latencies_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            match answer {
                Ok(id) => {
                    s.accepted.insert(id, (start, kind == 0));
                }
                Err(status) => *s.errors.entry(status).or_default() += 1,
            }
        });
        i += 1;
        while set.try_join_next().is_some() {}
    }
    while let Some(r) = set.join_next().await {
        r?;
    }
    let sent = std::mem::take(&mut *sent.lock());
    Ok(sent)
}

/// Samples the dispatchers' resident memory (summed) once a second.
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<(f64, u64)>>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> RssSampler {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let kib = pids.iter().map(|p| procstat::sample(*p).rss_kib).sum();
                samples.push((t0.elapsed().as_secs_f64(), kib));
            }
            samples
        });
        RssSampler { stop, task }
    }

    /// `(seconds since start, KiB)` samples.
    async fn stop(self) -> Vec<(f64, u64)> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// How often breakers opened and closed, summed over `bases`' `/metrics`
/// (`circuit_breaker_transitions_total{to="open"}` and `{to="closed"}`).
async fn breaker_transitions(http: &reqwest::Client, bases: &[String]) -> (u64, u64) {
    let (mut opened, mut closed) = (0, 0);
    for base in bases {
        let Ok(r) = http
            .get(format!("{base}/metrics"))
            .bearer_auth(KEY)
            .send()
            .await
        else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        for line in text.lines() {
            let value = || {
                line.rsplit_once(' ')
                    .and_then(|(_, v)| v.parse::<f64>().ok())
                    .unwrap_or(0.0) as u64
            };
            if line.starts_with("circuit_breaker_transitions_total{") {
                if line.contains("to=\"open\"") {
                    opened += value();
                } else if line.contains("to=\"closed\"") {
                    closed += value();
                }
            }
        }
    }
    (opened, closed)
}

fn print_table(r: &serde_json::Value) {
    if r.get("accepted").is_some() {
        print_dispatcher_table(r);
    }
    if let Some(n) = r.get("reference") {
        let lat = &n["api_latency_ms"];
        println!(
            "reference {} ({}, {} workers): {} requests at concurrency {}, unsigned, not stored",
            n["name"].as_str().unwrap_or(""),
            n["version"].as_str().unwrap_or(""),
            n["workers"],
            n["requests"],
            n["concurrency"]
        );
        println!(
            "  forwarded             {:>8} ({:.0}/s end to end), errors {}",
            n["forwarded"],
            f(&n["forwarded_per_sec_end_to_end"]),
            n["errors"]
        );
        println!("  API latency ms        {}", percentiles(lat));
        println!(
            "  nginx                 {:.2} CPU s ({:.3} ms/task), machine load {:.2} at the end",
            f(&n["nginx_cpu_seconds"]),
            f(&n["nginx_cpu_ms_per_task"]),
            f(&n["load_average_1m_at_end"])
        );
    }
    if let Some(share) = r["share_of_reference"].as_f64() {
        println!(
            "the dispatcher delivered {:.1} % of the reference's rate",
            share * 100.0
        );
    }
}

/// One [`summary`] as a table cell: p50, p90, p99 and max.
fn percentiles(v: &serde_json::Value) -> String {
    format!(
        "p50 {:>8.2}  p90 {:>8.2}  p99 {:>8.2}  max {:>8.2}",
        f(&v["p50"]),
        f(&v["p90"]),
        f(&v["p99"]),
        f(&v["max"])
    )
}

fn print_dispatcher_table(r: &serde_json::Value) {
    let lat = |k: &str| percentiles(&r[k]);
    println!(
        "scenario {}: {} requests at concurrency {}, {} dispatcher(s), database {}",
        r["scenario"].as_str().unwrap_or(""),
        r["requests"],
        r["concurrency"],
        r["instances"],
        r["database"].as_str().unwrap_or("")
    );
    println!(
        "  accepted              {:>8} ({:.0}/s)",
        r["accepted"],
        f(&r["accepted_per_sec"])
    );
    println!(
        "  delivered             {:>8} ({:.0}/s end to end, last at {:.2} s)",
        r["delivered"],
        f(&r["delivered_per_sec_end_to_end"]),
        f(&r["completion_seconds"])
    );
    println!("  API latency ms        {}", lat("api_latency_ms"));
    println!("  create->delivered ms  {}", lat("create_to_delivered_ms"));
    if r.get("critical_create_to_delivered_ms").is_some() {
        println!(
            "    critical ms         {}",
            lat("critical_create_to_delivered_ms")
        );
        println!(
            "    low ms              {}",
            lat("low_create_to_delivered_ms")
        );
    }
    println!(
        "  attempts              {:>8} (retries {}, 500s sent {})",
        r["attempts"], r["retries"], r["failures_sent"]
    );
    if r["retry_gap_ms"]["count"].as_u64().unwrap_or(0) > 0 {
        println!("  retry gap ms          {}", lat("retry_gap_ms"));
    }
    println!(
        "  receiver in flight    {:>8} at most",
        r["receiver_max_in_flight"]
    );
    println!(
        "  dispatcher            {:.2} CPU s ({:.3} ms/task), peak RSS {:.1} MiB",
        f(&r["dispatcher_cpu_seconds"]),
        f(&r["dispatcher_cpu_ms_per_task"]),
        f(&r["dispatcher_peak_rss_mib"])
    );
    if let Some(cpu) = r["load_generator_and_receiver_cpu_seconds"].as_f64() {
        println!("  bench process         {cpu:.2} CPU s (load generator and receiver)");
    }
    println!(
        "  machine load          {:.2} (1-minute average at the end)",
        f(&r["load_average_1m_at_end"])
    );
    if let Some(t) = r.get("idle_cpu_ticks") {
        println!(
            "  idle                  {t} CPU ticks (10 ms each) in {} s",
            r["idle_seconds"]
        );
    }
    if let Some(flap) = r.get("flapping") {
        println!(
            "  soak                  {} s at {}/s, receiver down {} s of every {} s",
            flap["duration_secs"], flap["rate_per_sec"], flap["down_secs"], flap["period_secs"]
        );
        println!(
            "  memory                {:.1} MiB at 20 %, {:.1} MiB at 90 % ({:+.1} %), by minute {}",
            f(&flap["rss_mib_at_20pct"]),
            f(&flap["rss_mib_at_90pct"]),
            f(&flap["rss_growth_pct"]),
            flap["rss_mib_by_minute"]
        );
        println!(
            "  breakers              opened {} times, closed {} times",
            flap["breaker_opened"], flap["breaker_closed"]
        );
    }
    println!(
        "  errors {} {}  duplicates {}  bad signatures {}",
        r["errors"], r["errors_by_status"], r["duplicates"], r["bad_signatures"]
    );
}
