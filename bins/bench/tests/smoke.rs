//! CI smoke test of the bench tool: a small run must deliver everything with valid signatures.
//! Figures are printed, never asserted.

#[test]
fn a_small_run_delivers_everything() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["-n", "300", "-c", "8", "--in-process", "--json"])
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("json report");
    println!("{report}");
    assert_eq!(report["accepted"], 300);
    assert_eq!(report["delivered"], 300);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["bad_signatures"], 0);
}
