//! Configuration: defaults < TOML file < environment (`DINGTALK_*` credentials, `BOT_*` the rest)
//! < command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::Env;
use serde::{Deserialize, Serialize};
pub use service_kit::ConfigError;
use service_kit::{LogFormat, OneOrMany};
pub use workflow_core::store::Database;

/// How messages arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A Stream-mode WebSocket (no public URL needed).
    #[default]
    Stream,
    /// DingTalk POSTs to `listen` (`/dingtalk`).
    Http,
}

/// Which processor answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProcessorKind {
    /// The demo: echoes the request.
    #[default]
    Echo,
    /// A program: prompt on stdin, answer on stdout.
    Command,
    /// An HTTP service.
    Http,
    /// An OpenAI-compatible chat endpoint.
    Openai,
}

/// The bot's settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// App key (`DINGTALK_CLIENT_ID`).
    pub client_id: String,
    /// App secret (`DINGTALK_CLIENT_SECRET`).
    pub client_secret: String,
    /// Robot code (`DINGTALK_ROBOT_CODE`, default: the client id).
    pub robot_code: Option<String>,
    /// OpenAPI base (`DINGTALK_API_BASE`).
    pub api_base: String,
    /// Old API base (`DINGTALK_OAPI_BASE`).
    pub oapi_base: String,
    /// Stream or HTTP callbacks.
    pub mode: Mode,
    /// HTTP mode's address.
    pub listen: SocketAddr,
    /// Where the job database lives (SQLite, unless `database_url` says otherwise).
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (default `<data_dir>/bot.db`) or `postgres://...` (several bot
    /// instances sharing one job database).
    pub database_url: Option<String>,
    /// PostgreSQL connections per instance (ignored for SQLite).
    pub database_pool_size: usize,
    /// Page cache of each SQLite connection (a writer and 4 readers), in MiB: resident memory
    /// grows with the database until the caches are full.
    pub sqlite_cache_mib: u32,
    /// Which processor.
    pub processor: ProcessorKind,
    /// The command processor's program and arguments (whitespace-separated).
    pub processor_command: Option<String>,
    /// The HTTP processor's URL.
    pub processor_url: Option<String>,
    /// The OpenAI-compatible base URL.
    pub openai_base_url: String,
    /// The model.
    pub openai_model: String,
    /// The echo processor's delay (demo of slow work).
    #[serde(with = "humantime_serde")]
    pub echo_delay: Duration,
    /// A job running longer is stopped and the user told.
    #[serde(with = "humantime_serde")]
    pub task_timeout: Duration,
    /// A short request answered within this replies in the conversation; later results are pushed.
    #[serde(with = "humantime_serde")]
    pub sync_deadline: Duration,
    /// Most jobs running at once.
    pub max_jobs: usize,
    /// Most jobs queued or running per user.
    pub max_jobs_per_user: usize,
    /// Keywords that mark a request as long (default: the seed's; a list, or one
    /// comma-separated string).
    pub keywords: OneOrMany,
    /// On shutdown, how long running jobs may take before they are released for the next start.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Most open HTTP connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, counted from when it
    /// opened or finished its previous request: bounds slow senders and idle keep-alive.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Log format: `human` or `json`.
    pub log_format: LogFormat,
    /// A PEM file of CA certificates trusted besides the platform's roots (which on Linux are
    /// the system store, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set), for the OpenAPI, the
    /// Stream socket, file downloads and the processor's HTTP calls.
    pub ca_file: Option<PathBuf>,
    /// With a card template id, long jobs get an interactive progress card instead of text (the
    /// template declares `title`, `status`, `task_id`, `prompt`, `elapsed`, `estimate`, `content`).
    pub card_template_id: Option<String>,
    /// How often a running job's card is updated with the elapsed time.
    #[serde(with = "humantime_serde")]
    pub card_update_interval: Duration,
    /// How many times a push to a flow-controlled user is retried before the result counts as
    /// not delivered.
    pub flow_control_retries: u32,
    /// Serve Prometheus metrics on `GET /metrics` at this address (off by default).
    pub metrics_listen: Option<SocketAddr>,
    /// Proxy for every outgoing call: the OpenAPI, the Stream socket, file downloads and the
    /// processor (`http://` or `socks5://`/`socks5h://`; `https://` for the HTTP calls only),
    /// credentials in the URL, never logged. Unset: `egress_proxy_file`, else the standard
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` variables, else direct.
    pub egress_proxy: Option<String>,
    /// A file whose first line is the proxy URL (credentials kept as a secret file).
    pub egress_proxy_file: Option<PathBuf>,
    /// Hosts that bypass the proxy (`NO_PROXY` syntax); unset: the `NO_PROXY` variable.
    pub egress_no_proxy: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            client_id: String::new(),
            client_secret: String::new(),
            robot_code: None,
            api_base: dingtalk_sender::DEFAULT_API_BASE.into(),
            oapi_base: dingtalk_sender::DEFAULT_OAPI_BASE.into(),
            mode: Mode::Stream,
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database_pool_size: 8,
            sqlite_cache_mib: 8,
            processor: ProcessorKind::Echo,
            processor_command: None,
            processor_url: None,
            openai_base_url: "https://api.openai.com/v1".into(),
            openai_model: "gpt-4o-mini".into(),
            echo_delay: Duration::ZERO,
            task_timeout: Duration::from_secs(1800),
            sync_deadline: Duration::from_secs(60),
            max_jobs: 32,
            max_jobs_per_user: 5,
            keywords: OneOrMany(
                async_tasks::SEED_KEYWORDS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            ),
            shutdown_grace: Duration::from_secs(10),
            max_connections: service_kit::HttpLimits::default().max_connections,
            header_timeout: service_kit::HttpLimits::default().header_timeout,
            log_format: LogFormat::Human,
            ca_file: None,
            card_template_id: None,
            card_update_interval: Duration::from_secs(15),
            flow_control_retries: 3,
            metrics_listen: None,
            egress_proxy: None,
            egress_proxy_file: None,
            egress_no_proxy: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("api_base", &self.api_base)
            .field("mode", &self.mode)
            .field("database_url", &self.shown_database_url())
            .field("processor", &self.processor)
            .field("ca_file", &self.ca_file)
            .field("card_template_id", &self.card_template_id)
            .finish_non_exhaustive()
    }
}

service_kit::service_settings!(Config, database_file = "bot.db");

impl Config {
    /// Extracts and validates the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad setting.
    pub fn load(figment: &Figment) -> Result<Config, ConfigError> {
        let c: Config = service_kit::extract(figment)?;
        if c.client_id.is_empty() || c.client_secret.is_empty() {
            return Err(ConfigError(
                "DINGTALK_CLIENT_ID and DINGTALK_CLIENT_SECRET are required".into(),
            ));
        }
        match c.processor {
            ProcessorKind::Command
                if c.processor_command
                    .as_deref()
                    .is_none_or(|s| s.trim().is_empty()) =>
            {
                return Err(ConfigError(
                    "--processor command needs --processor-command".into(),
                ));
            }
            ProcessorKind::Http if c.processor_url.is_none() => {
                return Err(ConfigError("--processor http needs --processor-url".into()));
            }
            _ => {}
        }
        if c.max_jobs == 0 || c.max_jobs_per_user == 0 {
            return Err(ConfigError(
                "max_jobs and max_jobs_per_user must be at least 1".into(),
            ));
        }
        if c.card_update_interval < Duration::from_secs(1) {
            return Err(ConfigError(
                "card_update_interval must be at least 1s (DingTalk throttles card updates)".into(),
            ));
        }
        c.check_store_sizes()?;
        c.database()?;
        c.http_limits()?;
        Ok(c)
    }
}

/// Command-line flags; each overrides the file and the environment.
#[derive(Debug, Default, clap::Parser, Serialize)]
#[command(
    name = "dingtalk-bot",
    version,
    about = "DingTalk bot: short requests answered at once, long ones pushed later"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "BOT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Stream or HTTP callbacks.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// HTTP mode's address, data directory, job database [default: DATA_DIR/bot.db], pool
    /// size [default: 8].
    #[command(flatten)]
    #[serde(flatten)]
    pub service: service_kit::ServiceFlags,
    /// Processor.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor: Option<ProcessorKind>,
    /// Command for `--processor command`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor_command: Option<String>,
    /// URL for `--processor http`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor_url: Option<String>,
    /// Base URL for `--processor openai`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openai_base_url: Option<String>,
    /// Model for `--processor openai`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openai_model: Option<String>,
    /// Job timeout, e.g. 30m.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_timeout: Option<String>,
    /// Sync deadline, e.g. 60s.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_deadline: Option<String>,
    /// PEM file of extra CA certificates to trust.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Interactive card template for the progress of long jobs.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_template_id: Option<String>,
    /// Serve Prometheus metrics at this address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Defaults, then the TOML file, then the environment, then the flags.
pub fn figment_for(cli: &Cli) -> Figment {
    let credentials = Env::raw()
        .only(&[
            "DINGTALK_CLIENT_ID",
            "DINGTALK_CLIENT_SECRET",
            "DINGTALK_ROBOT_CODE",
            "DINGTALK_API_BASE",
            "DINGTALK_OAPI_BASE",
        ])
        .map(|k| {
            k.as_str()
                .to_lowercase()
                .trim_start_matches("dingtalk_")
                .to_owned()
                .into()
        });
    service_kit::layered(
        Config::default(),
        cli.config.as_deref(),
        [credentials, Env::prefixed("BOT_").ignore(&["config"])],
        cli,
    )
}
