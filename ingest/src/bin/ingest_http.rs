//! costpipe-ingest-http: HTTP ingest of usage events (see `costpipe_ingest::http`).

use clap::Parser;
use tracing_subscriber::EnvFilter;

use costpipe_ingest::http::server::{prepare_topics, serve};
use costpipe_ingest::http::{HttpIngestConfig, IngestHttp};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn")),
        )
        .init();
    let config = HttpIngestConfig::parse();
    let service = IngestHttp::new(&config).await?;
    prepare_topics(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        usage_topic = %config.usage_topic,
        dead_letter_topic = %config.dead_letter_topic,
        "costpipe-ingest-http listening"
    );
    serve(service, listener, shutdown_signal()).await?;
    tracing::info!("stopped; everything in flight was delivered");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
