//! The real `dingtalk-bot` executable: `dingtalk-bot backup PATH` copies the job database of a
//! running bot, and the HTTP-callback listener cuts off idle connections and answers 503 past
//! `--max-connections`.
#![cfg(unix)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

/// Far longer than any step needs: waiting this long means a bug, not a slow machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The bot executable with only this test's settings (none from the caller's shell).
fn bot(mock: &DingTalkMock, data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dingtalk-bot"));
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| k.starts_with("BOT_") || k.starts_with("DINGTALK_"))
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "warn")
        .env("DINGTALK_CLIENT_ID", &mock.config().client_id)
        .env("DINGTALK_CLIENT_SECRET", &mock.config().client_secret)
        .env("DINGTALK_ROBOT_CODE", &mock.config().robot_code)
        .env("DINGTALK_API_BASE", mock.base_url())
        .env("DINGTALK_OAPI_BASE", mock.base_url())
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null());
    cmd
}

/// Kills the bot when dropped, so a failing test leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn backup_copies_the_job_database_of_a_running_bot() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _bot = Running(
        bot(&mock, dir.path())
            .args(["--mode", "stream", "--processor", "echo"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while mock.connections() != 1 {
        assert!(start.elapsed() < DEADLINE, "the bot never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A long request becomes a durable job: there is something to back up.
    mock.say(MockMessage::single("u1", "市场调研 华东")).await;
    let result = "处理结果：市场调研 华东";
    while !mock.outbox().iter().any(|e| e.text == result) {
        assert!(start.elapsed() < DEADLINE, "the job never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let copy = dir.path().join("bot-backup.db");
    let out = bot(&mock, dir.path())
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
    assert!(stdout.contains("1 tasks"), "{stdout}");
    assert!(copy.exists());
}

#[tokio::test]
async fn the_http_callback_listener_refuses_past_its_cap_and_cuts_off_idle_clients() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _bot = Running(
        bot(&mock, dir.path())
            .args(["--mode", "http", "--processor", "echo"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--max-connections", "2", "--header-timeout", "1s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let mut idle = Vec::new();
    while idle.len() < 2 {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(tcp) => idle.push(tcp),
            Err(_) => {
                assert!(start.elapsed() < DEADLINE, "the bot never listened");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, third.read_to_end(&mut answer))
        .await
        .expect("the refused connection was closed")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    for tcp in &mut idle {
        let mut rest = Vec::new();
        tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut rest))
            .await
            .expect("an idle connection was kept open past the header timeout")
            .ok();
    }
}
