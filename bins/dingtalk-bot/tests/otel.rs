//! Traces over OTLP/HTTP from the real `dingtalk-bot` executable (the tracer provider is
//! process-wide): a local collector decodes what arrives with the OpenTelemetry protobuf
//! definitions and finds the long job's `bot job` span, with its task id and outcome.
#![cfg(unix)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use dingtalk_mock::{DingTalkMock, MockConfig, MockMessage};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

const DEADLINE: Duration = Duration::from_secs(90);

type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP collector (`POST /v1/traces`, protobuf); its base URL.
async fn collector() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let s = spans.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let s = s.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut s = s.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        s.extend(scope.spans);
                    }
                }
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, spans)
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone()?.value)
}

struct Bot(Child);

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_long_job_exports_its_bot_job_span_over_otlp() {
    let (otlp, spans) = collector().await;
    let mock = DingTalkMock::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dingtalk-bot"));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| {
            k.starts_with("BOT_") || k.starts_with("DINGTALK_") || k.starts_with("OTEL_")
        }) {
            cmd.env_remove(key);
        }
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("DINGTALK_CLIENT_ID", &mock.config().client_id)
        .env("DINGTALK_CLIENT_SECRET", &mock.config().client_secret)
        .env("DINGTALK_API_BASE", mock.base_url())
        .env("DINGTALK_OAPI_BASE", mock.base_url())
        .args(["--mode", "stream", "--processor", "echo", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the dingtalk-bot executable starts");
    let mut bot = Bot(child);
    let start = Instant::now();
    while mock.connections() != 1 {
        assert!(start.elapsed() < DEADLINE, "the bot never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        mock.say(MockMessage::single("u1", "市场调研 华南"))
            .await
            .delivered
    );
    let task_id = loop {
        let pushed = mock
            .outbox()
            .into_iter()
            .find(|e| e.channel == "batch_send" && e.text == "处理结果：市场调研 华南");
        let ack = mock
            .outbox()
            .into_iter()
            .find_map(|e| e.text.split("任务ID：").nth(1).map(|s| s.trim().to_owned()));
        if let (Some(_), Some(id)) = (pushed, ack) {
            break id;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no result: {:#?}",
            mock.outbox()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A graceful stop flushes what is still batched.
    let status = Command::new("kill")
        .args(["-TERM", &bot.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = bot.0.wait();
    let job = loop {
        let found = spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.name == "bot job")
            .cloned();
        if let Some(span) = found {
            break span;
        }
        assert!(start.elapsed() < DEADLINE, "no bot job span arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        attribute(&job, "task_id"),
        Some(Value::StringValue(task_id.clone())),
        "{job:#?}"
    );
    assert_eq!(
        attribute(&job, "outcome"),
        Some(Value::StringValue("success".into()))
    );
    assert_eq!(attribute(&job, "attempt"), Some(Value::IntValue(1)));
    mock.shutdown().await;
}
