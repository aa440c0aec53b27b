//! What the bundled services (`dispatcher`, `dingtalk-bot`) share, written once: layered
//! configuration, tracing setup (with OpenTelemetry export over OTLP when the standard
//! `OTEL_*` variables ask for it: [`telemetry`]), the Prometheus recorder, opening the store a
//! `database_url` names, the HTTP listener with its limits and the tower-http stack in front
//! of an API's router ([`ApiLayers`]: request ids, redaction, request spans, body limit,
//! timeout, panic recovery), the shutdown signal, and the secrets generated on first start
//! into the data directory ([`secrets`]).
//!
//! This crate is for binaries. Unlike the libraries under them it may touch process state
//! (it installs the global tracing subscriber and metrics recorder, and for an `https://` OTLP
//! endpoint rustls' ring provider), and only when asked to.
//!
//! # Example
//!
//! ```no_run
//! use service_kit::{LogFormat, init_tracing, open_store, shutdown_signal};
//! use workflow_core::store::Database;
//!
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! init_tracing(LogFormat::Human, "info");
//! let database = Database::from_url(None, "./data/jobs.db".into(), 8)?;
//! let opened = open_store(&database, 8).await?;
//! tracing::info!(database = %opened.shown, "store open");
//! shutdown_signal().await;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! - `store` (default): [`open_store`], the `backup` command and [`ServiceMain`] (a service's
//!   `main` around its `run`), over `workflow-core`.
//! - `egress` (default): with `store`, the settings both services share ([`service_settings!`],
//!   [`egress_proxy`], [`database`]), over `webhook-client`'s egress proxy.
//! - `otlp-grpc`: OTLP over gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`) beside the default
//!   HTTP/protobuf; off by default because it brings in tonic.

mod api_layers;
mod config;
mod http;
mod logging;
mod metrics_recorder;
mod report;
pub mod secrets;
#[cfg(feature = "store")]
mod service_main;
#[cfg(all(feature = "store", feature = "egress"))]
mod settings;
mod shutdown;
#[cfg(feature = "store")]
mod store;
pub mod telemetry;

pub use api_layers::{ApiLayers, RemoteParent, on_response, request_span};
pub use config::{ConfigError, OneOrMany, ServiceFlags, layered};
pub use http::{HttpLimits, raise_open_file_limit, serve, serve_tls};
pub use logging::{LogFormat, init_tracing, init_tracing_with};
pub use metrics_recorder::{MetricsUpkeep, prometheus};
pub use report::error_chain;
#[cfg(feature = "store")]
pub use service_main::ServiceMain;
#[cfg(all(feature = "store", feature = "egress"))]
pub use settings::{check_store_sizes, database, egress_proxy, extract};
pub use shutdown::shutdown_signal;
#[cfg(feature = "store")]
pub use store::{AdminCommand, OpenedStore, open_store, run_admin};
pub use telemetry::Telemetry;

/// What [`service_settings!`] names from the crates under this one, so a service need not.
#[cfg(all(feature = "store", feature = "egress"))]
#[doc(hidden)]
pub mod __private {
    pub use figment::Figment;
    pub use webhook_client::EgressProxy;
    pub use workflow_core::store::{Database, redact_database_url};
}
