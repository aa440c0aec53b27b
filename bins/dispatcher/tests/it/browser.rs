//! The dashboard in a real browser: Debian's Chromium driven through chromedriver
//! (WebDriver, with `fantoccini`) against the real `dispatcher` executable.
//!
//! Needs `/usr/bin/chromedriver` and `/usr/bin/chromium` (or `CHROMEDRIVER` / `CHROMIUM`);
//! `.ci/run` installs both and sets `DASHBOARD_BROWSER_REQUIRED=1`, so that in CI a missing
//! browser fails the test instead of skipping it. With `DASHBOARD_SCREENSHOTS=<dir>` the
//! test also saves a screenshot of each page there (how `docs/screenshots/` was made).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::{get, post};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::{KEY, create_task, free_port, get_json, http, spawn, wait_healthy};

struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Chromium headless under chromedriver, or `None` (skipped) when they are not installed.
    async fn start() -> Option<Browser> {
        let driver_bin = std::env::var_os("CHROMEDRIVER")
            .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !driver_bin.exists() || !std::path::Path::new(&chromium).exists() {
            assert!(
                std::env::var_os("DASHBOARD_BROWSER_REQUIRED").is_none(),
                "DASHBOARD_BROWSER_REQUIRED is set but {} or {chromium} is missing",
                driver_bin.display()
            );
            eprintln!(
                "skipped: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                // The flags this machine needs (no network beyond loopback, running as root).
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with chromium");
        Some(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    /// The text of the first `css` element. An element can go stale between finding and
    /// reading it (a navigation still landing, a live part redrawn): then it is found again.
    async fn text(&self, css: &str) -> String {
        for _ in 0..50 {
            let element = self
                .client
                .wait()
                .at_most(Duration::from_secs(20))
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match element.text().await {
                Ok(text) => return text,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{css}: {e}"),
            }
        }
        panic!("{css}: stale every time it was read");
    }

    /// Saves the page as `<DASHBOARD_SCREENSHOTS>/<name>.png` when asked to.
    async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("DASHBOARD_SCREENSHOTS") {
            let png = self.client.screenshot().await.unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
        }
    }
}

/// A receiver at `/hook` answering the status in `status`, and `/fail` always 500.
async fn receiver(status: Arc<AtomicU16>) -> String {
    let app = Router::new()
        .route(
            "/hook",
            post(move || {
                let status = status.clone();
                async move { StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap() }
            }),
        )
        .route(
            "/fail",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// Another site's page with a form that posts to the dashboard, as a CSRF attack would. It is
/// served as `localhost`, another site than the dashboard's `127.0.0.1` for the browser.
async fn attacker(action: String) -> String {
    let page = format!(
        "<!doctype html><form method=post action=\"{action}\"><button id=go type=submit>win a prize</button></form>"
    );
    let app = Router::new().route("/", get(move || async move { Html(page.clone()) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn wait_api_status(http: &reqwest::Client, base: &str, id: &str, status: &str) {
    for _ in 0..400 {
        let v = get_json(http, base, &format!("/workflow/tasks/{id}")).await;
        if v["task_info"]["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("task {id} never became {status}");
}

#[tokio::test]
async fn an_operator_logs_in_watches_a_task_arrive_live_and_retries_it() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn(dir.path(), port, &["--max-retries", "0"]);
    let base = format!("http://127.0.0.1:{port}");
    let http = http();
    wait_healthy(&http, &base).await;
    let status = Arc::new(AtomicU16::new(500));
    let hooks = receiver(status.clone()).await;
    let b = &browser.client;

    // The login link sets the session and leaves the key out of the address bar.
    b.goto(&format!("{base}/ui/login?key={KEY}")).await.unwrap();
    let url = b.current_url().await.unwrap();
    assert_eq!(url.path(), "/ui/");
    assert!(!url.as_str().contains(KEY), "{url}");
    assert_eq!(browser.text("h1").await, "概览");

    // A task created with the API appears in the open list without a reload.
    b.goto(&format!("{base}/ui/tasks")).await.unwrap();
    b.execute("window.__sameDocument = 'yes'; return null;", vec![])
        .await
        .unwrap();
    let id = create_task(&http, &base, &format!("{hooks}/hook")).await;
    let row = format!("tr[data-task=\"{id}\"]");
    browser.text(&row).await;
    let same = b
        .execute("return window.__sameDocument || null;", vec![])
        .await
        .unwrap();
    assert_eq!(same, "yes", "the row came without reloading the page");
    wait_api_status(&http, &base, &id, "failed").await;
    browser.screenshot("tasks").await;

    // Its page shows the failed attempt's error; Retry makes a new, successful attempt.
    b.find(Locator::Css(&format!("{row} a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let first = browser.text("#attempts li[data-attempt=\"1\"]").await;
    assert!(first.contains("HTTP 500"), "{first}");
    browser.screenshot("task").await;
    status.store(200, Ordering::SeqCst);
    b.find(Locator::Css("#retry-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let second = browser.text("#attempts li[data-attempt=\"2\"]").await;
    assert!(second.contains("HTTP 200"), "{second}");
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#task-status[data-status=\"completed\"]"))
        .await
        .unwrap();
    wait_api_status(&http, &base, &id, "completed").await;

    // A form on another site posting to the dashboard is refused (the SameSite=Strict cookie
    // is not sent, and there is no CSRF token either), and changes nothing.
    let victim = create_task(&http, &base, &format!("{hooks}/fail")).await;
    wait_api_status(&http, &base, &victim, "failed").await;
    let evil = attacker(format!("{base}/ui/tasks/{victim}/retry")).await;
    b.goto(&evil).await.unwrap();
    b.find(Locator::Id("go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let refusal = browser.text("body").await;
    assert!(
        refusal.contains("403") || refusal.contains("CSRF"),
        "{refusal}"
    );
    let v = get_json(&http, &base, &format!("/workflow/tasks/{victim}")).await;
    assert_eq!(v["task_info"]["status"], "failed");
    assert_eq!(v["task_info"]["attempts"].as_array().unwrap().len(), 1);

    // A request without the session gets no data.
    let rows = http
        .get(format!("{base}/ui/tasks/rows"))
        .send()
        .await
        .unwrap();
    assert_eq!(rows.status(), 401);
    assert!(!rows.text().await.unwrap().contains(&id));

    // The other pages render, in English too.
    for (path, heading) in [
        ("/ui/", "概览"),
        ("/ui/targets", "目标"),
        ("/ui/channels", "渠道与路由"),
        ("/ui/tasks?lang=en", "Tasks"),
    ] {
        b.goto(&format!("{base}{path}")).await.unwrap();
        assert_eq!(browser.text("h1").await, heading, "{path}");
        if path == "/ui/" {
            // The script ran under the CSP: the chart's cards were filled from the JSON.
            browser.text("#overview[data-updated]").await;
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        let name = match path.trim_start_matches("/ui/") {
            "" => "overview",
            "tasks?lang=en" => "tasks-en",
            other => other,
        };
        browser.screenshot(name).await;
    }

    // Readable on a phone: at 390 px nothing but the tables' own scroll boxes overflows.
    b.set_window_size(390, 844).await.unwrap();
    for path in ["/ui/tasks?lang=zh", &format!("/ui/tasks/{id}"), "/ui/"] {
        b.goto(&format!("{base}{path}")).await.unwrap();
        browser.text("h1").await;
        let fits = b
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, true, "{path} is wider than a phone");
    }
    browser.screenshot("phone-overview").await;
    b.set_window_size(1280, 900).await.unwrap();

    // Logging out ends the session: a page goes back to the login.
    b.goto(&format!("{base}/ui/tasks?lang=zh")).await.unwrap();
    b.find(Locator::Css("header form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.goto(&format!("{base}/ui/tasks")).await.unwrap();
    assert_eq!(b.current_url().await.unwrap().path(), "/ui/login");
    browser.screenshot("login").await;

    browser.close().await;
    let _ = server.kill();
    let _ = server.wait();
}
