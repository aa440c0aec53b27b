//! The DingTalk bot binary: parse flags, load configuration, install tracing, run.

use std::ops::ControlFlow;
use std::process::ExitCode;

use clap::Parser;
use dingtalk_bot::{Cli, Config, figment_for};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let figment = figment_for(&cli);
    let (config, telemetry) = match MAIN.start(
        cli.service.command.as_ref(),
        || Config::database_only(&figment),
        || Config::load(&figment),
        |c| c.log_format,
    ) {
        ControlFlow::Continue(started) => started,
        ControlFlow::Break(code) => return code,
    };
    let result = dingtalk_bot::run(config, dingtalk_bot::shutdown_signal()).await;
    drop(telemetry); // sends the spans still batched
    MAIN.exit(result)
}

/// The bot's messages on stderr start with its name; logs default to `info`.
const MAIN: service_kit::ServiceMain = service_kit::ServiceMain {
    name: "dingtalk-bot",
    default_filter: "info",
};
