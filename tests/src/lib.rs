//! Test harness: the dispatcher on `127.0.0.1:0` with a temp data dir, and a local webhook
//! receiver that verifies signatures and records what it got.
//!
//! The dispatcher runs in-process through `dispatcher::run` (the very function the binary's
//! `main` calls after parsing flags): the same HTTP server, SQLite file, engine and shutdown
//! path, without the cost of a process per test. What only a real process can show (SIGTERM
//! and exit code 0, SIGKILL under load then restart, first-start secret generation, flag and
//! environment precedence) is tested against the real executable in the dispatcher package's
//! own `bins/dispatcher/tests/it/`, where Cargo provides `CARGO_BIN_EXE_dispatcher`.
//!
//! Run with `cargo test -p integration-tests` (and `cargo test -p dispatcher` for the binary).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use parking_lot::Mutex;
use webhook_client::SigningSecret;

/// The seed's example request body (the golden file of `task_package::examples`).
pub const SEED_REQUEST: &str = task_package::examples::SEED_REQUEST;

/// A fixed signing secret for tests.
pub const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// The API key tests use.
pub const API_KEY: &str = "test-key";

/// One delivery the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `webhook-id`.
    pub id: String,
    /// The body as JSON.
    pub body: serde_json::Value,
    /// Whether the signature verified.
    pub signature_ok: bool,
}

/// How the receiver answers (called on the blocking pool, so it may block).
pub type Responder = Arc<dyn Fn(&serde_json::Value, usize) -> StatusCode + Send + Sync>;

/// A local webhook receiver.
#[derive(Clone)]
pub struct Receiver {
    /// Its address.
    pub addr: SocketAddr,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .finish()
    }
}

#[derive(Clone)]
struct ReceiverState {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    respond: Responder,
}

async fn receive(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let secret = SigningSecret::parse(SECRET).expect("valid test secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let signature_ok = webhook_client::verify_headers(&[secret], &headers, &body, now).is_ok();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let n = {
        let mut d = s.deliveries.lock();
        d.push(Delivery {
            id,
            body: json.clone(),
            signature_ok,
        });
        d.len()
    };
    // Responders may block (one test holds a delivery until its backlog is queued): run them
    // on the blocking pool. Blocking a runtime worker instead can strand whatever task sits in
    // that worker's LIFO slot (other workers cannot steal it) until the responder returns.
    let respond = s.respond.clone();
    tokio::task::spawn_blocking(move || respond(&json, n))
        .await
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub async fn ok() -> Receiver {
        Receiver::start(Arc::new(|_, _| StatusCode::OK)).await
    }

    /// A receiver answering with `respond(body, nth delivery)`.
    pub async fn start(respond: Responder) -> Receiver {
        Receiver::start_on(0, respond).await
    }

    /// A receiver on a given loopback port (0: any).
    pub async fn start_on(port: u16, respond: Responder) -> Receiver {
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/hook", post(receive))
            // Other paths on the same host:port, for per-endpoint tests.
            .route("/hook/{*rest}", post(receive))
            .with_state(ReceiverState {
                deliveries: deliveries.clone(),
                respond,
            });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, deliveries }
    }

    /// The URL to deliver to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// What arrived so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().clone()
    }

    /// Waits until at least `n` deliveries arrived (up to 30 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        for _ in 0..3000 {
            if self.deliveries.lock().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.deliveries()
    }
}

/// A dispatcher running in-process.
#[derive(Debug)]
pub struct Dispatcher {
    /// Base URL.
    pub base: String,
    /// Its data directory.
    pub data_dir: tempfile::TempDir,
    /// HTTP client for tests.
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

/// Configuration for tests: loopback allowed, fixed key and secret, fast retries.
pub fn test_config() -> dispatcher::Config {
    dispatcher::Config {
        api_keys: dispatcher::config::OneOrMany(vec![API_KEY.to_owned()]),
        signing_secret: dispatcher::config::OneOrMany(vec![SECRET.to_owned()]),
        allowed_target_cidrs: dispatcher::config::OneOrMany(vec!["127.0.0.0/8".to_owned()]),
        base_retry_delay: Duration::from_millis(200),
        max_retry_delay: Duration::from_secs(2),
        delivery_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(2),
        breaker_open_wait: Duration::from_secs(1),
        ..dispatcher::Config::default()
    }
}

impl Dispatcher {
    /// Starts a dispatcher with `config` (its data dir replaced by a fresh temp dir).
    pub async fn start(config: dispatcher::Config) -> Dispatcher {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Dispatcher::start_in(config, data_dir).await
    }

    /// Starts a dispatcher on an existing data dir.
    pub async fn start_in(
        mut config: dispatcher::Config,
        data_dir: tempfile::TempDir,
    ) -> Dispatcher {
        let _ = rustls::crypto::ring::default_provider().install_default();
        config.data_dir = data_dir.path().to_path_buf();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        config.public_url = Some(format!("http://{addr}"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            dispatcher::run(config, listener, async move {
                let _ = rx.await;
            })
            .await
            .map_err(|e| format!("{e:#}"))
        });
        Dispatcher {
            base: format!("http://{addr}"),
            data_dir,
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops it gracefully and returns its data dir.
    pub async fn stop(self) -> tempfile::TempDir {
        let Dispatcher {
            data_dir,
            stop,
            task,
            ..
        } = self;
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
        if let Some(t) = task {
            t.await
                .expect("dispatcher task")
                .expect("dispatcher ran cleanly");
        }
        data_dir
    }

    /// POST a JSON body to `path` with the API key.
    pub async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// GET `path` with the API key, as JSON.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Creates a task for `url` with `priority`; returns its id.
    pub async fn create(&self, url: &str, priority: &str) -> String {
        let mut body: serde_json::Value = serde_json::from_str(SEED_REQUEST).expect("seed json");
        body["webhook_url"] = url.into();
        body["priority"] = priority.into();
        let r = self.post("/workflow/tasks", &body.to_string()).await;
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value = r.json().await.expect("json");
        v["task_id"].as_str().expect("task id").to_owned()
    }

    /// Waits until a task reaches `status` (up to 30 s) and returns its `task_info`.
    pub async fn wait_status(&self, id: &str, status: &str) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        for _ in 0..600 {
            let (_, v) = self.get(&format!("/workflow/tasks/{id}")).await;
            if v["task_info"]["status"] == status {
                return v["task_info"].clone();
            }
            last = v;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("task {id} never became {status}: {last}");
    }
}
