//! Run with: cargo run -p example-channels
//!
//! Preset channels in one process: a local stand-in for every chat platform, each checking
//! the signature the way the platform documents it (DingTalk `timestamp`/`sign` query
//! parameters, Feishu `timestamp`/`sign` in the body, Standard Webhooks headers for the
//! `webhook` kind), `dingtalk-mock` as the DingTalk OpenAPI for the app robot, and a
//! dispatcher configured from TOML with one channel of each kind. One task per channel goes
//! in through `POST /workflow/tasks` with `"channel": "<name>"` over real HTTP; once all are
//! delivered, the example prints what each platform received, as the chat would show it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use figment::providers::{Format as _, Serialized, Toml};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const KEY: &str = "example-key";
const SERVER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const PARTNER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DINGTALK_TOKEN: &str = "example-robot-token";
const DINGTALK_SECRET: &str = "SECexamplerobotsecret0123456789";
const WECOM_KEY: &str = "example-wecom-key";
const FEISHU_SECRET: &str = "example-feishu-secret";
const GROUP: &str = "cidExampleGroup0a1b2c3==";

/// What one platform stand-in received: its verdict on the signature and the message as
/// the chat would show it.
#[derive(Debug)]
struct Received {
    kind: &'static str,
    verdict: Result<&'static str, String>,
    shown: String,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    B64.encode(mac.finalize().into_bytes())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn record(inbox: &Inbox, kind: &'static str, verdict: Result<&'static str, String>, shown: String) {
    inbox.lock().expect("inbox lock").push(Received {
        kind,
        verdict,
        shown,
    });
}

/// DingTalk custom robot: sign = urlencode(base64(HMAC-SHA256(secret, timestamp + "\n" + secret))).
async fn dingtalk(State(inbox): State<Inbox>, RawQuery(q): RawQuery, body: Bytes) -> String {
    let q = q.unwrap_or_default();
    let ts = param(&q, "timestamp").unwrap_or_default();
    let expected = hmac_b64(
        DINGTALK_SECRET.as_bytes(),
        format!("{ts}\n{DINGTALK_SECRET}").as_bytes(),
    )
    .replace('+', "%2B")
    .replace('/', "%2F")
    .replace('=', "%3D");
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (now_ms() - t).abs() < 3_600_000);
    let verdict = if param(&q, "access_token") != Some(DINGTALK_TOKEN) {
        Err("300005 token is not exist".to_owned())
    } else if !fresh || param(&q, "sign") != Some(expected.as_str()) {
        Err("310000 sign not match".to_owned())
    } else {
        Ok("access_token, timestamp and sign verified")
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let shown = format!(
        "[{}] {}\n{}",
        text(&v, "/msgtype"),
        text(&v, "/markdown/title"),
        text(&v, "/markdown/text")
    );
    let reply = match &verdict {
        Ok(_) => json!({"errcode": 0, "errmsg": "ok"}),
        Err(e) => json!({"errcode": 310_000, "errmsg": e}),
    };
    record(&inbox, "dingtalk_robot", verdict, shown);
    reply.to_string()
}

/// WeCom group robot: the key in the URL is the credential; markdown `content`.
async fn wecom(State(inbox): State<Inbox>, RawQuery(q): RawQuery, body: Bytes) -> String {
    let verdict = if param(&q.unwrap_or_default(), "key") == Some(WECOM_KEY) {
        Ok("key verified (WeCom robots are not signed)")
    } else {
        Err("93000 invalid webhook url".to_owned())
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let shown = format!(
        "[{}]\n{}",
        text(&v, "/msgtype"),
        text(&v, "/markdown/content")
    );
    let code = if verdict.is_ok() { 0 } else { 93_000 };
    record(&inbox, "wecom_robot", verdict, shown);
    json!({"errcode": code, "errmsg": if code == 0 { "ok" } else { "invalid webhook url" }})
        .to_string()
}

/// Feishu/Lark custom bot: sign = base64(HMAC-SHA256(key = timestamp + "\n" + secret, msg = "")).
async fn feishu(State(inbox): State<Inbox>, body: Bytes) -> String {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let ts = text(&v, "/timestamp");
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (now_ms() / 1000 - t).abs() < 3600);
    let expected = hmac_b64(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b"");
    let verdict = if fresh && text(&v, "/sign") == expected {
        Ok("timestamp and sign verified")
    } else {
        Err("19021 sign match fail".to_owned())
    };
    let button = v["card"]["elements"][1]["actions"][0].clone();
    let shown = format!(
        "[{} card, {} header] {}\n{}\n[{}]({})",
        text(&v, "/msg_type"),
        text(&v, "/card/header/template"),
        text(&v, "/card/header/title/content"),
        text(&v, "/card/elements/0/text/content"),
        text(&button, "/text/content"),
        text(&button, "/url"),
    );
    let reply = match &verdict {
        Ok(_) => json!({"code": 0, "msg": "success", "data": {}}),
        Err(e) => json!({"code": 19021, "msg": e}),
    };
    record(&inbox, "feishu_robot", verdict, shown);
    reply.to_string()
}

/// Slack incoming webhook: the URL is the credential; `text` plus `blocks`.
async fn slack(State(inbox): State<Inbox>, body: Bytes) -> &'static str {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let blocks = v["blocks"].as_array().cloned().unwrap_or_default();
    let lines: Vec<String> = blocks
        .iter()
        .map(|b| match b["type"].as_str() {
            Some("context") => format!("[context] {}", text(b, "/elements/0/text")),
            other => format!("[{}] {}", other.unwrap_or("?"), text(b, "/text/text")),
        })
        .collect();
    let verdict = if blocks.is_empty() {
        Err("invalid_blocks".to_owned())
    } else {
        Ok("URL is the credential (Slack webhooks are not signed)")
    };
    record(&inbox, "slack", verdict, lines.join("\n"));
    "ok"
}

/// A partner's webhook: the standard package, Standard Webhooks signature with the channel's
/// own secret.
async fn partner(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> &'static str {
    let secret = webhook_client::SigningSecret::parse(PARTNER_SECRET).expect("valid secret");
    let verdict = webhook_client::verify_headers(&[secret], &headers, &body, now_ms() / 1000)
        .map(|()| "webhook-signature verified with the channel's own secret")
        .map_err(|e| e.to_string());
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let shown = format!(
        "webhook-id {}\ntask_type {}, brand {}, risk {}, format {}\ncallback {}",
        headers
            .get("webhook-id")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default(),
        text(&v, "/task_type"),
        text(&v, "/evidence_data/brand_name"),
        text(&v, "/evidence_data/risk_level"),
        text(&v, "/delivery_instructions/delivery_format"),
        text(&v, "/delivery_instructions/callback_url"),
    );
    record(&inbox, "webhook", verdict, shown);
    "accepted"
}

fn request(channel: &str, risk: &str) -> Value {
    json!({
        "task_type": "negative_evidence_intervention",
        "evidence_data": {
            "evidence_fragment": "某品牌手机电池续航严重虚标，用户实测不到宣传的一半",
            "associated_url": "https://weibo.com/1234567890/AbCdEf",
            "source_name": "微博",
            "risk_level": risk,
            "brand_name": "某品牌",
            "intervention_script": "您好，我们已关注到您反馈的续航问题，请私信提供订单号，我们将安排专人跟进。",
            "source_meta": {"author": "数码测评君", "followers": 250000}
        },
        "channel": channel,
        "priority": "high"
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();

    // The chat platforms, on one loopback port.
    let inbox: Inbox = Arc::default();
    let peers = Router::new()
        .route("/robot/send", post(dingtalk))
        .route("/cgi-bin/webhook/send", post(wecom))
        .route("/open-apis/bot/v2/hook/{hook}", post(feishu))
        .route("/services/T0000/B0000/example", post(slack))
        .route("/partner/hook", post(partner))
        .with_state(inbox.clone());
    let peer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let peer = format!("http://{}", peer_listener.local_addr()?);
    let peer_server = tokio::spawn(async move { axum::serve(peer_listener, peers).await });

    // The DingTalk OpenAPI for the app robot.
    let mock = dingtalk_mock::DingTalkMock::start(dingtalk_mock::MockConfig::default()).await?;
    mock.add_group(GROUP);

    // Secrets live in files (or environment variables), never in the TOML.
    let dir = tempfile::tempdir()?;
    let secret = |name: &str, value: &str| -> std::io::Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n"))?;
        Ok(path.display().to_string())
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let toml = format!(
        r#"
data_dir = {data:?}
public_url = {base:?}
api_keys = [{KEY:?}]
signing_secret = [{SERVER_SECRET:?}]
allowed_target_cidrs = ["127.0.0.0/8"]

[channels.pr-team]
kind = "dingtalk_robot"
url = "{peer}/robot/send?access_token={DINGTALK_TOKEN}"
secret_file = {dingtalk:?}

[channels.pr-app]
kind = "dingtalk_app"
url = {api:?}
client_id = {client_id:?}
secret_file = {app:?}
open_conversation_id = {GROUP:?}

[channels.wecom]
kind = "wecom_robot"
url = "{peer}/cgi-bin/webhook/send?key={WECOM_KEY}"

[channels.lark]
kind = "feishu_robot"
url = "{peer}/open-apis/bot/v2/hook/0a1b2c3d"
secret_file = {feishu:?}

[channels.ops]
kind = "slack"
url = "{peer}/services/T0000/B0000/example"

[channels.partner]
kind = "webhook"
url = "{peer}/partner/hook"
secret_file = {partner:?}
"#,
        data = dir.path().join("data").display().to_string(),
        dingtalk = secret("dingtalk.sec", DINGTALK_SECRET)?,
        api = mock.base_url(),
        client_id = mock.config().client_id,
        app = secret("app.sec", &mock.config().client_secret)?,
        feishu = secret("feishu.sec", FEISHU_SECRET)?,
        partner = secret("partner.sec", PARTNER_SECRET)?,
    );
    let config = dispatcher::Config::load(
        &figment::Figment::from(Serialized::defaults(dispatcher::Config::default()))
            .merge(Toml::string(&toml)),
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dispatcher::run(config, listener, async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let listed: Value = http
        .get(format!("{base}/workflow/channels"))
        .bearer_auth(KEY)
        .send()
        .await?
        .json()
        .await?;
    println!("GET /workflow/channels (no URLs, no secrets):");
    for c in listed["channels"].as_array().into_iter().flatten() {
        println!(
            "  {:<8} {:<15} rate {:<20} signed {}",
            text(c, "/name"),
            text(c, "/kind"),
            c["rate_limits"].to_string(),
            c["signed"]
        );
    }

    let channels = [
        ("pr-team", "dingtalk_robot", "critical"),
        ("pr-app", "dingtalk_app", "high"),
        ("wecom", "wecom_robot", "high"),
        ("lark", "feishu_robot", "medium"),
        ("ops", "slack", "low"),
        ("partner", "webhook", "high"),
    ];
    let mut tasks = Vec::new();
    for (name, kind, risk) in channels {
        let r: Value = http
            .post(format!("{base}/workflow/tasks"))
            .bearer_auth(KEY)
            .json(&request(name, risk))
            .send()
            .await?
            .json()
            .await?;
        let id = text(&r, "/task_id");
        if id.is_empty() {
            return Err(format!("task for {name} refused: {r}").into());
        }
        tasks.push((name, kind, id));
    }

    // Wait until every task is final (a few hundred milliseconds; 30 s at most).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failures = Vec::new();
    for (name, kind, id) in &tasks {
        let info = loop {
            let v: Value = http
                .get(format!("{base}/workflow/tasks/{id}"))
                .bearer_auth(KEY)
                .send()
                .await?
                .json()
                .await?;
            let status = text(&v, "/task_info/status");
            if matches!(status.as_str(), "completed" | "failed" | "cancelled")
                || Instant::now() > deadline
            {
                break v["task_info"].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let status = text(&info, "/status");
        let attempts = info["attempts"].as_array().map_or(0, Vec::len);
        println!("\n=== {kind} (channel {name}, task {id}): {status} after {attempts} attempt(s)");
        if status != "completed" {
            failures.push(format!("{name}: {status} {}", info["last_error"]));
            continue;
        }
        if *kind == "dingtalk_app" {
            for e in mock.outbox() {
                println!(
                    "{} to {:?}, msgKey {}: {}\n{}",
                    e.channel,
                    e.to,
                    e.kind,
                    text(&e.content, "/title"),
                    text(&e.content, "/text")
                );
            }
            continue;
        }
        let inbox = inbox.lock().expect("inbox lock");
        for r in inbox.iter().filter(|r| r.kind == *kind) {
            match &r.verdict {
                Ok(how) => println!("signature: {how}"),
                Err(e) => failures.push(format!("{name}: the platform refused it: {e}")),
            }
            println!("{}", r.shown);
        }
    }

    let _ = stop.send(());
    server.await??;
    mock.shutdown().await;
    peer_server.abort();
    if !failures.is_empty() {
        return Err(format!("not delivered: {failures:?}").into());
    }
    println!("\nall {} channels delivered and verified", tasks.len());
    Ok(())
}
