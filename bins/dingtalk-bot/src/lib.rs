//! The DingTalk bot: answers short requests in the conversation at once and runs long ones
//! ("client analysis", "分析公司", "生成报告", ...) as durable background jobs whose results are
//! pushed through the DingTalk OpenAPI, because the conversation's reply webhook may have expired.
//!
//! Messages arrive over Stream mode ([`dingtalk_stream`]) or HTTP callbacks; jobs live in SQLite
//! through [`workflow_core`] (a restart re-runs interrupted jobs and relearns how long requests
//! take); replies, pushes, progress cards and file downloads go through [`dingtalk_sender`].
//! A result DingTalk did not deliver (the user invalid, flow-controlled past the retries, or no
//! `senderStaffId` to push to) fails the job with the reason, and the user is told in the
//! conversation while its session webhook is valid ([`deliver`]).

pub mod bot;
pub mod config;
pub mod deliver;
pub mod estimate;
pub mod incoming;
pub mod processor;
pub mod progress;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use dingtalk_sender::DingTalkSender;
use dingtalk_stream::{StreamClient, StreamConfig};
use workflow_core::{
    AsyncTaskConfig, AsyncTaskManager, Engine, EngineConfig, ExponentialBackoff, Jitter,
    SqliteStore, Store,
};

pub use config::{Cli, Config, Mode, ProcessorKind, figment_for};

fn processor(
    config: &Config,
    ca_pem: Option<&[u8]>,
) -> anyhow::Result<Arc<dyn processor::Processor>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut client = reqwest::Client::builder().timeout(config.task_timeout);
    if let Some(pem) = ca_pem {
        client = client.tls_certs_merge(
            reqwest::Certificate::from_pem_bundle(pem).context("while reading ca_file")?,
        );
    }
    let client = client.build()?;
    Ok(match config.processor {
        ProcessorKind::Echo => Arc::new(processor::Echo {
            delay: config.echo_delay,
        }),
        ProcessorKind::Command => Arc::new(processor::CommandProcessor {
            argv: config
                .processor_command
                .clone()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        }),
        ProcessorKind::Http => Arc::new(processor::HttpProcessor {
            url: config.processor_url.clone().unwrap_or_default(),
            field: "result".into(),
            client,
        }),
        ProcessorKind::Openai => Arc::new(processor::OpenAiProcessor {
            base_url: config.openai_base_url.clone(),
            model: config.openai_model.clone(),
            api_key: std::env::var("OPENAI_API_KEY")
                .context("--processor openai needs OPENAI_API_KEY")?,
            client,
        }),
    })
}

/// Runs the bot until `shutdown` completes.
///
/// # Errors
///
/// Startup failures: data directory, database, DingTalk client, HTTP listener.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("while creating {}", config.data_dir.display()))?;
    let store: Arc<dyn Store> = match config.database()? {
        config::Database::Sqlite(path) => Arc::new(
            SqliteStore::open_path(&path)
                .with_context(|| format!("while opening the job database {}", path.display()))?,
        ),
        config::Database::Postgres { url, pool_size } => {
            let shown = workflow_core::store::redact_database_url(&url);
            let mut pg = workflow_core::PostgresConfig::new(url);
            pg.pool_size = pool_size;
            Arc::new(
                workflow_core::PostgresStore::connect(pg)
                    .await
                    .with_context(|| format!("while connecting to the job database {shown}"))?,
            )
        }
    };
    let ca_pem = match &config.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("while reading ca_file {}", path.display()))?,
        ),
        None => None,
    };
    let mut sender = DingTalkSender::builder()
        .client_id(config.client_id.clone())
        .client_secret(config.client_secret.clone())
        .api_base(config.api_base.clone())
        .oapi_base(config.oapi_base.clone())
        .flow_control_retries(config.flow_control_retries);
    if let Some(code) = &config.robot_code {
        sender = sender.robot_code(code.clone());
    }
    if let Some(pem) = &ca_pem {
        sender = sender.add_root_certificates_pem(pem.clone());
    }
    let sender = sender
        .build()
        .context("while building the DingTalk client")?;
    let settings = bot::BotSettings {
        sync_deadline: config.sync_deadline,
        task_timeout: config.task_timeout,
        max_jobs_per_user: config.max_jobs_per_user,
        files_dir: config.data_dir.join("files"),
        card_template_id: config.card_template_id.clone().filter(|t| !t.is_empty()),
        card_update_interval: config.card_update_interval,
        ..bot::BotSettings::default()
    };
    let stats = workflow_core::DurationStats::default();
    match estimate::learn_durations(store.as_ref(), &stats).await {
        Ok(n) => tracing::info!(jobs = n, "learnt request durations from finished jobs"),
        Err(e) => tracing::warn!(error = %e, "could not read finished jobs; durations start empty"),
    }
    let handler = Arc::new(bot::BotJobHandler {
        processor: processor(&config, ca_pem.as_deref())?,
        sender: sender.clone(),
        settings: settings.clone(),
        stats: stats.clone(),
    });
    let engine = Engine::builder(store)
        .handler(bot::KIND, handler)
        .config(EngineConfig {
            max_in_flight: config.max_jobs,
            per_target_in_flight: config.max_jobs_per_user,
            lease: std::time::Duration::from_secs(120),
            backoff: ExponentialBackoff::try_new(
                std::time::Duration::from_secs(5),
                std::time::Duration::from_secs(300),
                Jitter::Full,
            )
            .context("while setting the job backoff")?,
            prune_after: Some(std::time::Duration::from_secs(7 * 24 * 3600)),
            shutdown_grace: config.shutdown_grace,
            ..EngineConfig::default()
        })
        .start();
    let tasks = AsyncTaskManager::with_stats(
        engine.clone(),
        AsyncTaskConfig {
            keywords: config.keywords.clone(),
            ..AsyncTaskConfig::default()
        },
        stats,
    );
    let bot = bot::Bot {
        engine: engine.clone(),
        tasks,
        sender,
        settings,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let mut receivers = tokio::task::JoinSet::new();
    let stop = tokio_util::sync::CancellationToken::new();
    match config.mode {
        Mode::Stream => {
            let mut stream =
                StreamConfig::new(config.client_id.clone(), config.client_secret.clone())
                    .api_base(config.api_base.clone());
            if let Some(pem) = &ca_pem {
                stream = stream.add_root_certificates_pem(pem.clone());
            }
            let (handle, mut incoming) = StreamClient::new(stream)
                .context("while building the Stream client")?
                .start();
            let tx = tx.clone();
            let stop = stop.clone();
            receivers.spawn(async move {
                loop {
                    tokio::select! {
                        m = incoming.recv() => match m {
                            Some(m) => { if tx.send(m).await.is_err() { break; } }
                            None => break,
                        },
                        () = stop.cancelled() => break,
                    }
                }
                handle.shutdown().await;
            });
        }
        Mode::Http => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("while listening on {}", config.listen))?;
            tracing::info!(addr = %config.listen, "HTTP callback mode: DingTalk should POST to /dingtalk");
            let app = axum::Router::new().nest(
                "/dingtalk",
                dingtalk_stream::callback_router(&config.client_secret, tx.clone()),
            );
            let stop = stop.clone();
            receivers.spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
            });
        }
    }
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("while listening on {addr} for metrics"))?;
        let handle = metrics_handle();
        // Histograms are drained on upkeep: keep doing it even if nobody scrapes.
        let upkeep = handle.clone();
        let upkeep_stop = stop.clone();
        receivers.spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = every.tick() => upkeep.run_upkeep(),
                    () = upkeep_stop.cancelled() => break,
                }
            }
        });
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        );
        let stop = stop.clone();
        tracing::info!(addr = %addr, "metrics on GET /metrics");
        receivers.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
    }
    drop(tx);
    tracing::info!(mode = ?config.mode, processor = ?config.processor, "dingtalk bot running");
    let mut handlers = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(incoming) => {
                    let bot = bot.clone();
                    handlers.spawn(async move { bot.handle(incoming.message).await });
                }
                None => break,
            },
            Some(_) = handlers.join_next(), if !handlers.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    stop.cancel();
    while receivers.join_next().await.is_some() {}
    while handlers.join_next().await.is_some() {}
    engine.shutdown().await;
    tracing::info!("dingtalk bot stopped");
    Ok(())
}

pub use workflow_core::shutdown_signal;

/// The process-wide Prometheus recorder, installed on first use (later bots in the same process
/// share it). Bot counters: `bot_jobs_finished_total{outcome}` (`delivered`, `undelivered`,
/// `failed`, `timed_out`, `cancelled`, `push_failed`) and
/// `bot_results_undelivered_total{reason}`; the engine's `workflow_*` metrics come along.
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// Installs the tracing subscriber (RUST_LOG, default `info`).
pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if format == "json" {
        b.json().flatten_event(true).try_init()
    } else {
        b.try_init()
    };
}
