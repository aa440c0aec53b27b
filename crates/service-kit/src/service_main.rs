//! What a service's `main` does around its `run`, written once: an administrative command
//! instead of the service, the configuration or exit 2, tracing (and trace export when the
//! `OTEL_*` variables ask for it), the open-file limit, and the exit code of the run.

use std::ops::ControlFlow;
use std::process::ExitCode;

use workflow_core::store::Database;

use crate::{AdminCommand, ConfigError, LogFormat, Telemetry};

/// A service's `main`: its name (the prefix of every message on stderr, and the traces'
/// `service.name`) and its default log filter.
#[derive(Debug, Clone, Copy)]
pub struct ServiceMain {
    /// e.g. `dispatcher`.
    pub name: &'static str,
    /// The log filter when `RUST_LOG` is unset, e.g. `info,tower_http=warn`.
    pub default_filter: &'static str,
}

impl ServiceMain {
    /// Before the service runs. With an administrative `command`, runs it against `database()`
    /// and breaks with its exit code (0, or 1 after printing why). Otherwise loads the
    /// configuration (a bad one: printed, exit code 2), installs the tracing subscriber in
    /// `log_format(&config)` with the OpenTelemetry layer when traces are exported (a bad
    /// `OTEL_*` setting is printed and traces stay off), and raises the open-file limit.
    ///
    /// Continues with the configuration and the telemetry, which must live until the process
    /// exits: dropping it sends the spans still batched.
    pub fn start<C>(
        &self,
        command: Option<&AdminCommand>,
        database: impl FnOnce() -> Result<Database, ConfigError>,
        load: impl FnOnce() -> Result<C, ConfigError>,
        log_format: impl FnOnce(&C) -> LogFormat,
    ) -> ControlFlow<ExitCode, (C, Option<Telemetry>)> {
        if let Some(command) = command {
            let result = database()
                .map_err(anyhow::Error::from)
                .and_then(|database| crate::run_admin(command, &database));
            return ControlFlow::Break(self.exit(result));
        }
        let config = match load() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e}", self.name);
                return ControlFlow::Break(ExitCode::from(2));
            }
        };
        // Traces are exported only when the standard OTEL_* variables ask for it.
        let telemetry = Telemetry::from_env(self.name).unwrap_or_else(|e| {
            eprintln!("{}: {e}; traces are not exported", self.name);
            None
        });
        crate::init_tracing_with(log_format(&config), self.default_filter, telemetry.as_ref());
        crate::raise_open_file_limit();
        ControlFlow::Continue((config, telemetry))
    }

    /// The exit code of `result`: 0, or 1 after printing the error and its causes.
    pub fn exit(&self, result: anyhow::Result<()>) -> ExitCode {
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}: {}", self.name, crate::error_chain(&e));
                ExitCode::from(1)
            }
        }
    }
}
