//! The mock agrees with the protocol reference on every endpoint, error bodies included.

use std::time::Duration;

use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage, custom_robot_sign};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn post(c: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = c.post(url).json(&body);
    if let Some(t) = token {
        r = r.header("x-acs-dingtalk-access-token", t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn token(c: &reqwest::Client, mock: &DingTalkMock) -> String {
    let cfg = mock.config();
    let (s, v) = post(
        c,
        format!("{}/v1.0/oauth2/accessToken", mock.base_url()),
        None,
        json!({"appKey": cfg.client_id, "appSecret": cfg.client_secret}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["expireIn"], 7200);
    v["accessToken"].as_str().unwrap().to_owned()
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].is_string(), "{v}");
    assert!(v["requestid"].is_string(), "lowercase requestid: {v}");
}

#[tokio::test]
async fn access_token_success_and_failures() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    token(&c, &mock).await;
    let (s, v) = post(
        &c,
        format!("{}/v1.0/oauth2/accessToken", mock.base_url()),
        None,
        json!({"appKey": "x", "appSecret": "y"}),
    )
    .await;
    assert_eq!(s, 400);
    assert_error(&v, "invalidClientIdOrSecret");
    assert_eq!(v["message"], "无效的clientId或者clientSecret");
    let r = c
        .post(format!("{}/v1.0/oauth2/accessToken", mock.base_url()))
        .body("appKey=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a non-JSON body is refused");
    let old: Value = c
        .get(format!(
            "{}/gettoken?appkey={}&appsecret={}",
            mock.base_url(),
            mock.config().client_id,
            mock.config().client_secret
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(old["errcode"], 0);
    assert_eq!(old["expires_in"], 7200);
    assert_eq!(
        mock.token_requests(),
        4,
        "every request counts, refused ones too"
    );
}

#[tokio::test]
async fn batch_send_checks_token_limits_and_parameters() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: None,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let t = token(&c, &mock).await;
    let url = format!("{}/v1.0/robot/oToMessages/batchSend", mock.base_url());
    let robot = mock.config().robot_code.clone();
    let msg = |users: Value| json!({"robotCode": robot, "userIds": users, "msgKey": "sampleText", "msgParam": "{\"content\":\"hi\"}"});
    let (s, v) = post(&c, url.clone(), Some(&t), msg(json!(["u1", "u2"]))).await;
    assert_eq!(s, 200);
    assert!(v["processQueryKey"].is_string());
    for list in [
        "invalidStaffIdList",
        "flowControlledStaffIdList",
        "filteredStaffIdList",
    ] {
        assert!(v[list].is_array(), "{list}");
    }
    let (s, v) = post(&c, url.clone(), Some("bad"), msg(json!(["u1"]))).await;
    assert_eq!(s, 400);
    assert_error(&v, "InvalidAuthentication");
    let users: Vec<String> = (0..21).map(|i| format!("u{i}")).collect();
    let (s, v) = post(&c, url.clone(), Some(&t), msg(json!(users))).await;
    assert_eq!(s, 400);
    assert_error(&v, "invalidParameter.userIds.overMax");
    let (_, v) = post(&c, url.clone(), Some(&t), json!({"robotCode": robot, "userIds": ["u"], "msgKey": "sampleText", "msgParam": {"content": "object, not string"}})).await;
    assert_error(&v, "invalidParameter.msgParam.invalid");
    let (_, v) = post(
        &c,
        url.clone(),
        Some(&t),
        json!({"robotCode": robot, "userIds": ["u"], "msgKey": "sampleVoice", "msgParam": "{}"}),
    )
    .await;
    assert_error(&v, "invalidParameter.msgKey.invalid");
    let (_, v) = post(
        &c,
        url.clone(),
        Some(&t),
        json!({"robotCode": "other", "userIds": ["u"], "msgKey": "sampleText", "msgParam": "{}"}),
    )
    .await;
    assert_error(&v, "invalidParameter.robotCode.auth");
    mock.flow_control("u2");
    let (_, v) = post(&c, url.clone(), Some(&t), msg(json!(["u1", "u2"]))).await;
    assert_eq!(v["flowControlledStaffIdList"], json!(["u2"]));
    let out = mock.outbox();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].to, ["u1", "u2"]);
    assert_eq!(out[1].to, ["u1"], "the throttled user did not get it");
    assert_eq!(out[0].text, "hi");
}

#[tokio::test]
async fn qps_limit_answers_the_real_403() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: Some(2),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let t = token(&c, &mock).await;
    let url = format!("{}/v1.0/robot/oToMessages/batchSend", mock.base_url());
    let body = json!({"robotCode": mock.config().robot_code, "userIds": ["u"], "msgKey": "sampleText", "msgParam": "{\"content\":\"x\"}"});
    let mut statuses = vec![];
    for _ in 0..3 {
        let (s, v) = post(&c, url.clone(), Some(&t), body.clone()).await;
        statuses.push(s);
        if s == 403 {
            assert_error(&v, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi");
        }
    }
    assert_eq!(statuses, [200, 200, 403]);
}

#[tokio::test]
async fn group_send_checks_size_and_conversation() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let t = token(&c, &mock).await;
    let url = format!("{}/v1.0/robot/groupMessages/send", mock.base_url());
    let robot = mock.config().robot_code.clone();
    let (s, v) = post(&c, url.clone(), Some(&t), json!({"robotCode": robot, "openConversationId": "cidUnknown==", "msgKey": "sampleText", "msgParam": "{\"content\":\"x\"}"})).await;
    assert_eq!(s, 400);
    assert_error(&v, "invalidParameter.openConversationId.invalid");
    mock.add_group("cidKnown==");
    let (s, v) = post(&c, url.clone(), Some(&t), json!({"robotCode": robot, "openConversationId": "cidKnown==", "msgKey": "sampleMarkdown", "msgParam": "{\"title\":\"t\",\"text\":\"### 结果\"}"})).await;
    assert_eq!(s, 200);
    assert!(v["processQueryKey"].is_string());
    let big = json!({"content": "x".repeat(15_000)}).to_string();
    let (s, _) = post(&c, url, Some(&t), json!({"robotCode": robot, "openConversationId": "cidKnown==", "msgKey": "sampleText", "msgParam": big})).await;
    assert_eq!(s, 400);
    assert_eq!(mock.outbox()[0].text, "### 结果");
}

#[tokio::test]
async fn session_webhook_works_until_it_expires() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let said = mock.say(MockMessage::single("u1", "hi")).await;
    assert!(!said.delivered, "no stream connection yet");
    let c = http();
    let body = json!({"msgtype": "text", "text": {"content": "收到"}, "at": {"atUserIds": ["u1"]}});
    let v: Value = c
        .post(&said.session_webhook)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"errcode": 0, "errmsg": "ok"}));
    mock.expire_sessions();
    let r = c
        .post(&said.session_webhook)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "expiry is HTTP 200 with an errcode");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"errcode": 300001, "errmsg": "session 不存在"}));
    assert_eq!(mock.outbox().len(), 1);
    assert_eq!(mock.outbox()[0].channel, "session_webhook");
}

#[tokio::test]
async fn custom_robot_checks_sign_and_rate() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let c = http();
    let secret = mock.config().custom_robot_secret.clone().unwrap();
    let token = mock.config().custom_robot_token.clone();
    let send = |ts: String, sign: String| {
        let url = format!("{}/robot/send", mock.base_url());
        let c = c.clone();
        let token = token.clone();
        async move {
            let v: Value = c
                .post(url)
                .query(&[
                    ("access_token", token.as_str()),
                    ("timestamp", ts.as_str()),
                    ("sign", sign.as_str()),
                ])
                .json(&json!({"msgtype": "markdown", "markdown": {"title": "t", "text": "x"}}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["errcode"].as_i64().unwrap()
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    assert_eq!(send(now.clone(), "wrong".into()).await, 310000);
    assert_eq!(
        send("1".into(), custom_robot_sign("1", &secret)).await,
        310000,
        "stale timestamp"
    );
    for _ in 0..20 {
        assert_eq!(send(now.clone(), custom_robot_sign(&now, &secret)).await, 0);
    }
    assert_eq!(
        send(now.clone(), custom_robot_sign(&now, &secret)).await,
        130101,
        "21st in a minute is throttled"
    );
    let v: Value = c
        .post(format!("{}/robot/send?access_token=nope", mock.base_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["errcode"], 300005);
}

#[tokio::test]
async fn stream_gateway_tickets_frames_pings_and_redelivery() {
    let mock = DingTalkMock::start(MockConfig {
        redelivery_after: Some(Duration::from_millis(300)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let open = |secret: &str| json!({"clientId": mock.config().client_id, "clientSecret": secret, "subscriptions": [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]});
    let (s, v) = post(
        &c,
        format!("{}/v1.0/gateway/connections/open", mock.base_url()),
        None,
        open("bad"),
    )
    .await;
    assert_eq!(s, 401);
    assert!(v["code"].is_string());
    let (s, v) = post(
        &c,
        format!("{}/v1.0/gateway/connections/open", mock.base_url()),
        None,
        open(&mock.config().client_secret.clone()),
    )
    .await;
    assert_eq!(s, 200);
    let endpoint = v["endpoint"].as_str().unwrap();
    assert!(
        endpoint.starts_with("ws://127.0.0.1:") && endpoint.ends_with("/connect"),
        "{endpoint}"
    );
    let url = format!("{endpoint}?ticket={}", v["ticket"].as_str().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err(),
        "tickets are single use"
    );

    let said = mock
        .say(MockMessage::group("u1", "cidG==", "分析公司"))
        .await;
    assert!(said.delivered);
    let first: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(first["type"], "CALLBACK");
    assert_eq!(first["headers"]["topic"], "/v1.0/im/bot/messages/get");
    assert!(
        first["headers"]["time"].is_string(),
        "header values are strings"
    );
    let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["msgId"], said.msg_id.as_str());
    assert_eq!(data["conversationType"], "2");
    assert_eq!(
        data["text"]["content"], " 分析公司",
        "group messages keep a leading space"
    );
    assert_eq!(
        data["sessionWebhookExpiredTime"].as_i64().unwrap() - data["createAt"].as_i64().unwrap(),
        5_400_000
    );
    // Not ACKed: it comes again with a new messageId and the same msgId.
    let again: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_ne!(again["headers"]["messageId"], first["headers"]["messageId"]);
    let again_data: Value = serde_json::from_str(again["data"].as_str().unwrap()).unwrap();
    assert_eq!(again_data["msgId"], said.msg_id.as_str());
    let ack = json!({"code": 200, "headers": {"contentType": "application/json", "messageId": again["headers"]["messageId"]}, "message": "OK", "data": "{\"response\":null}"});
    ws.send(Message::text(ack.to_string())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mock.acks().len(), 1);

    mock.disconnect_all();
    let bye: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(bye["type"], "SYSTEM");
    assert_eq!(bye["headers"]["topic"], "disconnect");
    assert!(
        !mock.say(MockMessage::single("u1", "x")).await.delivered,
        "nothing is delivered after disconnect"
    );
}
