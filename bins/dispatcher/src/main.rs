//! The dispatcher binary: parse flags, load configuration, install tracing, run.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = dispatcher::Cli::parse();
    if let Some(command) = &cli.service.command {
        return match dispatcher::Config::database_only(&dispatcher::figment_for(&cli))
            .map_err(anyhow::Error::from)
            .and_then(|database| service_kit::run_admin(command, &database))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dispatcher: {}", service_kit::error_chain(&e));
                ExitCode::from(1)
            }
        };
    }
    let config = match dispatcher::Config::load(&dispatcher::figment_for(&cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dispatcher: {e}");
            return ExitCode::from(2);
        }
    };
    // Traces are exported only when the standard OTEL_* variables ask for it.
    let telemetry = service_kit::Telemetry::from_env("dispatcher").unwrap_or_else(|e| {
        eprintln!("dispatcher: {e}; traces are not exported");
        None
    });
    dispatcher::init_tracing(config.log_format, telemetry.as_ref());
    service_kit::raise_open_file_limit();
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dispatcher: cannot listen on {}: {e}", config.listen);
            return ExitCode::from(1);
        }
    };
    // SIGHUP reads the same file and environment again (the routing rules).
    let source: dispatcher::ConfigSource =
        Box::new(move || dispatcher::Config::load(&dispatcher::figment_for(&cli)));
    let result = dispatcher::run_reloading(
        config,
        listener,
        dispatcher::shutdown_signal(),
        Some(source),
    )
    .await;
    // Sends the spans still batched before the process exits.
    drop(telemetry);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispatcher: {}", service_kit::error_chain(&e));
            ExitCode::from(1)
        }
    }
}

// jemalloc: with glibc's allocator malloc and free were about 17 % of the dispatcher's CPU
// under a steady load (perf); jemalloc takes about a quarter off the CPU per task for 2 % more
// memory with 10,000 deliveries in flight, where mimalloc took 40 % more (docs/BENCHMARKS.md).
#[cfg(all(not(target_env = "msvc"), not(target_os = "windows")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
