//! Preset channels end to end: a dispatcher started in-process with `[channels]`, tasks that
//! name a channel, and local receivers that check each platform's documented wire format and
//! signature themselves (recomputed here from the documented algorithm, never with the code
//! under test), then answer the way the platform does.
//!
//! Nothing here asserts a duration: tasks are polled with a generous deadline, and the rate
//! limit is checked on attempt records and on what the receivers got.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use sha2::Sha256;
use tower::ServiceExt as _;
use workflow_dispatch::channels::{ChannelConfig, ChannelList, RateList};

use crate::{KEY, SECRET, seed_body};

/// Callback links in packages and messages start with this.
pub(crate) const PUBLIC_URL: &str = "https://dispatch.example";
/// How long a test waits for a task to reach a state (the machine is shared and noisy).
const DEADLINE: Duration = Duration::from_secs(60);

const DINGTALK_SECRET: &str = "SECb0e1d2c3f4a5968778695a4b3c2d1e0f";
const DINGTALK_TOKEN: &str = "robot-access-token-1234";
const FEISHU_SECRET: &str = "feishu-signing-secret-42";
const WECOM_KEY: &str = "wecom-key-5678";
const CHANNEL_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// === the seed's content, as a chat must show it ===

const BRAND: &str = "某品牌";
const SOURCE: &str = "微博";
const EVIDENCE_URL: &str = "https://weibo.com/1234567890/AbCdEf";
const FRAGMENT: &str = "某品牌手机电池续航严重虚标，用户实测不到宣传的一半";
const SCRIPT: &str = "您好，我们已关注到您反馈的续航问题，请私信提供订单号，我们将安排专人跟进。";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// URL-encoding of a base64 string as DingTalk documents it (Java `URLEncoder`, Python
/// `quote_plus`): the base64 alphabet's `+`, `/` and `=` are percent-encoded.
fn urlencode_b64(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// A query parameter exactly as sent (not decoded).
fn raw_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn is_json(headers: &HeaderMap) -> Result<(), String> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct.starts_with("application/json") {
        Ok(())
    } else {
        Err(format!("content-type {ct:?} is not application/json"))
    }
}

fn string_at<'v>(v: &'v Value, pointer: &str) -> Result<&'v str, String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{pointer} is not a non-empty string in {v}"))
}

// === receivers ===

/// One request a receiver got, and what its check said.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) raw: Bytes,
    pub(crate) body: Value,
    pub(crate) check: Result<(), String>,
    pub(crate) at: tokio::time::Instant,
}

/// Checks a request against a platform's documented format: `(query, headers, body)`.
pub(crate) type Check = Arc<dyn Fn(&str, &HeaderMap, &[u8]) -> Result<(), String> + Send + Sync>;
/// Answers the nth request (1-based) given the check's verdict: status and body.
pub(crate) type Reply =
    Arc<dyn Fn(usize, &Result<(), String>) -> (StatusCode, String) + Send + Sync>;

#[derive(Clone)]
struct PeerState {
    hits: Arc<Mutex<Vec<Hit>>>,
    check: Check,
    reply: Reply,
}

/// A local stand-in for a chat platform or webhook receiver on `127.0.0.1:0`.
pub(crate) struct Peer {
    addr: std::net::SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    server: tokio::task::JoinHandle<()>,
}

async fn receive(
    State(s): State<PeerState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let query = uri.query().unwrap_or_default().to_owned();
    let check = (s.check)(&query, &headers, &body);
    let n = {
        let mut hits = s.hits.lock().unwrap();
        hits.push(Hit {
            query,
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            raw: body,
            check: check.clone(),
            at: tokio::time::Instant::now(),
        });
        hits.len()
    };
    (s.reply)(n, &check)
}

impl Peer {
    pub(crate) async fn start(check: Check, reply: Reply) -> Peer {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(receive).with_state(PeerState {
            hits: hits.clone(),
            check,
            reply,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Peer { addr, hits, server }
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The only request it got, which must have passed its check.
    pub(crate) fn single(&self) -> Hit {
        let hits = self.hits();
        assert_eq!(hits.len(), 1, "{hits:#?}");
        let hit = hits.into_iter().next().unwrap();
        assert_eq!(hit.check, Ok(()), "{hit:#?}");
        hit
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// DingTalk custom robot (protocol reference §8): `access_token`, `timestamp` (ms, within an
/// hour) and `sign` = urlencode(base64(HMAC-SHA256(key = secret, msg = timestamp + "\n" +
/// secret))) in the query; a JSON markdown body with `title` and `text`.
fn dingtalk_check(secret: &'static str, token: &'static str) -> Check {
    Arc::new(move |query, headers, body| {
        is_json(headers)?;
        if raw_param(query, "access_token") != Some(token) {
            return Err("wrong access_token".to_owned());
        }
        let ts = raw_param(query, "timestamp").ok_or("no timestamp")?;
        let ts_ms: i64 = ts.parse().map_err(|_| format!("timestamp {ts:?}"))?;
        if (now_ms() - ts_ms).abs() > 3_600_000 {
            return Err(format!("timestamp {ts} is not within an hour"));
        }
        let expected = urlencode_b64(&B64.encode(hmac_sha256(
            secret.as_bytes(),
            format!("{ts}\n{secret}").as_bytes(),
        )));
        let sign = raw_param(query, "sign").ok_or("no sign")?;
        if sign != expected {
            return Err(format!("sign not match: got {sign}, expected {expected}"));
        }
        let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if v["msgtype"] != "markdown" {
            return Err(format!("msgtype {}", v["msgtype"]));
        }
        string_at(&v, "/markdown/title")?;
        string_at(&v, "/markdown/text")?;
        Ok(())
    })
}

/// DingTalk answers HTTP 200 with an errcode: 0, or 310000 for a failed security check.
fn dingtalk_reply() -> Reply {
    errcode_ok_or(310_000, "sign not match")
}

/// WeCom group robot: `key` in the query, `{"msgtype":"markdown","markdown":{"content"}}`,
/// content at most 4,096 bytes.
fn wecom_check(key: &'static str) -> Check {
    Arc::new(move |query, headers, body| {
        is_json(headers)?;
        if raw_param(query, "key") != Some(key) {
            return Err("wrong key".to_owned());
        }
        let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if v["msgtype"] != "markdown" {
            return Err(format!("msgtype {}", v["msgtype"]));
        }
        let content = string_at(&v, "/markdown/content")?;
        if content.len() > 4096 {
            return Err(format!("content is {} bytes", content.len()));
        }
        Ok(())
    })
}

fn errcode_ok_or(code: i64, msg: &'static str) -> Reply {
    Arc::new(move |_, check| match check {
        Ok(()) => (
            StatusCode::OK,
            json!({"errcode": 0, "errmsg": "ok"}).to_string(),
        ),
        Err(_) => (
            StatusCode::OK,
            json!({"errcode": code, "errmsg": msg}).to_string(),
        ),
    })
}

/// Feishu/Lark custom bot: `timestamp` (seconds, within an hour) and `sign` =
/// base64(HMAC-SHA256(key = timestamp + "\n" + secret, msg = empty)) in the body;
/// `msg_type` `interactive` (a card with a header and elements) or `post`.
fn feishu_check(secret: &'static str) -> Check {
    Arc::new(move |_, headers, body| {
        is_json(headers)?;
        let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let ts = string_at(&v, "/timestamp")?;
        let ts_s: i64 = ts.parse().map_err(|_| format!("timestamp {ts:?}"))?;
        if (now_ms() / 1000 - ts_s).abs() > 3600 {
            return Err(format!("timestamp {ts} is not within an hour"));
        }
        let expected = B64.encode(hmac_sha256(format!("{ts}\n{secret}").as_bytes(), b""));
        if string_at(&v, "/sign")? != expected {
            return Err("sign match fail".to_owned());
        }
        match v["msg_type"].as_str() {
            Some("interactive") => {
                string_at(&v, "/card/header/title/content")?;
                if v["card"]["elements"].as_array().is_none_or(Vec::is_empty) {
                    return Err("card without elements".to_owned());
                }
            }
            Some("post") => {
                if !v["content"]["post"].is_object() {
                    return Err("post without content.post".to_owned());
                }
            }
            other => return Err(format!("msg_type {other:?}")),
        }
        Ok(())
    })
}

fn feishu_reply() -> Reply {
    Arc::new(|_, check| {
        match check {
        Ok(()) => (
            StatusCode::OK,
            json!({"code": 0, "msg": "success", "data": {}}).to_string(),
        ),
        Err(_) => (
            StatusCode::OK,
            json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"})
                .to_string(),
        ),
    }
    })
}

/// Slack incoming webhook: `text` (the notification fallback) and `blocks`, each with a
/// `type`, at least one `section` with `mrkdwn` text.
fn slack_check() -> Check {
    Arc::new(|_, headers, body| {
        is_json(headers)?;
        let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        string_at(&v, "/text")?;
        let blocks = v["blocks"].as_array().ok_or("no blocks")?;
        if blocks.is_empty() || blocks.iter().any(|b| !b["type"].is_string()) {
            return Err("every block needs a type".to_owned());
        }
        if !blocks.iter().any(|b| {
            b["type"] == "section" && b["text"]["type"] == "mrkdwn" && b["text"]["text"].is_string()
        }) {
            return Err("no mrkdwn section".to_owned());
        }
        Ok(())
    })
}

fn slack_reply() -> Reply {
    Arc::new(|_, check| match check {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(_) => (StatusCode::BAD_REQUEST, "invalid_payload".to_owned()),
    })
}

/// Standard Webhooks: `webhook-signature` holds `v1,` + base64(HMAC-SHA256(key =
/// base64-decoded secret after `whsec_`, msg = id + "." + timestamp + "." + body)).
pub(crate) fn webhook_check(secret: &'static str) -> Check {
    Arc::new(move |_, headers, body| {
        is_json(headers)?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("no {name} header"))
        };
        let id = header("webhook-id")?;
        let ts = header("webhook-timestamp")?;
        let ts_s: i64 = ts
            .parse()
            .map_err(|_| format!("webhook-timestamp {ts:?}"))?;
        if (now_ms() / 1000 - ts_s).abs() > 300 {
            return Err("webhook-timestamp outside 5 minutes".to_owned());
        }
        let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        let mut msg = format!("{id}.{ts}.").into_bytes();
        msg.extend_from_slice(body);
        let expected = format!("v1,{}", B64.encode(hmac_sha256(&key, &msg)));
        if !header("webhook-signature")?
            .split_whitespace()
            .any(|s| s == expected)
        {
            return Err("no matching signature".to_owned());
        }
        Ok(())
    })
}

pub(crate) fn status_reply() -> Reply {
    Arc::new(|_, check| match check {
        Ok(()) => (StatusCode::OK, "accepted".to_owned()),
        Err(e) => (StatusCode::UNAUTHORIZED, e.clone()),
    })
}

// === one receiver and one channel per platform ===

/// A DingTalk robot that checks the test secret and token and answers as DingTalk does.
async fn dingtalk_peer() -> Peer {
    Peer::start(
        dingtalk_check(DINGTALK_SECRET, DINGTALK_TOKEN),
        dingtalk_reply(),
    )
    .await
}

/// A dispatcher with one channel, `pr-team`: the DingTalk robot at `peer`, signing with
/// `secret`.
async fn start_dingtalk(peer: &Peer, secret: &str) -> Harness {
    let dir = Dir::new();
    let ch = ChannelConfig {
        secret_file: dir.secret("dingtalk.sec", secret),
        ..channel(
            "pr-team",
            "dingtalk_robot",
            &peer.url(&format!("/robot/send?access_token={DINGTALK_TOKEN}")),
        )
    };
    start(dir, vec![ch]).await
}

/// A WeCom group robot that checks the test key.
async fn wecom_peer() -> Peer {
    Peer::start(
        wecom_check(WECOM_KEY),
        errcode_ok_or(40008, "invalid message type"),
    )
    .await
}

/// The `wecom` channel: the WeCom robot at `peer`.
fn wecom_channel(peer: &Peer) -> ChannelConfig {
    channel(
        "wecom",
        "wecom_robot",
        &peer.url(&format!("/cgi-bin/webhook/send?key={WECOM_KEY}")),
    )
}

/// A Feishu bot that checks the test secret.
async fn feishu_peer() -> Peer {
    Peer::start(feishu_check(FEISHU_SECRET), feishu_reply()).await
}

/// A dispatcher with one channel, `lark`: the Feishu bot at `peer`, signing with `secret`.
async fn start_feishu(peer: &Peer, secret: &str) -> Harness {
    let dir = Dir::new();
    let ch = ChannelConfig {
        secret_file: dir.secret("feishu.sec", secret),
        ..channel(
            "lark",
            "feishu_robot",
            &peer.url("/open-apis/bot/v2/hook/abc-123"),
        )
    };
    start(dir, vec![ch]).await
}

/// A Slack incoming webhook.
async fn slack_peer() -> Peer {
    Peer::start(slack_check(), slack_reply()).await
}

/// The `ops` channel: the Slack webhook at `peer`.
fn slack_channel(peer: &Peer) -> ChannelConfig {
    channel("ops", "slack", &peer.url("/services/T000/B000/XXXX"))
}

// === the dispatcher ===

pub(crate) fn channel(name: &str, kind: &str, url: &str) -> ChannelConfig {
    ChannelConfig {
        name: name.to_owned(),
        kind: kind.to_owned(),
        url: Some(url.to_owned()),
        ..ChannelConfig::default()
    }
}

/// A temp dir for secret files and the data dir.
pub(crate) struct Dir(tempfile::TempDir);

impl Dir {
    pub(crate) fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    /// A secret file, with a trailing newline as editors leave one.
    fn secret(&self, name: &str, value: &str) -> Option<PathBuf> {
        let path = self.0.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        Some(path)
    }
}

pub(crate) struct Harness {
    app: dispatcher::App,
    router: Router,
    _dir: Dir,
}

pub(crate) async fn start_with(
    dir: Dir,
    channels: Vec<ChannelConfig>,
    edit: impl FnOnce(&mut dispatcher::Config),
) -> Harness {
    let mut config = dispatcher::Config {
        data_dir: dir.0.path().join("data"),
        api_keys: dispatcher::config::OneOrMany(vec![KEY.into()]),
        signing_secret: dispatcher::config::OneOrMany(vec![SECRET.into()]),
        allowed_target_cidrs: dispatcher::config::OneOrMany(vec!["127.0.0.0/8".into()]),
        public_url: Some(PUBLIC_URL.into()),
        base_retry_delay: Duration::from_millis(100),
        max_retry_delay: Duration::from_secs(1),
        delivery_timeout: Duration::from_secs(10),
        breaker_open_wait: Duration::from_secs(1),
        shutdown_grace: Duration::from_millis(200),
        channels: ChannelList(channels),
        ..dispatcher::Config::default()
    };
    edit(&mut config);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = dispatcher::App::start(&config).await.unwrap();
    Harness {
        router: app.router(),
        app,
        _dir: dir,
    }
}

async fn start(dir: Dir, channels: Vec<ChannelConfig>) -> Harness {
    start_with(dir, channels, |_| {}).await
}

/// The seed's request naming `channel`, without a `webhook_url`.
fn for_channel(channel: &str) -> Value {
    let mut body: Value = serde_json::from_str(&seed_body("https://unused.example/")).unwrap();
    body.as_object_mut().unwrap().remove("webhook_url");
    body["channel"] = channel.into();
    body
}

impl Harness {
    pub(crate) async fn call(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(
            Request::post(path)
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(
            Request::get(path)
                .header("authorization", format!("Bearer {KEY}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    /// Creates a task for `channel`; returns its id.
    async fn create(&self, channel: &str) -> String {
        let (status, v) = self.post("/workflow/tasks", &for_channel(channel)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["channel"], channel, "{v}");
        assert_eq!(v["webhook_url"], "", "{v}");
        v["task_id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn task(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/workflow/tasks/{id}")).await;
        assert_eq!(status, 200, "{v}");
        v["task_info"].clone()
    }

    /// Polls the task until `done` holds (up to [`DEADLINE`]); returns its `task_info`.
    pub(crate) async fn wait_until(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let info = self.task(id).await;
            if done(&info) {
                return info;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} never became {what}: {info:#}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls until the task is completed, failed or cancelled.
    pub(crate) async fn wait_final(&self, id: &str) -> Value {
        self.wait_until(id, "final", |t| {
            matches!(
                t["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        })
        .await
    }

    pub(crate) async fn stop(self) {
        self.app.shutdown().await;
    }
}

/// A channel task delivered once: completed, one successful attempt answered HTTP 200, no
/// `webhook_url`, the channel named.
fn assert_delivered_once(info: &Value, channel: &str) {
    assert_completed_in_one_attempt(info, channel);
    assert_eq!(info["attempts"][0]["status_code"], 200, "{info:#}");
}

/// Completed by its first attempt, with nothing else recorded.
fn assert_completed_in_one_attempt(info: &Value, channel: &str) {
    assert_eq!(info["status"], "completed", "{info:#}");
    assert_eq!(info["channel"], channel, "{info:#}");
    assert!(info["webhook_url"].is_null(), "{info:#}");
    assert_eq!(info["retries"], 0, "{info:#}");
    let attempts = info["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{info:#}");
    assert_eq!(attempts[0]["n"], 1);
    assert_eq!(attempts[0]["outcome"], "success", "{info:#}");
    assert!(attempts[0]["error"].is_null(), "{info:#}");
}

/// Failed by its first attempt, refused for good; returns that attempt.
fn assert_failed_for_good_in_one_attempt(info: &Value) -> &Value {
    assert_eq!(info["status"], "failed", "{info:#}");
    let attempts = info["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{info:#}");
    assert_eq!(attempts[0]["outcome"], "permanent", "{info:#}");
    &attempts[0]
}

/// When the task is to be tried next, if it is set.
fn next_attempt_at(info: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    info["next_attempt_at"]
        .as_str()
        .and_then(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok())
}

/// The message shows the brand, the source linked to its URL (`link`, in the platform's
/// syntax), the evidence, the intervention script, the task id and the callback link.
fn assert_shows_the_task(text: &str, task_id: &str, link: &str) {
    for (what, needle) in [
        ("brand", BRAND),
        ("source link", link),
        ("evidence fragment", FRAGMENT),
        ("intervention script", SCRIPT),
        ("task id", task_id),
    ] {
        assert!(text.contains(needle), "no {what} ({needle}) in:\n{text}");
    }
    let callback = format!("{PUBLIC_URL}/workflow/tasks/{task_id}/callback");
    assert!(
        text.contains(&callback),
        "no callback link ({callback}) in:\n{text}"
    );
}

/// `value` of `X-Callback-Token: value` in a message.
fn callback_token_in(text: &str) -> String {
    let after = text
        .split("X-Callback-Token: ")
        .nth(1)
        .expect("a callback token");
    after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

const MARKDOWN_LINK: &str = "[微博](https://weibo.com/1234567890/AbCdEf)";

// === one test per kind ===

#[tokio::test]
async fn dingtalk_robot_gets_signed_markdown_showing_the_task_and_the_loop_closes() {
    let peer = dingtalk_peer().await;
    let t = start_dingtalk(&peer, DINGTALK_SECRET).await;
    let id = t.create("pr-team").await;
    let info = t.wait_final(&id).await;
    assert_delivered_once(&info, "pr-team");

    let hit = peer.single();
    assert!(raw_param(&hit.query, "sign").is_some());
    let title = hit.body["markdown"]["title"].as_str().unwrap();
    assert!(title.contains("高风险") && title.contains(BRAND), "{title}");
    let text = hit.body["markdown"]["text"].as_str().unwrap();
    assert!(text.contains("🟠 高风险"), "risk level: {text}");
    assert_shows_the_task(text, &id, MARKDOWN_LINK);

    // The receiver closes the loop with the link and token the message shows.
    let token = callback_token_in(text);
    let (status, v) = t
        .call(
            Request::post(format!("/workflow/tasks/{id}/callback"))
                .header("content-type", "application/json")
                .header("x-callback-token", token)
                .body(Body::from(r#"{"status":"resolved","note":"已回复"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let info = t.task(&id).await;
    assert_eq!(info["callback"]["status"], "resolved", "{info:#}");
    t.stop().await;
}

#[tokio::test]
async fn wecom_robot_gets_markdown_content_showing_the_task() {
    let peer = wecom_peer().await;
    let t = start(Dir::new(), vec![wecom_channel(&peer)]).await;
    let id = t.create("wecom").await;
    assert_delivered_once(&t.wait_final(&id).await, "wecom");
    let content = peer.single().body["markdown"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        content.contains("🟠") && content.contains("高风险"),
        "{content}"
    );
    assert_shows_the_task(&content, &id, MARKDOWN_LINK);
    t.stop().await;
}

#[tokio::test]
async fn feishu_robot_gets_a_signed_card_showing_the_task() {
    let peer = feishu_peer().await;
    let t = start_feishu(&peer, FEISHU_SECRET).await;
    let id = t.create("lark").await;
    assert_delivered_once(&t.wait_final(&id).await, "lark");
    let body = peer.single().body;
    let card = &body["card"];
    let title = card["header"]["title"]["content"].as_str().unwrap();
    assert!(
        title.contains("🟠") && title.contains("高风险") && title.contains(BRAND),
        "{title}"
    );
    assert_eq!(card["header"]["template"], "orange", "high risk is orange");
    let text = card["elements"][0]["text"]["content"].as_str().unwrap();
    assert_eq!(card["elements"][0]["text"]["tag"], "lark_md");
    assert_shows_the_task(text, &id, MARKDOWN_LINK);
    let button = &card["elements"][1]["actions"][0];
    assert_eq!(button["url"], EVIDENCE_URL, "{body:#}");
    t.stop().await;
}

#[tokio::test]
async fn slack_gets_blocks_showing_the_task() {
    let peer = slack_peer().await;
    let t = start(Dir::new(), vec![slack_channel(&peer)]).await;
    let id = t.create("ops").await;
    assert_delivered_once(&t.wait_final(&id).await, "ops");
    let body = peer.single().body;
    let fallback = body["text"].as_str().unwrap();
    assert!(
        fallback.contains("🟠") && fallback.contains(BRAND),
        "{fallback}"
    );
    let blocks = body["blocks"].as_array().unwrap();
    let all: String = blocks
        .iter()
        .flat_map(|b| {
            [&b["text"]["text"]].into_iter().chain(
                b["elements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| &e["text"]),
            )
        })
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains(&format!("任务 `{id}` · 高风险")), "{all}");
    assert_shows_the_task(&all, &id, &format!("<{EVIDENCE_URL}|{SOURCE}>"));
    t.stop().await;
}

#[tokio::test]
async fn webhook_channel_gets_the_standard_package_signed_with_its_own_secret() {
    let own = Peer::start(webhook_check(CHANNEL_WHSEC), status_reply()).await;
    let server_signed = Peer::start(webhook_check(SECRET), status_reply()).await;
    let dir = Dir::new();
    let channels = vec![
        ChannelConfig {
            secret_file: dir.secret("hook.sec", CHANNEL_WHSEC),
            ..channel("partner", "webhook", &own.url("/hooks/partner"))
        },
        // Without its own secret, a webhook channel signs with the server's.
        channel("internal", "webhook", &server_signed.url("/hooks/internal")),
    ];
    let t = start(dir, channels).await;
    let id = t.create("partner").await;
    let id2 = t.create("internal").await;
    assert_delivered_once(&t.wait_final(&id).await, "partner");
    assert_delivered_once(&t.wait_final(&id2).await, "internal");

    let hit = own.single();
    assert_eq!(hit.headers["webhook-id"], id.as_str(), "the task id");
    // Signed with the channel's secret, not the server's.
    assert_eq!(
        webhook_check(SECRET)("", &hit.headers, &hit.raw),
        Err("no matching signature".to_owned())
    );
    let package = &hit.body;
    assert_eq!(package["task_type"], "negative_evidence_intervention");
    assert_eq!(package["evidence_data"]["brand_name"], BRAND);
    assert_eq!(package["evidence_data"]["evidence_fragment"], FRAGMENT);
    let di = &package["delivery_instructions"];
    assert_eq!(di["webhook_url"], own.url("/hooks/partner"));
    assert_eq!(di["delivery_format"], "standard_payload");
    assert_eq!(
        di["callback_url"],
        format!("{PUBLIC_URL}/workflow/tasks/{id}/callback")
    );
    assert!(di["callback_token"].as_str().is_some_and(|s| !s.is_empty()));

    assert_eq!(server_signed.single().headers["webhook-id"], id2.as_str());
    t.stop().await;
}

#[tokio::test]
async fn dingtalk_app_sends_markdown_to_its_group_and_to_its_users() {
    let mock = dingtalk_mock::DingTalkMock::start(dingtalk_mock::MockConfig::default())
        .await
        .unwrap();
    let group = "cidTeSt9GrOuP0a1b2c3==";
    mock.add_group(group);
    let mock_config = mock.config().clone();
    let dir = Dir::new();
    let app = |name: &str| ChannelConfig {
        name: name.to_owned(),
        kind: "dingtalk_app".to_owned(),
        url: Some(mock.base_url()),
        client_id: Some(mock_config.client_id.clone()),
        secret_file: dir.secret(&format!("{name}.sec"), &mock_config.client_secret),
        ..ChannelConfig::default()
    };
    let channels = vec![
        ChannelConfig {
            open_conversation_id: Some(group.to_owned()),
            ..app("pr-group")
        },
        ChannelConfig {
            user_ids: Some(vec!["manager1".to_owned(), "manager2".to_owned()]),
            ..app("managers")
        },
    ];
    let t = start(dir, channels).await;
    let to_group = t.create("pr-group").await;
    let to_users = t.create("managers").await;
    // dingtalk-sender reports what was delivered, not HTTP statuses: the attempt has none.
    assert_completed_in_one_attempt(&t.wait_final(&to_group).await, "pr-group");
    assert_completed_in_one_attempt(&t.wait_final(&to_users).await, "managers");

    let outbox = mock.outbox();
    assert_eq!(outbox.len(), 2, "{outbox:#?}");
    let sent = |channel: &str| {
        outbox
            .iter()
            .find(|e| e.channel == channel)
            .unwrap_or_else(|| panic!("no {channel} in {outbox:#?}"))
    };
    let g = sent("group_send");
    assert_eq!(g.to, [group]);
    let u = sent("batch_send");
    assert_eq!(u.to, ["manager1", "manager2"]);
    for (entry, id) in [(g, &to_group), (u, &to_users)] {
        assert_eq!(entry.kind, "sampleMarkdown", "{entry:#?}");
        let title = entry.content["title"].as_str().unwrap();
        assert!(title.contains("高风险") && title.contains(BRAND), "{title}");
        let text = entry.content["text"].as_str().unwrap();
        assert!(text.contains("🟠 高风险"), "{text}");
        assert_shows_the_task(text, id, MARKDOWN_LINK);
    }
    t.stop().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn dingtalk_app_calls_go_out_through_the_egress_proxy() {
    let (proxy_port, asked) = crate::egress::forward_proxy().await;
    let mock = dingtalk_mock::DingTalkMock::start(dingtalk_mock::MockConfig::default())
        .await
        .unwrap();
    let group = "cidTeSt9GrOuP0a1b2c3==";
    mock.add_group(group);
    let mock_config = mock.config().clone();
    let dir = Dir::new();
    let app = ChannelConfig {
        name: "pr-group".to_owned(),
        kind: "dingtalk_app".to_owned(),
        url: Some(mock.base_url()),
        client_id: Some(mock_config.client_id.clone()),
        secret_file: dir.secret("app.sec", &mock_config.client_secret),
        open_conversation_id: Some(group.to_owned()),
        ..ChannelConfig::default()
    };
    let t = start_with(dir, vec![app], |config| {
        config.egress_proxy = Some(format!("http://127.0.0.1:{proxy_port}"));
    })
    .await;
    let id = t.create("pr-group").await;
    assert_completed_in_one_attempt(&t.wait_final(&id).await, "pr-group");
    assert_eq!(mock.outbox().len(), 1);
    let asked = asked.lock().unwrap().clone();
    let base = mock.base_url();
    // The first call (the token) opens the proxied connection; the send reuses it (the test
    // proxy records only each connection's first request line).
    let token = format!(
        "POST {}/v1.0/oauth2/accessToken HTTP/1.1",
        base.trim_end_matches('/')
    );
    assert_eq!(asked.first(), Some(&token), "{asked:#?}");
    t.stop().await;
    mock.shutdown().await;
}

// === platform answers ===

#[tokio::test]
async fn a_dingtalk_throttle_130101_is_retried_and_then_succeeds() {
    let check = dingtalk_check(DINGTALK_SECRET, DINGTALK_TOKEN);
    let reply: Reply = Arc::new(|n, check| match (n, check) {
        (1, Ok(())) => (
            StatusCode::OK,
            json!({"errcode": 130_101, "errmsg": "send too fast, exceed 20 times per minute"})
                .to_string(),
        ),
        (_, Ok(())) => (
            StatusCode::OK,
            json!({"errcode": 0, "errmsg": "ok"}).to_string(),
        ),
        (_, Err(_)) => (
            StatusCode::OK,
            json!({"errcode": 310_000, "errmsg": "sign not match"}).to_string(),
        ),
    });
    let peer = Peer::start(check, reply).await;
    // DingTalk's 10-minute block is capped by max_retry_delay (1 s here).
    let t = start_dingtalk(&peer, DINGTALK_SECRET).await;
    let id = t.create("pr-team").await;
    let info = t.wait_final(&id).await;
    assert_eq!(info["status"], "completed", "{info:#}");
    assert_eq!(info["retries"], 1, "{info:#}");
    let attempts = info["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{info:#}");
    assert_eq!(attempts[0]["outcome"], "retryable", "{info:#}");
    assert_eq!(
        attempts[0]["status_code"], 200,
        "HTTP 200 with an errcode: {info:#}"
    );
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("130101"),
        "{info:#}"
    );
    assert_eq!(attempts[1]["outcome"], "success", "{info:#}");
    let hits = peer.hits();
    assert_eq!(hits.len(), 2, "{hits:#?}");
    assert!(hits.iter().all(|h| h.check.is_ok()), "{hits:#?}");
    t.stop().await;
}

#[tokio::test]
async fn a_dingtalk_bad_sign_310000_is_a_failed_attempt_and_not_retried() {
    let peer = dingtalk_peer().await;
    // The wrong secret: the robot's security check refuses every message.
    let t = start_dingtalk(&peer, "SECnotthesecretofthisrobot").await;
    let id = t.create("pr-team").await;
    let info = t.wait_final(&id).await;
    let attempt = assert_failed_for_good_in_one_attempt(&info);
    assert_eq!(attempt["status_code"], 200, "{info:#}");
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.contains("310000") && error.contains("sign not match"),
        "{error}"
    );
    assert!(
        !error.contains("SEC") && !error.contains(DINGTALK_TOKEN),
        "{error}"
    );
    let last = info["last_error"].as_str().unwrap();
    assert!(last.contains("310000"), "{last}");
    let hits = peer.hits();
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert!(
        hits[0]
            .check
            .as_ref()
            .unwrap_err()
            .contains("sign not match")
    );
    t.stop().await;
}

// === rate limits ===

#[tokio::test]
async fn the_rate_limit_defers_a_delivery_without_spending_an_attempt() {
    let peer = wecom_peer().await;
    let ch = ChannelConfig {
        rate_limit: Some(RateList(vec!["1/h".to_owned()])),
        ..wecom_channel(&peer)
    };
    let t = start(Dir::new(), vec![ch]).await;
    let first = t.create("wecom").await;
    assert_delivered_once(&t.wait_final(&first).await, "wecom");
    let created = chrono::Utc::now();
    let second = t.create("wecom").await;
    // The second send would exceed 1 an hour: the task waits for the window, with no attempt
    // recorded and its whole budget left.
    let info = t
        .wait_until(&second, "deferred", |t| {
            next_attempt_at(t).is_some_and(|at| at > created + chrono::Duration::minutes(30))
        })
        .await;
    assert_eq!(info["status"], "pending", "{info:#}");
    assert_eq!(info["attempts"], json!([]), "{info:#}");
    assert_eq!(info["retries"], 0, "{info:#}");
    assert_eq!(peer.hits().len(), 1, "only the first was sent");
    t.stop().await;
}

#[tokio::test]
async fn rate_limited_tasks_are_all_delivered_in_turn_with_one_attempt_each() {
    let peer = slack_peer().await;
    let ch = ChannelConfig {
        rate_limit: Some(RateList(vec!["1/s".to_owned()])),
        ..slack_channel(&peer)
    };
    let t = start(Dir::new(), vec![ch]).await;
    let a = t.create("ops").await;
    let b = t.create("ops").await;
    let (ia, ib) = (t.wait_final(&a).await, t.wait_final(&b).await);
    // One of them was deferred by the limiter; neither spent more than its one attempt.
    assert_delivered_once(&ia, "ops");
    assert_delivered_once(&ib, "ops");
    let hits = peer.hits();
    assert_eq!(hits.len(), 2, "{hits:#?}");
    let shown: Vec<String> = hits
        .iter()
        .map(|h| {
            h.body["blocks"][2]["elements"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        shown.iter().filter(|s| s.contains(&a)).count(),
        1,
        "{a} once: {shown:?}"
    );
    assert_eq!(
        shown.iter().filter(|s| s.contains(&b)).count(),
        1,
        "{b} once: {shown:?}"
    );
    // The receiver's order is the order of the attempts.
    let started = |i: &Value| i["attempts"][0]["started_at"].as_str().unwrap().to_owned();
    let a_first = started(&ia) <= started(&ib);
    assert_eq!(shown[0].contains(&a), a_first, "{shown:?} {ia:#} {ib:#}");
    t.stop().await;
}

#[tokio::test]
async fn the_dingtalk_robot_default_never_sends_more_than_20_a_minute() {
    let peer = dingtalk_peer().await;
    let t = start_dingtalk(&peer, DINGTALK_SECRET).await;
    let (status, list) = t.get("/workflow/channels").await;
    assert_eq!(status, 200);
    assert_eq!(list["channels"][0]["rate_limits"], json!(["20/1m"]));
    let mut ids = Vec::new();
    for _ in 0..21 {
        ids.push(t.create("pr-team").await);
    }
    // Twenty go at once; the twenty-first waits for the minute to pass: deferred, with no
    // attempt recorded.
    let mut deferred = Vec::new();
    for id in &ids {
        let info = t
            .wait_until(id, "delivered or deferred", |i| {
                let later = next_attempt_at(i)
                    .is_some_and(|at| at > chrono::Utc::now() + chrono::Duration::seconds(5));
                i["status"] == "completed"
                    || (i["status"] == "pending" && i["attempts"] == json!([]) && later)
            })
            .await;
        if info["status"] != "completed" {
            deferred.push(info);
        }
    }
    let hits = peer.hits();
    assert!(hits.iter().all(|h| h.check.is_ok()), "{hits:#?}");
    if hits.len() == 21 {
        // So slow a machine that the minute passed before we looked: the limit still held.
        assert!(hits[20].at - hits[0].at >= Duration::from_secs(60));
    } else {
        assert_eq!(hits.len(), 20);
        assert_eq!(deferred.len(), 1, "{deferred:#?}");
    }
    t.stop().await;
}

// === the API ===

#[tokio::test]
async fn an_unknown_channel_is_a_400_naming_channel_and_creates_nothing() {
    let t = start(
        Dir::new(),
        vec![channel(
            "ops",
            "slack",
            "https://hooks.slack.com/services/T/B/X",
        )],
    )
    .await;
    let (status, v) = t.post("/workflow/tasks", &for_channel("nope")).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], "validation_failed", "{v}");
    let details = v["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{v}");
    assert_eq!(details[0]["field"], "channel", "{v}");
    assert!(
        details[0]["reason"].as_str().unwrap().contains("nope"),
        "{v}"
    );
    let (_, list) = t.get("/workflow/tasks").await;
    assert_eq!(list["tasks"], json!([]), "{list}");
    t.stop().await;
}

#[tokio::test]
async fn the_channel_list_shows_names_kinds_and_limits_but_never_urls_or_secrets() {
    let dir = Dir::new();
    let mock_base = "http://127.0.0.1:9/dingtalk-api";
    let channels = vec![
        ChannelConfig {
            secret_file: dir.secret("d.sec", DINGTALK_SECRET),
            ..channel(
                "pr-team",
                "dingtalk_robot",
                &format!("https://oapi.dingtalk.com/robot/send?access_token={DINGTALK_TOKEN}"),
            )
        },
        channel(
            "wecom",
            "wecom_robot",
            &format!("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}"),
        ),
        ChannelConfig {
            secret_file: dir.secret("f.sec", FEISHU_SECRET),
            template: Some("{{risk_emoji}} {{brand}} {{source_link}}".to_owned()),
            ..channel(
                "lark",
                "feishu_robot",
                "https://open.feishu.cn/open-apis/bot/v2/hook/secret-hook-id",
            )
        },
        channel(
            "ops",
            "slack",
            "https://hooks.slack.com/services/T000/B000/slacksecretpart",
        ),
        ChannelConfig {
            secret_file: dir.secret("w.sec", CHANNEL_WHSEC),
            ..channel(
                "partner",
                "webhook",
                "https://partner.example/hooks?token=partner-token",
            )
        },
        channel("internal", "webhook", "https://internal.example/hook"),
        ChannelConfig {
            name: "app".to_owned(),
            kind: "dingtalk_app".to_owned(),
            url: Some(mock_base.to_owned()),
            client_id: Some("dingappclientid".to_owned()),
            secret_file: dir.secret("a.sec", "app-client-secret-value"),
            open_conversation_id: Some("cidGroup==".to_owned()),
            ..ChannelConfig::default()
        },
    ];
    let t = start(dir, channels).await;
    let (status, v) = t.get("/workflow/channels").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "success");
    let list = v["channels"].as_array().unwrap();
    let by_name = |name: &str| {
        list.iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {v:#}"))
    };
    let expected = [
        ("pr-team", "dingtalk_robot", json!(["20/1m"]), true),
        ("wecom", "wecom_robot", json!(["20/1m"]), false),
        ("lark", "feishu_robot", json!(["5/1s", "100/1m"]), true),
        ("ops", "slack", json!(["1/1s"]), false),
        ("partner", "webhook", json!([]), true),
        ("internal", "webhook", json!([]), true),
        ("app", "dingtalk_app", json!([]), false),
    ];
    assert_eq!(list.len(), expected.len(), "{v:#}");
    for (name, kind, rates, signed) in expected {
        let c = by_name(name);
        assert_eq!(c["kind"], kind, "{c}");
        assert_eq!(c["rate_limits"], rates, "{c}");
        assert_eq!(c["signed"], signed, "{c}");
        assert_eq!(c["custom_template"], name == "lark", "{c}");
    }
    let names: Vec<&str> = list.iter().map(|c| c["name"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "listed by name");
    let text = v.to_string();
    for secret in [
        DINGTALK_TOKEN,
        DINGTALK_SECRET,
        WECOM_KEY,
        FEISHU_SECRET,
        "secret-hook-id",
        "slacksecretpart",
        "partner-token",
        CHANNEL_WHSEC,
        "app-client-secret-value",
        "http",
        "dingtalk.com",
        "127.0.0.1",
    ] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    // Like every other route, it needs the API key.
    let (status, _) = t
        .call(
            Request::get("/workflow/channels")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, 401);
    t.stop().await;
}

#[tokio::test]
async fn with_webhook_url_and_channel_the_package_goes_to_the_url_and_the_channel_is_told() {
    let hook = Peer::start(webhook_check(SECRET), status_reply()).await;
    let chat = wecom_peer().await;
    let t = start(Dir::new(), vec![wecom_channel(&chat)]).await;
    let mut body = for_channel("wecom");
    body["webhook_url"] = hook.url("/hook").into();
    let (status, v) = t.post("/workflow/tasks", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["webhook_url"], hook.url("/hook"), "{v}");
    assert_eq!(v["channel"], "wecom", "{v}");
    let id = v["task_id"].as_str().unwrap().to_owned();
    let channel_id = v["channel_task_id"].as_str().unwrap().to_owned();
    assert_ne!(id, channel_id);

    let plain = t.wait_final(&id).await;
    assert_eq!(plain["status"], "completed", "{plain:#}");
    assert_eq!(plain["webhook_url"], hook.url("/hook"), "{plain:#}");
    assert!(plain["channel"].is_null(), "{plain:#}");
    assert_delivered_once(&t.wait_final(&channel_id).await, "wecom");

    assert_eq!(hook.single().headers["webhook-id"], id.as_str());
    let content = chat.single().body["markdown"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    // The chat message is about the task (its id and callback link), the channel being one
    // of its two deliveries.
    assert_shows_the_task(&content, &id, MARKDOWN_LINK);
    assert_eq!(channel_id, format!("{id}.1"));
    let deliveries = &plain["deliveries"];
    assert_eq!(deliveries[0]["target"], hook.url("/hook"), "{plain:#}");
    assert_eq!(deliveries[1]["target"], "wecom", "{plain:#}");
    t.stop().await;
}

#[tokio::test]
async fn a_custom_template_is_filled_with_the_platforms_escaping() {
    let peer = wecom_peer().await;
    let ch = ChannelConfig {
        template: Some(
            "{{risk_emoji}} {{risk_label}} {{brand}} {{source_link}} {{task_id}}".to_owned(),
        ),
        ..wecom_channel(&peer)
    };
    let t = start(Dir::new(), vec![ch]).await;
    let id = t.create("wecom").await;
    assert_delivered_once(&t.wait_final(&id).await, "wecom");
    assert_eq!(
        peer.single().body["markdown"]["content"],
        format!("🟠 高 {BRAND} {MARKDOWN_LINK} {id}")
    );
    t.stop().await;
}

#[tokio::test]
async fn a_feishu_sign_mismatch_is_a_failed_attempt_and_not_retried() {
    let peer = feishu_peer().await;
    let t = start_feishu(&peer, "not-the-bots-secret").await;
    let id = t.create("lark").await;
    let info = t.wait_final(&id).await;
    let attempt = assert_failed_for_good_in_one_attempt(&info);
    assert!(
        attempt["error"].as_str().unwrap().contains("19021"),
        "{info:#}"
    );
    assert_eq!(peer.hits().len(), 1);
    assert_eq!(peer.hits()[0].check, Err("sign match fail".to_owned()));
    t.stop().await;
}
