//! costpipe-gateway-example: an OpenAI-compatible gateway enforcing costpipe budgets (see
//! gateway/README.md).

use std::sync::Arc;

use clap::Parser;

use costpipe_gateway::example::gateway::{router, App, GatewayConfig};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::KafkaArgs;
use costpipe_pricing::Catalog;

/// Settings.
#[derive(Debug, Parser)]
#[command(
    name = "costpipe-gateway-example",
    about = "Example gateway enforcing costpipe budgets"
)]
struct Cli {
    /// Kafka connection.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Price catalog file (TOML); the shipped catalog when unset.
    #[arg(long, env = "COSTPIPE_CATALOG")]
    catalog: Option<std::path::PathBuf>,
    #[command(flatten)]
    gateway: GatewayConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let catalog = match &cli.catalog {
        Some(path) => Catalog::from_path(path)?,
        None => Catalog::builtin(),
    };
    let follower = costpipe_gateway::follow_with(
        &cli.kafka.brokers,
        &cli.gateway.control_topic,
        costpipe_gateway::FollowOptions {
            fetch_wait_max_ms: cli.gateway.control_fetch_wait_ms,
        },
    )?;
    let emitter = Emitter::new(EmitterConfig::new(
        cli.kafka.brokers.clone(),
        cli.gateway.usage_topic.clone(),
    ))?;
    let addr = cli.gateway.addr;
    let app = Arc::new(App::new(cli.gateway, follower, catalog, emitter)?);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "example gateway listening");
    axum::serve(listener, router(app)).await?;
    Ok(())
}
