//! The sender against dingtalk-mock over real loopback sockets.

use std::collections::HashSet;
use std::time::Duration;

use dingtalk_mock::{Api, DingTalkMock, MockConfig, MockFault, MockMessage};
use dingtalk_sender::{
    DingTalkSender, Error, MSG_PARAM_LIMIT, Message, SenderBuilder, Target, reassemble,
};
use retry_policy::{Jitter, RetryPolicy};

/// Fast backoff: tests must not wait DingTalk's recommended second.
fn fast_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        jitter: Jitter::Full,
    }
}

fn builder(mock: &DingTalkMock) -> SenderBuilder {
    DingTalkSender::builder()
        .client_id(mock.config().client_id.clone())
        .client_secret(mock.config().client_secret.clone())
        .api_base(mock.base_url())
        .oapi_base(mock.base_url())
        .qps(1000)
        .retry(fast_retry(30))
}

fn sender(mock: &DingTalkMock) -> DingTalkSender {
    builder(mock).build().unwrap()
}

async fn unlimited_mock() -> DingTalkMock {
    DingTalkMock::start(MockConfig {
        qps_limit: None,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i:02}")).collect()
}

#[tokio::test]
async fn the_token_is_fetched_once_for_a_hundred_concurrent_sends() {
    let mock = unlimited_mock().await;
    let s = sender(&mock);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let s = s.clone();
        set.spawn(async move { s.send_text_message("", &format!("u{i}"), "hello").await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(mock.token_requests(), 1);
    assert_eq!(mock.outbox().len(), 100);
}

#[tokio::test]
async fn a_token_refused_mid_run_is_refreshed_once_for_all_callers() {
    let mock = unlimited_mock().await;
    let s = sender(&mock);
    s.send_text_message("", "first", "before").await.unwrap();
    // DingTalk now answers 400 InvalidAuthentication to the cached token.
    mock.expire_tokens();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let s = s.clone();
        set.spawn(async move { s.send_text_message("", &format!("u{i}"), "after").await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(mock.token_requests(), 2);
    assert_eq!(mock.outbox().len(), 51);
}

#[tokio::test]
async fn the_token_is_refreshed_ahead_of_its_expiry() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: None,
        token_ttl: Duration::from_secs(2),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    // The 300 s margin is capped at half of a 2 s lifetime: refresh after 1 s, while DingTalk
    // would still accept the old token (so a second fetch proves the early refresh).
    let s = sender(&mock);
    s.send_text_message("", "u1", "one").await.unwrap();
    s.send_text_message("", "u1", "two").await.unwrap();
    assert_eq!(mock.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.send_text_message("", "u1", "three").await.unwrap();
    assert_eq!(mock.token_requests(), 2);
    assert_eq!(mock.outbox().len(), 3);
}

#[tokio::test]
async fn forty_five_users_take_three_calls() {
    let mock = unlimited_mock().await;
    let s = sender(&mock);
    let r = s
        .send_to_users(&users(45), &Message::text("通知"))
        .await
        .unwrap();
    assert_eq!(r.process_query_keys.len(), 3);
    assert_eq!(r.calls, 3);
    assert_eq!(r.delivered, users(45));
    assert!(r.all_delivered());
    let calls: Vec<Vec<String>> = mock.outbox().into_iter().map(|e| e.to).collect();
    assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [20, 20, 5]);
    assert_eq!(calls.concat(), users(45));
    assert!(mock.outbox().iter().all(|e| e.kind == "sampleText"));
}

#[tokio::test]
async fn fifty_thousand_characters_arrive_as_parts_that_reassemble_exactly() {
    let mock = unlimited_mock().await;
    mock.add_group("cidLong==");
    let s = sender(&mock);
    let mut text = String::new();
    let mut i = 0;
    while text.chars().count() < 50_000 {
        text.push_str(&format!(
            "## 第{i}节\n\n竞品动态：市场份额稳定，舆情😀可控。\n"
        ));
        if i % 7 == 0 {
            text.push_str("```rust\nfn main() {\n    println!(\"报告\");\n}\n```\n");
        }
        text.push('\n');
        i += 1;
    }
    let n = s
        .send_long_markdown(&Target::Group("cidLong==".into()), "分析报告", &text)
        .await
        .unwrap();
    let outbox = mock.outbox();
    assert_eq!(outbox.len(), n);
    assert!(n > 10, "{n} parts");
    let parts: Vec<String> = outbox.iter().map(|e| e.text.clone()).collect();
    for (k, (part, entry)) in parts.iter().zip(&outbox).enumerate() {
        assert!(part.starts_with(&format!("({}/{n})", k + 1)));
        assert!(part.len() <= dingtalk_sender::DEFAULT_PART_BYTES);
        assert_eq!(entry.kind, "sampleMarkdown");
        assert_eq!(entry.content["title"], format!("分析报告 ({}/{n})", k + 1));
        assert_eq!(
            part.lines().filter(|l| l.starts_with("```")).count() % 2,
            0,
            "fences balanced in part {k}"
        );
    }
    assert_eq!(reassemble(&parts), text);
}

#[tokio::test]
async fn a_group_message_over_the_msg_param_limit_is_refused_before_sending() {
    let mock = unlimited_mock().await;
    mock.add_group("cidBig==");
    let s = sender(&mock);
    let err = s
        .send_to_group(
            "cidBig==",
            &Message::markdown("t", "x".repeat(MSG_PARAM_LIMIT)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMessage(_)), "{err}");
    assert!(mock.outbox().is_empty());
}

#[tokio::test]
async fn qps_403_is_retried_until_success() {
    let limited = || async {
        DingTalkMock::start(MockConfig {
            qps_limit: Some(3),
            ..MockConfig::default()
        })
        .await
        .unwrap()
    };
    async fn burst(s: &DingTalkSender, n: usize) -> Vec<Result<(), Error>> {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let s = s.clone();
            set.spawn(async move { s.send_text_message("", &format!("u{i}"), "x").await });
        }
        set.join_all().await
    }
    // Without retries the burst meets DingTalk's 403...
    let mock = limited().await;
    let no_retry = builder(&mock).retry(fast_retry(0)).build().unwrap();
    let results = burst(&no_retry, 10).await;
    let throttled: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!throttled.is_empty());
    for e in &throttled {
        assert!(e.is_throttled() && e.is_retryable(), "{e}");
        assert_eq!(
            e.code(),
            Some("Forbidden.AccessDenied.QpsLimitForAppkeyAndApi")
        );
        assert_eq!(e.status(), Some(403));
        assert!(e.request_id().is_some());
    }
    // ...with them, every message gets through.
    let mock = limited().await;
    let s = sender(&mock);
    for r in burst(&s, 10).await {
        r.unwrap();
    }
    assert_eq!(mock.outbox().len(), 10);
}

#[tokio::test]
async fn the_client_side_bucket_keeps_under_the_limit() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: Some(5),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    // No retries allowed: every call must pass on its own, so the bucket must pace them.
    let s = builder(&mock).qps(4).retry(fast_retry(0)).build().unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..7 {
        let s = s.clone();
        set.spawn(async move { s.send_text_message("", &format!("u{i}"), "x").await });
    }
    for r in set.join_all().await {
        r.unwrap();
    }
    assert_eq!(mock.outbox().len(), 7);
}

#[tokio::test]
async fn flow_controlled_users_are_retried_alone_and_invalid_users_reported() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: None,
        invalid_users: HashSet::from(["ghost".to_owned()]),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    mock.flow_control("busy");
    let s = sender(&mock);
    let r = s
        .send_to_users(&["a", "busy", "ghost", "b"], &Message::text("x"))
        .await
        .unwrap();
    assert_eq!(r.invalid_users, ["ghost"]);
    assert!(r.flow_controlled_users_failed.is_empty());
    assert_eq!(r.delivered, ["a", "b", "busy"]);
    assert_eq!(r.calls, 2);
    let calls: Vec<Vec<String>> = mock.outbox().into_iter().map(|e| e.to).collect();
    assert_eq!(
        calls,
        [
            vec!["a".to_owned(), "b".to_owned()],
            vec!["busy".to_owned()]
        ],
        "the throttled user was retried alone, the invalid one never"
    );
    assert!(!r.all_delivered());
}

#[tokio::test]
async fn a_text_to_an_invalid_user_is_a_typed_error() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: None,
        invalid_users: HashSet::from(["ghost".to_owned()]),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let err = sender(&mock)
        .send_text_message("cidIgnored==", "ghost", "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotDelivered { user_id, reason: "invalid user" } if user_id == "ghost"),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_empty_user_id_sends_to_the_group() {
    let mock = unlimited_mock().await;
    mock.add_group("cidTeam==");
    sender(&mock)
        .send_text_message("cidTeam==", "", "群通知")
        .await
        .unwrap();
    let out = mock.outbox();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel, "group_send");
    assert_eq!(out[0].to, ["cidTeam=="]);
    assert_eq!(out[0].text, "群通知");
}

#[tokio::test]
async fn action_cards_reach_users_with_their_buttons() {
    let mock = unlimited_mock().await;
    let s = sender(&mock);
    let card = Message::action_card_buttons(
        "审批",
        "### 请处理",
        [
            ("同意".to_owned(), "https://example.com/yes".to_owned()),
            ("拒绝".to_owned(), "https://example.com/no".to_owned()),
        ],
    );
    s.send_to_users(&["u1"], &card).await.unwrap();
    let out = mock.outbox();
    assert_eq!(out[0].kind, "sampleActionCard2");
    assert_eq!(out[0].content["actionURL2"], "https://example.com/no");
}

#[tokio::test]
async fn permanent_errors_carry_dingtalks_code_and_requestid() {
    let mock = unlimited_mock().await;
    let s = sender(&mock);
    let err = s
        .send_to_group("cidNotAMember==", &Message::text("x"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(
        err.code(),
        Some("invalidParameter.openConversationId.invalid")
    );
    assert!(err.request_id().is_some_and(|r| !r.is_empty()));
    assert!(!err.is_retryable());

    let secret = "wrong-secret-value";
    let asked_before = mock.token_requests();
    let bad = DingTalkSender::builder()
        .client_id("x")
        .client_secret(secret)
        .api_base(mock.base_url())
        .retry(fast_retry(5))
        .build()
        .unwrap();
    let err = bad.send_text_message("", "u", "x").await.unwrap_err();
    assert_eq!(err.code(), Some("invalidClientIdOrSecret"));
    assert!(!err.to_string().contains(secret));
    assert!(!format!("{err:?}").contains(secret));
    // Bad credentials are permanent: asked once, not retried.
    assert_eq!(mock.token_requests(), asked_before + 1);
}

#[tokio::test]
async fn an_expired_session_webhook_is_a_typed_error() {
    let mock = unlimited_mock().await;
    let s = sender(&mock);
    let said = mock.say(MockMessage::single("u1", "hi")).await;
    s.reply_session(&said.session_webhook, &Message::text("收到"), &["u1"])
        .await
        .unwrap();
    let out = mock.outbox();
    assert_eq!(out[0].channel, "session_webhook");
    assert_eq!(out[0].text, "@u1 收到");
    mock.expire_sessions();
    let err = s
        .reply_session::<&str>(&said.session_webhook, &Message::markdown("t", "later"), &[])
        .await
        .unwrap_err();
    assert!(err.is_session_expired(), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(mock.outbox().len(), 1);
}

#[tokio::test]
async fn secrets_never_show_in_debug_or_errors() {
    let s = DingTalkSender::builder()
        .client_id("id")
        .client_secret("super-secret-value")
        .api_base("http://127.0.0.1:9")
        .build()
        .unwrap();
    assert!(!format!("{s:?}").contains("super-secret-value"));
    // A session webhook URL carries the session key: a failure must not echo it.
    let err = s
        .reply_session::<&str>(
            "http://127.0.0.1:9/robot/sendBySession?session=0123456789abcdef",
            &Message::text("x"),
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
}

#[tokio::test]
async fn missing_credentials_or_bad_base_urls_are_refused_at_build() {
    assert!(matches!(
        DingTalkSender::builder().client_id("id").build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        DingTalkSender::builder()
            .client_id("id")
            .client_secret("s")
            .api_base("ftp://nowhere")
            .build(),
        Err(Error::Config(_))
    ));
}

fn fault(status: u16, code: &str) -> MockFault {
    MockFault {
        status,
        code: code.to_owned(),
        message: "injected".to_owned(),
    }
}

#[tokio::test]
async fn send_too_fast_429_and_gateway_errors_are_retried() {
    let mock = unlimited_mock().await;
    mock.fail_next(Api::BatchSend, &fault(400, "send.too.fast"), 1);
    mock.fail_next(Api::BatchSend, &fault(400, "send.byToken.tooFast"), 1);
    mock.fail_next(Api::BatchSend, &fault(429, "Throttling"), 1);
    mock.fail_next(Api::BatchSend, &fault(503, "ServiceUnavailable"), 1);
    let r = sender(&mock)
        .send_to_users(&["u1"], &Message::text("x"))
        .await
        .unwrap();
    assert_eq!(r.delivered, ["u1"]);
    assert_eq!(mock.outbox().len(), 1);
}

#[tokio::test]
async fn invalid_parameter_errors_are_not_retried() {
    let mock = unlimited_mock().await;
    mock.add_group("cidTeam==");
    mock.fail_next(
        Api::GroupSend,
        &fault(400, "invalidParameter.msgKey.invalid"),
        1,
    );
    let s = sender(&mock);
    let err = s
        .send_to_group("cidTeam==", &Message::text("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalidParameter.msgKey.invalid"));
    assert!(!err.is_retryable());
    // One fault was queued and one call made: a retry would have succeeded.
    assert!(mock.outbox().is_empty());
    s.send_to_group("cidTeam==", &Message::text("x"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_a_second_one_is_returned() {
    let mock = unlimited_mock().await;
    let s = sender(&mock);
    mock.fail_next(Api::BatchSend, &fault(401, "Unauthorized"), 1);
    s.send_text_message("", "u1", "x").await.unwrap();
    assert_eq!(mock.token_requests(), 2);
    mock.fail_next(Api::BatchSend, &fault(401, "Unauthorized"), 2);
    let err = s.send_text_message("", "u1", "y").await.unwrap_err();
    assert!(err.is_invalid_token(), "{err}");
    assert_eq!(mock.token_requests(), 3, "refreshed once, not in a loop");
    assert_eq!(mock.outbox().len(), 1);
}

#[tokio::test]
async fn users_still_flow_controlled_after_their_retries_are_reported() {
    let mock = unlimited_mock().await;
    mock.flow_control("busy");
    let s = builder(&mock).flow_control_retries(0).build().unwrap();
    let r = s
        .send_to_users(&["a", "busy"], &Message::text("x"))
        .await
        .unwrap();
    assert_eq!(r.delivered, ["a"]);
    assert_eq!(r.flow_controlled_users_failed, ["busy"]);
    assert_eq!(r.calls, 1);
    let err = {
        mock.flow_control("busy");
        s.send_text_message("", "busy", "x").await.unwrap_err()
    };
    assert!(
        matches!(
            err,
            Error::NotDelivered {
                reason: "flow-controlled",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn long_markdown_names_a_user_dingtalk_did_not_deliver_to_and_the_others_get_every_part() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: None,
        invalid_users: HashSet::from(["ghost".to_owned()]),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let s = builder(&mock).part_bytes(1_000).build().unwrap();
    let text = "第一段内容。\n\n".repeat(200);
    let err = s
        .send_long_markdown(
            &Target::Users(vec!["a".into(), "ghost".into()]),
            "报告",
            &text,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotDelivered { user_id, reason: "invalid user" } if user_id == "ghost"),
        "{err}"
    );
    let to_a: Vec<String> = mock
        .outbox()
        .into_iter()
        .filter(|e| e.to.contains(&"a".to_owned()))
        .map(|e| e.text)
        .collect();
    assert!(to_a.len() > 1);
    assert_eq!(reassemble(&to_a), text);
    assert!(
        mock.outbox()
            .iter()
            .skip(1)
            .all(|e| !e.to.contains(&"ghost".to_owned())),
        "an invalid user is not sent the later parts"
    );

    // A user still flow-controlled after the retries is reported too, never as delivered.
    mock.flow_control("busy");
    let s = builder(&mock).flow_control_retries(0).build().unwrap();
    let err = s
        .send_long_markdown(&Target::Users(vec!["busy".into()]), "报告", "短结果")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotDelivered { user_id, reason: "flow-controlled" } if user_id == "busy"),
        "{err}"
    );
}
