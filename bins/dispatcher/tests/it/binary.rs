//! The real executable: first-start secrets, SIGTERM, exit codes.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;

use std::process::Command;

use crate::{
    KEY, SECRET, command, create_task, free_port, get_json, http, spawn, terminate, wait_healthy,
};

#[tokio::test]
async fn first_start_generates_stores_and_prints_the_api_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = http();
    let start = || {
        command(dir.path(), port)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    let child = start();
    wait_healthy(&http, &base).await;
    let key = std::fs::read_to_string(dir.path().join("api_key"))
        .unwrap()
        .trim()
        .to_owned();
    let secret = std::fs::read_to_string(dir.path().join("signing_secret"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    #[cfg(unix)]
    for file in ["api_key", "signing_secret"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let status = |k: &str| {
        http.get(format!("{base}/workflow/tasks"))
            .bearer_auth(k)
            .send()
    };
    assert_eq!(status(&key).await.unwrap().status(), 200);
    assert_eq!(status("guess").await.unwrap().status(), 401);
    terminate(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&key), "the key is shown on first start");
    assert!(
        stdout.contains(&secret),
        "the secret is shown on first start"
    );

    // Second start on the same data dir: same key, nothing printed.
    let child = start();
    wait_healthy(&http, &base).await;
    assert_eq!(status(&key).await.unwrap().status(), 200);
    terminate(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains(&key) && !stdout.contains("Generated"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_deliveries_and_exits_zero() {
    // A slow receiver: deliveries are in flight when the signal arrives.
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let g = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let g = g.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let id = headers["webhook-id"].to_str().unwrap().to_owned();
                g.lock().unwrap().push(id);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = http();
    let mut child = spawn(dir.path(), port, &[]);
    wait_healthy(&http, &base).await;
    let mut ids = vec![];
    for _ in 0..4 {
        ids.push(create_task(&http, &base, &hook).await);
    }
    // Wait until at least one delivery is running, then ask the process to stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful stop exits 0, got {status:?}");
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "no longer accepting"
    );
    let delivered = got.lock().unwrap().clone();
    assert!(
        !delivered.is_empty(),
        "in-flight deliveries finished before exit"
    );

    // Whatever was not delivered is still there on the next start.
    let mut child = spawn(dir.path(), port, &[]);
    wait_healthy(&http, &base).await;
    for id in &ids {
        let mut status = String::new();
        for _ in 0..300 {
            let v: serde_json::Value = http
                .get(format!("{base}/workflow/tasks/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            status = v["task_info"]["status"].as_str().unwrap().to_owned();
            if status == "completed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, "completed", "{id}");
    }
    child.kill().ok();
    child.wait().ok();
}

#[tokio::test]
async fn a_second_dispatcher_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = spawn(dir.path(), port, &[]);
    wait_healthy(&http(), &format!("http://127.0.0.1:{port}")).await;
    // Opening the file would expire the first one's leases and deliver its tasks again.
    let out = command(dir.path(), free_port())
        .args(["--api-keys", KEY])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(first.try_wait().unwrap().is_none(), "the first one runs on");
    terminate(&first);
    assert!(first.wait().unwrap().success());
}

#[test]
fn an_unreachable_postgres_fails_at_start_without_printing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on a port just bound and closed: the connection is refused at once.
    let url = format!("postgres://user:pw@127.0.0.1:{}/dispatch", free_port());
    let out = command(dir.path(), free_port())
        .args(["--database-url", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("while connecting to postgres://user:***@127.0.0.1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("pw@"),
        "credentials never printed: {stderr}"
    );
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dispatcher.toml");
    std::fs::write(&file, "max_retries = 5\nlog_format = \"loud\"\n").unwrap();
    // The file's invalid log format is reported...
    let out = command(dir.path(), free_port())
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log_format"));
    // ...unless the environment sets it; a bad environment value loses to a flag. The run
    // then gets as far as the database check, so every layer above was accepted.
    let out = command(dir.path(), free_port())
        .arg("--config")
        .arg(&file)
        .env("DISPATCHER_LOG_FORMAT", "json")
        .env("DISPATCHER_MAX_RETRIES", "lots")
        .args(["--max-retries", "2", "--database-url", "mysql://x/y"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("expected sqlite://PATH or postgres://"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_routes_and_a_bad_file_keeps_the_rules_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dispatcher.toml");
    let channels = "[channels.pr-team]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/pr\"\n\
                    [channels.ops]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/ops\"\n";
    let write = |routes: &str| std::fs::write(&file, format!("{channels}{routes}")).unwrap();
    write("[[routes]]\nto = [\"ops\"]\n");
    // A config file that does not parse is refused at start, naming the route.
    std::fs::write(
        dir.path().join("bad.toml"),
        format!("{channels}[[routes]]\nname = \"typo\"\nto = [\"pr-tema\"]\n"),
    )
    .unwrap();
    let out = command(dir.path(), free_port())
        .arg("--config")
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("routes[0] (\"typo\")") && stderr.contains("pr-tema"),
        "{stderr}"
    );

    let port = free_port();
    let mut child = command(dir.path(), port)
        .arg("--config")
        .arg(&file)
        .args(["--api-keys", KEY, "--signing-secret", SECRET])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = http();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&http, &base).await;
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&get_json(&http, &base, "/workflow/routes").await),
        ["routes[0]"]
    );

    let hangup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    // A reload: the new rules are served without a restart.
    write(
        "[[routes]]\nname = \"high\"\nwhen = { risk_level = [\"high\"] }\nto = [\"pr-team\"]\n[[routes]]\nto = [\"ops\"]\n",
    );
    hangup();
    let mut reloaded = Vec::new();
    for _ in 0..500 {
        reloaded = names(&get_json(&http, &base, "/workflow/routes").await);
        if reloaded.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reloaded, ["high", "routes[1]"]);

    // A bad reload (an unknown channel) is counted and logged; the rules in force stay.
    write("[[routes]]\nto = [\"nowhere\"]\n");
    hangup();
    let mut counted = false;
    for _ in 0..500 {
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("dispatcher_route_reloads_total{result=\"error\"} 1") {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted, "the failed reload was never counted");
    assert_eq!(
        names(&get_json(&http, &base, "/workflow/routes").await),
        ["high", "routes[1]"]
    );
    terminate(&child);
    assert!(child.wait().unwrap().success());
}
