//! The real binary under connection abuse and its `backup` subcommand: idle and slow clients
//! are cut off at `--header-timeout`, clients past `--max-connections` get 503 while
//! `/healthz` keeps answering once they let go, and `dispatcher backup` copies a running
//! instance's database.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{
    KEY, command, free_port, get_json, http, receiver, seed_body, spawn, spawn_logged,
    stopped_cleanly, terminate, wait_healthy,
};

/// Far longer than the limits set below: waiting this long means a bug, not a slow machine.
const PATIENCE: Duration = Duration::from_secs(30);

async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got))
        .await
        .expect("the dispatcher kept the connection open")
        .ok();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn idle_connections_past_the_cap_get_503_and_are_cut_off_so_healthz_answers_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(
        dir.path(),
        port,
        &["--max-connections", "8", "--header-timeout", "1s"],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = http();
    wait_healthy(&client, &base).await;
    // Idle clients take every slot (reqwest's pooled connection from wait_healthy may hold one).
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let refused = read_until_closed(&mut extra).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    assert!(refused.contains("too_many_connections"), "{refused}");
    // The idle ones never send a request: each is closed at the header timeout...
    for tcp in &mut idle {
        read_until_closed(tcp).await;
    }
    // ...and the service answers again.
    let fresh = reqwest::Client::new();
    let health = fresh.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // A slowloris sender is cut off too.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"POST /workflow/tasks HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let dripped = tokio::time::timeout(PATIENCE, async {
        while slow.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        dripped.is_ok(),
        "a client dripping header bytes was never cut off"
    );
    terminate(&child);
    assert!(child.wait().unwrap().success());
}

// Two workers: the test blocks its thread on the backup command and on the child's exit, and
// the receiver must still answer the deliveries meanwhile, or the dispatcher's shutdown waits
// out its grace for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_copies_a_running_dispatchers_tasks_and_the_copy_restores() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = spawn_logged(dir.path(), port, &logs.path().join("first.log"));
    let base = format!("http://127.0.0.1:{port}");
    let client = http();
    wait_healthy(&client, &base).await;
    let (hook, _seen) = receiver().await;
    for _ in 0..5 {
        let created = client
            .post(format!("{base}/workflow/tasks"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(seed_body(&hook))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200);
    }
    let copy = dir.path().join("backup.db");
    let out = command(dir.path(), port)
        .arg("backup")
        .arg(&copy)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("5 tasks"), "{stdout}");
    // A second backup to the same path is refused, not overwritten.
    let again = command(dir.path(), port)
        .arg("backup")
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let refusal = String::from_utf8_lossy(&again.stderr);
    assert!(refusal.contains("exists"), "{refusal}");
    assert_eq!(refusal.lines().count(), 1, "one line: {refusal}");
    let reason = refusal.rsplit(": ").next().unwrap().trim();
    assert_eq!(
        refusal.matches(reason).count(),
        1,
        "the reason once: {refusal}"
    );
    stopped_cleanly(child, &logs.path().join("first.log"));
    // Restore: the copy in place of the database, on a fresh data dir.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&copy, restored.path().join("dispatcher.db")).unwrap();
    let port = free_port();
    let child = spawn_logged(restored.path(), port, &logs.path().join("restored.log"));
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&client, &base).await;
    let listed = get_json(&client, &base, "/workflow/tasks").await;
    let tasks = listed["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 5, "{listed}");
    stopped_cleanly(child, &logs.path().join("restored.log"));
}

#[test]
fn backup_of_a_postgres_database_points_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path(), free_port())
        .args([
            "--database-url",
            "postgres://u:secret@127.0.0.1:1/db",
            "backup",
        ])
        .arg(dir.path().join("x.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

/// Started with a soft open-file limit of 256 (as many service managers start a process at
/// 1024), the dispatcher raises it to the hard limit and says so in its log.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let inner = command(dir.path(), port);
    let mut cmd = std::process::Command::new("sh");
    // `exec` keeps the pid: the shell becomes the dispatcher, with the lowered soft limit.
    cmd.arg("-c")
        .arg("ulimit -S -n 256 && exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .args(["--api-keys", KEY])
        .env("RUST_LOG", "info")
        .env_remove("DISPATCHER_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&http(), &base).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft equals hard: {line}");
    terminate(&child);
    let out = child.wait_with_output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("open-file limit"), "{log}");
    assert!(log.contains(numbers[1]), "the log names the limit: {log}");
}
