//! costpipe-aggregator: prices usage events from Kafka, writes priced events and per-minute
//! rollups to ClickHouse exactly once, and publishes budget levels to the control topic.

use clap::Parser;

use costpipe_aggregator::config::AggregatorConfig;
use costpipe_aggregator::pipeline;
use costpipe_aggregator::telemetry::Metrics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .init();
    let config = AggregatorConfig::parse();
    if let Err(e) = run(config).await {
        tracing::error!(error = %format!("{e:#}"), "aggregator stopped");
        eprintln!("costpipe-aggregator: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn run(config: AggregatorConfig) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    serve_metrics(config.metrics_addr, metrics.clone()).await?;
    let pipeline = pipeline::Pipeline::start(config, metrics).await?;
    tracing::info!("aggregator running");
    pipeline.run(shutdown_signal()).await
}

async fn serve_metrics(addr: std::net::SocketAddr, metrics: Metrics) -> anyhow::Result<()> {
    use axum::{routing::get, Router};
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.encode() }))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
