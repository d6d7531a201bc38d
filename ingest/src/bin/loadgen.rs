//! costpipe-loadgen: drives the emitter with a realistic synthetic stream, with a progress bar on
//! a terminal (`costpipe-progress`) and a one-line summary.

use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use clap::Parser;
use futures::stream::{FuturesUnordered, StreamExt};

use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::{ensure_topics, KafkaArgs, TopicSpec};
use costpipe_progress::Progress;

/// Load generator settings.
#[derive(Debug, Parser)]
#[command(
    name = "costpipe-loadgen",
    about = "Produces a realistic usage event stream through the emitter"
)]
struct LoadgenConfig {
    /// Kafka connection.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Usage events topic.
    #[arg(
        long,
        env = "COSTPIPE_USAGE_TOPIC",
        default_value = "costpipe.usage.v1"
    )]
    topic: String,
    /// Number of events.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Number of tenants (1-10).
    #[arg(long, default_value_t = 8)]
    tenants: usize,
    /// Random seed (the same seed gives the same stream, event ids included).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Partitions of the usage topic when it must be created.
    #[arg(long, env = "COSTPIPE_CREATE_TOPICS_PARTITIONS", default_value_t = 8)]
    partitions: i32,
    /// Leave out the model that is not in the price catalog.
    #[arg(long)]
    no_unpriced: bool,
    /// Events awaiting acknowledgement at most.
    #[arg(long, default_value_t = 50_000)]
    in_flight: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = LoadgenConfig::parse();
    ensure_topics(
        &cfg.kafka.brokers,
        &[TopicSpec {
            name: cfg.topic.clone(),
            partitions: cfg.partitions,
            compacted: false,
        }],
    )
    .await?;
    let now = Utc::now();
    let month_start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .ok_or_else(|| anyhow::anyhow!("no start of month"))?;
    let stream = SyntheticStream::new(
        cfg.seed,
        SyntheticConfig {
            tenants: cfg.tenants,
            start_ms: month_start.timestamp_millis(),
            end_ms: now.timestamp_millis(),
            include_unpriced: !cfg.no_unpriced,
        },
    );
    let emitter = Emitter::new(EmitterConfig::new(&cfg.kafka.brokers, &cfg.topic))?;
    let bar = Progress::bar(cfg.events, "events", "producing");
    let mut pending = FuturesUnordered::new();
    let mut failed = 0u64;
    for event in stream.take(cfg.events as usize) {
        pending.push(emitter.enqueue(&event).await?.wait());
        while pending.len() >= cfg.in_flight {
            if let Some(r) = pending.next().await {
                failed += u64::from(r.is_err());
                bar.inc(1);
            }
        }
    }
    while let Some(r) = pending.next().await {
        failed += u64::from(r.is_err());
        bar.inc(1);
    }
    emitter.flush(Duration::from_secs(30))?;
    let secs = bar.elapsed().as_secs_f64();
    bar.finish(format!(
        "produced {} events to {} in {secs:.1} s ({:.0} events/s), {failed} failed",
        cfg.events - failed,
        cfg.topic,
        cfg.events as f64 / secs
    ));
    anyhow::ensure!(failed == 0, "{failed} events were not delivered");
    Ok(())
}
