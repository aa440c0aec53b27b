//! The dispatcher's core over a real engine: the manager's task API and the webhook handler
//! against loopback receivers (moved here from workflow-core's engine tests).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use parking_lot::Mutex;
use workflow_core::{
    AttemptContext, CancelOutcome, Engine, EngineConfig, EngineEvent, Enqueued, ExponentialBackoff,
    Handler, HandlerOutcome, Jitter, MemoryStore, NewTask, Priority, Store, Task, TaskFilter,
    TaskStatus, TokioClock,
};
use workflow_dispatch::{
    DeliveryPayload, Destination, DispatchRequest, WEBHOOK_KIND, WebhookDeliveryHandler,
    WorkflowConfig, WorkflowManager,
};

/// Records the order of attempts and answers with a scripted outcome.
struct Scripted {
    seen: Mutex<Vec<String>>,
    answer: Box<dyn Fn(&Task) -> HandlerOutcome + Send + Sync>,
    hold: Duration,
}

impl Scripted {
    fn new(answer: impl Fn(&Task) -> HandlerOutcome + Send + Sync + 'static) -> Arc<Scripted> {
        Arc::new(Scripted {
            seen: Mutex::new(vec![]),
            answer: Box::new(answer),
            hold: Duration::ZERO,
        })
    }
}

#[async_trait]
impl Handler for Scripted {
    async fn handle(&self, task: &Task, ctx: AttemptContext) -> HandlerOutcome {
        self.seen.lock().push(task.id.clone());
        if !self.hold.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(self.hold) => {}
                () = ctx.cancel.cancelled() => return HandlerOutcome::retryable("cancelled"),
            }
        }
        (self.answer)(task)
    }
}

fn task(id: &str, priority: Priority) -> NewTask {
    NewTask {
        id: id.to_owned(),
        kind: "webhook".to_owned(),
        priority,
        payload: serde_json::json!({}),
        target: Some("https://t.example:443".to_owned()),
        max_attempts: 4,
        run_at: Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap(),
        idempotency_key: None,
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        owner_id: "test".into(),
        backoff: ExponentialBackoff::try_new(
            Duration::from_secs(10),
            Duration::from_secs(3600),
            Jitter::None,
        )
        .unwrap(),
        ..EngineConfig::default()
    }
}

fn engine(store: Arc<dyn Store>, handler: Arc<dyn Handler>, config: EngineConfig) -> Engine {
    Engine::builder(store)
        .handler("webhook", handler)
        .config(config)
        .clock(Arc::new(TokioClock::default()))
        .start()
}

async fn wait_final(store: &Arc<dyn Store>, id: &str) -> Task {
    for _ in 0..100_000 {
        if let Some(t) = store.get(id).await.unwrap()
            && t.status.is_final()
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never finished");
}

fn create_request(url: &str) -> task_package::CreateTaskRequest {
    let mut body = task_package::examples::seed_flat_request();
    body["webhook_url"] = url.into();
    task_package::CreateTaskRequest::from_json_slice(body.to_string().as_bytes()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn workflow_manager_dispatches_shows_cancels_retries_and_lists() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Fails for good unless the package names the "good" receiver.
    let h = Scripted::new(|t| {
        if t.payload["url"].as_str().unwrap().contains("good") {
            HandlerOutcome::success().with_status(Some(200))
        } else {
            HandlerOutcome::permanent("HTTP 404").with_status(Some(404))
        }
    });
    // The retry budget is the manager's: 2 retries here.
    let e = engine(store.clone(), h.clone(), config());
    let m = WorkflowManager::new(
        e.clone(),
        WorkflowConfig {
            max_retries: 2,
            ..WorkflowConfig::default()
        },
    );
    let package = m.create_task_package(&create_request("https://good.example/hook"));
    let request = DispatchRequest {
        task_id: "wf_1_00000001".into(),
        package: package.clone(),
        priority: task_package::Priority::High,
        idempotency_key: Some("k1".into()),
    };
    let first = m.dispatch_task(request.clone()).await.unwrap();
    assert!(matches!(first, Enqueued::Created(_)));
    let t = first.task();
    assert_eq!(t.kind, "webhook");
    assert_eq!(t.max_attempts, 3, "max_retries + the first attempt");
    assert_eq!(t.target.as_deref(), Some("https://good.example:443"));
    assert_eq!(
        t.payload["package"],
        serde_json::to_value(&package).unwrap(),
        "the package is delivered as is"
    );
    // The same idempotency key gives the same task back.
    let again = m
        .dispatch_task(DispatchRequest {
            task_id: "wf_1_00000002".into(),
            ..request
        })
        .await
        .unwrap();
    assert!(matches!(again, Enqueued::Existing(ref t) if t.id == "wf_1_00000001"));
    wait_final(&store, "wf_1_00000001").await;
    let view = m.get_task_status("wf_1_00000001").await.unwrap().unwrap();
    assert_eq!(view.task.status, TaskStatus::Completed);
    assert_eq!(view.attempts.len(), 1);
    assert_eq!(view.attempts[0].status_code, Some(200));
    let path: Vec<TaskStatus> = view.events.iter().map(|ev| ev.to).collect();
    assert_eq!(
        path,
        [
            TaskStatus::Pending,
            TaskStatus::Processing,
            TaskStatus::Completed
        ]
    );
    assert!(m.get_task_status("nope").await.unwrap().is_none());

    // A permanent failure, then retry-now: a fresh attempt.
    let bad = m.create_task_package(&create_request("https://bad.example/hook"));
    m.dispatch_task(DispatchRequest {
        task_id: "wf_1_00000003".into(),
        package: bad,
        priority: task_package::Priority::Low,
        idempotency_key: None,
    })
    .await
    .unwrap();
    assert_eq!(
        wait_final(&store, "wf_1_00000003").await.status,
        TaskStatus::Failed
    );
    let revived = m.retry_task("wf_1_00000003").await.unwrap();
    assert!(!revived.status.is_final());
    wait_final(&store, "wf_1_00000003").await;
    assert_eq!(store.attempts("wf_1_00000003").await.unwrap().len(), 2);
    assert!(
        m.retry_task("wf_1_00000001").await.is_err(),
        "completed stays completed"
    );

    let failed = m
        .list_tasks(&TaskFilter {
            status: Some(TaskStatus::Failed),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        failed
            .tasks
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        ["wf_1_00000003"]
    );
    assert!(matches!(
        m.cancel_task("wf_1_00000001").await.unwrap(),
        CancelOutcome::AlreadyFinal(_)
    ));
    e.shutdown().await;
}

/// A receiver on 127.0.0.1:0 answering `status` to every POST and recording what it got.
async fn receiver(
    status: u16,
) -> (
    String,
    Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    tokio::task::JoinHandle<()>,
) {
    let got: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let json = serde_json::from_slice(&body).unwrap_or_default();
                    seen.lock().push((id, json));
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, got, server)
}

fn webhook_task(id: &str, url: &str, package: serde_json::Value) -> NewTask {
    NewTask {
        payload: DeliveryPayload::new(Destination::Url(url.to_owned()), package).to_value(),
        target: webhook_client::target_key(url),
        run_at: Utc::now(),
        ..task(id, Priority::High)
    }
}

/// A webhook handler whose breakers open on one failure for an hour; 410 is permanent.
fn handler_opening_on_one_failure() -> WebhookDeliveryHandler {
    let client = webhook_client::WebhookClient::builder()
        .ssrf_guard(false)
        .timeout(Duration::from_secs(5))
        .classifier(retry_policy::Classifier::default().with_permanent_statuses([410]))
        .breaker(circuit_breaker::BreakerConfig {
            consecutive_failures: 1,
            open_wait: Duration::from_secs(3600),
            max_open_wait: Duration::from_secs(3600),
            ..circuit_breaker::BreakerConfig::default()
        })
        .build()
        .unwrap();
    WebhookDeliveryHandler::new(client, vec![webhook_client::SigningSecret::generate()])
}

#[tokio::test]
async fn the_webhook_handler_delivers_fails_for_good_and_defers_on_an_open_breaker() {
    let (ok_url, ok_got, ok_server) = receiver(200).await;
    let (gone_url, _, gone_server) = receiver(410).await;
    let (busy_url, busy_got, busy_server) = receiver(503).await;
    let handler = handler_opening_on_one_failure();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let e = Engine::builder(store.clone())
        .handler(WEBHOOK_KIND, Arc::new(handler))
        .config(EngineConfig {
            backoff: ExponentialBackoff::try_new(
                Duration::from_millis(10),
                Duration::from_secs(1),
                Jitter::None,
            )
            .unwrap(),
            ..config()
        })
        .start();
    let mut events = e.subscribe();
    let package = serde_json::json!({"task_type": "competitor_alert", "n": 1});
    e.enqueue(webhook_task("ok", &ok_url, package.clone()))
        .await
        .unwrap();
    e.enqueue(webhook_task("gone", &gone_url, package.clone()))
        .await
        .unwrap();
    e.enqueue(webhook_task("busy", &busy_url, package.clone()))
        .await
        .unwrap();

    assert_eq!(wait_final(&store, "ok").await.status, TaskStatus::Completed);
    assert_eq!(
        *ok_got.lock(),
        [("ok".to_owned(), package.clone())],
        "the package as body, the task id as webhook-id"
    );
    assert_eq!(
        store.attempts("ok").await.unwrap()[0].status_code,
        Some(200)
    );

    let gone = wait_final(&store, "gone").await;
    assert_eq!(gone.status, TaskStatus::Failed, "410 is permanent here");
    assert_eq!(gone.tries, 1);

    // 503 opens the breaker (one failure is enough here): the retry is deferred to the
    // breaker's reopen time without spending an attempt or sending anything.
    let deferred = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let EngineEvent::Deferred { task_id, until, .. } = events.recv().await.unwrap()
                && task_id == "busy"
            {
                return until;
            }
        }
    })
    .await
    .expect("the retry is deferred");
    assert!(deferred > Utc::now() + chrono::Duration::minutes(50));
    let busy = store.get("busy").await.unwrap().unwrap();
    assert_eq!(busy.status, TaskStatus::Retrying);
    assert_eq!(busy.tries, 1, "the deferral did not count as an attempt");
    // Stores keep milliseconds.
    assert_eq!(
        busy.next_run_at.map(|t| t.timestamp_millis()),
        Some(deferred.timestamp_millis())
    );
    assert_eq!(busy_got.lock().len(), 1, "nothing sent while open");
    e.shutdown().await;
    for s in [ok_server, gone_server, busy_server] {
        s.abort();
    }
}

/// The deferral an attempt of `task` gets from `handler`: whether it holds the whole target.
async fn holds_target(handler: &WebhookDeliveryHandler, task: &Task) -> Option<bool> {
    let ctx = AttemptContext {
        attempt: 1,
        cancel: tokio_util::sync::CancellationToken::new(),
    };
    match handler.handle(task, ctx).await.result {
        workflow_core::AttemptResult::Deferred { hold_target, .. } => Some(hold_target),
        _ => None,
    }
}

#[tokio::test]
async fn an_open_breaker_holds_its_host_only_while_it_is_the_hosts_only_endpoint() {
    let (busy_url, _, server) = receiver(503).await;
    let handler = handler_opening_on_one_failure();
    let store = MemoryStore::new();
    let other_url = busy_url.replace("/hook", "/other");
    for (id, url) in [("busy", &busy_url), ("other", &other_url)] {
        store
            .enqueue(
                webhook_task(id, url, serde_json::json!({})),
                Default::default(),
            )
            .await
            .unwrap();
    }
    let busy = store.get("busy").await.unwrap().unwrap();
    let other = store.get("other").await.unwrap().unwrap();
    // The 503 opens the endpoint's breaker; the next attempt is deferred, and with no other
    // endpoint of the host known, the deferral holds the host (no one-by-one deferrals).
    assert_eq!(holds_target(&handler, &busy).await, None);
    assert_eq!(holds_target(&handler, &busy).await, Some(true));
    // Another endpoint of the same host is sent to: it has its own breaker, so the open one
    // no longer speaks for the host.
    assert_eq!(holds_target(&handler, &other).await, None);
    assert_eq!(holds_target(&handler, &busy).await, Some(false));
    server.abort();
}
