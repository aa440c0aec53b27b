//! The tracing subscriber of a service.

use serde::{Deserialize, Serialize};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::telemetry::{SPAN_TARGET, Telemetry};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber, filtered by `RUST_LOG` (else `default_filter`, e.g.
/// `"info,tower_http=warn"`): human-readable lines, or one JSON object per line with the
/// event's fields under `fields`. Not flattened, because events carry a `target` field (the
/// delivery target) that would collide with the log target. A second call does nothing.
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    init_tracing_with(format, default_filter, None);
}

/// [`init_tracing`], and with `telemetry` an OpenTelemetry layer beside the log output.
///
/// The two are filtered apart: the logs by `RUST_LOG` as ever (never showing the export spans,
/// target [`SPAN_TARGET`]), the export by level (`info` and above), so `RUST_LOG=warn` keeps
/// the traces whole. Without `telemetry` the subscriber is exactly [`init_tracing`]'s.
pub fn init_tracing_with(format: LogFormat, default_filter: &str, telemetry: Option<&Telemetry>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter))
        .add_directive(
            format!("{SPAN_TARGET}=off")
                .parse()
                .expect("a constant directive parses"),
        );
    let Some(telemetry) = telemetry else {
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        let _ = match format {
            LogFormat::Human => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
        return;
    };
    let export = telemetry
        .layer()
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(export);
    let _ = match format {
        LogFormat::Human => registry
            .with(tracing_subscriber::fmt::layer().with_filter(filter))
            .try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_filter(filter))
            .try_init(),
    };
}
