//! The DingTalk bot binary: parse flags, load configuration, install tracing, run.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = dingtalk_bot::Cli::parse();
    if let Some(command) = &cli.command {
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
    service_kit::init_tracing(config.log_format, "info");
    service_kit::raise_open_file_limit();
    match dingtalk_bot::run(config, dingtalk_bot::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dingtalk-bot: {}", service_kit::error_chain(&e));
            ExitCode::from(1)
        }
    }
}
