//! The dispatcher: an HTTP API that packs negative evidence into standard task packages and
//! delivers them by signed webhook, with durable priority queueing, retries, circuit breakers
//! and receiver callbacks that close the loop.
//!
//! `main.rs` only parses flags and calls [`run`]. Everything else lives here so tests and
//! examples can start the whole service in-process ([`run`] on `127.0.0.1:0`) or drive the
//! [`router`] directly with `tower::ServiceExt::oneshot`.
//!
//! The product logic (packing, routing to URLs and channels, breakers, delivery, callback
//! tokens) is `workflow_dispatch`'s; this crate is its HTTP face. Layout (the svix-server
//! shape): [`config`] (layered settings), [`auth`] (API keys), [`error`] (the JSON error
//! shape, `workflow_dispatch::api::error`), [`routes`] (handlers), [`openapi`] (the generated
//! document). The secrets generated on first start are `service_kit::secrets`'.
//!
//! # Example
//!
//! ```
//! use tower::ServiceExt as _;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = tempfile::tempdir()?;
//! let config = dispatcher::Config {
//!     data_dir: data.path().to_path_buf(),
//!     api_keys: dispatcher::config::OneOrMany(vec!["my-key".into()]),
//!     signing_secret: dispatcher::config::OneOrMany(vec!["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()]),
//!     ..dispatcher::Config::default()
//! };
//! let app = dispatcher::App::start(&config).await?;
//! let request = http::Request::get("/workflow/tasks/wf_1_00000000")
//!     .header("authorization", "Bearer my-key")
//!     .body(axum::body::Body::empty())?;
//! let response = app.router().oneshot(request).await?;
//! assert_eq!(response.status(), 404);
//! app.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! None. PostgreSQL (`--database-url postgres://...`) is always built in.
//!
//! # Why some parts are our own
//!
//! API-key checks are a few lines over `sha2`/`subtle` (an auth framework would add sessions
//! and storage we do not want; callback tokens are derived, never stored).
//! The JSON error mapping is a small middleware so axum's and tower-http's own rejections
//! answer in the same shape as the handlers.

pub mod auth;
pub mod config;
pub use workflow_dispatch::api::error;
pub mod openapi;
pub mod routes;
pub mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::response::IntoResponse as _;
use metrics_exporter_prometheus::PrometheusHandle;
use service_kit::MetricsUpkeep;
use webhook_client::SigningSecret;
use workflow_core::{Engine, EngineConfig, ExponentialBackoff, Jitter, Store};
use workflow_dispatch::{
    CallbackTokens, ChannelDeliveryHandler, Channels, DELIVERY_KINDS, Routes, TracedDelivery,
    WebhookDeliveryHandler, WorkflowConfig, WorkflowManager,
};

pub use config::{Cli, Config, ConfigError, LogFormat, figment_for};
pub use openapi::ApiDoc;
pub use service_kit::shutdown_signal;
pub use workflow_dispatch::BreakerOpenPolicy;

/// Largest request body accepted (larger: 413).
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long one API request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share: one `Arc`, because axum clones the state for every extractor of
/// every request, and a clone of the parts (the manager's config and channels, the dashboard's
/// strings) allocated and showed up at ~2 % of the dispatcher's CPU under load.
#[derive(Clone, Debug)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    /// The state over `parts`.
    pub fn new(parts: SharedState) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct SharedState {
    /// The seed's manager: tasks, channels, breakers, callbacks.
    pub manager: WorkflowManager,
    /// The store (readiness).
    pub store: Arc<dyn Store>,
    /// Accepted API keys.
    pub api_keys: Arc<Vec<String>>,
    /// Prometheus rendering.
    pub metrics: PrometheusHandle,
    /// The dashboard's sessions, live rates and path prefix.
    pub ui: ui::Ui,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("config", self.manager.config())
            .finish_non_exhaustive()
    }
}

/// The API router over `state` (and the dashboard under `/ui/`, see [`ui`]), behind
/// [`service_kit::ApiLayers`]: request ids (set and propagated), sensitive-header redaction,
/// tracing, JSON errors for every rejection, a 64 KiB body limit, a request timeout and panic
/// recovery (500 without internals).
pub fn router(state: AppState) -> Router {
    let (api, _) = routes::api().split_for_parts();
    let layers = service_kit::ApiLayers {
        body_limit: BODY_LIMIT,
        timeout: REQUEST_TIMEOUT,
        sensitive_headers: vec![
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderName::from_static("x-callback-token"),
        ],
        quiet_paths: &["/healthz", "/readyz", "/metrics"],
        remote_parent: Some(workflow_dispatch::trace_context::set_remote_parent),
    };
    let app = api
        .merge(ui::router())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed);
    layers
        .apply(app, error::json_errors, || {
            error::ApiError::internal(&"handler panicked").into_response()
        })
        .with_state(state)
}

/// Histogram buckets of the dispatcher's metrics, in seconds.
const METRICS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
];

/// A started dispatcher: its store is open, its engine is delivering, and [`App::router`]
/// answers the API. [`run`] is this plus an HTTP listener and a shutdown signal.
#[derive(Debug)]
pub struct App {
    state: AppState,
    engine: Engine,
    upkeep: MetricsUpkeep,
    /// The database, as shown in logs (SQLite path, or PostgreSQL URL without its password).
    database: String,
}

/// Loads (or generates and prints once) the API keys and the signing secrets.
fn load_secrets(config: &Config) -> anyhow::Result<(Vec<String>, Vec<SigningSecret>)> {
    let keys = service_kit::secrets::api_keys(&config.api_keys.0, &config.data_dir)
        .context("while loading the API key")?;
    if keys.generated {
        println!(
            "Generated an API key (stored in {}; shown once):\n\n    {}\n\nSend it as: Authorization: Bearer <key>\nDashboard: {}?key={}\n",
            config.data_dir.join("api_key").display(),
            keys.value[0],
            ui::login_url(&config.public_url()),
            keys.value[0]
        );
    }
    let signing = service_kit::secrets::load(
        &config.signing_secret.0,
        &config.data_dir.join("signing_secret"),
        "signing secret",
        || SigningSecret::generate().expose(),
        SigningSecret::parse,
    )
    .context("while loading the signing secret")?;
    if matches!(config.database()?, config::Database::Postgres { .. })
        && (keys.generated || signing.generated)
    {
        tracing::warn!(
            "API key or signing secret generated in the data directory while sharing a \
             PostgreSQL database: every instance must be given the same api_keys and \
             signing_secret, or callbacks and signatures differ between instances"
        );
    }
    if signing.generated {
        println!(
            "Generated a webhook signing secret (stored in {}; shown once); receivers verify with it:\n\n    {}\n",
            config.data_dir.join("signing_secret").display(),
            signing.value[0].expose()
        );
    }
    Ok((keys.value, signing.value))
}

impl App {
    /// Creates the data directory, loads (or generates and prints once) the API key and the
    /// signing secret, opens the store (SQLite, recovering tasks a previous process left
    /// behind; or PostgreSQL, migrating it and listening for other instances' enqueues), builds
    /// the channels (reading their secrets) and starts the delivery engine. Must be called
    /// inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// Startup failures: data directory, secret files, database, channels, HTTP client, retry
    /// settings.
    pub async fn start(config: &Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "while creating the data directory {}",
                config.data_dir.display()
            )
        })?;
        let (api_keys, signing) = load_secrets(config)?;
        let opened = service_kit::open_store(&config.database()?, config.sqlite_cache_mib).await?;
        let client = config.client_settings(config.egress_proxy()?).build()?;
        let backoff = ExponentialBackoff::try_new(
            config.base_retry_delay,
            config.max_retry_delay,
            // The seed's jitter is U(0, 10 s); short test delays get proportionally less.
            Jitter::Additive(Duration::from_secs(10).min(config.base_retry_delay)),
        )
        .map_err(|e| anyhow::anyhow!("invalid retry settings: {e}"))?;
        let channels = Channels::from_config(&config.channels, config.egress_proxy()?.as_ref())
            .map_err(|e| ConfigError(e.0))?;
        let routes = config.routing()?;
        let delivery = Arc::new(TracedDelivery::new(ChannelDeliveryHandler::new(
            WebhookDeliveryHandler::new(client.clone(), signing.clone()),
            channels.clone(),
            client.clone(),
            signing.clone(),
        )));
        let mut engine = Engine::builder(opened.store.clone());
        // A task's first delivery and the others of one that fans out: the same delivery.
        for kind in DELIVERY_KINDS {
            engine = engine.handler(kind, delivery.clone());
        }
        let engine = engine
            .config(EngineConfig {
                max_in_flight: config.max_in_flight,
                per_target_in_flight: config.per_target_in_flight,
                backoff,
                task_queue_size: Some(config.task_queue_size),
                prune_after: Some(config.retention),
                shutdown_grace: config.shutdown_grace,
                lease: config.lease,
                ..EngineConfig::default()
            })
            .start();
        let manager = WorkflowManager::new(
            engine.clone(),
            WorkflowConfig {
                max_retries: config.max_retries,
                public_url: config.public_url(),
                breaker_open_policy: config.breaker_open_policy,
            },
        )
        .with_channels(channels)
        .with_routes(routes)
        .with_callback_tokens(CallbackTokens::new(&signing[0]))
        .with_client(client);
        let metrics = service_kit::prometheus(&METRICS_BUCKETS);
        let ui = ui::Ui::new(
            &config.public_url(),
            ui::Sessions::new(signing[0].key_bytes()),
            ui::Stats::follow(&engine),
        );
        let state = AppState::new(SharedState {
            manager,
            store: opened.store,
            api_keys: Arc::new(api_keys),
            metrics: metrics.clone(),
            ui,
        });
        Ok(App {
            state,
            engine,
            upkeep: MetricsUpkeep::start(metrics, Duration::from_secs(5)),
            database: opened.shown,
        })
    }

    /// Replaces the routing rules with `config`'s (a SIGHUP reload), checked against the
    /// channels this process started with: channel changes take effect on a restart. On an
    /// error the rules in force stay.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every bad rule.
    pub fn reload_routes(&self, config: &Config) -> Result<Arc<Routes>, ConfigError> {
        let channels = self.state.manager.channels();
        let routes = Routes::new(&config.routes, |name| channels.get(name).is_some())
            .map_err(|e| ConfigError(format!("{e} (channels change only on a restart)")))?;
        self.state.manager.set_routes(routes);
        Ok(self.state.manager.routes())
    }

    /// The handlers' shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The API router (cheap; call it as often as needed).
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Stops claiming work, lets deliveries in flight finish within the grace period and
    /// releases the rest for the next start; stops the metrics upkeep.
    pub async fn shutdown(self) {
        self.engine.shutdown().await;
        // Commits what is queued and, on SQLite, empties the WAL into the database file, so a
        // stopped dispatcher leaves one consistent file behind.
        self.engine.store().close().await;
        self.upkeep.stop().await;
    }
}

/// Where a reload reads the configuration again (the file and environment the process
/// started from).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Runs the dispatcher on `listener` until `shutdown` completes (see [`shutdown_signal`]),
/// then stops accepting connections, lets deliveries in flight finish (or releases them for
/// the next start) and returns.
///
/// # Errors
///
/// Startup failures (see [`App::start`]).
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_reloading(config, listener, shutdown, None).await
}

/// [`run`], and on every SIGHUP reads the configuration from `reload` and replaces the
/// routing rules with its `[[routes]]` ([`App::reload_routes`]); a bad reload keeps the rules
/// in force and logs why.
///
/// # Errors
///
/// Startup failures (see [`App::start`]).
pub async fn run_reloading(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<ConfigSource>,
) -> anyhow::Result<()> {
    let app = Arc::new(App::start(&config).await?);
    let reloader = match reload {
        Some(source) => Some(reload_on_sighup(app.clone(), source)?),
        None => None,
    };
    let addr = listener
        .local_addr()
        .context("while reading the listen address")?;
    let dashboard = ui::login_url(&config.public_url());
    tracing::info!(%addr, database = %app.database, %dashboard, "dispatcher listening");
    let limits = config.http_limits()?;
    service_kit::serve(listener, app.router(), limits, shutdown).await;
    if let Some(task) = reloader {
        task.abort();
        let _ = task.await;
    }
    tracing::info!("stopped accepting requests; finishing deliveries in flight");
    let app = Arc::into_inner(app).expect("the reloader, the one other owner, has stopped");
    app.shutdown().await;
    tracing::info!("dispatcher stopped");
    Ok(())
}

/// Reloads the routing rules from `source` on every SIGHUP, until aborted.
fn reload_on_sighup(
    app: Arc<App>,
    source: ConfigSource,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("while listening for SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match source().and_then(|config| app.reload_routes(&config)) {
                Ok(routes) => {
                    metrics::counter!("dispatcher_route_reloads_total", "result" => "ok")
                        .increment(1);
                    tracing::info!(%routes, "SIGHUP: routing rules reloaded");
                }
                Err(e) => {
                    metrics::counter!("dispatcher_route_reloads_total", "result" => "error")
                        .increment(1);
                    tracing::error!(error = %e, "SIGHUP: configuration not reloaded; the routing rules in force stay");
                }
            }
        }
    }))
}
