//! The real `dingtalk-bot` executable with its job database on PostgreSQL, over the verified
//! TLS that `scripts/with-postgres.sh` serves (a TLS-only server, a `verify-full` URL with
//! `sslrootcert`): a long request is acknowledged, run and its result pushed, its job is in
//! PostgreSQL, and every connection the bot holds there is encrypted.
//!
//! Needs `TEST_DATABASE_URL` (`scripts/with-postgres.sh cargo test -p dingtalk-bot`); without it
//! the test prints `skipped: TEST_DATABASE_URL not set` and passes.
#![cfg(unix)]

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage, OutboxEntry};
use workflow_core::store::conformance::{self, fresh_postgres_database};

/// How long any one step may take: generous, the machine is shared.
const DEADLINE: Duration = Duration::from_secs(90);

/// A `dingtalk-bot` process, killed when dropped; its log is printed when the test panics.
struct Bot {
    child: Child,
    log: std::path::PathBuf,
}

impl Bot {
    fn start(mock: &DingTalkMock, data_dir: &Path, database_url: &str) -> Bot {
        let log = data_dir.join("bot.log");
        let out = File::create(&log).expect("the log file can be created");
        let err = out.try_clone().expect("the log file can be shared");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dingtalk-bot"));
        // Only what this test sets.
        for (key, _) in std::env::vars_os() {
            if key
                .to_str()
                .is_some_and(|k| k.starts_with("BOT_") || k.starts_with("DINGTALK_"))
            {
                cmd.env_remove(key);
            }
        }
        // The mock's CA through SSL_CERT_FILE, the database's through sslrootcert in the URL:
        // each TLS client trusts what it is told to.
        let ca = data_dir.join("mock-ca.pem");
        std::fs::write(&ca, mock.ca_pem().expect("a TLS mock")).expect("write the CA file");
        let child = cmd
            .env("SSL_CERT_FILE", ca)
            .env("RUST_LOG", "warn")
            .env("DINGTALK_CLIENT_ID", &mock.config().client_id)
            .env("DINGTALK_CLIENT_SECRET", &mock.config().client_secret)
            .env("DINGTALK_ROBOT_CODE", &mock.config().robot_code)
            .env("DINGTALK_API_BASE", mock.base_url())
            .env("DINGTALK_OAPI_BASE", mock.base_url())
            .env("BOT_ECHO_DELAY", "0s")
            .env("BOT_DATABASE_URL", database_url)
            .args(["--mode", "stream", "--processor", "echo", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the dingtalk-bot executable starts");
        Bot { child, log }
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- {} ---\n{log}", self.log.display());
        }
    }
}

/// Polls until `found` picks something out of the outbox.
async fn eventually<T>(
    mock: &DingTalkMock,
    what: &str,
    found: impl Fn(&[OutboxEntry]) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = found(&mock.outbox()) {
            return t;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not seen within {DEADLINE:?}; outbox: {:#?}",
            mock.outbox()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_bot_keeps_its_jobs_in_postgres_over_verified_tls() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let mock = DingTalkMock::start_tls(MockConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _bot = Bot::start(&mock, dir.path(), &url);
    let start = Instant::now();
    while mock.connections() != 1 {
        assert!(start.elapsed() < DEADLINE, "the bot never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `市场调研` is a seed keyword for a long job: it goes through the job store.
    assert!(
        mock.say(MockMessage::single("u1", "市场调研 华东"))
            .await
            .delivered
    );
    eventually(&mock, "the long-task reply", |o| {
        o.iter()
            .find(|e| e.text.starts_with("收到任务，正在后台处理中..."))
            .cloned()
    })
    .await;
    eventually(&mock, "the job's pushed result", |o| {
        o.iter()
            .find(|e| e.channel == "batch_send" && e.text == "处理结果：市场调研 华东")
            .cloned()
    })
    .await;

    let client = conformance::postgres_client(&url).await;
    let jobs: i64 = client
        .query_one("SELECT count(*) FROM workflow_tasks", &[])
        .await
        .unwrap()
        .get(0);
    assert!(jobs >= 1, "the job is in PostgreSQL");
    let (encrypted, plain): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(encrypted >= 1, "the bot's connections are there");
    assert_eq!(plain, 0, "and all of them are encrypted");
}
