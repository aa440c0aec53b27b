//! The dispatcher binary: parse flags, load configuration, install tracing, run.

use std::ops::ControlFlow;
use std::process::ExitCode;

use clap::Parser;
use dispatcher::{Cli, Config, figment_for};

const MAIN: service_kit::ServiceMain = service_kit::ServiceMain {
    name: "dispatcher",
    default_filter: "info,tower_http=warn",
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, telemetry) = match MAIN.start(
        cli.service.command.as_ref(),
        || Config::database_only(&figment_for(&cli)),
        || Config::load(&figment_for(&cli)),
        |c| c.log_format,
    ) {
        ControlFlow::Continue(started) => started,
        ControlFlow::Break(code) => return code,
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dispatcher: cannot listen on {}: {e}", config.listen);
            return ExitCode::from(1);
        }
    };
    // SIGHUP reads the same file and environment again (the routing rules).
    let source: dispatcher::ConfigSource = Box::new(move || Config::load(&figment_for(&cli)));
    let result = dispatcher::run_reloading(
        config,
        listener,
        dispatcher::shutdown_signal(),
        Some(source),
    )
    .await;
    // Sends the spans still batched before the process exits.
    drop(telemetry);
    MAIN.exit(result)
}

// jemalloc: with glibc's allocator malloc and free were about 17 % of the dispatcher's CPU
// under a steady load (perf); jemalloc takes about a quarter off the CPU per task for 2 % more
// memory with 10,000 deliveries in flight, where mimalloc took 40 % more (docs/BENCHMARKS.md).
#[cfg(all(not(target_env = "msvc"), not(target_os = "windows")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
