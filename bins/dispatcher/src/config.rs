//! Configuration: defaults < TOML file < `DISPATCHER_*` environment < command-line flags.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::Env;
use serde::{Deserialize, Serialize};
pub use service_kit::{ConfigError, LogFormat, OneOrMany};
use webhook_client::EgressProxy;
use workflow_dispatch::channels::{ChannelList, Channels};
use workflow_dispatch::routing::{RouteList, Routes};
use workflow_dispatch::{BreakerOpenPolicy, ClientSettings};

/// The dispatcher's settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the SQLite database and generated secrets live.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (default `<data_dir>/dispatcher.db`) or `postgres://...` (several
    /// dispatchers sharing one database).
    pub database_url: Option<String>,
    /// PostgreSQL connections per instance (ignored for SQLite).
    pub database_pool_size: usize,
    /// Page cache of each SQLite connection (a writer and 4 readers), in MiB: resident memory
    /// grows with the database until the caches are full.
    pub sqlite_cache_mib: u32,
    /// How long a claimed delivery is leased; another instance (or a restart) takes over a task
    /// whose lease ran out, so this bounds how late a dead instance's deliveries resume.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Accepted API keys (Bearer tokens). Empty: one is generated and stored in the data dir.
    pub api_keys: OneOrMany,
    /// `whsec_...` secrets to sign with (first signs; all sign during rotation). Empty: generated.
    pub signing_secret: OneOrMany,
    /// CIDRs a webhook may target even though they are not public (e.g. `127.0.0.0/8`).
    pub allowed_target_cidrs: OneOrMany,
    /// Fixed addresses for webhook hosts, `HOST=IP:PORT` each, like curl's `--resolve`: for
    /// split-horizon networks and tests. The SSRF guard still checks the address.
    pub resolve: OneOrMany,
    /// Proxy for every webhook and chat delivery (`http://`, `https://` or `socks5://`,
    /// credentials in the URL, never logged). Unset: the standard `HTTPS_PROXY`,
    /// `HTTP_PROXY`, `ALL_PROXY` variables, else direct. The SSRF guard checks the target.
    pub egress_proxy: Option<String>,
    /// A file whose first line is the proxy URL (for credentials kept as a secret file), read
    /// when `egress_proxy` is unset.
    pub egress_proxy_file: Option<PathBuf>,
    /// Hosts that bypass the proxy (`NO_PROXY` syntax); unset: the `NO_PROXY` variable.
    pub egress_no_proxy: Option<String>,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First retry delay.
    #[serde(with = "humantime_serde")]
    pub base_retry_delay: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// Most tasks not yet final; past it new tasks get 503.
    pub task_queue_size: u64,
    /// Most deliveries in flight.
    pub max_in_flight: usize,
    /// Most deliveries in flight to one target.
    pub per_target_in_flight: usize,
    /// Total timeout of one delivery attempt.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// HTTP statuses never retried (default: none, the seed retries every non-2xx).
    pub permanent_statuses: Vec<u16>,
    /// Base URL receivers use to call back (default `http://<listen>`).
    pub public_url: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// New tasks for a target whose breaker is open.
    pub breaker_open_policy: BreakerOpenPolicy,
    /// How long a target's circuit breaker stays open after it trips (doubles on repeated trips,
    /// up to 20 times this).
    #[serde(with = "humantime_serde")]
    pub breaker_open_wait: Duration,
    /// Final tasks are deleted after this long.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How long shutdown waits for deliveries in flight.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Most open HTTP connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, counted from when it
    /// opened or finished its previous request: bounds slow senders and idle keep-alive.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Preset delivery channels (`[[channels]]` or `[channels.<name>]`; see
    /// `workflow_dispatch::channels`).
    pub channels: ChannelList,
    /// Routing rules (`[[routes]]`) for tasks whose request names no target: the first whose
    /// `when` matches decides which channels hear of the task (see
    /// `workflow_dispatch::routing`). Reloaded on SIGHUP.
    pub routes: RouteList,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database_pool_size: 16,
            sqlite_cache_mib: 8,
            lease: Duration::from_secs(60),
            api_keys: OneOrMany::default(),
            signing_secret: OneOrMany::default(),
            allowed_target_cidrs: OneOrMany::default(),
            egress_proxy: None,
            egress_proxy_file: None,
            egress_no_proxy: None,
            resolve: OneOrMany::default(),
            max_retries: 3,
            base_retry_delay: Duration::from_secs(30),
            max_retry_delay: Duration::from_secs(3600),
            task_queue_size: 100_000,
            max_in_flight: 512,
            per_target_in_flight: 64,
            delivery_timeout: Duration::from_secs(30),
            permanent_statuses: Vec::new(),
            public_url: None,
            log_format: LogFormat::Human,
            breaker_open_policy: BreakerOpenPolicy::Reject,
            breaker_open_wait: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            shutdown_grace: Duration::from_secs(10),
            max_connections: service_kit::HttpLimits::default().max_connections,
            header_timeout: service_kit::HttpLimits::default().header_timeout,
            channels: ChannelList::default(),
            routes: RouteList::default(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |l: &OneOrMany| format!("<{} redacted>", l.0.len());
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.shown_database_url())
            .field("database_pool_size", &self.database_pool_size)
            .field("lease", &self.lease)
            .field("api_keys", &redacted(&self.api_keys))
            .field("signing_secret", &redacted(&self.signing_secret))
            .field("allowed_target_cidrs", &self.allowed_target_cidrs)
            .field("resolve", &self.resolve)
            .field(
                "egress_proxy",
                &self.egress_proxy().ok().flatten().map(|p| p.to_string()),
            )
            .field("egress_no_proxy", &self.egress_no_proxy)
            .field("max_retries", &self.max_retries)
            .field("base_retry_delay", &self.base_retry_delay)
            .field("max_retry_delay", &self.max_retry_delay)
            .field("task_queue_size", &self.task_queue_size)
            .field("max_in_flight", &self.max_in_flight)
            .field("per_target_in_flight", &self.per_target_in_flight)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("public_url", &self.public_url)
            .field("breaker_open_policy", &self.breaker_open_policy)
            .field("channels", &self.channels)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

pub use workflow_core::store::Database;

service_kit::service_settings!(Config, database_file = "dispatcher.db");

impl Config {
    /// The delivery client's settings, with `egress_proxy` (see [`Config::egress_proxy`]).
    pub fn client_settings(&self, egress_proxy: Option<EgressProxy>) -> ClientSettings {
        ClientSettings {
            timeout: self.delivery_timeout,
            allowed_target_cidrs: self.allowed_target_cidrs.0.clone(),
            resolve: self.resolve.0.clone(),
            egress_proxy,
            breaker_open_wait: self.breaker_open_wait,
            permanent_statuses: self.permanent_statuses.clone(),
            idle_connections_per_target: self.per_target_in_flight,
        }
    }

    /// Extracts and validates the configuration from a figment (see [`figment_for`]).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad setting.
    pub fn load(figment: &Figment) -> Result<Config, ConfigError> {
        let config: Config = service_kit::extract(figment)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.base_retry_delay > self.max_retry_delay {
            return Err(ConfigError(
                "base_retry_delay must not exceed max_retry_delay".into(),
            ));
        }
        if self.max_retry_delay.is_zero() {
            return Err(ConfigError(
                "max_retry_delay must be greater than zero".into(),
            ));
        }
        if self.max_in_flight == 0 || self.per_target_in_flight == 0 || self.task_queue_size == 0 {
            return Err(ConfigError(
                "max_in_flight, per_target_in_flight and task_queue_size must be at least 1".into(),
            ));
        }
        self.check_store_sizes()?;
        if self.lease < Duration::from_secs(1) {
            return Err(ConfigError("lease must be at least 1s".into()));
        }
        self.client_settings(None)
            .check()
            .map_err(|e| ConfigError(e.to_string()))?;
        self.egress_proxy()?;
        for s in &self.signing_secret.0 {
            webhook_client::SigningSecret::parse(s).map_err(|_| {
                ConfigError("signing_secret: must be whsec_ followed by base64".into())
            })?;
        }
        if let Some(url) = &self.public_url {
            task_package::check_url(url).map_err(|r| ConfigError(format!("public_url: {r}")))?;
        }
        self.database()?;
        self.http_limits()?;
        // Values only: secrets are read and clients built once, by `App::start`.
        Channels::check(&self.channels).map_err(|e| ConfigError(e.0))?;
        self.routing()?;
        Ok(())
    }

    /// The routing rules, checked against the configured channels' names.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming every bad rule (see [`Routes::new`]).
    pub fn routing(&self) -> Result<Routes, ConfigError> {
        Routes::new(&self.routes, |name| {
            self.channels.0.iter().any(|c| c.name == name)
        })
        .map_err(|e| ConfigError(e.to_string()))
    }

    /// The base URL of callback links.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }
}

/// Command-line flags. Each overrides the same setting from the file and the environment.
#[derive(Debug, Default, clap::Parser, Serialize)]
#[command(
    name = "dispatcher",
    version,
    about = "Closed-loop task dispatcher: signed webhooks with retries, breakers and callbacks"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "DISPATCHER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080], data directory [default: ./data], database
    /// [default: DATA_DIR/dispatcher.db], pool size [default: 16].
    #[command(flatten)]
    #[serde(flatten)]
    pub service: service_kit::ServiceFlags,
    /// Lease of a claimed delivery, e.g. 60s [default: 60s].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// API keys, comma-separated.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<String>,
    /// Signing secrets (whsec_...), comma-separated.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// Non-public CIDRs webhooks may target, comma-separated (e.g. 127.0.0.0/8).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_target_cidrs: Option<String>,
    /// Fixed addresses for webhook hosts, `HOST=IP:PORT`, comma-separated (like curl's --resolve).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve: Option<String>,
    /// Retries after the first attempt [default: 3].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// First retry delay, e.g. 30s [default: 30s].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_retry_delay: Option<String>,
    /// Longest retry delay, e.g. 1h [default: 1h].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retry_delay: Option<String>,
    /// Most tasks not yet final [default: 100000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_queue_size: Option<u64>,
    /// Most deliveries in flight [default: 512].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Most deliveries in flight per target [default: 64].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_target_in_flight: Option<usize>,
    /// Timeout of one delivery attempt [default: 30s].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_timeout: Option<String>,
    /// Base URL for callback links [default: http://LISTEN].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// New tasks for a target whose breaker is open: reject (503) or queue.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker_open_policy: Option<BreakerOpenPolicy>,
}

/// The layered figment: defaults, then the TOML file, then `DISPATCHER_*`, then flags.
pub fn figment_for(cli: &Cli) -> Figment {
    service_kit::layered(
        Config::default(),
        cli.config.as_deref(),
        [Env::prefixed("DISPATCHER_").ignore(&["config"])],
        cli,
    )
}
