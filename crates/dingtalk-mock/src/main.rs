//! `dingtalk-mock`: run the local DingTalk by hand.

use clap::Parser;

/// A local DingTalk (OpenAPI, session webhooks, custom robot, Stream gateway) on one port.
#[derive(Debug, Parser)]
#[command(name = "dingtalk-mock", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: std::net::SocketAddr,
    /// Accepted client id (app key).
    #[arg(long, default_value = "dingmockclientid")]
    client_id: String,
    /// Accepted client secret.
    #[arg(long, default_value = "mock-client-secret")]
    client_secret: String,
    /// Deliver said messages by HTTP POST to this URL (HTTP mode) instead of over Stream.
    #[arg(long)]
    http_callback_url: Option<String>,
    /// Seconds between SYSTEM pings (0: none).
    #[arg(long, default_value_t = 30)]
    ping_interval: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let config = dingtalk_mock::MockConfig {
        robot_code: args.client_id.clone(),
        client_id: args.client_id,
        client_secret: args.client_secret,
        http_callback_url: args.http_callback_url,
        ping_interval: (args.ping_interval > 0)
            .then(|| std::time::Duration::from_secs(args.ping_interval)),
        ..dingtalk_mock::MockConfig::default()
    };
    let mock = dingtalk_mock::DingTalkMock::start_on(args.listen, config.clone()).await?;
    println!(
        "dingtalk-mock listening on {} (use it as DINGTALK_API_BASE and DINGTALK_OAPI_BASE)",
        mock.base_url()
    );
    println!(
        "  client id {:?}, client secret {:?}, robot code {:?}",
        config.client_id, config.client_secret, config.robot_code
    );
    println!(
        "  custom robot token {:?}, secret {:?}",
        config.custom_robot_token, config.custom_robot_secret
    );
    println!(
        "  say:    curl -XPOST {}/_mock/messages -H 'content-type: application/json' -d '{{\"text\":\"你好\",\"sender_staff_id\":\"user1\"}}'",
        mock.base_url()
    );
    println!("  outbox: curl {}/_mock/outbox", mock.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
