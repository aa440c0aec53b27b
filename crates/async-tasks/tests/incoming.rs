//! Reading DingTalk messages (`async_tasks::incoming`, feature `dingtalk-stream`).

use async_tasks::AttachmentKind;
use async_tasks::incoming::{Request, SUPPORTED_TYPES_ZH, read, unsupported_reply};
use dingtalk_stream::RobotMessage;

fn msg(json: &str) -> RobotMessage {
    RobotMessage::from_json(json).unwrap()
}

#[test]
fn rich_text_keeps_its_text_and_its_pictures() {
    let m = msg(
        r#"{"msgtype":"richText","content":{"richText":[{"text":"看这张图 "},{"pictureDownloadCode":"p1","downloadCode":"d1","type":"picture"},{"text":"和这张"},{"downloadCode":"d2","type":"picture"}]}}"#,
    );
    let Request::Ask { text, attachments } = read(&m) else {
        panic!("a rich text is a request")
    };
    assert_eq!(text, "看这张图 和这张");
    let codes: Vec<&str> = attachments
        .iter()
        .map(|a| a.download_code.as_str())
        .collect();
    assert_eq!(codes, ["d1", "d2"]);
    assert!(
        attachments
            .iter()
            .all(|a| a.kind == AttachmentKind::Picture)
    );
}

#[test]
fn pictures_and_files_are_attachments() {
    let p = read(&msg(
        r#"{"msgtype":"picture","content":{"downloadCode":"d9"}}"#,
    ));
    assert!(
        matches!(&p, Request::Ask { text, attachments } if text.is_empty() && attachments[0].download_code == "d9")
    );
    let f = read(&msg(
        r#"{"msgtype":"file","content":{"fileName":"报告.pdf","downloadCode":"f1","spaceId":"1","fileId":"2"}}"#,
    ));
    assert!(
        matches!(&f, Request::Ask { attachments, .. } if attachments[0].name == "报告.pdf" && attachments[0].kind == AttachmentKind::File)
    );
}

#[test]
fn unknown_and_unusable_types_are_named_never_dropped() {
    for (json, label) in [
        (
            r#"{"msgtype":"video","content":{"downloadCode":"v"}}"#,
            "视频",
        ),
        (
            r#"{"msgtype":"unknownMsgType","content":{"unknownMsgType":"用户发送了一条消息，机器人暂不支持接收。"}}"#,
            "未知类型",
        ),
        (
            r#"{"msgtype":"interactiveCard","content":null}"#,
            "interactiveCard",
        ),
        (
            r#"{"msgtype":"audio","content":{"downloadCode":"a"}}"#,
            "语音（未识别出文字）",
        ),
        (r#"{"msgtype":"text","text":{"content":"   "}}"#, "空消息"),
        (
            r#"{"msgtype":"picture","content":null}"#,
            "图片（缺少下载码）",
        ),
    ] {
        assert_eq!(
            read(&msg(json)),
            Request::Unsupported(label.into()),
            "{json}"
        );
    }
    let reply = unsupported_reply("视频");
    assert!(
        reply.contains("视频") && reply.contains(SUPPORTED_TYPES_ZH),
        "{reply}"
    );
}

#[test]
fn audio_is_its_recognised_text() {
    let m =
        msg(r#"{"msgtype":"audio","content":{"downloadCode":"a","recognition":" 今天的舆情 "}}"#);
    assert_eq!(
        read(&m),
        Request::Ask {
            text: "今天的舆情".into(),
            attachments: vec![]
        }
    );
}
