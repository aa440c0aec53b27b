//! The DingTalk bot binary: parse flags, load configuration, install tracing, run.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = dingtalk_bot::Cli::parse();
    let config = match dingtalk_bot::Config::load(&dingtalk_bot::figment_for(&cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dingtalk-bot: {e}");
            return ExitCode::from(2);
        }
    };
    service_kit::init_tracing(config.log_format, "info");
    match dingtalk_bot::run(config, dingtalk_bot::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dingtalk-bot: {e:#}");
            ExitCode::from(1)
        }
    }
}
