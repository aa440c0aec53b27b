//! The DingTalk bot: [`async_tasks`] wired to DingTalk. Messages arrive over Stream mode
//! ([`dingtalk_stream`]) or HTTP callbacks and are read by [`incoming`] (`async_tasks`'); jobs
//! live in SQLite or PostgreSQL through [`workflow_core`]; replies, pushes, progress cards and file downloads go through
//! [`async_tasks::DingTalkPush`] over [`dingtalk_sender`].
//!
//! Prometheus metrics (with `metrics_listen`): the bot's `bot_jobs_finished_total{outcome}` and
//! `bot_results_undelivered_total{reason}`, and the engine's `workflow_*`.

pub mod config;
pub use async_tasks::incoming;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_tasks::processor::Egress;
use async_tasks::{
    AsyncTaskConfig, AsyncTaskManager, Bot, BotJobHandler, BotSettings, DingTalkPush,
    DurationStats, Processor, processor,
};
use dingtalk_sender::DingTalkSender;
use dingtalk_stream::{EgressProxy, StreamClient, StreamConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use workflow_core::{Engine, EngineConfig, ExponentialBackoff, Jitter};

pub use config::{Cli, Config, Mode, ProcessorKind, figment_for};
pub use service_kit::shutdown_signal;

/// How a call to `url` leaves: through the configured proxy, directly (its `NO_PROXY` list), or
/// as the environment says when no proxy is configured.
fn egress_for(proxy: Option<&EgressProxy>, url: &str) -> Egress {
    let Some(proxy) = proxy else {
        return Egress::Environment;
    };
    match url::Url::parse(url)
        .ok()
        .and_then(|u| proxy.for_url(&u).cloned())
    {
        Some(via) => Egress::Proxy(via.to_string()),
        None => Egress::Direct,
    }
}

fn processor(
    config: &Config,
    ca_pem: Option<&[u8]>,
    proxy: Option<&EgressProxy>,
) -> anyhow::Result<Arc<dyn Processor>> {
    let client = |url: &str| {
        processor::http_client(config.task_timeout, ca_pem, egress_for(proxy, url))
            .context("while building the HTTP client")
    };
    Ok(match config.processor {
        ProcessorKind::Echo => Arc::new(processor::Echo {
            delay: config.echo_delay,
        }),
        ProcessorKind::Command => Arc::new(processor::CommandProcessor {
            argv: config
                .processor_command
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        }),
        ProcessorKind::Http => Arc::new(processor::HttpProcessor {
            url: config.processor_url.clone().unwrap_or_default(),
            field: "result".into(),
            client: client(config.processor_url.as_deref().unwrap_or_default())?,
        }),
        ProcessorKind::Openai => Arc::new(processor::OpenAiProcessor {
            base_url: config.openai_base_url.clone(),
            model: config.openai_model.clone(),
            api_key: std::env::var("OPENAI_API_KEY")
                .context("--processor openai needs OPENAI_API_KEY")?,
            client: client(&config.openai_base_url)?,
        }),
    })
}

fn sender(
    config: &Config,
    ca_pem: Option<&[u8]>,
    proxy: Option<&EgressProxy>,
) -> anyhow::Result<DingTalkSender> {
    let mut sender = DingTalkSender::builder()
        .client_id(config.client_id.clone())
        .client_secret(config.client_secret.clone())
        .api_base(config.api_base.clone())
        .oapi_base(config.oapi_base.clone())
        .flow_control_retries(config.flow_control_retries);
    if let Some(code) = &config.robot_code {
        sender = sender.robot_code(code.clone());
    }
    if let Some(pem) = ca_pem {
        sender = sender.add_root_certificates_pem(pem.to_vec());
    }
    match egress_for(proxy, &config.api_base) {
        Egress::Proxy(url) => sender = sender.proxy(url),
        Egress::Direct => sender = sender.direct(),
        Egress::Environment => {}
    }
    sender.build().context("while building the DingTalk client")
}

fn engine_config(config: &Config) -> EngineConfig {
    EngineConfig {
        max_in_flight: config.max_jobs,
        per_target_in_flight: config.max_jobs_per_user,
        lease: Duration::from_secs(120),
        backoff: ExponentialBackoff::try_new(
            Duration::from_secs(5),
            Duration::from_secs(300),
            Jitter::Full,
        )
        .expect("5 s to 300 s is a valid backoff"),
        prune_after: Some(Duration::from_secs(7 * 24 * 3600)),
        shutdown_grace: config.shutdown_grace,
        ..EngineConfig::default()
    }
}

/// Starts the message source (Stream socket or HTTP callbacks) forwarding into `tx` until
/// `stop`, owned by `tasks`.
async fn receive(
    config: &Config,
    ca_pem: Option<&[u8]>,
    proxy: Option<&EgressProxy>,
    tx: tokio::sync::mpsc::Sender<dingtalk_stream::Incoming>,
    stop: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    match config.mode {
        Mode::Stream => {
            let mut stream =
                StreamConfig::new(config.client_id.clone(), config.client_secret.clone())
                    .api_base(config.api_base.clone());
            if let Some(pem) = ca_pem {
                stream = stream.add_root_certificates_pem(pem.to_vec());
            }
            if let Some(proxy) = proxy {
                tracing::info!(%proxy, "the Stream WebSocket goes through the proxy");
                stream = stream.proxy(proxy.clone());
            }
            let (handle, mut incoming) = StreamClient::new(stream)
                .context("while building the Stream client")?
                .start();
            tasks.spawn(async move {
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
                dingtalk_stream::callback_router(&config.client_secret, tx),
            );
            tasks.spawn(serve(listener, app, config.http_limits()?, stop));
        }
    }
    Ok(())
}

async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: service_kit::HttpLimits,
    stop: CancellationToken,
) {
    service_kit::serve(listener, app, limits, stop.cancelled_owned()).await;
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
    let store = service_kit::open_store(&config.database()?, config.sqlite_cache_mib)
        .await
        .context("while opening the job database")?
        .store;
    let ca_pem = match &config.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("while reading ca_file {}", path.display()))?,
        ),
        None => None,
    };
    let proxy = config.egress_proxy()?;
    if let Some(proxy) = &proxy {
        tracing::info!(%proxy, "outgoing calls go through the egress proxy");
    }
    let push = Arc::new(DingTalkPush::new(sender(
        &config,
        ca_pem.as_deref(),
        proxy.as_ref(),
    )?));
    let settings = BotSettings {
        sync_deadline: config.sync_deadline,
        task_timeout: config.task_timeout,
        max_jobs_per_user: config.max_jobs_per_user,
        files_dir: config.data_dir.join("files"),
        card_template_id: config.card_template_id.clone().filter(|t| !t.is_empty()),
        card_update_interval: config.card_update_interval,
        ..BotSettings::default()
    };
    let processor = processor(&config, ca_pem.as_deref(), proxy.as_ref())?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("while listening on {addr} for metrics"))?,
        ),
        None => None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let mut receivers = JoinSet::new();
    let stop = CancellationToken::new();
    if let Err(e) = receive(
        &config,
        ca_pem.as_deref(),
        proxy.as_ref(),
        tx,
        stop.clone(),
        &mut receivers,
    )
    .await
    {
        stop.cancel();
        while receivers.join_next().await.is_some() {}
        return Err(e);
    }
    let limits = config.http_limits()?;
    let upkeep = metrics.map(|listener| {
        let handle = service_kit::prometheus(&[]);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get({
                let handle = handle.clone();
                move || std::future::ready(handle.render())
            }),
        );
        tracing::info!(addr = ?listener.local_addr().ok(), "metrics on GET /metrics");
        receivers.spawn(serve(listener, app, limits, stop.clone()));
        // Histograms are drained on upkeep: keep doing it even if nobody scrapes.
        service_kit::MetricsUpkeep::start(handle, Duration::from_secs(5))
    });
    let stats = DurationStats::default();
    let handler = BotJobHandler::new(processor, push.clone(), settings.clone(), stats.clone());
    let engine = Engine::builder(store)
        .handler(async_tasks::KIND, Arc::new(handler))
        .config(engine_config(&config))
        .start();
    let tasks = AsyncTaskManager::with_stats(
        engine.clone(),
        AsyncTaskConfig {
            keywords: config.keywords.0.clone(),
            ..AsyncTaskConfig::default()
        },
        stats,
    );
    match tasks.learn_durations().await {
        Ok(n) => tracing::info!(jobs = n, "learnt request durations from finished jobs"),
        Err(e) => tracing::warn!(error = %e, "could not read finished jobs; durations start empty"),
    }
    let bot = Bot::new(tasks, push, settings);
    tracing::info!(mode = ?config.mode, processor = ?config.processor, "dingtalk bot running");
    let mut handlers = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    let bot = bot.clone();
                    handlers.spawn(async move { incoming::handle(&bot, &m.message).await });
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
    if let Some(upkeep) = upkeep {
        upkeep.stop().await;
    }
    engine.shutdown().await;
    // Commits what is queued and, on SQLite, empties the WAL into the database file.
    engine.store().close().await;
    tracing::info!("dingtalk bot stopped");
    Ok(())
}
