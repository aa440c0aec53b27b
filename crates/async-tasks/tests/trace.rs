//! A bot job runs in a `bot job` span (target `otel`) carrying its task id and outcome: what an
//! OpenTelemetry layer exports. A recording layer stands in for it here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_tasks::{
    AsyncTaskConfig, AsyncTaskManager, BotJob, BotJobHandler, BotSettings, DeliveryError,
    DurationStats, Echo, KIND, Push, new_task_id,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use workflow_core::{Engine, MemoryStore};

/// Spans by id: target, name and fields as text.
type Seen = Arc<Mutex<BTreeMap<u64, (String, String, BTreeMap<String, String>)>>>;

struct Recorder(Seen);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let meta = attrs.metadata();
        self.0.lock().unwrap().insert(
            id.into_u64(),
            (meta.target().to_owned(), meta.name().to_owned(), fields),
        );
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some((_, _, fields)) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

/// Delivers nowhere.
struct Nowhere;

#[async_trait::async_trait]
impl Push for Nowhere {
    async fn deliver(
        &self,
        _job: &BotJob,
        _title: &str,
        _text: &str,
        _prefer_session: bool,
        _margin: Duration,
    ) -> Result<&'static str, DeliveryError> {
        Ok("nowhere")
    }
}

#[tokio::test]
async fn a_bot_job_runs_in_a_span_with_its_task_id_and_outcome() {
    let seen: Seen = Arc::default();
    // The current-thread test runtime runs the engine's tasks on this thread, under this default.
    let _default = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(Recorder(seen.clone())),
    );
    let stats = DurationStats::default();
    let handler = BotJobHandler::new(
        Arc::new(Echo::default()),
        Arc::new(Nowhere),
        BotSettings::default(),
        stats.clone(),
    );
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .handler(KIND, Arc::new(handler))
        .start();
    let tasks = AsyncTaskManager::with_stats(engine.clone(), AsyncTaskConfig::default(), stats);
    let job = BotJob {
        prompt: "分析公司 Acme".into(),
        user_id: "u1".into(),
        conversation_id: "c1".into(),
        group: false,
        session_webhook: String::new(),
        session_expires_ms: 0,
        received_ms: 0,
        long: true,
        class: tasks.classify("分析公司 Acme"),
        no_staff_id: false,
        attachments: Vec::new(),
        card: false,
    };
    let id = new_task_id();
    tasks.create_task(&id, &job, None).await.unwrap();
    for _ in 0..1000 {
        if tasks
            .get_task(&id)
            .await
            .unwrap()
            .is_some_and(|t| t.status.is_final())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.shutdown().await;

    let seen = seen.lock().unwrap();
    let (target, _, fields) = seen
        .values()
        .find(|(_, name, _)| name == "bot job")
        .expect("a bot job span");
    assert_eq!(target, "otel");
    assert_eq!(fields.get("task_id"), Some(&id));
    assert_eq!(fields.get("attempt").map(String::as_str), Some("1"));
    assert_eq!(fields.get("outcome").map(String::as_str), Some("success"));
}
