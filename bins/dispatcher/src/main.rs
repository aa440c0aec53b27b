//! The dispatcher binary: parse flags, load configuration, install tracing, run.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = dispatcher::Cli::parse();
    if let Some(command) = &cli.command {
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
    dispatcher::init_tracing(config.log_format);
    service_kit::raise_open_file_limit();
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dispatcher: cannot listen on {}: {e}", config.listen);
            return ExitCode::from(1);
        }
    };
    match dispatcher::run(config, listener, dispatcher::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispatcher: {}", service_kit::error_chain(&e));
            ExitCode::from(1)
        }
    }
}
