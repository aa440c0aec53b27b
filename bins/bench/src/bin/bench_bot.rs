//! `bench-bot`: the real `dingtalk-bot` binary against `dingtalk-mock`, measured the way DingTalk
//! and a user see it.
//!
//! Two phases, one bot process (Stream mode, `echo` processor with a delay standing in for the
//! slow backend):
//!
//! 1. **latency**: `--messages` short requests from distinct users, paced at `--rate` per
//!    second. Reports the ACK latency (the mock's clock from handing a CALLBACK frame to its
//!    socket to reading the ACK) and the time from saying a message to the "收到任务，正在处理中..."
//!    reply arriving at the session webhook, then waits for every answer.
//! 2. **long jobs**: `--long-jobs` long requests ("分析公司 …") sent at once, all running
//!    together (`BOT_MAX_JOBS` is raised to fit), each answered by a push through `batchSend`
//!    under the mock's real 20 QPS limit. Reports the bot's RSS before, at peak and after, its
//!    CPU, and the time until every result was pushed; checks every result arrived once and
//!    exactly.
//!
//! ```sh
//! cargo build --release -p dingtalk-bot -p bench
//! target/release/bench-bot                      # add --json for machine-readable output
//! target/release/bench-bot --tls                # the mock over https/wss, as the real cloud
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage, OutboxEntry};
use parking_lot::Mutex;

#[derive(Debug, Parser)]
#[command(
    name = "bench-bot",
    about = "Measure the DingTalk bot against dingtalk-mock: ACK and reply latency, 1,000 concurrent long jobs"
)]
struct Args {
    /// Short requests in the latency phase.
    #[arg(long, default_value_t = 2_000)]
    messages: usize,
    /// Short requests said per second in the latency phase.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Long jobs running together in the second phase.
    #[arg(long, default_value_t = 1_000)]
    long_jobs: usize,
    /// How long each job takes (the echo processor's delay).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    job_time: Duration,
    /// The mock's per-API QPS limit (DingTalk's default is 20); 0 for none.
    #[arg(long, default_value_t = 20)]
    qps_limit: u32,
    /// The bot binary (default: `dingtalk-bot` next to this one).
    #[arg(long)]
    bot: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Run the bot inside this process instead of its binary (for the CI smoke test; CPU and
    /// memory then include the mock and this tool).
    #[arg(long)]
    in_process: bool,
    /// Serve the mock over https/wss (a throwaway CA the bot is told to trust), as the real
    /// cloud does, so the figures include TLS.
    #[arg(long)]
    tls: bool,
}

/// The bot process's CPU seconds and resident memory, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct ProcStats {
    cpu_s: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn proc_stats(pid: u32) -> ProcStats {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    ProcStats {
        // utime and stime, in clock ticks of 1/100 s on Linux.
        cpu_s: (ticks(11) + ticks(12)) / 100.0,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    }
}

/// Percentile `p` (0..=1) of sorted durations, in milliseconds.
fn pct_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[derive(Debug, serde::Serialize)]
struct Summary {
    count: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn summary(mut v: Vec<Duration>) -> Summary {
    v.sort();
    Summary {
        count: v.len(),
        p50_ms: pct_ms(&v, 0.5),
        p90_ms: pct_ms(&v, 0.9),
        p99_ms: pct_ms(&v, 0.99),
        max_ms: v.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    }
}

/// What arrived in the outbox, keyed by conversation (one user per conversation here).
#[derive(Debug, Default)]
struct Seen {
    /// Conversation → when its first session-webhook message (the "processing" reply) arrived.
    first_reply: HashMap<String, Instant>,
    /// Conversation → session-webhook messages so far.
    replies: HashMap<String, Vec<String>>,
    /// User → texts pushed through batchSend.
    pushed: HashMap<String, Vec<String>>,
}

impl Seen {
    fn note(&mut self, entry: OutboxEntry, at: Instant) {
        match entry.channel.as_str() {
            "session_webhook" => {
                let conv = entry.to.first().cloned().unwrap_or_default();
                self.first_reply.entry(conv.clone()).or_insert(at);
                self.replies.entry(conv).or_default().push(entry.text);
            }
            "batch_send" => {
                for user in entry.to {
                    self.pushed
                        .entry(user)
                        .or_default()
                        .push(entry.text.clone());
                }
            }
            _ => {}
        }
    }
}

/// The bot under test: its binary, or (`--in-process`) its library on this runtime.
enum Bot {
    Process {
        child: Child,
        _dir: tempfile::TempDir,
    },
    InProcess {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
        _dir: tempfile::TempDir,
    },
}

impl Bot {
    fn pid(&self) -> u32 {
        match self {
            Bot::Process { child, .. } => child.id(),
            Bot::InProcess { .. } => std::process::id(),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Bot::Process { mut child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
                Ok(())
            }
            Bot::InProcess { stop, task, .. } => {
                let _ = stop.send(());
                task.await?
            }
        }
    }
}

fn max_jobs(args: &Args) -> usize {
    (args.long_jobs + args.messages).max(32)
}

/// Writes the mock's CA (TLS mode) where the bot can read it.
fn write_ca(mock: &DingTalkMock, dir: &tempfile::TempDir) -> anyhow::Result<Option<PathBuf>> {
    let Some(pem) = mock.ca_pem() else {
        return Ok(None);
    };
    let path = dir.path().join("mock-ca.pem");
    std::fs::write(&path, pem).context("while writing the mock's CA")?;
    Ok(Some(path))
}

fn start_bot_in_process(args: &Args, mock: &DingTalkMock) -> anyhow::Result<Bot> {
    let dir = tempfile::tempdir()?;
    let ca_file = write_ca(mock, &dir)?;
    let config = dingtalk_bot::Config {
        ca_file,
        client_id: mock.config().client_id.clone(),
        client_secret: mock.config().client_secret.clone(),
        api_base: mock.base_url(),
        oapi_base: mock.base_url(),
        data_dir: dir.path().to_path_buf(),
        echo_delay: args.job_time,
        max_jobs: max_jobs(args),
        ..dingtalk_bot::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(dingtalk_bot::run(config, async move {
        let _ = stopped.await;
    }));
    Ok(Bot::InProcess {
        stop,
        task,
        _dir: dir,
    })
}

fn start_bot(args: &Args, mock: &DingTalkMock) -> anyhow::Result<Bot> {
    let exe = match &args.bot {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("dingtalk-bot"),
    };
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(&exe);
    if let Some(ca) = write_ca(mock, &dir)? {
        command.arg("--ca-file").arg(ca);
    }
    let child = command
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--processor", "echo"])
        .env("DINGTALK_CLIENT_ID", &mock.config().client_id)
        .env("DINGTALK_CLIENT_SECRET", &mock.config().client_secret)
        .env("DINGTALK_API_BASE", mock.base_url())
        .env("DINGTALK_OAPI_BASE", mock.base_url())
        .env(
            "BOT_ECHO_DELAY",
            humantime::format_duration(args.job_time).to_string(),
        )
        .env("BOT_MAX_JOBS", max_jobs(args).to_string())
        // The bot logs every event at info, as in production; the terminal is not measured.
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "while starting {} (build it with cargo build --release -p dingtalk-bot)",
                exe.display()
            )
        })?;
    Ok(Bot::Process { child, _dir: dir })
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct Report {
    bot_rss_idle_mib: f64,
    latency_phase: LatencyPhase,
    long_jobs_phase: LongJobsPhase,
}

#[derive(Debug, serde::Serialize)]
struct LatencyPhase {
    messages: usize,
    rate_per_s: u32,
    ack: Summary,
    processing_reply: Summary,
    answers_complete: usize,
}

#[derive(Debug, serde::Serialize)]
struct LongJobsPhase {
    jobs: usize,
    job_time_s: f64,
    ack: Summary,
    processing_reply: Summary,
    all_pushed_s: f64,
    pushed_exactly_once: usize,
    wrong_or_duplicate: usize,
    bot_rss_before_mib: f64,
    bot_rss_peak_mib: f64,
    bot_rss_after_mib: f64,
    bot_cpu_s: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mock_config = MockConfig {
        qps_limit: (args.qps_limit > 0).then_some(args.qps_limit),
        ..MockConfig::default()
    };
    let mock = if args.tls {
        DingTalkMock::start_tls(mock_config).await?
    } else {
        DingTalkMock::start(mock_config).await?
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut outbox = mock.subscribe_outbox();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            match outbox.recv().await {
                Ok(entry) => s.lock().note(entry, Instant::now()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("warning: the outbox subscriber missed {n} entries");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    let bot = if args.in_process {
        start_bot_in_process(&args, &mock)?
    } else {
        start_bot(&args, &mock)?
    };
    let pid = bot.pid();
    wait_until("the bot to connect", Duration::from_secs(30), || {
        mock.connections() > 0
    })
    .await?;
    // Let it settle (token fetched, engine started) before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = proc_stats(pid);

    // Phase 1: paced short requests.
    let gap = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut said_at = HashMap::with_capacity(args.messages);
    let mut tick = tokio::time::interval(gap);
    for i in 0..args.messages {
        tick.tick().await;
        let message = MockMessage::single(&format!("lat-{i}"), &format!("你好 {i}"));
        let conv = message.conversation_id();
        said_at.insert(conv, Instant::now());
        let said = mock.say(message).await;
        if !said.delivered {
            bail!("message {i} did not reach the bot");
        }
    }
    let limit = args.job_time + Duration::from_secs(120);
    wait_until("every short answer", limit, || {
        let s = seen.lock();
        said_at
            .keys()
            .all(|c| s.replies.get(c).is_some_and(|r| r.len() >= 2))
    })
    .await?;
    let (replies, answers_complete) = {
        let s = seen.lock();
        let replies: Vec<Duration> = said_at
            .iter()
            .filter_map(|(c, t0)| s.first_reply.get(c).map(|t| t.duration_since(*t0)))
            .collect();
        let complete = said_at
            .keys()
            .filter(|c| {
                s.replies.get(*c).is_some_and(|r| {
                    r.len() == 2
                        && r[0].starts_with("收到任务")
                        && r[1].starts_with("处理结果：你好")
                })
            })
            .count();
        (replies, complete)
    };
    let acks_phase1 = mock.ack_latencies();
    let latency_phase = LatencyPhase {
        messages: args.messages,
        rate_per_s: args.rate,
        ack: summary(acks_phase1.clone()),
        processing_reply: summary(replies),
        answers_complete,
    };

    // Phase 2: long jobs, all at once.
    let before = proc_stats(pid);
    let peak = Arc::new(Mutex::new(before.rss_kib));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let now = proc_stats(pid).rss_kib;
                {
                    let mut p = peak.lock();
                    *p = (*p).max(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let start = Instant::now();
    let mut long_said = HashMap::with_capacity(args.long_jobs);
    for i in 0..args.long_jobs {
        let user = format!("job-{i}");
        let message = MockMessage::single(&user, &format!("分析公司 ACME-{i}"));
        long_said.insert(message.conversation_id(), (user, i, Instant::now()));
        if !mock.say(message).await.delivered {
            bail!("long job {i} did not reach the bot");
        }
        // The mock shares this runtime: let its socket writer run, as DingTalk's would.
        tokio::task::yield_now().await;
    }
    let limit = args.job_time + Duration::from_secs(600);
    wait_until("every long result", limit, || {
        let s = seen.lock();
        long_said
            .values()
            .all(|(user, _, _)| s.pushed.contains_key(user))
    })
    .await?;
    let all_pushed = start.elapsed();
    // Give late duplicates a moment to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sampler.abort();
    let after = proc_stats(pid);
    let (long_replies, exact, wrong) = {
        let s = seen.lock();
        let replies: Vec<Duration> = long_said
            .iter()
            .filter_map(|(c, (_, _, t0))| s.first_reply.get(c).map(|t| t.duration_since(*t0)))
            .collect();
        let mut exact = 0;
        let mut wrong = 0;
        for (user, i, _) in long_said.values() {
            match s.pushed.get(user).map(Vec::as_slice) {
                Some([one]) if *one == format!("处理结果：分析公司 ACME-{i}") => {
                    exact += 1
                }
                _ => wrong += 1,
            }
        }
        (replies, exact, wrong)
    };
    let acks_all = mock.ack_latencies();
    let long_jobs_phase = LongJobsPhase {
        jobs: args.long_jobs,
        job_time_s: args.job_time.as_secs_f64(),
        ack: summary(acks_all[acks_phase1.len().min(acks_all.len())..].to_vec()),
        processing_reply: summary(long_replies),
        all_pushed_s: all_pushed.as_secs_f64(),
        pushed_exactly_once: exact,
        wrong_or_duplicate: wrong,
        bot_rss_before_mib: before.rss_kib as f64 / 1024.0,
        bot_rss_peak_mib: (*peak.lock()).max(after.hwm_kib) as f64 / 1024.0,
        bot_rss_after_mib: after.rss_kib as f64 / 1024.0,
        bot_cpu_s: after.cpu_s - before.cpu_s,
    };
    let report = Report {
        bot_rss_idle_mib: idle.rss_kib as f64 / 1024.0,
        latency_phase,
        long_jobs_phase,
    };
    bot.stop().await?;
    mock.shutdown().await;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if report.latency_phase.answers_complete != args.messages
        || report.long_jobs_phase.wrong_or_duplicate > 0
    {
        bail!("some answers were missing, wrong or duplicated");
    }
    Ok(())
}

fn print_table(r: &Report) {
    let row = |name: &str, s: &Summary| {
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
        );
    };
    let l = &r.latency_phase;
    let j = &r.long_jobs_phase;
    println!(
        "latency phase: {} short requests at {}/s; long-jobs phase: {} jobs of {:.0} s at once",
        l.messages, l.rate_per_s, j.jobs, j.job_time_s
    );
    println!("| measure | n | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    row("ACK (paced)", &l.ack);
    row(
        "message → \"processing\" reply (paced)",
        &l.processing_reply,
    );
    row(&format!("ACK ({}-job burst)", j.jobs), &j.ack);
    row(
        &format!("message → \"processing\" reply ({}-job burst)", j.jobs),
        &j.processing_reply,
    );
    println!(
        "answers complete: {}/{}; long results pushed exactly once: {}/{} (wrong or duplicate: {}) in {:.1} s",
        l.answers_complete,
        l.messages,
        j.pushed_exactly_once,
        j.jobs,
        j.wrong_or_duplicate,
        j.all_pushed_s
    );
    println!(
        "bot RSS: idle {:.1} MiB, before burst {:.1} MiB, peak {:.1} MiB, after {:.1} MiB; burst CPU {:.2} s",
        r.bot_rss_idle_mib,
        j.bot_rss_before_mib,
        j.bot_rss_peak_mib,
        j.bot_rss_after_mib,
        j.bot_cpu_s
    );
}
