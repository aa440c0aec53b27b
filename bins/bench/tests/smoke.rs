//! CI smoke tests of the bench tool: a small run of each scenario must deliver everything with
//! valid signatures, so the tool never rots. Figures are printed, never asserted.

fn run(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .args(["--in-process", "--json"])
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("json report");
    println!("{report}");
    report
}

fn assert_all_delivered(report: &serde_json::Value, n: u64) {
    assert_eq!(report["accepted"], n, "{report}");
    assert_eq!(report["delivered"], n, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["bad_signatures"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["create_to_delivered_ms"]["count"], n, "{report}");
    assert!(
        report["api_latency_ms"]["p99"].as_f64().is_some(),
        "{report}"
    );
}

#[test]
fn steady_delivers_everything() {
    let r = run(&[
        "--scenario",
        "steady",
        "-n",
        "300",
        "-c",
        "8",
        "--idle-secs",
        "1",
    ]);
    assert_all_delivered(&r, 300);
    assert_eq!(r["scenario"], "steady");
    assert!(r["idle_cpu_ticks"].is_u64(), "{r}");
}

#[test]
fn slow_receiver_holds_every_delivery_in_flight_at_once() {
    let r = run(&["--scenario", "slow", "-n", "200", "-c", "16"]);
    assert_all_delivered(&r, 200);
    assert_eq!(r["receiver"]["delay_ms"], 1000);
    // Not a timing: the dispatcher was configured to allow all 200 at once, and the receiver
    // saw more than one at a time (the first request may arrive before the rest are posted).
    assert!(r["receiver_max_in_flight"].as_u64() > Some(1), "{r}");
}

#[test]
fn failing_receiver_is_retried_until_everything_is_delivered() {
    let r = run(&["--scenario", "failing", "-n", "200", "-c", "16"]);
    assert_all_delivered(&r, 200);
    // Half of all attempts fail, so some tasks needed retries, and each retry followed a 500.
    let retries = r["retries"].as_u64().unwrap_or(0);
    assert!(retries > 0, "{r}");
    assert_eq!(Some(retries), r["failures_sent"].as_u64(), "{r}");
    // Retries are scheduled after the base delay (50 ms), never at once.
    assert!(r["retry_gap_ms"]["count"].as_u64() == Some(retries), "{r}");
    assert!(r["retry_gap_ms"]["p50"].as_f64() >= Some(50.0), "{r}");
}

#[test]
fn priority_mix_reports_both_classes() {
    let r = run(&["--scenario", "priority", "-n", "400", "-c", "16"]);
    assert_all_delivered(&r, 400);
    assert_eq!(r["critical_create_to_delivered_ms"]["count"], 40, "{r}");
    assert_eq!(r["low_create_to_delivered_ms"]["count"], 360, "{r}");
}

/// The soak in 20 seconds: a receiver down 4 s of every 10 s. Every task is delivered once,
/// and the breakers opened during the outages and closed after them.
#[test]
fn flapping_receiver_loses_and_duplicates_nothing_and_breakers_recover() {
    let r = run(&[
        "--scenario",
        "flapping",
        "--duration-secs",
        "20",
        "--period-secs",
        "10",
        "--down-secs",
        "4",
        "--rate",
        "20",
    ]);
    let accepted = r["accepted"].as_u64().unwrap_or(0);
    assert!(accepted > 100, "{r}");
    assert_all_delivered(&r, accepted);
    assert!(
        r["failures_sent"].as_u64() > Some(0),
        "the receiver never went down: {r}"
    );
    let flap = &r["flapping"];
    assert!(flap["breaker_opened"].as_u64() >= Some(1), "{r}");
    assert!(flap["breaker_closed"].as_u64() >= Some(1), "{r}");
    assert!(flap["rss_mib_at_90pct"].as_f64() > Some(0.0), "{r}");
}

#[test]
fn several_instances_need_a_shared_database() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--instances", "2", "-n", "10", "--in-process"])
        .output()
        .expect("run bench");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shared database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `TEST_DATABASE_URL` set (an empty PostgreSQL database), two instances share it.
#[test]
fn two_instances_on_postgres_when_available() {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        println!("TEST_DATABASE_URL not set: skipped");
        return;
    };
    let r = run(&[
        "--database-url",
        &url,
        "--instances",
        "2",
        "-n",
        "200",
        "-c",
        "8",
    ]);
    assert_all_delivered(&r, 200);
    assert_eq!(r["instances"], 2);
}

/// Debian's nginx, as `bench` looks it up; `None` when it is not installed.
fn nginx() -> Option<std::path::PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nginx"));
    on_path
        .chain(std::iter::once("/usr/sbin/nginx".into()))
        .find(|p| p.is_file())
}

#[test]
fn the_nginx_reference_forwards_every_request_in_the_same_run() {
    if nginx().is_none() {
        assert!(
            std::env::var_os("BENCH_NGINX_REQUIRED").is_none(),
            "BENCH_NGINX_REQUIRED is set but nginx is not installed (apt-get install nginx)"
        );
        eprintln!("skipped: nginx is not installed (apt-get install nginx)");
        return;
    }
    let r = run(&[
        "--scenario",
        "steady",
        "-n",
        "300",
        "-c",
        "8",
        "--reference",
        "nginx",
    ]);
    assert_all_delivered(&r, 300);
    let reference = &r["reference"];
    assert_eq!(reference["name"], "nginx", "{r}");
    assert_eq!(reference["accepted"], 300, "{r}");
    assert_eq!(reference["forwarded"], 300, "{r}");
    assert_eq!(reference["errors"], 0, "{r}");
    assert_eq!(reference["api_latency_ms"]["count"], 300, "{r}");
    assert!(r["share_of_reference"].as_f64() > Some(0.0), "{r}");

    // The reference alone: no dispatcher is started, the report holds only it.
    let only = run(&["-n", "100", "-c", "4", "--reference-only"]);
    assert!(only.get("accepted").is_none(), "{only}");
    assert_eq!(only["reference"]["forwarded"], 100, "{only}");
}

#[test]
fn the_reference_is_refused_outside_the_steady_scenario() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--scenario", "slow", "--reference", "nginx", "--json"])
        .output()
        .expect("run bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("steady scenario"), "{stderr}");
}
