//! costpipe-stub-provider: a stand-in for an OpenAI-compatible provider on 127.0.0.1, for
//! the example gateway and its tests.

use clap::Parser;

use costpipe_gateway::example::stub::{router, StubConfig};

/// Settings.
#[derive(Debug, Parser)]
#[command(
    name = "costpipe-stub-provider",
    about = "Answers chat completions in OpenAI's shape"
)]
struct Cli {
    #[command(flatten)]
    stub: StubConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.stub.addr).await?;
    tracing::info!(addr = %cli.stub.addr, "stub provider listening");
    axum::serve(listener, router(cli.stub)).await?;
    Ok(())
}
