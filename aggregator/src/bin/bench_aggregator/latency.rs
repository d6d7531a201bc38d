//! `latency`: usage events produced at a steady rate into a fresh topic that the aggregator
//! consumes, each timed to its row in ClickHouse, to its count in the live view, and to a
//! plain consumer of the same topic (the Kafka part of both).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use clickhouse::Row;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;

use costpipe_kafka::{ensure_topics, TopicSpec};
use costpipe_progress::Progress;
use costpipe_schemas::{UsageCodec, UsageEvent};

use super::{
    ch_client, cpu_seconds, env_pairs, http_get, metric, partitions_of, percentile, short_id,
    sibling_binary, stack_pid, wall_ms, Aggregator, Common,
};

#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    /// Events per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Warm-up seconds at the same rate, not counted.
    #[arg(long, default_value_t = 5)]
    warmup_s: u64,
    /// Tenants (events round-robin over them; one live-view poll per tenant).
    #[arg(long, default_value_t = 8)]
    tenants: usize,
    /// Partitions of the fresh topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Pause between ClickHouse polls, in ms.
    #[arg(long, default_value_t = 50)]
    ch_poll_ms: u64,
    /// Pause between live-view polls (of every tenant), in ms.
    #[arg(long, default_value_t = 20)]
    live_poll_ms: u64,
    /// The aggregator binary (default: next to this one).
    #[arg(long)]
    aggregator_bin: Option<PathBuf>,
    /// Keep the database (dropped by default).
    #[arg(long)]
    keep_db: bool,
    /// Extra environment for the aggregator, `NAME=value` (its settings under test).
    #[arg(long = "env")]
    env: Vec<String>,
}

#[derive(Row, Deserialize)]
struct SeenRow {
    id: String,
    ingested_ms: i64,
}

/// State shared between the benchmark's threads.
type Shared<T> = Arc<Mutex<T>>;

struct Produced {
    at_ms: f64,
    measured: bool,
}

fn summary(name: &str, mut v: Vec<f64>, expected: usize) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{name}: n={} of {expected}, p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        v.len(),
        percentile(&v, 50.0),
        percentile(&v, 90.0),
        percentile(&v, 99.0),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

pub async fn latency(common: &Common, a: &LatencyArgs) -> anyhow::Result<()> {
    let bin = sibling_binary("costpipe-aggregator", &a.aggregator_bin)?;
    let id = short_id();
    let topic = format!("bench.latency.{id}");
    let database = format!("bench_lat_{id}");
    ensure_topics(
        &common.brokers,
        &[TopicSpec {
            name: topic.clone(),
            partitions: a.partitions,
            compacted: false,
        }],
    )
    .await?;
    let mut agg = Aggregator::spawn(&bin, common, &topic, &database, &env_pairs(&a.env))?;
    let ch_pid = stack_pid(&common.stack_dir, "clickhouse");
    // Wait for every partition to be taken up.
    let started = Instant::now();
    loop {
        agg.assert_running()?;
        let m = agg.metrics();
        if metric(&m, "assigned_partitions") == Some(a.partitions as f64) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "partitions not assigned after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "aggregator holds {} partitions after {:.1}s",
        a.partitions,
        started.elapsed().as_secs_f64()
    );
    let tenants: Vec<String> = (0..a.tenants).map(|i| format!("lat-{i}")).collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &common.brokers)
        // The emitter's settings (ingest/src/emitter.rs, linger at its default).
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "10")
        .set("batch.size", (1 << 20).to_string())
        .create()?;
    let codec = UsageCodec::current();
    let produced: Arc<Mutex<HashMap<uuid::Uuid, Produced>>> = Default::default();
    // Per tenant, produce times in order: the live view's count c means the first c are in.
    let per_tenant: Shared<Vec<Vec<(f64, bool)>>> =
        Arc::new(Mutex::new(vec![Vec::new(); a.tenants]));
    let stop = Arc::new(AtomicBool::new(false));

    // ClickHouse poller: the first poll that returns an id is when its row is visible.
    let ch_seen: Arc<Mutex<HashMap<uuid::Uuid, (f64, i64)>>> = Default::default();
    let ch_rtt: Arc<Mutex<Vec<f64>>> = Default::default();
    let ch_task = {
        let (ch, seen, stop, rtt) = (
            ch_client(&common.clickhouse_url),
            ch_seen.clone(),
            stop.clone(),
            ch_rtt.clone(),
        );
        let (database, poll) = (database.clone(), a.ch_poll_ms);
        tokio::spawn(async move {
            let mut since = wall_ms() as i64 - 60_000;
            while !stop.load(Ordering::Relaxed) {
                let t0 = wall_ms();
                let rows = ch
                    .query(&format!(
                        "SELECT toString(event_id) AS id, \
                         toInt64(toUnixTimestamp64Milli(ingested_at)) AS ingested_ms \
                         FROM {database}.usage_events_priced \
                         WHERE ingested_at >= fromUnixTimestamp64Milli(toInt64({since}))"
                    ))
                    .fetch_all::<SeenRow>()
                    .await;
                let t1 = wall_ms();
                if let Ok(rows) = rows {
                    rtt.lock().unwrap().push(t1 - t0);
                    let mut seen = seen.lock().unwrap();
                    for r in rows {
                        if let Ok(id) = uuid::Uuid::parse_str(&r.id) {
                            seen.entry(id).or_insert((t1, r.ingested_ms));
                        }
                        since = since.max(r.ingested_ms - 10_000);
                    }
                }
                tokio::time::sleep(Duration::from_millis(poll)).await;
            }
        })
    };

    // Live-view poller: per tenant, the `month` events count summed over its keys.
    let live_seen: Arc<Mutex<Vec<Vec<f64>>>> = Arc::new(Mutex::new(vec![Vec::new(); a.tenants]));
    let live_rtt: Arc<Mutex<Vec<f64>>> = Default::default();
    let live_thread = {
        let (addr, tenants, seen, stop, rtt) = (
            agg.metrics_addr.clone(),
            tenants.clone(),
            live_seen.clone(),
            stop.clone(),
            live_rtt.clone(),
        );
        let poll = a.live_poll_ms;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (i, t) in tenants.iter().enumerate() {
                    let t0 = wall_ms();
                    let Ok((200, body)) = http_get(&addr, &format!("/v1/live/tenants/{t}")) else {
                        continue;
                    };
                    let t1 = wall_ms();
                    rtt.lock().unwrap().push(t1 - t0);
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                        continue;
                    };
                    let count: u64 = v["keys"]
                        .as_array()
                        .map(|keys| {
                            keys.iter()
                                .filter_map(|k| k["windows"]["month"]["events"].as_u64())
                                .sum()
                        })
                        .unwrap_or(0);
                    let mut seen = seen.lock().unwrap();
                    let s = &mut seen[i];
                    while (s.len() as u64) < count {
                        s.push(t1);
                    }
                }
                std::thread::sleep(Duration::from_millis(poll));
            }
        })
    };

    // A plain consumer of the same topic: the Kafka part of both latencies.
    let kafka_seen: Arc<Mutex<HashMap<uuid::Uuid, f64>>> = Default::default();
    let kafka_thread = {
        let (brokers, topic, seen, stop) = (
            common.brokers.clone(),
            topic.clone(),
            kafka_seen.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || -> anyhow::Result<()> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("bench-lat-raw-{}", short_id()))
                .set("enable.auto.commit", "false")
                .set("fetch.queue.backoff.ms", "10")
                .create()?;
            let mut tpl = TopicPartitionList::new();
            for p in partitions_of(&brokers, &topic)? {
                tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
            }
            consumer.assign(&tpl)?;
            let codec = UsageCodec::current();
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let at = wall_ms();
                    if let Some(e) = m.payload().and_then(|p| codec.decode(p).ok()) {
                        seen.lock().unwrap().insert(e.event_id, at);
                    }
                }
            }
            Ok(())
        })
    };

    // Producer: a steady rate, paced against the clock.
    let total = a.rate * (a.warmup_s + a.seconds);
    let warmup = a.rate * a.warmup_s;
    let mut deliveries = Vec::with_capacity(total as usize);
    let t0 = Instant::now();
    let mut cpu_start = None;
    let mut ch_cpu_start = None;
    let bar = Progress::over_time(
        Duration::from_secs(a.warmup_s + a.seconds),
        &format!("producing {}/s", a.rate),
    );
    for i in 0..total {
        let due = Duration::from_secs_f64(i as f64 / a.rate as f64);
        let elapsed = t0.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
        if i == warmup {
            cpu_start = cpu_seconds(agg.pid());
            ch_cpu_start = ch_pid.and_then(cpu_seconds);
        }
        let tenant = (i as usize) % a.tenants;
        let at = wall_ms();
        let mut e = UsageEvent::new(
            uuid::Uuid::new_v4(),
            at as i64,
            tenants[tenant].clone(),
            "openai",
            "gpt-4o-mini",
        );
        e.department = Some("engineering".into());
        e.input_tokens = 1200;
        e.output_tokens = 300;
        let bytes = codec.encode(&e)?;
        let measured = i >= warmup;
        produced.lock().unwrap().insert(
            e.event_id,
            Produced {
                at_ms: at,
                measured,
            },
        );
        per_tenant.lock().unwrap()[tenant].push((at, measured));
        let record = FutureRecord::to(&topic)
            .key(tenants[tenant].as_bytes())
            .payload(&bytes);
        match producer.send_result(record) {
            Ok(d) => deliveries.push(d),
            Err((e, _)) => anyhow::bail!("produce failed: {e}"),
        }
    }
    bar.clear();
    let produce_s = t0.elapsed().as_secs_f64();
    let cpu_end = cpu_seconds(agg.pid());
    let ch_cpu_end = ch_pid.and_then(cpu_seconds);
    let mut failed = 0;
    for d in deliveries {
        if !matches!(d.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    println!(
        "produced {total} events ({warmup} warm-up) in {produce_s:.1}s ({:.0}/s), {failed} failed",
        total as f64 / produce_s
    );
    // Wait until everything was seen in both places (or 30 s).
    let waited = Instant::now();
    loop {
        let ch_n = ch_seen.lock().unwrap().len() as u64;
        let live_n: u64 = live_seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.len() as u64)
            .sum();
        if (ch_n >= total && live_n >= total) || waited.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = ch_task.await;
    let _ = live_thread.join();
    let _ = kafka_thread.join();
    let metrics = agg.metrics();
    agg.stop().await;
    if !a.keep_db {
        ch_client(&common.clickhouse_url)
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await?;
    }

    let produced = produced.lock().unwrap();
    let measured_n = produced.values().filter(|p| p.measured).count();
    let mut to_row = Vec::new();
    let mut to_ingested_at = Vec::new();
    for (id, (seen_at, ingested_ms)) in ch_seen.lock().unwrap().iter() {
        if let Some(p) = produced.get(id).filter(|p| p.measured) {
            to_row.push(seen_at - p.at_ms);
            to_ingested_at.push(*ingested_ms as f64 - p.at_ms);
        }
    }
    let mut to_kafka = Vec::new();
    for (id, seen_at) in kafka_seen.lock().unwrap().iter() {
        if let Some(p) = produced.get(id).filter(|p| p.measured) {
            to_kafka.push(seen_at - p.at_ms);
        }
    }
    let mut to_live = Vec::new();
    let per_tenant = per_tenant.lock().unwrap();
    for (t, seen) in live_seen.lock().unwrap().iter().enumerate() {
        for (k, seen_at) in seen.iter().enumerate() {
            if let Some(&(at, true)) = per_tenant[t].get(k) {
                to_live.push(seen_at - at);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "{}",
        summary(
            "production → row visible in ClickHouse (poll)",
            to_row,
            measured_n
        )
    );
    println!(
        "{}",
        summary(
            "production → ingested_at (insert built)",
            to_ingested_at,
            measured_n
        )
    );
    println!(
        "{}",
        summary("production → live view month count", to_live, measured_n)
    );
    println!(
        "{}",
        summary(
            "production → received by a plain rdkafka consumer",
            to_kafka,
            measured_n
        )
    );
    println!(
        "poll round trips: ClickHouse mean {:.1} ms every +{} ms; live view mean {:.2} ms per tenant, {} tenants, every +{} ms",
        mean(&ch_rtt.lock().unwrap()),
        a.ch_poll_ms,
        mean(&live_rtt.lock().unwrap()),
        a.tenants,
        a.live_poll_ms
    );
    if let (Some(s), Some(e)) = (cpu_start, cpu_end) {
        println!(
            "aggregator CPU during the measured phase: {:.1} % of a core ({:.1} µs/event)",
            (e - s) / a.seconds as f64 * 100.0,
            (e - s) * 1e6 / (a.rate * a.seconds) as f64
        );
    }
    if let (Some(s), Some(e)) = (ch_cpu_start, ch_cpu_end) {
        println!(
            "ClickHouse CPU during the measured phase: {:.1} % of a core",
            (e - s) / a.seconds as f64 * 100.0
        );
    }
    println!(
        "epochs written {}, time inside writes {:.1}s, aggregator env {:?}, database {database}, topic {topic}",
        metric(&metrics, "epochs_written_total").unwrap_or(f64::NAN),
        metric(&metrics, "flush_seconds_total").unwrap_or(f64::NAN),
        a.env,
    );
    Ok(())
}
