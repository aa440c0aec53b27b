//! The mock agrees with the protocol reference (`shared/reference/dingtalk-protocol.md`) on
//! every endpoint, error bodies included, over real sockets.

use std::collections::HashSet;
use std::time::Duration;

use dingtalk_mock::{
    Api, CustomRobotConfig, DingTalkMock, MockConfig, MockFault, MockMessage, MsgType,
    custom_robot_sign,
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn post_json(
    c: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = c.post(url).json(body);
    if let Some(t) = token {
        r = r.header("x-acs-dingtalk-access-token", t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap())
}

async fn post(c: &reqwest::Client, url: String, token: Option<&str>, body: &Value) -> (u16, Value) {
    let (s, _, v) = post_json(c, url, token, body).await;
    (s, v)
}

async fn token(c: &reqwest::Client, mock: &DingTalkMock) -> String {
    let cfg = mock.config();
    let (s, v) = post(
        c,
        format!("{}/v1.0/oauth2/accessToken", mock.base_url()),
        None,
        &json!({"appKey": cfg.client_id, "appSecret": cfg.client_secret}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["expireIn"], 7200);
    v["accessToken"].as_str().unwrap().to_owned()
}

/// `{"code","message","requestid"}` and nothing else, lowercase `requestid`.
fn assert_error(v: &Value, code: &str, message: &str) {
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["message"], message, "{v}");
    assert!(
        v["requestid"].as_str().is_some_and(|r| !r.is_empty()),
        "{v}"
    );
    assert_eq!(v.as_object().unwrap().len(), 3, "exactly three fields: {v}");
}

fn text_send(robot: &str, users: &Value) -> Value {
    json!({"robotCode": robot, "userIds": users, "msgKey": "sampleText", "msgParam": "{\"content\":\"hi\"}"})
}

#[tokio::test]
async fn access_token_is_issued_renewed_and_refused_per_spec() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let first = token(&c, &mock).await;
    assert_eq!(
        token(&c, &mock).await,
        first,
        "the same token while it is valid"
    );
    let (s, headers, v) = post_json(
        &c,
        format!("{}/v1.0/oauth2/accessToken", mock.base_url()),
        None,
        &json!({"appKey": "x", "appSecret": "y"}),
    )
    .await;
    assert_eq!(s, 400);
    assert_error(
        &v,
        "invalidClientIdOrSecret",
        "无效的clientId或者clientSecret",
    );
    assert_eq!(
        headers["x-acs-request-id"].to_str().unwrap(),
        v["requestid"],
        "header and body carry the same request id"
    );
    assert_eq!(headers["server"], "DingTalk/1.0.0");
    assert_eq!(headers["content-type"], "application/json;charset=utf-8");

    let r = c
        .post(format!("{}/v1.0/oauth2/accessToken", mock.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("appKey=x&appSecret=y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_error(&v, "MissingBody", "body is mandatory for this action");

    mock.expire_tokens();
    assert_ne!(token(&c, &mock).await, first, "a new token after expiry");
    assert_eq!(mock.token_requests(), 5, "refused requests count too");
}

#[tokio::test]
async fn old_style_gettoken_answers_200_with_errcode() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let get = |key: String, secret: String| {
        let url = format!("{}/gettoken", mock.base_url());
        let c = c.clone();
        async move {
            let r = c
                .get(url)
                .query(&[("appkey", key), ("appsecret", secret)])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let cfg = mock.config().clone();
    let ok = get(cfg.client_id.clone(), cfg.client_secret.clone()).await;
    assert_eq!(ok["errcode"], 0);
    assert_eq!(ok["errmsg"], "ok");
    assert_eq!(ok["expires_in"], 7200);
    // The old token works on the new APIs too, as the official SDK uses them interchangeably.
    let (s, _) = post(
        &c,
        format!("{}/v1.0/robot/oToMessages/batchSend", mock.base_url()),
        ok["access_token"].as_str(),
        &text_send(&cfg.robot_code, &json!(["u1"])),
    )
    .await;
    assert_eq!(s, 200);
    let bad = get(cfg.client_id, "wrong".into()).await;
    assert_eq!(
        bad,
        json!({"errcode": 40089, "errmsg": "不合法的corpid或corpsecret"})
    );
}

#[tokio::test]
async fn batch_send_checks_token_limits_and_parameters() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: None,
        invalid_users: HashSet::from(["ghost".to_owned()]),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let t = token(&c, &mock).await;
    let url = format!("{}/v1.0/robot/oToMessages/batchSend", mock.base_url());
    let robot = mock.config().robot_code.clone();

    let (s, headers, v) = post_json(
        &c,
        url.clone(),
        Some(&t),
        &text_send(&robot, &json!(["u1", "u2"])),
    )
    .await;
    assert_eq!(s, 200);
    assert!(headers.contains_key("x-acs-request-id"));
    assert!(v["processQueryKey"].as_str().is_some_and(|k| !k.is_empty()));
    for list in [
        "invalidStaffIdList",
        "flowControlledStaffIdList",
        "filteredStaffIdList",
    ] {
        assert_eq!(v[list], json!([]), "{list}");
    }

    let (s, v) = post(
        &c,
        url.clone(),
        Some("bad"),
        &text_send(&robot, &json!(["u1"])),
    )
    .await;
    assert_eq!(s, 400);
    assert_error(&v, "InvalidAuthentication", "不合法的access_token");
    let (s, v) = post(&c, url.clone(), None, &text_send(&robot, &json!(["u1"]))).await;
    assert_eq!(s, 400, "a missing token is a bad token");
    assert_error(&v, "InvalidAuthentication", "不合法的access_token");

    let users: Vec<String> = (0..21).map(|i| format!("u{i}")).collect();
    let (s, v) = post(&c, url.clone(), Some(&t), &text_send(&robot, &json!(users))).await;
    assert_eq!(s, 400);
    assert_error(
        &v,
        "invalidParameter.userIds.overMax",
        "userIds exceeds the maximum of 20",
    );
    let (s, _) = post(
        &c,
        url.clone(),
        Some(&t),
        &text_send(&robot, &json!(users[..20])),
    )
    .await;
    assert_eq!(s, 200, "exactly 20 is fine");
    let (s, v) = post(&c, url.clone(), Some(&t), &text_send(&robot, &json!([]))).await;
    assert_eq!(s, 400);
    assert_eq!(v["code"], "invalidParameter.userIds.empty");

    for param in [
        json!({"content": "an object, not a string"}),
        json!("not json"),
    ] {
        let (s, v) = post(
            &c,
            url.clone(),
            Some(&t),
            &json!({"robotCode": robot, "userIds": ["u"], "msgKey": "sampleText", "msgParam": param}),
        )
        .await;
        assert_eq!(s, 400);
        assert_error(
            &v,
            "invalidParameter.msgParam.invalid",
            "msgParam must be in JSON format",
        );
    }
    for key in ["sampleVoice", "sampleActionCard1", "sampleImage"] {
        let (s, v) = post(
            &c,
            url.clone(),
            Some(&t),
            &json!({"robotCode": robot, "userIds": ["u"], "msgKey": key, "msgParam": "{}"}),
        )
        .await;
        assert_eq!(s, 400, "{key}");
        assert_error(&v, "invalidParameter.msgKey.invalid", "msgKey is invalid");
    }
    let (s, v) = post(
        &c,
        url.clone(),
        Some(&t),
        &json!({"robotCode": "dingother", "userIds": ["u"], "msgKey": "sampleText", "msgParam": "{}"}),
    )
    .await;
    assert_eq!(s, 400);
    assert_error(
        &v,
        "invalidParameter.robotCode.auth",
        "This app's appkey does not match the bot's robotCode",
    );

    mock.clear_outbox();
    mock.flow_control("u2");
    let (_, v) = post(
        &c,
        url.clone(),
        Some(&t),
        &text_send(&robot, &json!(["u1", "u2", "ghost"])),
    )
    .await;
    assert_eq!(v["flowControlledStaffIdList"], json!(["u2"]));
    assert_eq!(v["invalidStaffIdList"], json!(["ghost"]));
    let (_, v) = post(
        &c,
        url.clone(),
        Some(&t),
        &text_send(&robot, &json!(["u2"])),
    )
    .await;
    assert_eq!(
        v["flowControlledStaffIdList"],
        json!([]),
        "throttled once, then clear"
    );
    let out = mock.outbox();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].channel, "batch_send");
    assert_eq!(
        out[0].to,
        ["u1"],
        "neither the throttled nor the invalid user got it"
    );
    assert_eq!(out[0].kind, "sampleText");
    assert_eq!(out[0].content, json!({"content": "hi"}));
    assert_eq!(out[0].text, "hi");
    assert_eq!(out[1].to, ["u2"]);

    let (s, v) = post(
        &c,
        url.clone(),
        Some(&t),
        &text_send(&robot, &json!(["u1"])),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(mock.expire_token(&t));
    let (s, v) = post(&c, url, Some(&t), &text_send(&robot, &json!(["u1"]))).await;
    assert_eq!(s, 400);
    assert_error(&v, "InvalidAuthentication", "不合法的access_token");
}

#[tokio::test]
async fn qps_limit_answers_the_real_403_per_api() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: Some(2),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let t = token(&c, &mock).await;
    let url = format!("{}/v1.0/robot/oToMessages/batchSend", mock.base_url());
    let body = text_send(&mock.config().robot_code, &json!(["u"]));
    let mut statuses = vec![];
    for _ in 0..3 {
        let (s, v) = post(&c, url.clone(), Some(&t), &body).await;
        statuses.push(s);
        if s == 403 {
            assert_error(
                &v,
                "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
                "调用该接口触发了限流，请降低调用频率",
            );
        }
    }
    assert_eq!(statuses, [200, 200, 403]);
    // Another API has its own budget.
    mock.add_group("cidQ==");
    let (s, _) = post(
        &c,
        format!("{}/v1.0/robot/groupMessages/send", mock.base_url()),
        Some(&t),
        &json!({"robotCode": mock.config().robot_code, "openConversationId": "cidQ==", "msgKey": "sampleText", "msgParam": "{\"content\":\"x\"}"}),
    )
    .await;
    assert_eq!(s, 200);
    mock.set_qps_limit(None);
    let (s, _) = post(&c, url, Some(&t), &body).await;
    assert_eq!(s, 200, "limit lifted");
}

#[tokio::test]
async fn injected_faults_answer_their_body_then_clear() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let t = token(&c, &mock).await;
    mock.fail_next(Api::BatchSend, &MockFault::send_too_fast(), 2);
    let url = format!("{}/v1.0/robot/oToMessages/batchSend", mock.base_url());
    let body = text_send(&mock.config().robot_code, &json!(["u"]));
    for _ in 0..2 {
        let (s, v) = post(&c, url.clone(), Some(&t), &body).await;
        assert_eq!(s, 400);
        assert_error(&v, "send.too.fast", "发送速度太快");
    }
    let (s, _) = post(&c, url, Some(&t), &body).await;
    assert_eq!(s, 200);
    assert_eq!(mock.outbox().len(), 1);
}

#[tokio::test]
async fn group_send_checks_size_and_conversation() {
    let mock = DingTalkMock::start(MockConfig {
        groups: HashSet::from(["cidConfigured==".to_owned()]),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let t = token(&c, &mock).await;
    let url = format!("{}/v1.0/robot/groupMessages/send", mock.base_url());
    let robot = mock.config().robot_code.clone();
    let send = |cid: &str, key: &str, param: String| json!({"robotCode": robot, "openConversationId": cid, "msgKey": key, "msgParam": param});
    let (s, v) = post(
        &c,
        url.clone(),
        Some(&t),
        &send("cidUnknown==", "sampleText", "{\"content\":\"x\"}".into()),
    )
    .await;
    assert_eq!(s, 400);
    assert_error(
        &v,
        "invalidParameter.openConversationId.invalid",
        "openConversationId is invalid",
    );

    let (s, v) = post(
        &c,
        url.clone(),
        Some(&t),
        &send(
            "cidConfigured==",
            "sampleMarkdown",
            "{\"title\":\"t\",\"text\":\"### 结果\"}".into(),
        ),
    )
    .await;
    assert_eq!(s, 200);
    assert!(v["processQueryKey"].is_string());
    assert_eq!(v.as_object().unwrap().len(), 1, "only processQueryKey: {v}");

    // A group message said through the mock makes the group known.
    mock.say(MockMessage::group("u1", "cidSaid==", "hi")).await;
    let (s, _) = post(
        &c,
        url.clone(),
        Some(&t),
        &send("cidSaid==", "sampleText", "{\"content\":\"x\"}".into()),
    )
    .await;
    assert_eq!(s, 200);

    let just_under = json!({"content": "x".repeat(14_985)}).to_string();
    assert_eq!(just_under.len(), 14_999);
    let (s, _) = post(
        &c,
        url.clone(),
        Some(&t),
        &send("cidSaid==", "sampleText", just_under),
    )
    .await;
    assert_eq!(s, 200, "14,999 bytes pass");
    let big = json!({"content": "x".repeat(14_986)}).to_string();
    let (s, v) = post(
        &c,
        url.clone(),
        Some(&t),
        &send("cidSaid==", "sampleText", big),
    )
    .await;
    assert_eq!(s, 400, "15,000 bytes do not");
    assert_error(
        &v,
        "invalidParameter.msgParam.length",
        "msgParam length must not exceed 15000 bytes",
    );
    let (s, v) = post(
        &c,
        url,
        Some("expired"),
        &send("cidSaid==", "sampleText", "{}".into()),
    )
    .await;
    assert_eq!(s, 400);
    assert_error(&v, "InvalidAuthentication", "不合法的access_token");

    let out = mock.outbox();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].channel, "group_send");
    assert_eq!(out[0].to, ["cidConfigured=="]);
    assert_eq!(out[0].text, "### 结果");
    assert_eq!(out[0].content["title"], "t");
}

#[tokio::test]
async fn session_webhook_works_until_it_expires() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let said = mock.say(MockMessage::single("u1", "hi")).await;
    assert!(!said.delivered, "no stream connection yet");
    assert!(
        said.session_webhook
            .starts_with(&format!("{}/robot/sendBySession?session=", mock.base_url()))
    );
    let c = http();
    let body = json!({"msgtype": "markdown", "markdown": {"title": "结果", "text": "@u1 ### 完成"}, "at": {"atUserIds": ["u1"], "isAtAll": false}});
    let r = c
        .post(&said.session_webhook)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"errcode": 0, "errmsg": "ok"})
    );
    assert_eq!(mock.expire_sessions(), 1);
    let r = c
        .post(&said.session_webhook)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "expiry is HTTP 200 with an errcode");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"errcode": 300001, "errmsg": "session 不存在"})
    );
    let (s, v) = post(
        &c,
        format!("{}/robot/sendBySession?session=nope", mock.base_url()),
        None,
        &body,
    )
    .await;
    assert_eq!(
        (s, v),
        (200, json!({"errcode": 300001, "errmsg": "session 不存在"}))
    );

    let out = mock.outbox();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel, "session_webhook");
    assert_eq!(out[0].kind, "markdown");
    assert_eq!(out[0].text, "@u1 ### 完成");
    assert_eq!(out[0].at_user_ids, ["u1"]);
    assert_eq!(out[0].to, [said.conversation_id.as_str()]);
}

fn now_ms() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string()
}

async fn robot_send(
    c: &reqwest::Client,
    mock: &DingTalkMock,
    token: &str,
    ts: &str,
    sign: &str,
    body: &Value,
) -> Value {
    let r = c
        .post(format!("{}/robot/send", mock.base_url()))
        .query(&[("access_token", token), ("timestamp", ts), ("sign", sign)])
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the custom robot always answers 200");
    r.json().await.unwrap()
}

#[tokio::test]
async fn custom_robot_checks_token_sign_keywords_and_rate() {
    let mock = DingTalkMock::start(MockConfig {
        custom_robot: CustomRobotConfig {
            keywords: vec!["告警".into()],
            per_minute: 3,
            block_for: Duration::from_millis(400),
            ..CustomRobotConfig::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let robot = mock.config().custom_robot.clone();
    let secret = robot.secret.clone().unwrap();
    let token = robot.access_token.as_str();
    let msg =
        json!({"msgtype": "text", "text": {"content": "告警: disk"}, "at": {"isAtAll": true}});
    let now = now_ms();
    let good = custom_robot_sign(&now, &secret);

    let v = robot_send(&c, &mock, "nope", &now, &good, &msg).await;
    assert_eq!(
        v,
        json!({"errcode": 300005, "errmsg": "token is not exist"})
    );
    let v = robot_send(&c, &mock, token, &now, "wrong", &msg).await;
    assert_eq!(v, json!({"errcode": 310000, "errmsg": "sign not match"}));
    let v = robot_send(
        &c,
        &mock,
        token,
        "1",
        &custom_robot_sign("1", &secret),
        &msg,
    )
    .await;
    assert_eq!(v["errcode"], 310000, "a timestamp over an hour old");
    let off_topic = json!({"msgtype": "text", "text": {"content": "hello"}});
    let v = robot_send(&c, &mock, token, &now, &good, &off_topic).await;
    assert_eq!(
        v,
        json!({"errcode": 310000, "errmsg": "keywords not in content"})
    );

    for _ in 0..3 {
        let v = robot_send(&c, &mock, token, &now, &good, &msg).await;
        assert_eq!(v, json!({"errcode": 0, "errmsg": "ok"}));
    }
    let throttled =
        json!({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"});
    assert_eq!(
        robot_send(&c, &mock, token, &now, &good, &msg).await,
        throttled
    );
    assert_eq!(
        robot_send(&c, &mock, token, &now, &good, &msg).await,
        throttled,
        "blocked"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The block is over but the minute's window is still full: exceeding it blocks again.
    assert_eq!(
        robot_send(&c, &mock, token, &now, &good, &msg).await,
        throttled
    );

    let out = mock.outbox();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].channel, "custom_robot");
    assert!(out[0].is_at_all);
    assert_eq!(out[0].text, "告警: disk");
    assert!(
        out.iter().all(|e| !e.to.iter().any(|t| t == token)),
        "no credential in the outbox"
    );
}

#[tokio::test]
async fn custom_robot_signature_survives_url_encoding() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let robot = mock.config().custom_robot.clone();
    let secret = robot.secret.unwrap();
    // Find a timestamp whose signature has `+`, `/` or `=`, which must be percent-encoded.
    let base: u64 = now_ms().parse().unwrap();
    let (ts, sign) = (0..200)
        .map(|i| (base + i).to_string())
        .map(|ts| {
            let s = custom_robot_sign(&ts, &secret);
            (ts, s)
        })
        .find(|(_, s)| s.contains('+') || s.contains('/'))
        .unwrap();
    let v = robot_send(
        &c,
        &mock,
        &robot.access_token,
        &ts,
        &sign,
        &json!({"msgtype": "text", "text": {"content": "x"}}),
    )
    .await;
    assert_eq!(v["errcode"], 0, "{v}");
}

// === Stream ===

async fn open(c: &reqwest::Client, mock: &DingTalkMock) -> (String, String) {
    let cfg = mock.config();
    let (s, v) = post(
        c,
        format!("{}/v1.0/gateway/connections/open", mock.base_url()),
        None,
        &json!({
            "clientId": cfg.client_id,
            "clientSecret": cfg.client_secret,
            "subscriptions": [
                {"type": "EVENT", "topic": "*"},
                {"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"},
                {"type": "SYSTEM", "topic": "ping"}
            ],
            "ua": "dingtalk-mock-test/1.0",
            "localIp": "127.0.0.1",
            "extras": {}
        }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    (
        v["endpoint"].as_str().unwrap().to_owned(),
        v["ticket"].as_str().unwrap().to_owned(),
    )
}

async fn connect(c: &reqwest::Client, mock: &DingTalkMock) -> Ws {
    let (endpoint, ticket) = open(c, mock).await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("{endpoint}?ticket={ticket}"))
        .await
        .unwrap();
    for _ in 0..500 {
        if mock.connections() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn quiet_for(ws: &mut Ws, d: Duration) -> bool {
    tokio::time::timeout(d, ws.next()).await.is_err()
}

fn ack(frame: &Value, data: &str) -> Message {
    Message::text(
        json!({"code": 200, "headers": {"contentType": "application/json", "messageId": frame["headers"]["messageId"]}, "message": "OK", "data": data})
            .to_string(),
    )
}

/// Every header value a string, the documented headers present, `data` a JSON string.
fn assert_frame_shape(f: &Value, kind: &str, topic: &str) -> Value {
    assert_eq!(f["specVersion"], "1.0");
    assert_eq!(f["type"], kind);
    let headers = f["headers"].as_object().unwrap();
    for h in [
        "appId",
        "connectionId",
        "contentType",
        "messageId",
        "time",
        "topic",
    ] {
        assert!(
            headers.get(h).is_some_and(Value::is_string),
            "header {h} is a string: {f}"
        );
    }
    assert_eq!(headers["topic"], topic);
    assert_eq!(headers["contentType"], "application/json");
    assert!(
        headers["time"].as_str().unwrap().parse::<i64>().is_ok(),
        "time is ms"
    );
    serde_json::from_str(f["data"].as_str().expect("data is a JSON string")).unwrap()
}

#[tokio::test]
async fn gateway_open_validates_credentials_and_subscriptions() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let url = format!("{}/v1.0/gateway/connections/open", mock.base_url());
    let id = mock.config().client_id.clone();
    let subs = json!([{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]);
    let (s, v) = post(
        &c,
        url.clone(),
        None,
        &json!({"clientId": id, "clientSecret": "bad", "subscriptions": subs}),
    )
    .await;
    assert_eq!(s, 401);
    assert_error(
        &v,
        "InvalidAuthentication",
        "clientId or clientSecret is invalid",
    );
    let secret = mock.config().client_secret.clone();
    let (s, v) = post(
        &c,
        url.clone(),
        None,
        &json!({"clientId": id, "clientSecret": secret}),
    )
    .await;
    assert_eq!(s, 400);
    assert_error(
        &v,
        "invalidParameter.subscriptions.empty",
        "subscriptions is required",
    );
    let (s, _) = post(
        &c,
        url.clone(),
        None,
        &json!({"clientId": id, "clientSecret": secret, "subscriptions": []}),
    )
    .await;
    assert_eq!(s, 400);

    mock.reject_open(Some(503));
    let (s, v) = post(
        &c,
        url.clone(),
        None,
        &json!({"clientId": id, "clientSecret": secret, "subscriptions": subs}),
    )
    .await;
    assert_eq!(s, 503);
    assert_eq!(v["code"], "ServiceUnavailable");
    mock.reject_open(None);
    mock.fail_next(Api::GatewayOpen, &MockFault::unavailable(), 1);
    let (s, _) = post(
        &c,
        url.clone(),
        None,
        &json!({"clientId": id, "clientSecret": secret, "subscriptions": subs}),
    )
    .await;
    assert_eq!(s, 503);

    let (endpoint, ticket) = open(&c, &mock).await;
    assert_eq!(
        endpoint,
        format!("ws://{}/connect", mock.addr()),
        "explicit port, /connect"
    );
    assert!(
        uuid::Uuid::parse_str(&ticket).is_ok(),
        "URL-safe UUID ticket"
    );
}

#[tokio::test]
async fn tickets_are_single_use_and_expire() {
    let mock = DingTalkMock::start(MockConfig {
        ticket_ttl: Duration::from_millis(800),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let (endpoint, ticket) = open(&c, &mock).await;
    let url = format!("{endpoint}?ticket={ticket}");
    let _ws = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err(),
        "used twice"
    );
    assert!(
        tokio_tungstenite::connect_async(format!("{endpoint}?ticket=made-up"))
            .await
            .is_err(),
        "unknown ticket"
    );
    let (_, stale) = open(&c, &mock).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        tokio_tungstenite::connect_async(format!("{endpoint}?ticket={stale}"))
            .await
            .is_err(),
        "expired ticket"
    );
}

#[tokio::test]
async fn callbacks_carry_the_robot_message_as_a_json_string() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let mut ws = connect(&c, &mock).await;

    let said = mock
        .say(MockMessage::group("u1", "cidG==", "分析公司").nick("张三"))
        .await;
    assert!(said.delivered);
    let f = next_json(&mut ws).await;
    let data = assert_frame_shape(&f, "CALLBACK", "/v1.0/im/bot/messages/get");
    assert_eq!(data["msgId"], said.msg_id.as_str());
    assert_eq!(data["msgtype"], "text");
    assert_eq!(data["conversationType"], "2");
    assert_eq!(data["conversationId"], "cidG==");
    assert_eq!(data["conversationTitle"], "测试群");
    assert_eq!(data["isInAtList"], true);
    assert_eq!(
        data["text"]["content"], " 分析公司",
        "group messages keep a leading space"
    );
    assert_eq!(data["senderStaffId"], "u1");
    assert_eq!(data["senderNick"], "张三");
    assert_eq!(data["robotCode"], mock.config().robot_code.as_str());
    assert_eq!(data["sessionWebhook"], said.session_webhook.as_str());
    assert!(data["createAt"].is_i64());
    assert_eq!(
        data["sessionWebhookExpiredTime"].as_i64().unwrap() - data["createAt"].as_i64().unwrap(),
        5_400_000
    );

    let single = mock.say(MockMessage::single("u2", "你好")).await;
    let f = next_json(&mut ws).await;
    let data = assert_frame_shape(&f, "CALLBACK", "/v1.0/im/bot/messages/get");
    assert_eq!(data["conversationType"], "1");
    assert_eq!(data["text"]["content"], "你好");
    assert_eq!(data["conversationId"], single.conversation_id.as_str());
    assert!(data.get("conversationTitle").is_none());

    mock.say(MockMessage::single("u2", "语音内容").msg_type(MsgType::Audio))
        .await;
    let data = assert_frame_shape(
        &next_json(&mut ws).await,
        "CALLBACK",
        "/v1.0/im/bot/messages/get",
    );
    assert_eq!(data["msgtype"], "audio");
    assert_eq!(data["content"]["recognition"], "语音内容");

    // Unknown upstream frames are ignored, not recorded and not fatal.
    ws.send(Message::text("not json")).await.unwrap();
    ws.send(Message::text("{\"type\":\"whatever\"}"))
        .await
        .unwrap();
    ws.send(ack(&f, "{\"response\":null}")).await.unwrap();
    for _ in 0..200 {
        if !mock.acks().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mock.acks().len(), 1);
    assert_eq!(
        mock.acks()[0]["headers"]["messageId"],
        f["headers"]["messageId"]
    );
}

#[tokio::test]
async fn pings_expect_their_opaque_echoed() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let mut ws = connect(&c, &mock).await;

    assert_eq!(mock.ping_now(), 1);
    let ping = next_json(&mut ws).await;
    let data = assert_frame_shape(&ping, "SYSTEM", "ping");
    assert!(data["opaque"].as_str().is_some_and(|o| !o.is_empty()));
    // Python re-serialises with a space: the mock compares parsed JSON, not bytes.
    let echo = format!("{{\"opaque\": \"{}\"}}", data["opaque"].as_str().unwrap());
    ws.send(ack(&ping, &echo)).await.unwrap();

    mock.ping_now();
    let second = next_json(&mut ws).await;
    ws.send(ack(&second, "{\"opaque\":\"something else\"}"))
        .await
        .unwrap();
    let mut pings = Vec::new();
    for _ in 0..200 {
        pings = mock.pings();
        if pings.iter().all(|p| p.answered) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pings.len(), 2);
    assert!(pings[0].answered && pings[0].echo_matches, "{pings:?}");
    assert!(
        pings[1].answered && !pings[1].echo_matches,
        "a wrong echo is noticed"
    );
    assert_eq!(pings[0].opaque, data["opaque"].as_str().unwrap());
}

#[tokio::test]
async fn periodic_pings_and_unanswered_ping_drops_the_socket() {
    let mock = DingTalkMock::start(MockConfig {
        ping_interval: Some(Duration::from_millis(100)),
        ping_timeout: Some(Duration::from_millis(200)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let mut ws = connect(&c, &mock).await;
    let ping = next_json(&mut ws).await;
    assert_eq!(ping["headers"]["topic"], "ping");
    // Never answered: the mock gives up on the socket, without a close frame.
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) => panic!("dropped, not closed"),
            Some(Err(_)) | None => break,
            Some(Ok(other)) => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn unacked_callbacks_are_redelivered_with_a_new_message_id_and_the_same_msg_id() {
    let mock = DingTalkMock::start(MockConfig {
        redelivery_after: Some(Duration::from_millis(300)),
        max_redeliveries: 2,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let mut ws = connect(&c, &mock).await;
    let said = mock.say(MockMessage::single("u1", "hi")).await;
    let first = next_json(&mut ws).await;
    let again = next_json(&mut ws).await;
    let third = next_json(&mut ws).await;
    let ids: HashSet<_> = [&first, &again, &third]
        .iter()
        .map(|f| f["headers"]["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "a new messageId each time");
    for f in [&first, &again, &third] {
        let data = assert_frame_shape(f, "CALLBACK", "/v1.0/im/bot/messages/get");
        assert_eq!(data["msgId"], said.msg_id.as_str(), "the same msgId");
    }
    assert!(
        quiet_for(&mut ws, Duration::from_millis(500)).await,
        "at most 2 redeliveries"
    );

    // ACKed at once: never again.
    mock.say(MockMessage::single("u1", "once")).await;
    let f = next_json(&mut ws).await;
    ws.send(ack(&f, "{\"response\":null}")).await.unwrap();
    assert!(
        quiet_for(&mut ws, Duration::from_millis(500)).await,
        "ACKed, not redelivered"
    );
}

#[tokio::test]
async fn with_redelivery_a_message_said_offline_waits_for_a_connection() {
    let mock = DingTalkMock::start(MockConfig {
        redelivery_after: Some(Duration::from_millis(100)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let said = mock
        .say(MockMessage::single("u1", "while you were away"))
        .await;
    assert!(!said.delivered);
    let mut ws = connect(&http(), &mock).await;
    let f = next_json(&mut ws).await;
    let data = assert_frame_shape(&f, "CALLBACK", "/v1.0/im/bot/messages/get");
    assert_eq!(data["msgId"], said.msg_id.as_str());
}

#[tokio::test]
async fn disconnect_is_announced_stops_delivery_and_closes_after_the_grace() {
    let mock = DingTalkMock::start(MockConfig {
        disconnect_grace: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let mut ws = connect(&c, &mock).await;
    assert_eq!(mock.disconnect_all(), 1);
    let bye = next_json(&mut ws).await;
    let data = assert_frame_shape(&bye, "SYSTEM", "disconnect");
    assert_eq!(data, json!({"reason": "persistent connection is timeout"}));
    assert!(
        !mock.say(MockMessage::single("u1", "x")).await.delivered,
        "nothing is delivered after disconnect"
    );
    // The client may ACK it; the socket is still open during the grace period.
    let _ = ws.send(ack(&bye, "")).await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => panic!("nothing after disconnect: {t}"),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "hard close after the grace period");
    for _ in 0..200 {
        if mock.connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mock.connections(), 0);

    // A new connection gets messages again (make before break works).
    let mut ws2 = connect(&c, &mock).await;
    assert!(mock.say(MockMessage::single("u1", "back")).await.delivered);
    next_json(&mut ws2).await;
}

#[tokio::test]
async fn dropped_connections_end_without_a_close_frame() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let mut ws = connect(&http(), &mock).await;
    assert_eq!(mock.drop_connections(), 1);
    match tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("ended in time")
    {
        Some(Ok(Message::Close(_))) => panic!("a drop sends no close frame"),
        Some(Ok(other)) => panic!("{other:?}"),
        Some(Err(_)) | None => {}
    }
}

#[tokio::test]
async fn a_zombie_stays_open_but_delivers_nothing_and_answers_no_pings() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let mut ws = connect(&http(), &mock).await;
    mock.set_zombie(true);
    assert!(!mock.say(MockMessage::single("u1", "lost")).await.delivered);
    assert_eq!(mock.ping_now(), 0, "no SYSTEM pings to a zombie");
    ws.send(Message::Ping(b"anyone?".to_vec().into()))
        .await
        .unwrap();
    assert!(
        quiet_for(&mut ws, Duration::from_millis(400)).await,
        "no pong, no frames"
    );
    assert_eq!(mock.connections(), 1, "still open");

    mock.set_zombie(false);
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Pong(p))) => assert_eq!(p.as_ref(), b"anyone?"),
        other => panic!("the pong after revival, got {other:?}"),
    }
    assert!(mock.say(MockMessage::single("u1", "alive")).await.delivered);
    next_json(&mut ws).await;
}

// === HTTP mode ===

#[tokio::test]
async fn http_mode_posts_signed_callbacks_and_records_replies() {
    use axum::http::HeaderMap;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(HeaderMap, String)>();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let reply = if body.contains("ignore me") {
                    json!({"msgtype": "empty"})
                } else {
                    json!({"msgtype": "text", "text": {"content": "回复"}})
                };
                let _ = tx.send((headers, body));
                axum::Json(reply)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mock = DingTalkMock::start(MockConfig {
        http_callback_url: Some(url),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let said = mock.say(MockMessage::single("u9", "你好")).await;
    assert!(said.delivered);
    let (headers, body) = rx.recv().await.unwrap();
    let ts = headers["timestamp"].to_str().unwrap();
    let age = now_ms().parse::<i64>().unwrap() - ts.parse::<i64>().unwrap();
    assert!((0..3_600_000).contains(&age), "a fresh ms timestamp");
    assert_eq!(
        headers["sign"].to_str().unwrap(),
        custom_robot_sign(ts, &mock.config().client_secret),
        "sign = base64(HMAC-SHA256(appSecret, timestamp + \"\\n\" + appSecret))"
    );
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let data: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(data["msgId"], said.msg_id.as_str());
    assert_eq!(data["text"]["content"], "你好");

    mock.say(MockMessage::single("u9", "ignore me")).await;
    let out = mock.outbox();
    assert_eq!(out.len(), 1, "an `empty` reply posts nothing: {out:?}");
    assert_eq!(out[0].channel, "http_callback_reply");
    assert_eq!(out[0].text, "回复");
    assert_eq!(out[0].to, [said.conversation_id.as_str()]);
    server.abort();
}

// === Control API ===

#[tokio::test]
async fn the_control_api_mirrors_the_knobs() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let base = mock.base_url();
    let mut ws = connect(&c, &mock).await;

    let (s, said) = post(
        &c,
        format!("{base}/_mock/messages"),
        None,
        &json!({"text": "你好", "sender_staff_id": "u1", "conversation_id": "cidCtl==", "conversation_title": "群"}),
    )
    .await;
    assert_eq!(s, 200, "{said}");
    assert_eq!(said["delivered"], true);
    let data = assert_frame_shape(
        &next_json(&mut ws).await,
        "CALLBACK",
        "/v1.0/im/bot/messages/get",
    );
    assert_eq!(data["msgId"], said["msg_id"]);
    assert_eq!(data["conversationTitle"], "群");

    let hook = said["session_webhook"].as_str().unwrap().to_owned();
    let (_, v) = post(
        &c,
        hook.clone(),
        None,
        &json!({"msgtype": "text", "text": {"content": "收到"}}),
    )
    .await;
    assert_eq!(v["errcode"], 0);
    let outbox: Value = c
        .get(format!("{base}/_mock/outbox"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(outbox[0]["channel"], "session_webhook");
    assert_eq!(outbox[0]["text"], "收到");

    let (s, _) = post(
        &c,
        format!("{base}/_mock/expire-sessions"),
        None,
        &json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (_, v) = post(
        &c,
        hook,
        None,
        &json!({"msgtype": "text", "text": {"content": "late"}}),
    )
    .await;
    assert_eq!(v["errcode"], 300001);

    let (s, _) = post(&c, format!("{base}/_mock/faults"), None, &json!({"api": "batch_send", "status": 400, "code": "send.too.fast", "message": "slow down"})).await;
    assert_eq!(s, 200);
    let t = token(&c, &mock).await;
    let (s, v) = post(
        &c,
        format!("{base}/v1.0/robot/oToMessages/batchSend"),
        Some(&t),
        &text_send(&mock.config().robot_code, &json!(["u1"])),
    )
    .await;
    assert_eq!(s, 400);
    assert_error(&v, "send.too.fast", "slow down");

    let (s, _) = post(&c, format!("{base}/_mock/disconnect"), None, &json!({})).await;
    assert_eq!(s, 200);
    assert_frame_shape(&next_json(&mut ws).await, "SYSTEM", "disconnect");

    let config: Value = c
        .get(format!("{base}/_mock/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["client_id"], mock.config().client_id.as_str());
    assert!(
        !config.to_string().contains(&mock.config().client_secret),
        "no secret: {config}"
    );
}

#[test]
fn debug_output_hides_the_secrets() {
    let c = MockConfig::default();
    let shown = format!("{c:?}");
    assert!(!shown.contains(&c.client_secret));
    assert!(!shown.contains(&c.custom_robot.access_token));
    assert!(!shown.contains(c.custom_robot.secret.as_deref().unwrap()));
}

/// A multipart form as `requests` (the PY SDK's `upload_to_dingtalk`) sends it.
fn upload_form(kind: Option<&str>, file: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = "mockboundary7d1";
    let mut body = Vec::new();
    if let Some(kind) = kind {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"type\"\r\n\r\n{kind}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some(file) = file {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"media\"; \
                 filename=\"chart.png\"\r\ncontent-type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn media_upload_answers_a_media_id_and_errcodes_for_bad_tokens_types_and_missing_files() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let token = token(&c, &mock).await;
    let upload = |token: String, kind: Option<&'static str>, file: Option<&'static [u8]>| {
        let c = c.clone();
        let url = format!("{}/media/upload?access_token={token}", mock.base_url());
        async move {
            let (content_type, body) = upload_form(kind, file);
            let r = c
                .post(url)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "oapi answers errors with HTTP 200");
            r.json::<Value>().await.unwrap()
        }
    };
    let ok = upload(token.clone(), Some("image"), Some(b"\x89PNGbytes")).await;
    assert_eq!(ok["errcode"], 0, "{ok}");
    assert_eq!(ok["type"], "image");
    let media_id = ok["media_id"].as_str().unwrap();
    assert!(media_id.starts_with('@'), "{ok}");
    assert!(ok["created_at"].as_i64().is_some(), "{ok}");
    let bad = upload("nope".into(), Some("image"), Some(b"x")).await;
    assert_eq!(bad["errcode"], 40014, "{bad}");
    let bad = upload(token.clone(), Some("spreadsheet"), Some(b"x")).await;
    assert_eq!(bad["errcode"], 40004, "{bad}");
    let bad = upload(token.clone(), Some("file"), None).await;
    assert_eq!(bad["errcode"], 41005, "{bad}");
    // The upload is recorded, and downloadable with its media_id as the download code.
    let media: Value = c
        .get(format!("{}/_mock/media", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(media.as_array().map(Vec::len), Some(1), "{media}");
    assert_eq!(media[0]["file_name"], "chart.png");
    let (status, _, v) = post_json(
        &c,
        format!("{}/v1.0/robot/messageFiles/download", mock.base_url()),
        Some(&token),
        &json!({"downloadCode": media_id, "robotCode": mock.config().robot_code}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let bytes = c
        .get(v["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"\x89PNGbytes");
}
