//! CI smoke of `bench-bot`: a few messages and long jobs through the bot in-process, so the tool
//! never rots. It checks that every answer arrived exactly once and that the report has the
//! fields the README quotes; it never asserts a timing.

use std::process::Command;

#[test]
fn bench_bot_runs_end_to_end_and_reports_every_measure() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-bot"))
        .args([
            "--in-process",
            "--json",
            "--messages",
            "20",
            "--rate",
            "100",
        ])
        .args([
            "--long-jobs",
            "20",
            "--job-time",
            "200ms",
            "--qps-limit",
            "20",
        ])
        .output()
        .expect("bench-bot runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench-bot failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let latency = &report["latency_phase"];
    assert_eq!(latency["answers_complete"], 20);
    assert_eq!(
        latency["ack"]["count"], 20,
        "every CALLBACK was ACKed and timed"
    );
    assert_eq!(latency["processing_reply"]["count"], 20);
    let jobs = &report["long_jobs_phase"];
    assert_eq!(jobs["pushed_exactly_once"], 20);
    assert_eq!(jobs["wrong_or_duplicate"], 0);
    assert_eq!(jobs["ack"]["count"], 20);
    for field in ["p50_ms", "p99_ms", "max_ms"] {
        assert!(latency["ack"][field].is_number(), "{field} missing");
    }
    assert!(jobs["bot_rss_peak_mib"].as_f64().unwrap() > 0.0);
}
