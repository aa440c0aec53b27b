//! The dashboard in-process (`tower::ServiceExt::oneshot`): login and session cookie, what a
//! request without a session gets, CSRF, the sub-path behind a proxy, filters, languages and
//! what a page never shows. The same flows in a real browser are in `browser.rs`.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use workflow_dispatch::channels::{ChannelConfig, ChannelList};

use crate::{KEY, SECRET, seed_body};

/// A target nobody listens on: with `max_retries = 0` a task to it fails at once.
const DEAD: &str = "http://127.0.0.1:9/hook";

struct Dash {
    app: dispatcher::App,
    router: Router,
    _dir: tempfile::TempDir,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers[header::LOCATION].to_str().unwrap()
    }

    /// The session cookie's `name=value` from `Set-Cookie`.
    fn session_cookie(&self) -> String {
        let set = self.headers[header::SET_COOKIE].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token")
            + "name=\"csrf\" value=\"".len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

async fn start() -> Dash {
    let dir = tempfile::tempdir().unwrap();
    let config = dispatcher::Config {
        data_dir: dir.path().to_path_buf(),
        api_keys: dispatcher::config::OneOrMany(vec![KEY.into()]),
        signing_secret: dispatcher::config::OneOrMany(vec![SECRET.into()]),
        allowed_target_cidrs: dispatcher::config::OneOrMany(vec!["127.0.0.0/8".into()]),
        // Behind a proxy that serves the dispatcher under /dispatch.
        public_url: Some("https://ops.example/dispatch".into()),
        max_retries: 0,
        shutdown_grace: Duration::from_millis(200),
        channels: ChannelList(vec![ChannelConfig {
            name: "pr-team".into(),
            kind: "wecom_robot".into(),
            url: Some(
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRET-TOKEN-123".into(),
            ),
            ..ChannelConfig::default()
        }]),
        routes: serde_json::from_value(serde_json::json!([
            {"name": "high-to-pr", "when": {"risk_level": ["high"]}, "to": ["pr-team"]},
        ]))
        .unwrap(),
        ..dispatcher::Config::default()
    };
    let app = dispatcher::App::start(&config).await.unwrap();
    Dash {
        router: app.router(),
        app,
        _dir: dir,
    }
}

impl Dash {
    async fn call(&self, req: Request<Body>) -> Page {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut req = Request::get(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.call(req.body(Body::empty()).unwrap()).await
    }

    async fn post_form(&self, path: &str, cookie: Option<&str>, form: &str) -> Page {
        let mut req =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.call(req.body(Body::from(form.to_owned())).unwrap())
            .await
    }

    async fn login(&self) -> String {
        let page = self.get(&format!("/ui/login?key={KEY}"), None).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        page.session_cookie()
    }

    /// A task created through the API to `hook`; its id.
    async fn create(&self, hook: &str) -> String {
        let page = self
            .call(
                Request::post("/workflow/tasks")
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(Body::from(seed_body(hook)))
                    .unwrap(),
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        v["task_id"].as_str().unwrap().to_owned()
    }

    async fn wait_status(&self, id: &str, status: &str) {
        for _ in 0..300 {
            let task = self.app.state().manager.get_task_status(id).await.unwrap();
            if task.is_some_and(|t| t.task.status.as_str() == status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("task {id} never became {status}");
    }
}

#[tokio::test]
async fn the_login_link_sets_a_strict_session_cookie_and_drops_the_key_from_the_url() {
    let t = start().await;
    let page = t.get(&format!("/ui/login?key={KEY}"), None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dispatch/ui/", "the sub-path, no key");
    let set = page.headers[header::SET_COOKIE].to_str().unwrap();
    for part in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/dispatch/ui",
        "Max-Age=43200",
    ] {
        assert!(set.contains(part), "{part} in {set}");
    }
    assert!(!set.contains(KEY), "the cookie is not the key");
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));

    // The cookie opens the overview; its links carry the sub-path.
    let cookie = page.session_cookie();
    let overview = t.get("/ui/", Some(&cookie)).await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(overview.body.contains("href=\"/dispatch/ui/tasks\""));
    assert!(overview.body.contains("src=\"/dispatch/ui/assets/app.js\""));
    assert!(!overview.body.contains("<script>"), "no inline script");
    assert!(!overview.body.contains(" style="), "no inline style");

    // The form logs in too; a wrong key does not.
    let form = t.post_form("/ui/login", None, &format!("key={KEY}")).await;
    assert_eq!(form.status, StatusCode::SEE_OTHER);
    for bad in [
        t.get("/ui/login?key=wrong", None).await,
        t.post_form("/ui/login", None, "key=").await,
    ] {
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
        assert!(bad.headers.get(header::SET_COOKIE).is_none());
        assert!(bad.body.contains("API 密钥无效"), "{}", bad.body);
    }

    // Logout needs the CSRF token and clears the cookie.
    let refused = t.post_form("/ui/logout", Some(&cookie), "csrf=nope").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let out = t
        .post_form(
            "/ui/logout",
            Some(&cookie),
            &format!("csrf={}", overview.csrf()),
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/dispatch/ui/login");
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    t.app.shutdown().await;
}

#[tokio::test]
async fn without_a_session_pages_redirect_to_the_login_and_serve_no_data() {
    let t = start().await;
    let id = t.create(DEAD).await;
    let forged = "dispatcher_ui=99999999999.000000000000.AAAA";
    for cookie in [None, Some(forged)] {
        for path in [
            "/ui/",
            "/ui/tasks",
            &format!("/ui/tasks/{id}"),
            "/ui/targets",
            "/ui/channels",
        ] {
            let page = t.get(path, cookie).await;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
            assert_eq!(page.location(), "/dispatch/ui/login");
            assert!(!page.body.contains(&id));
        }
        for path in [
            "/ui/overview.json",
            "/ui/tasks/rows",
            &format!("/ui/tasks/{id}/live"),
        ] {
            let page = t.get(path, cookie).await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{path}");
            assert!(!page.body.contains(&id), "{path}: {}", page.body);
        }
        for path in [
            format!("/ui/tasks/{id}/cancel"),
            "/ui/tasks/retry-failed".to_owned(),
        ] {
            let page = t.post_form(&path, cookie, "csrf=x").await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        }
    }
    let task = t
        .app
        .state()
        .manager
        .get_task_status(&id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(task.task.status.as_str(), "cancelled");
    t.app.shutdown().await;
}

#[tokio::test]
async fn actions_need_the_sessions_csrf_token_and_then_act() {
    let t = start().await;
    let cookie = t.login().await;
    let id = t.create(DEAD).await;
    t.wait_status(&id, "failed").await;

    let page = t.get(&format!("/ui/tasks/{id}"), Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("id=\"retry-button\""),
        "a failed task offers Retry"
    );
    assert!(
        page.body.contains("Connection refused"),
        "the attempt's error is shown"
    );

    // A token of another session (another browser) and no token are both refused.
    let other = t.login().await;
    let other_csrf = t.get("/ui/", Some(&other)).await.csrf();
    let retry = format!("/ui/tasks/{id}/retry");
    for form in [
        "".to_owned(),
        "csrf=".to_owned(),
        format!("csrf={other_csrf}"),
    ] {
        let refused = t.post_form(&retry, Some(&cookie), &form).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{form}");
        assert!(refused.body.contains("CSRF"));
    }
    let task = t
        .app
        .state()
        .manager
        .get_task_status(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.task.status.as_str(), "failed", "nothing was retried");

    let done = t
        .post_form(&retry, Some(&cookie), &format!("csrf={}", page.csrf()))
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(
        done.location(),
        format!("/dispatch/ui/tasks/{id}?done=retried")
    );
    t.wait_status(&id, "failed").await;
    let task = t
        .app
        .state()
        .manager
        .get_task_status(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.attempts.len(), 2, "the retry made a second attempt");

    // Bulk retry: every failed task matching the filter is queued again.
    let second = t.create(DEAD).await;
    t.wait_status(&second, "failed").await;
    t.wait_status(&id, "failed").await;
    let bulk = t
        .post_form(
            "/ui/tasks/retry-failed",
            Some(&cookie),
            &format!("csrf={}&risk_level=high", page.csrf()),
        )
        .await;
    assert_eq!(bulk.status, StatusCode::SEE_OTHER);
    assert!(
        bulk.location().ends_with("retried=2"),
        "{}",
        bulk.location()
    );
    t.app.shutdown().await;
}

#[tokio::test]
async fn pages_show_the_apis_data_filtered_in_either_language_and_never_a_channel_url() {
    let t = start().await;
    let cookie = t.login().await;
    let id = t.create(DEAD).await;

    let list = t.get("/ui/tasks", Some(&cookie)).await;
    assert!(list.body.contains(&format!("data-task=\"{id}\"")));
    assert!(
        list.body.contains("data-live=\"/dispatch/ui/tasks/rows?\""),
        "the first page is live"
    );
    let rows = t.get("/ui/tasks/rows?risk_level=high", Some(&cookie)).await;
    assert!(rows.body.contains(&id));
    for filter in [
        "risk_level=low",
        "task_type=competitor_alert",
        "priority=low",
        "from=2999-01-01T00:00",
    ] {
        let rows = t
            .get(&format!("/ui/tasks/rows?{filter}"), Some(&cookie))
            .await;
        assert_eq!(rows.status, StatusCode::OK);
        assert!(!rows.body.contains(&id), "{filter}");
    }
    let bad = t
        .get("/ui/tasks?status=bogus&from=yesterday", Some(&cookie))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains("status") && bad.body.contains("from"),
        "{}",
        bad.body
    );
    let search = t.get(&format!("/ui/tasks?id={id}"), Some(&cookie)).await;
    assert_eq!(search.location(), format!("/dispatch/ui/tasks/{id}"));

    // The task's page shows the package as delivered (the seed's evidence).
    let task = t.get(&format!("/ui/tasks/{id}"), Some(&cookie)).await;
    assert!(task.body.contains("evidence_fragment"));
    assert!(
        task.body.contains("callback_token"),
        "the package as delivered"
    );

    // English on request, remembered in a cookie; Chinese by default.
    let en = t.get("/ui/tasks?lang=en", Some(&cookie)).await;
    assert!(en.body.contains("<h1>Tasks</h1>"), "{}", &en.body[..400]);
    assert!(
        en.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with("dispatcher_ui_lang=en")
    );
    let zh = t.get("/ui/tasks", Some(&cookie)).await;
    assert!(zh.body.contains("<h1>任务</h1>"));

    let channels = t.get("/ui/channels", Some(&cookie)).await;
    assert!(channels.body.contains("pr-team") && channels.body.contains("wecom_robot"));
    assert!(!channels.body.contains("SECRET-TOKEN-123") && !channels.body.contains("qyapi"));
    // The rates come from engine events, counted by a task of their own: give it a moment.
    let mut overview = serde_json::Value::Null;
    for _ in 0..100 {
        overview =
            serde_json::from_str(&t.get("/ui/overview.json", Some(&cookie)).await.body).unwrap();
        let counted = overview["rates"]["series"]
            .as_array()
            .is_some_and(|s| s.iter().any(|p| p["created"] == 1));
        if counted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(overview["rates"]["series"].as_array().unwrap().len(), 120);
    assert!(
        overview["rates"]["series"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["created"] == 1),
        "the one task created is in the chart: {overview}"
    );
    // A target is listed once a delivery to it was attempted, which runs on its own: on a
    // busy machine that may come after the requests above, so give it a moment too.
    let mut targets = t.get("/ui/targets", Some(&cookie)).await;
    for _ in 0..100 {
        if targets.body.contains("http://127.0.0.1:9") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        targets = t.get("/ui/targets", Some(&cookie)).await;
    }
    assert!(
        targets.body.contains("http://127.0.0.1:9"),
        "{}",
        targets.body
    );
    t.app.shutdown().await;
}

#[tokio::test]
async fn the_routes_are_listed_and_a_task_that_fans_out_shows_a_row_per_delivery() {
    let t = start().await;
    let cookie = t.login().await;
    let channels = t.get("/ui/channels", Some(&cookie)).await;
    // The routing rules in force, beside the channels.
    let routes = &channels.body[channels.body.find("id=\"routes\"").expect("a routes table")..];
    assert!(
        routes.contains("high-to-pr")
            && routes.contains("risk_level")
            && routes.contains("pr-team"),
        "{routes}"
    );

    // A task that fans out shows one row per delivery.
    let mut body: serde_json::Value = serde_json::from_str(&seed_body(DEAD)).unwrap();
    body["channel"] = "pr-team".into();
    let page = t
        .call(
            Request::post("/workflow/tasks")
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let fanned: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    let fanned = fanned["task_id"].as_str().unwrap();
    let task = t.get(&format!("/ui/tasks/{fanned}"), Some(&cookie)).await;
    assert!(task.body.contains("id=\"deliveries\""), "{}", task.body);
    assert!(task.body.contains(&format!("data-delivery=\"{fanned}.1\"")));

    t.app.shutdown().await;
}
