//! Where the mock used to differ from the cloud (issue 16 §3), each seen failing before the fix:
//! close frames, topics, several connections, redelivery, loose payloads, lifetimes, cards and
//! media downloads.

use std::collections::HashSet;
use std::time::Duration;

use dingtalk_mock::{Api, DingTalkMock, MockConfig, MockFault, MockMessage, MsgType};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A failure bound, not a timing assertion.
const WAIT: Duration = Duration::from_secs(10);
const BOT_TOPIC: &str = "/v1.0/im/bot/messages/get";

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn open_with(mock: &DingTalkMock, subscriptions: Value) -> (u16, Value) {
    let cfg = mock.config();
    let r = http()
        .post(format!("{}/v1.0/gateway/connections/open", mock.base_url()))
        .json(&json!({
            "clientId": cfg.client_id, "clientSecret": cfg.client_secret,
            "subscriptions": subscriptions,
        }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn connect_to(mock: &DingTalkMock, topics: &[&str]) -> Ws {
    let subs: Vec<Value> = topics
        .iter()
        .map(|t| json!({"type": "CALLBACK", "topic": t}))
        .collect();
    let before = mock.connections();
    let (s, v) = open_with(mock, json!(subs)).await;
    assert_eq!(s, 200, "{v}");
    let url = format!("{}?ticket={}", v["endpoint"].as_str().unwrap(), v["ticket"]);
    let url = url.replace('"', "");
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for _ in 0..1000 {
        if mock.connections() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ws
}

async fn connect(mock: &DingTalkMock) -> Ws {
    connect_to(mock, &[BOT_TOPIC]).await
}

/// The next text frame as JSON, or `None` when nothing comes within `within`.
async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("expected a text frame, got {other:?}"),
        }
    }
}

fn ack_with(frame: &Value, code: u16) -> Message {
    Message::text(
        json!({"code": code, "headers": {"contentType": "application/json", "messageId": frame["headers"]["messageId"]}, "message": "OK", "data": "{\"response\":null}"})
            .to_string(),
    )
}

fn data(frame: &Value) -> Value {
    serde_json::from_str(frame["data"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn the_clients_close_frame_is_answered() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let mut ws = connect(&mock).await;
    ws.send(Message::Close(None)).await.unwrap();
    // A clean close handshake: the server's Close frame, then the end of the stream. Before
    // the fix the socket just went away, and the official SDK waited 10 s for the answer.
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("an answer within the bound");
    assert!(
        matches!(reply, Some(Ok(Message::Close(_)))),
        "expected the server's close frame, got {reply:?}"
    );
}

#[tokio::test]
async fn only_subscribed_topics_are_delivered() {
    let mock = DingTalkMock::start(MockConfig {
        redelivery_after: None,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut cards_only = connect_to(&mock, &["/v1.0/card/instances/callback"]).await;
    let said = mock.say(MockMessage::single("u1", "hi")).await;
    assert!(
        !said.delivered,
        "no connection subscribed to robot messages"
    );
    assert!(
        next_frame(&mut cards_only, Duration::from_millis(300))
            .await
            .is_none(),
        "a robot message reached a connection that did not subscribe to it"
    );
    let mut bot = connect(&mock).await;
    assert!(mock.say(MockMessage::single("u1", "hi")).await.delivered);
    let f = next_frame(&mut bot, WAIT).await.expect("delivered");
    assert_eq!(f["headers"]["topic"], BOT_TOPIC);
}

#[tokio::test]
async fn several_connections_of_an_app_share_the_traffic_each_message_once() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let mut a = connect(&mock).await;
    let mut b = connect(&mock).await;
    let n = 60;
    for i in 0..n {
        assert!(
            mock.say(MockMessage::single("u1", &format!("m{i}")))
                .await
                .delivered
        );
    }
    let mut seen = Vec::new();
    let mut per_conn = [0usize; 2];
    for (k, ws) in [&mut a, &mut b].into_iter().enumerate() {
        while let Some(f) = next_frame(ws, Duration::from_millis(500)).await {
            ws.send(ack_with(&f, 200)).await.unwrap();
            seen.push(data(&f)["msgId"].as_str().unwrap().to_owned());
            per_conn[k] += 1;
        }
    }
    assert_eq!(seen.len(), n, "every message once: {per_conn:?}");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        n,
        "no message twice"
    );
    // 60 fair coin flips all landing on one side: odds of 2^-59.
    assert!(
        per_conn[0] > 0 && per_conn[1] > 0,
        "both connections get traffic: {per_conn:?}"
    );
}

#[tokio::test]
async fn unacknowledged_callbacks_are_redelivered_by_default() {
    assert!(
        MockConfig::default().redelivery_after.is_some(),
        "redelivery is on by default, as the cloud does"
    );
    let mock = DingTalkMock::start(MockConfig {
        redelivery_after: Some(Duration::from_millis(200)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut ws = connect(&mock).await;
    mock.say(MockMessage::single("u1", "重要").msg_id("msgRetry=="))
        .await;
    let first = next_frame(&mut ws, WAIT).await.expect("delivered");
    // A handler that failed answers 500: that is not an acknowledgement.
    ws.send(ack_with(&first, 500)).await.unwrap();
    let again = next_frame(&mut ws, WAIT).await.expect("redelivered");
    assert_ne!(again["headers"]["messageId"], first["headers"]["messageId"]);
    assert_eq!(data(&again)["msgId"], "msgRetry==");
    ws.send(ack_with(&again, 200)).await.unwrap();
    for _ in 0..1000 {
        if mock.unacked() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mock.unacked(), 0, "the 200 ACK settled it");
    assert!(
        next_frame(&mut ws, Duration::from_millis(600))
            .await
            .is_none(),
        "not delivered after its ACK"
    );
}

#[tokio::test]
async fn a_message_said_between_two_sockets_goes_to_the_next_one() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let mut old = connect(&mock).await;
    mock.disconnect_all();
    let f = next_frame(&mut old, WAIT).await.expect("the disconnect");
    assert_eq!(f["headers"]["topic"], "disconnect");
    let said = mock.say(MockMessage::single("u1", "在途")).await;
    assert!(!said.delivered, "nothing goes to a draining socket");
    let mut new = connect(&mock).await;
    let f = next_frame(&mut new, WAIT)
        .await
        .expect("held and delivered");
    assert_eq!(data(&f)["msgId"], said.msg_id.as_str());
}

#[tokio::test]
async fn loose_payloads_are_selectable_from_the_control_api() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let mut ws = connect(&mock).await;
    let said: Value = http()
        .post(format!("{}/_mock/messages", mock.base_url()))
        .json(&json!({
            "text": "看图", "sender_staff_id": "ext1", "conversation_id": "cidG==",
            "msg_type": "richText", "rich_text_pictures": 2, "no_sender_staff_id": true,
            "create_at_as_string": true, "null_fields": true, "is_admin": true,
            "at_users": ["u7"],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let f = next_frame(&mut ws, WAIT).await.expect("delivered");
    let d = data(&f);
    assert!(d.get("senderStaffId").is_none(), "{d}");
    assert!(
        d["createAt"].as_str().unwrap().parse::<i64>().is_ok(),
        "{d}"
    );
    assert!(
        d["senderCorpId"].is_null() && d["senderPlatform"].is_null(),
        "{d}"
    );
    assert_eq!(d["isAdmin"], true);
    let rich = d["content"]["richText"].as_array().unwrap();
    assert_eq!(rich[0]["text"], " 看图");
    let codes: Vec<&str> = rich[1..]
        .iter()
        .map(|p| p["downloadCode"].as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 2);
    assert_eq!(said["download_codes"], json!(codes));
    let at = d["atUsers"].as_array().unwrap();
    assert!(at.iter().any(|u| u["staffId"] == "u7"), "{d}");
    assert!(
        at.iter().any(|u| u["dingtalkId"] == d["chatbotUserId"]),
        "{d}"
    );

    // The same from Rust.
    mock.say(
        MockMessage::single("u2", "x")
            .without_sender_staff_id()
            .create_at_as_string()
            .admin(),
    )
    .await;
    let d = data(&next_frame(&mut ws, WAIT).await.unwrap());
    assert!(d.get("senderStaffId").is_none() && d["createAt"].is_string());
    assert_eq!(d["isAdmin"], true);
}

#[tokio::test]
async fn token_and_ticket_lifetimes_are_settable() {
    let mock = DingTalkMock::start(MockConfig {
        token_ttl: Duration::from_secs(3),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = http();
    let cfg = mock.config();
    let v: Value = c
        .post(format!("{}/v1.0/oauth2/accessToken", mock.base_url()))
        .json(&json!({"appKey": cfg.client_id, "appSecret": cfg.client_secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["expireIn"], 3);
    let r: Value = c
        .post(format!("{}/_mock/lifetimes", mock.base_url()))
        .json(&json!({"token_ttl_secs": 5, "ticket_ttl_secs": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["token_ttl_secs"], 5.0);
    mock.expire_tokens();
    let v: Value = c
        .post(format!("{}/v1.0/oauth2/accessToken", mock.base_url()))
        .json(&json!({"appKey": cfg.client_id, "appSecret": cfg.client_secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["expireIn"], 5);
    // A ticket that lives 0 s is dead on arrival.
    let (_, v) = open_with(&mock, json!([{"type": "CALLBACK", "topic": BOT_TOPIC}])).await;
    let url = format!(
        "{}?ticket={}",
        v["endpoint"].as_str().unwrap(),
        v["ticket"].as_str().unwrap()
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

async fn token(mock: &DingTalkMock) -> String {
    let cfg = mock.config();
    let v: Value = http()
        .post(format!("{}/v1.0/oauth2/accessToken", mock.base_url()))
        .json(&json!({"appKey": cfg.client_id, "appSecret": cfg.client_secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["accessToken"].as_str().unwrap().to_owned()
}

async fn call(
    mock: &DingTalkMock,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let r = http()
        .request(m, format!("{}{path}", mock.base_url()))
        .header("x-acs-dingtalk-access-token", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn card_apis_answer_and_record_what_the_sdk_sends() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    mock.add_group("cidG==");
    let t = token(&mock).await;
    let (s, v) = call(
        &mock,
        "POST",
        "/v1.0/card/instances",
        &t,
        json!({
            "cardTemplateId": "tpl", "outTrackId": "card1",
            "cardData": {"cardParamMap": {"status": "排队中"}}, "callbackType": "STREAM",
        }),
    )
    .await;
    assert_eq!(
        (s, v.clone()),
        (200, json!({"success": true, "result": "card1"}))
    );
    let (s, v) = call(
        &mock,
        "POST",
        "/v1.0/card/instances/deliver",
        &t,
        json!({
            "outTrackId": "card1", "userIdType": 1, "openSpaceId": "dtv1.card//IM_ROBOT.u1",
            "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT"},
        }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"][0]["spaceType"], "IM_ROBOT");
    assert_eq!(v["result"][0]["spaceId"], "u1");
    assert_eq!(v["result"][0]["success"], true);
    let (s, _) = call(&mock, "PUT", "/v1.0/card/instances", &t, json!({
        "outTrackId": "card1", "cardData": {"cardParamMap": {"status": "运行中", "elapsed": "3s"}},
    }))
    .await;
    assert_eq!(s, 200);
    for (content, full, fin) in [
        ("第一", false, false),
        ("段", false, false),
        ("全文", true, true),
    ] {
        let (s, v) = call(
            &mock,
            "PUT",
            "/v1.0/card/streaming",
            &t,
            json!({
                "outTrackId": "card1", "guid": "g", "key": "content", "content": content,
                "isFull": full, "isFinalize": fin, "isError": false,
            }),
        )
        .await;
        assert_eq!((s, v), (200, json!({"success": true, "result": true})));
    }
    let card = mock.card("card1").unwrap();
    assert_eq!(card.card_data["status"], "运行中");
    assert_eq!(card.spaces, ["dtv1.card//IM_ROBOT.u1"]);
    assert_eq!(card.streamed["content"], "全文");
    assert!(card.finalized);
    assert_eq!(card.updates, 1);
    assert_eq!(card.calls.len(), 6);

    // createAndDeliver to a group, and the failures.
    let (s, v) = call(
        &mock,
        "POST",
        "/v1.0/card/instances/createAndDeliver",
        &t,
        json!({
            "cardTemplateId": "tpl", "outTrackId": "card2", "cardData": {"cardParamMap": {}},
            "openSpaceId": "dtv1.card//IM_GROUP.cidG==",
            "imGroupOpenDeliverModel": {"robotCode": mock.config().robot_code},
        }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["outTrackId"], "card2");
    assert_eq!(v["result"]["deliverResults"][0]["spaceId"], "cidG==");
    let (s, v) = call(
        &mock,
        "PUT",
        "/v1.0/card/instances",
        &t,
        json!({
            "outTrackId": "nope", "cardData": {"cardParamMap": {}},
        }),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["code"], "invalidParameter.outTrackId.notExist");
    let (s, v) = call(
        &mock,
        "POST",
        "/v1.0/card/instances",
        &t,
        json!({
            "cardTemplateId": "tpl", "outTrackId": "card3", "cardData": {"cardParamMap": {"n": 1}},
        }),
    )
    .await;
    assert_eq!(s, 400, "cardParamMap values are strings: {v}");
    let (s, v) = call(
        &mock,
        "POST",
        "/v1.0/card/instances",
        "bad-token",
        json!({}),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("InvalidAuthentication"))
    );
    assert_eq!(mock.cards().len(), 2);
}

#[tokio::test]
async fn message_files_download_gives_a_url_that_serves_the_bytes() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let said = mock
        .say(MockMessage::single("u1", "").msg_type(MsgType::Picture))
        .await;
    let code = said.download_codes[0].clone();
    let t = token(&mock).await;
    let robot = mock.config().robot_code.clone();
    let (s, v) = call(
        &mock,
        "POST",
        "/v1.0/robot/messageFiles/download",
        &t,
        json!({"robotCode": robot, "downloadCode": code}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let url = v["downloadUrl"].as_str().unwrap().to_owned();
    let bytes = http()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG by default");
    mock.set_file(&code, b"custom".to_vec(), "image/jpeg");
    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(&r.bytes().await.unwrap()[..], b"custom");
    let (s, _) = call(
        &mock,
        "POST",
        "/v1.0/robot/messageFiles/download",
        &t,
        json!({"robotCode": robot, "downloadCode": "unknown"}),
    )
    .await;
    assert_eq!(s, 400);
}

/// DingTalk's error body, `{"code","message","requestid"}` with a non-empty `requestid`.
fn assert_error_body(v: &Value, code: &str, message: &str) {
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["message"], message, "{v}");
    assert!(
        v["requestid"].as_str().is_some_and(|r| !r.is_empty()),
        "{v}"
    );
    assert_eq!(v.as_object().unwrap().len(), 3, "exactly three fields: {v}");
}

#[tokio::test]
async fn injected_card_and_file_faults_answer_the_error_body_and_change_nothing() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let t = token(&mock).await;
    let denied = MockFault::new(
        403,
        "Forbidden.AccessDenied.AccessTokenPermissionDenied",
        "没有调用该接口的权限",
    );
    let create = json!({
        "cardTemplateId": "tpl", "outTrackId": "cardF",
        "cardData": {"cardParamMap": {"status": "排队中"}},
    });
    mock.fail_next(Api::CardCreate, &denied, 1);
    let (s, v) = call(&mock, "POST", "/v1.0/card/instances", &t, create.clone()).await;
    assert_eq!(s, 403);
    assert_error_body(&v, &denied.code, &denied.message);
    assert!(
        mock.card("cardF").is_none(),
        "a refused create makes no card"
    );
    // The fault is used up: the same call now succeeds.
    let (s, _) = call(&mock, "POST", "/v1.0/card/instances", &t, create).await;
    assert_eq!(s, 200);

    let deliver = json!({
        "outTrackId": "cardF", "userIdType": 1, "openSpaceId": "dtv1.card//IM_ROBOT.u1",
        "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT"},
    });
    mock.fail_next(Api::CardDeliver, &MockFault::unavailable(), 1);
    let (s, v) = call(&mock, "POST", "/v1.0/card/instances/deliver", &t, deliver).await;
    assert_eq!(s, 503);
    assert_error_body(&v, "ServiceUnavailable", "服务暂时不可用");
    assert!(
        mock.card("cardF").unwrap().spaces.is_empty(),
        "not delivered"
    );

    let update = json!({"outTrackId": "cardF", "cardData": {"cardParamMap": {"status": "已完成"}}});
    mock.fail_next(Api::CardUpdate, &denied, 2);
    for _ in 0..2 {
        let (s, v) = call(&mock, "PUT", "/v1.0/card/instances", &t, update.clone()).await;
        assert_eq!(s, 403);
        assert_error_body(&v, &denied.code, &denied.message);
    }
    let card = mock.card("cardF").unwrap();
    assert_eq!(
        (card.updates, card.card_data["status"].clone()),
        (0, json!("排队中"))
    );
    let (s, _) = call(&mock, "PUT", "/v1.0/card/instances", &t, update).await;
    assert_eq!(s, 200);
    assert_eq!(mock.card("cardF").unwrap().updates, 1);

    let said = mock
        .say(MockMessage::single("u1", "a.pdf").msg_type(MsgType::File))
        .await;
    let download = json!({
        "robotCode": mock.config().robot_code, "downloadCode": said.download_codes[0],
    });
    mock.fail_next(Api::FileDownload, &MockFault::unavailable(), 1);
    let (s, v) = call(
        &mock,
        "POST",
        "/v1.0/robot/messageFiles/download",
        &t,
        download.clone(),
    )
    .await;
    assert_eq!(s, 503);
    assert_error_body(&v, "ServiceUnavailable", "服务暂时不可用");
    let (s, v) = call(
        &mock,
        "POST",
        "/v1.0/robot/messageFiles/download",
        &t,
        download,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        v["downloadUrl"]
            .as_str()
            .is_some_and(|u| u.contains("/down/")),
        "{v}"
    );
}
