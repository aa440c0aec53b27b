//! `dingtalk-mock`: run the local DingTalk by hand.
//!
//! `dingtalk-mock --listen 127.0.0.1:9090 --client-id ID --client-secret SECRET`
//! `dingtalk-mock --tls --write-ca /tmp/mock-ca.pem` (https and wss, with a throwaway CA)

use std::time::Duration;

use clap::Parser;
use dingtalk_mock::{DingTalkMock, MockConfig, MockTls};

/// A local DingTalk (OpenAPI, session webhooks, custom robot, Stream gateway) on one port.
#[derive(Debug, Parser)]
#[command(name = "dingtalk-mock", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: std::net::SocketAddr,
    /// Accepted Client ID (app key); also the robot code.
    #[arg(long, env = "DINGTALK_CLIENT_ID", default_value = "dingmockclientid")]
    client_id: String,
    /// Accepted Client Secret.
    #[arg(
        long,
        env = "DINGTALK_CLIENT_SECRET",
        hide_env_values = true,
        default_value = "mock-client-secret"
    )]
    client_secret: String,
    /// HTTP mode: POST said messages to this URL instead of delivering them over Stream.
    #[arg(long)]
    http_callback_url: Option<String>,
    /// Per-app per-API calls per second before 403 (0: unlimited).
    #[arg(long, default_value_t = 20)]
    qps_limit: u32,
    /// Seconds between SYSTEM pings (0: none).
    #[arg(long, default_value_t = 30)]
    ping_interval: u64,
    /// Redeliver un-ACKed callbacks after this many seconds (0: never, and a message said
    /// with no connection is lost instead of held for the next one).
    #[arg(long, default_value_t = 60)]
    redelivery_after: u64,
    /// TLS mode: serve https:// and wss:// only. Without --tls-cert, with a certificate for
    /// localhost, 127.0.0.1 and ::1 signed by a throwaway CA generated at start.
    #[arg(long)]
    tls: bool,
    /// TLS mode with this certificate chain (PEM, leaf first) instead of a generated one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The CA (PEM) that signed --tls-cert, for --write-ca.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<std::path::PathBuf>,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, default_value_t = 7200)]
    token_ttl: u64,
    /// Lifetime of Stream tickets, in seconds.
    #[arg(long, default_value_t = 90)]
    ticket_ttl: u64,
    /// Lifetime of session webhooks, in seconds.
    #[arg(long, default_value_t = 5400)]
    session_ttl: u64,
    /// Seconds a socket stays open after SYSTEM disconnect before the mock drops it.
    #[arg(long, default_value_t = 10)]
    disconnect_grace: u64,
    /// Write the CA clients must trust (PEM) to this file (TLS mode), e.g. for SSL_CERT_FILE.
    #[arg(long)]
    write_ca: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let default_secret = args.client_secret == MockConfig::default().client_secret;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(MockTls::Pem {
            cert_chain_pem: std::fs::read_to_string(cert)?,
            key_pem: std::fs::read_to_string(key)?,
            ca_pem: args
                .tls_ca
                .as_ref()
                .map(std::fs::read_to_string)
                .transpose()?,
        }),
        _ if args.tls || args.write_ca.is_some() => Some(MockTls::Generate),
        _ => None,
    };
    let config = MockConfig {
        tls,
        robot_code: args.client_id.clone(),
        client_id: args.client_id,
        client_secret: args.client_secret,
        http_callback_url: args.http_callback_url,
        qps_limit: (args.qps_limit > 0).then_some(args.qps_limit),
        ping_interval: secs(args.ping_interval),
        redelivery_after: secs(args.redelivery_after),
        token_ttl: Duration::from_secs(args.token_ttl),
        ticket_ttl: Duration::from_secs(args.ticket_ttl),
        session_ttl: Duration::from_secs(args.session_ttl),
        disconnect_grace: Duration::from_secs(args.disconnect_grace),
        ..MockConfig::default()
    };
    let mock = DingTalkMock::start_on(args.listen, config).await?;
    let base = mock.base_url();
    if let (Some(path), Some(ca)) = (&args.write_ca, mock.ca_pem()) {
        std::fs::write(path, ca)?;
        println!("  CA written to {}", path.display());
    }
    println!("dingtalk-mock on {base} (use it as both the api and the oapi base URL)");
    // Only the well-known default secrets are printed; a secret you passed stays yours.
    if default_secret {
        let robot = &mock.config().custom_robot;
        println!("  default client secret: {}", mock.config().client_secret);
        println!(
            "  custom robot: access_token={} secret={}",
            robot.access_token,
            robot.secret.as_deref().unwrap_or("-")
        );
    }
    println!("  {:#?}", mock.config());
    println!(
        "  say:    curl -XPOST {base}/_mock/messages -H 'content-type: application/json' \\\n            -d '{{\"text\":\"你好\",\"sender_staff_id\":\"user1\"}}'"
    );
    println!("  outbox: curl {base}/_mock/outbox");
    if mock.ca_pem().is_some() && args.write_ca.is_none() {
        println!(
            "  CA (trust it, e.g. as SSL_CERT_FILE):\n{}",
            mock.ca_pem().unwrap_or_default()
        );
    }
    tokio::signal::ctrl_c().await?;
    mock.shutdown().await;
    Ok(())
}
