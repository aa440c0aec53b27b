//! What DingTalk (or anyone who reaches the socket or the callback port) sends, under hostile
//! input (proptest): Stream frames, robot messages and HTTP-callback signature headers never
//! panic, and only the app secret's signature within the clock window is accepted.

use proptest::prelude::*;
use serde_json::{Value, json};

use dingtalk_stream::{
    AckFrame, DownstreamFrame, MAX_CLOCK_SKEW_MS, RobotMessage, callback_signature, verify_callback,
};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,30}".prop_map(Value::from),
        prop_oneof![
            Just("text"),
            Just("richText"),
            Just("picture"),
            Just("file"),
            Just("2")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 20, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("msgtype".to_owned()),
                    Just("text".to_owned()),
                    Just("content".to_owned()),
                    Just("richText".to_owned()),
                    Just("downloadCode".to_owned()),
                    Just("conversationType".to_owned()),
                    "[a-zA-Z]{1,10}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A robot message's known fields with any values.
fn message() -> impl Strategy<Value = Value> {
    (any_json(), any_json(), any_json(), any_json()).prop_map(|(msgtype, text, content, kind)| {
        json!({
            "msgtype": msgtype, "text": text, "content": content, "conversationType": kind,
            "senderStaffId": "u1", "conversationId": "c1", "msgId": "m1",
            "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=x",
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn any_frame_text_parses_or_fails_and_answers_with_its_own_id(raw in prop_oneof![
        "\\PC{0,200}",
        any_json().prop_map(|v| v.to_string()),
        (any_json(), any_json()).prop_map(|(headers, data)| json!({
            "specVersion": "1.0", "type": "CALLBACK", "headers": headers, "data": data,
        }).to_string()),
    ]) {
        if let Ok(frame) = serde_json::from_str::<DownstreamFrame>(&raw) {
            let ack: Value = serde_json::from_str(&AckFrame::callback(frame.message_id()).to_json()).unwrap();
            prop_assert_eq!(ack["headers"]["messageId"].as_str(), Some(frame.message_id()));
            let _ = frame.topic();
        }
    }

    #[test]
    fn any_robot_message_parses_or_fails_and_never_panics_when_read(body in prop_oneof![
        message(),
        any_json(),
    ]) {
        if let Ok(msg) = RobotMessage::from_json(&body.to_string()) {
            let _ = msg.body();
            let _ = msg.extract_text();
            let _ = msg.is_group();
        }
    }

    #[test]
    fn callback_signatures_verify_only_with_the_secret_inside_the_window(
        timestamp in proptest::option::of(prop_oneof![
            any::<i64>().prop_map(|t| t.to_string()),
            Just(i64::MIN.to_string()),
            "\\PC{0,24}",
        ]),
        sign in proptest::option::of("\\PC{0,60}"),
        now in prop_oneof![any::<i64>(), Just(i64::MAX), Just(i64::MIN)],
        skew in -2 * MAX_CLOCK_SKEW_MS..2 * MAX_CLOCK_SKEW_MS,
    ) {
        prop_assert!(verify_callback(timestamp.as_deref(), sign.as_deref(), "secret", now).is_err());
        let now = 1_750_000_000_000i64;
        let ts = (now + skew).to_string();
        let real = callback_signature(&ts, "secret");
        let verdict = verify_callback(Some(&ts), Some(&real), "secret", now);
        prop_assert_eq!(verdict.is_ok(), skew.abs() <= MAX_CLOCK_SKEW_MS);
        prop_assert!(verify_callback(Some(&ts), Some(&real), "other", now).is_err());
    }
}
