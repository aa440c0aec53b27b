//! The dispatcher: an HTTP API that packs negative evidence into standard task packages and
//! delivers them by signed webhook, with durable retries, circuit breakers and callbacks.
//!
//! `main.rs` parses flags and calls [`run`]; everything else lives here so tests can build the
//! [`router`] or run the whole service in-process on `127.0.0.1:0`.

pub mod config;
pub mod error;
pub mod routes;
pub mod secrets;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use webhook_client::{Classifier, WebhookClient};
use workflow_core::{
    Engine, EngineConfig, Jitter, RetryPolicy, SqliteConfig, SqliteStore, Store, WEBHOOK_KIND,
    WebhookDeliveryHandler, WorkflowConfig, WorkflowManager,
};

pub use config::{BreakerOpenPolicy, Cli, Config, ConfigError, LogFormat, figment_for};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The seed's facade over the engine.
    pub manager: WorkflowManager,
    /// The store (callbacks, readiness).
    pub store: Arc<dyn Store>,
    /// The delivery client (breaker state).
    pub client: WebhookClient,
    /// Accepted API keys.
    pub api_keys: Arc<Vec<String>>,
    /// Callback token derivation.
    pub callbacks: secrets::CallbackTokens,
    /// Base of callback URLs.
    pub public_url: String,
    /// New tasks for an open breaker.
    pub breaker_policy: BreakerOpenPolicy,
    /// Prometheus rendering, if a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// The OpenAPI description of the API, generated from the handlers.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "dispatcher", description = "Closed-loop task dispatch: queue, deliver by signed webhook, report back"),
    paths(
        routes::create_task, routes::list_tasks, routes::get_task, routes::cancel_task, routes::retry_task,
        routes::callback, routes::healthz, routes::readyz, routes::metrics_text
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// The API router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/workflow/tasks",
            post(routes::create_task).get(routes::list_tasks),
        )
        .route("/workflow/tasks/{task_id}", get(routes::get_task))
        .route(
            "/workflow/tasks/{task_id}/cancel",
            post(routes::cancel_task),
        )
        .route("/workflow/tasks/{task_id}/retry", post(routes::retry_task))
        .route("/workflow/tasks/{task_id}/callback", post(routes::callback))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics_text))
        .route("/openapi.json", get(openapi_json))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(error::ApiError::internal(
                &"handler panicked",
            ))
        }))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderName::from_static("x-callback-token"),
        ]))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
                ])
                .ok()?
                .install_recorder()
                .ok()?;
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}

/// Installs the tracing subscriber (RUST_LOG filter, default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Runs the dispatcher on `listener` until `shutdown` completes, then stops accepting, lets
/// deliveries in flight finish (or releases them for the next start) and returns.
///
/// # Errors
///
/// Startup failures: data directory, secrets, database, HTTP client.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "while creating the data directory {}",
            config.data_dir.display()
        )
    })?;
    let keys = secrets::api_keys(&config.api_keys.0, &config.data_dir)
        .context("while loading the API key")?;
    if keys.generated {
        println!(
            "Generated an API key (stored in {}/api_key; shown once):\n\n    {}\n\nSend it as: Authorization: Bearer <key>",
            config.data_dir.display(),
            keys.value[0]
        );
    }
    let signing = secrets::signing_secrets(&config.signing_secret.0, &config.data_dir)
        .context("while loading the signing secret")?;
    if signing.generated {
        println!(
            "Generated a webhook signing secret (stored in {}/signing_secret); receivers verify with it:\n\n    {}\n",
            config.data_dir.display(),
            signing.value[0].expose()
        );
    }
    let config::Database::Sqlite(path) = config.database()?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteConfig::new(&path))
            .with_context(|| format!("while opening {}", path.display()))?,
    );
    let cidrs = config
        .allowed_target_cidrs
        .0
        .iter()
        .map(|c| c.parse())
        .collect::<Result<Vec<ipnet::IpNet>, _>>()
        .context("while parsing allowed_target_cidrs")?;
    let client = WebhookClient::builder()
        .timeout(config.delivery_timeout)
        .allow_cidrs(cidrs)
        .breaker(circuit_breaker::BreakerConfig {
            open_wait: config.breaker_open_wait,
            max_open_wait: config.breaker_open_wait.saturating_mul(20),
            ..circuit_breaker::BreakerConfig::default()
        })
        .classifier(
            Classifier::default()
                .with_permanent_statuses(config.permanent_statuses.iter().copied()),
        )
        .build()
        .context("while building the HTTP client")?;
    let retry = RetryPolicy::try_new(
        config.max_retries,
        config.base_retry_delay,
        config.max_retry_delay,
        Jitter::Additive(Duration::from_secs(10).min(config.base_retry_delay)),
    )
    .map_err(|e| anyhow::anyhow!("invalid retry settings: {e}"))?;
    let engine = Engine::builder(store.clone())
        .handler(
            WEBHOOK_KIND,
            Arc::new(WebhookDeliveryHandler::new(
                client.clone(),
                signing.value.clone(),
            )),
        )
        .config(EngineConfig {
            max_in_flight: config.max_in_flight,
            per_target_in_flight: config.per_target_in_flight,
            retry,
            task_queue_size: Some(config.task_queue_size),
            prune_after: Some(config.retention),
            shutdown_grace: config.shutdown_grace,
            ..EngineConfig::default()
        })
        .start();
    let manager = WorkflowManager::new(
        engine.clone(),
        WorkflowConfig {
            max_retries: config.max_retries,
            base_retry_delay: config.base_retry_delay,
            max_retry_delay: config.max_retry_delay,
            task_queue_size: config.task_queue_size,
        },
    );
    let state = AppState {
        manager,
        store,
        client,
        api_keys: Arc::new(keys.value),
        callbacks: secrets::CallbackTokens::new(&signing.value[0]),
        public_url: config.public_url(),
        breaker_policy: config.breaker_open_policy,
        metrics: metrics_handle(),
    };
    let addr = listener
        .local_addr()
        .context("while reading the listen address")?;
    tracing::info!(%addr, database = %path.display(), "dispatcher listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("while serving HTTP")?;
    tracing::info!("stopped accepting requests; finishing deliveries in flight");
    engine.shutdown().await;
    tracing::info!("dispatcher stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}
