//! The DingTalk bot binary: parse flags, load configuration, install tracing, run.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = dingtalk_bot::Cli::parse();
    if let Some(command) = &cli.service.command {
        return match dingtalk_bot::Config::database_only(&dingtalk_bot::figment_for(&cli))
            .map_err(anyhow::Error::from)
            .and_then(|database| service_kit::run_admin(command, &database))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dingtalk-bot: {}", service_kit::error_chain(&e));
                ExitCode::from(1)
            }
        };
    }
    let config = match dingtalk_bot::Config::load(&dingtalk_bot::figment_for(&cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dingtalk-bot: {e}");
            return ExitCode::from(2);
        }
    };
    // Traces are exported only when the standard OTEL_* variables ask for it.
    let telemetry = service_kit::Telemetry::from_env("dingtalk-bot").unwrap_or_else(|e| {
        eprintln!("dingtalk-bot: {e}; traces are not exported");
        None
    });
    service_kit::init_tracing_with(config.log_format, "info", telemetry.as_ref());
    service_kit::raise_open_file_limit();
    let result = dingtalk_bot::run(config, dingtalk_bot::shutdown_signal()).await;
    // Sends the spans still batched before the process exits.
    drop(telemetry);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dingtalk-bot: {}", service_kit::error_chain(&e));
            ExitCode::from(1)
        }
    }
}
