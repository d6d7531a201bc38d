//! costpipe-aggregator: prices usage events from Kafka, keeps sliding-window cost per tenant,
//! department and model, writes priced events (and, through ClickHouse views, rollups)
//! exactly once, publishes budget levels to the control topic, and serves the live view.

use clap::Parser;

use costpipe_aggregator::config::AggregatorConfig;
use costpipe_aggregator::pipeline;
use costpipe_aggregator::telemetry::Metrics;

/// Events are decoded on the consumer task and freed on the sink task, a few hundred
/// thousand small strings per epoch; glibc's allocator spent ~20 % of the aggregator's CPU
/// on that (cross-thread frees, consolidation), mimalloc about 15 % less CPU per event in
/// alternating rounds (`aggregator/BENCHMARKS.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    disable_transparent_huge_pages();
    keep_freed_memory_for_a_while();
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

/// Turns off transparent huge pages for this process. mimalloc asks for them, so each first
/// touch of its memory made the kernel zero a whole 2 MiB page: `clear_page_erms` was a
/// quarter to a third of the aggregator's CPU profile under load, and without huge pages the
/// aggregator used about 1 µs (20 %) less CPU per event in alternating rounds
/// (`aggregator/BENCHMARKS.md`). The flag is checked at fault time, so it covers memory
/// mapped before this call too.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory of
        // ours; a failure (old kernel) only leaves huge pages on.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            eprintln!(
                "costpipe-aggregator: could not turn off transparent huge pages: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// mimalloc's `purge_delay` (the option's index in `mimalloc.h`, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed by a written epoch goes back to the OS after 10 s instead of mimalloc's 1 s
/// (jemalloc's default decay is also 10 s). Each epoch frees a few hundred MB that the next
/// one asks for again within a second or two; returning it early meant faulting it back in,
/// page by page (~0.4 µs of CPU per event in alternating rounds, `aggregator/BENCHMARKS.md`).
/// An idle aggregator still shrinks, 10 s later.
fn keep_freed_memory_for_a_while() {
    // SAFETY: sets an integer option; mimalloc allows it at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
}

async fn run(config: AggregatorConfig) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let (live_tx, live_rx) = tokio::sync::mpsc::channel(64);
    serve_metrics(config.metrics_addr, metrics.clone(), live_tx).await?;
    let pipeline = pipeline::Pipeline::start(config, metrics, live_rx).await?;
    tracing::info!("aggregator running");
    pipeline.run(shutdown_signal()).await
}

/// Serves /metrics, /healthz and the live view.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: Metrics,
    live: tokio::sync::mpsc::Sender<costpipe_aggregator::live::LiveRequest>,
) -> anyhow::Result<()> {
    use axum::{routing::get, Router};
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.encode() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/v1/live/tenants/{tenant}",
            get(costpipe_aggregator::live::live_tenant).with_state(live),
        );
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
