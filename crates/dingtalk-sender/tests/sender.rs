//! The sender against dingtalk-mock over real sockets.

use std::collections::HashSet;
use std::time::Duration;

use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage};
use dingtalk_sender::{DingTalkSender, Error, Message, Target, reassemble};
use retry_policy::{Jitter, RetryPolicy};

fn sender(mock: &DingTalkMock, qps: u32) -> DingTalkSender {
    DingTalkSender::builder()
        .client_id(mock.config().client_id.clone())
        .client_secret(mock.config().client_secret.clone())
        .api_base(mock.base_url())
        .oapi_base(mock.base_url())
        .qps(qps)
        .retry(RetryPolicy {
            max_retries: 30,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            jitter: Jitter::Full,
        })
        .build()
        .unwrap()
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i}")).collect()
}

#[tokio::test]
async fn the_token_is_fetched_once_for_a_hundred_concurrent_sends() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: None,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let s = sender(&mock, 1000);
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
async fn an_expired_token_is_refreshed_transparently() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let s = sender(&mock, 100);
    s.send_text_message("", "u1", "first").await.unwrap();
    mock.expire_tokens();
    s.send_text_message("", "u1", "second").await.unwrap();
    assert_eq!(mock.token_requests(), 2);
    assert_eq!(mock.outbox().len(), 2);
}

#[tokio::test]
async fn forty_five_users_take_three_calls() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let s = sender(&mock, 100);
    let r = s
        .send_to_users(&users(45), &Message::text("通知"))
        .await
        .unwrap();
    assert_eq!(r.process_query_keys.len(), 3);
    assert_eq!(r.delivered.len(), 45);
    let calls: Vec<usize> = mock.outbox().iter().map(|e| e.to.len()).collect();
    assert_eq!(calls, [20, 20, 5]);
}

#[tokio::test]
async fn fifty_thousand_characters_arrive_as_parts_that_reassemble_exactly() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    mock.add_group("cidLong==");
    let s = sender(&mock, 100);
    let text: String = (0..2800)
        .map(|i| format!("第{i:04}段分析结论：市场份额稳定。\n"))
        .collect();
    assert!(text.chars().count() >= 50_000);
    let n = s
        .send_long_markdown(&Target::Group("cidLong==".into()), "分析报告", &text)
        .await
        .unwrap();
    let parts: Vec<String> = mock.outbox().into_iter().map(|e| e.text).collect();
    assert_eq!(parts.len(), n);
    assert!(n > 1);
    assert!(parts[0].starts_with(&format!("(1/{n}) ")));
    assert_eq!(reassemble(&parts), text);
}

#[tokio::test]
async fn qps_403_is_retried_until_success() {
    let mock = DingTalkMock::start(MockConfig {
        qps_limit: Some(3),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    // The client allows far more than the server: the server's 403s must be absorbed.
    let s = sender(&mock, 1000);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        let s = s.clone();
        set.spawn(async move { s.send_text_message("", &format!("u{i}"), "x").await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
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
    let s = DingTalkSender::builder()
        .client_id(mock.config().client_id.clone())
        .client_secret(mock.config().client_secret.clone())
        .api_base(mock.base_url())
        .qps(4)
        .retry(RetryPolicy {
            max_retries: 0,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            jitter: Jitter::None,
        })
        .build()
        .unwrap();
    // No retries allowed: every call must pass on its own, so the bucket must pace them.
    for i in 0..10 {
        s.send_text_message("", &format!("u{i}"), "x")
            .await
            .unwrap();
    }
    assert_eq!(mock.outbox().len(), 10);
}

#[tokio::test]
async fn flow_controlled_users_are_retried_alone_and_invalid_users_reported() {
    let mock = DingTalkMock::start(MockConfig {
        invalid_users: HashSet::from(["ghost".to_owned()]),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    mock.flow_control("busy");
    let s = sender(&mock, 100);
    let to = vec!["a".to_owned(), "busy".to_owned(), "ghost".to_owned()];
    let r = s.send_to_users(&to, &Message::text("x")).await.unwrap();
    assert_eq!(r.invalid_users, ["ghost"]);
    assert!(r.flow_controlled_users.is_empty());
    let mut delivered = r.delivered;
    delivered.sort();
    assert_eq!(delivered, ["a", "busy"]);
    let calls: Vec<Vec<String>> = mock.outbox().into_iter().map(|e| e.to).collect();
    assert_eq!(
        calls,
        [vec!["a".to_owned()], vec!["busy".to_owned()]],
        "the throttled user was retried alone"
    );
}

#[tokio::test]
async fn permanent_errors_carry_dingtalks_code_and_requestid() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let s = sender(&mock, 100);
    let err = s
        .send_to_group("cidNotAMember==", &Message::text("x"))
        .await
        .unwrap_err();
    match &err {
        Error::Api {
            status,
            code,
            request_id,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(code, "invalidParameter.openConversationId.invalid");
            assert!(!request_id.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    let bad = DingTalkSender::builder()
        .client_id("x")
        .client_secret("y")
        .api_base(mock.base_url())
        .build()
        .unwrap();
    let err = bad.send_text_message("", "u", "x").await.unwrap_err();
    assert!(err.to_string().contains("invalidClientIdOrSecret"));
    assert!(!err.to_string().contains('y') || !err.to_string().contains("appSecret"));
}

#[tokio::test]
async fn an_expired_session_webhook_is_a_typed_error() {
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let s = sender(&mock, 100);
    let said = mock.say(MockMessage::single("u1", "hi")).await;
    s.reply_session(
        &said.session_webhook,
        &Message::text("收到"),
        &["u1".to_owned()],
    )
    .await
    .unwrap();
    assert_eq!(mock.outbox()[0].text, "@u1 收到");
    mock.expire_sessions();
    let err = s
        .reply_session(&said.session_webhook, &Message::text("later"), &[])
        .await
        .unwrap_err();
    assert!(err.is_session_expired(), "{err}");
}

#[tokio::test]
async fn secrets_never_show_in_debug() {
    let s = DingTalkSender::builder()
        .client_id("id")
        .client_secret("super-secret-value")
        .build()
        .unwrap();
    assert!(!format!("{s:?}").contains("super-secret-value"));
}
