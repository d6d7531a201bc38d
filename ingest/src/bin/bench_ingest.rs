//! costpipe-bench-ingest: events/s of the three ways into the usage topic, in one run,
//! against the same broker:
//! (a) the raw rdkafka `FutureProducer` with the emitter's settings and pre-encoded payloads
//!     (the baseline);
//! (b) the emitter (`Emitter::enqueue`: validate, encode, produce), same events;
//! (c) HTTP ingest (`costpipe-ingest-http`'s service, started in this process) fed JSON arrays
//!     of `--batch` events by `--clients` concurrent HTTP clients, bodies serialized before
//!     the clock starts.
//! (d) the same HTTP bodies compressed (`Content-Encoding: gzip`, then `zstd`), compressed
//!     before the clock starts: the decompression (capped) is in the measured path.
//! Each phase waits for every delivery report (for HTTP: every 202 with all events accepted).
//! The HTTP service runs with every limit on: timeouts, connection cap, and per-tenant rates
//! (set by `--tenant-events-per-s` / `--tenant-bytes-per-s` above what the run sends, so
//! each request pays for the check but none is refused).
//! On a terminal a bar counts the timed rounds; the last line is a one-line summary.
//!
//! `cargo run --release -p costpipe-ingest --bin costpipe-bench-ingest -- --events 200000`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use costpipe_ingest::http::auth::hash_key;
use costpipe_ingest::http::server::serve;
use costpipe_ingest::http::verdict::judge_body;
use costpipe_ingest::http::{HttpIngestConfig, IngestHttp};
use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::{ensure_topics, KafkaArgs, TopicSpec};
use costpipe_progress::Progress;
use costpipe_schemas::{UsageCodec, UsageEvent, ValidationLimits};

#[derive(Debug, Parser)]
#[command(
    name = "costpipe-bench-ingest",
    about = "Events/s of the raw producer, the emitter and HTTP ingest, in one run"
)]
struct BenchConfig {
    /// Kafka connection.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Events per phase.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per HTTP request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Runs of each phase; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these phases (comma-separated: raw, emitter, http, http-gzip, http-zstd).
    #[arg(long, default_value = "raw,emitter,http,http-gzip,http-zstd")]
    phases: String,
    /// HTTP ingest's rate per tenant, events/s (the synthetic stream puts half its events on
    /// one tenant, so this must exceed the whole run's rate for no request to be refused).
    #[arg(long, default_value_t = 2_000_000)]
    tenant_events_per_s: u32,
    /// HTTP ingest's rate per tenant, decompressed body bytes/s.
    #[arg(long, default_value_t = 2_000_000_000)]
    tenant_bytes_per_s: u32,
    /// Process id of the broker, to report its CPU time too.
    #[arg(long)]
    broker_pid: Option<u32>,
}

/// User + system CPU seconds of a process, from /proc (Linux).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name in parentheses; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[derive(Debug, Clone, Copy)]
struct Run {
    secs: f64,
    own_cpu: f64,
    broker_cpu: Option<f64>,
}

async fn timed<F, Fut>(broker_pid: Option<u32>, f: F) -> anyhow::Result<Run>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (c0, b0) = (cpu_seconds(None), cpu_seconds(broker_pid));
    let started = Instant::now();
    f().await?;
    let secs = started.elapsed().as_secs_f64();
    let (c1, b1) = (cpu_seconds(None), cpu_seconds(broker_pid));
    Ok(Run {
        secs,
        own_cpu: c1.zip(c0).map(|(a, b)| a - b).unwrap_or(0.0),
        broker_cpu: b1.zip(b0).map(|(a, b)| a - b),
    })
}

/// The producer settings of `Emitter::new`, for the baseline.
fn raw_producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    let c = EmitterConfig::new(brokers, "");
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", c.linger_ms.to_string())
        .set("batch.size", (1 << 20).to_string())
        .set(
            "queue.buffering.max.messages",
            c.max_queued_events.to_string(),
        )
        .set("queue.buffering.max.kbytes", c.max_queued_kib.to_string())
        .set("delivery.timeout.ms", c.delivery_timeout_ms.to_string())
        .create()?)
}

async fn run_raw(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(records.len());
    for (key, payload) in records {
        let mut backoff = Duration::from_millis(1);
        loop {
            match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err((e, _)) => anyhow::bail!("raw produce: {e}"),
            }
        }
    }
    for r in join_all(pending).await {
        match r {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("raw delivery: {e}"),
            Err(_) => anyhow::bail!("raw delivery canceled"),
        }
    }
    Ok(())
}

async fn run_emitter(emitter: &Emitter, events: &[UsageEvent]) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(events.len());
    for e in events {
        pending.push(emitter.enqueue(e).await?.wait());
    }
    for r in join_all(pending).await {
        r?;
    }
    Ok(())
}

async fn run_http(
    url: &str,
    bodies: Arc<Vec<(String, Bytes, usize)>>,
    clients: usize,
    encoding: Option<&'static str>,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let workers = (0..clients).map(|_| {
        let (next, bodies, client, url) = (next.clone(), bodies.clone(), client.clone(), url);
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((key, body, n)) = bodies.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let mut req = client
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json");
                if let Some(encoding) = encoding {
                    req = req.header("content-encoding", encoding);
                }
                let resp = req.body(body.clone()).send().await?;
                let status = resp.status();
                let answer: serde_json::Value = resp.json().await?;
                anyhow::ensure!(
                    status.as_u16() == 202 && answer["accepted"] == *n,
                    "batch {i}: {status} {}",
                    answer["results"][0]
                );
            }
        }
    });
    for r in join_all(workers).await {
        r?;
    }
    Ok(())
}

/// `body` compressed as `encoding` (gzip or zstd, default levels), as a client would send it.
fn compress(encoding: &str, body: &[u8]) -> anyhow::Result<Bytes> {
    use std::io::Write;
    Ok(Bytes::from(match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body)?;
            e.finish()?
        }
        "zstd" => zstd::encode_all(body, 0)?,
        other => anyhow::bail!("unknown encoding {other}"),
    }))
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    runs[runs.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = BenchConfig::parse();
    let phases: Vec<&str> = cfg.phases.split(',').map(str::trim).collect();
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let topic = |p: &str| format!("bench_{id}.{p}");
    ensure_topics(
        &cfg.kafka.brokers,
        &["raw", "emitter", "http", "direct", "dlq"].map(|p| TopicSpec {
            name: topic(p),
            partitions: if p == "dlq" { 1 } else { cfg.partitions },
            compacted: false,
        }),
    )
    .await?;

    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<UsageEvent> = SyntheticStream::new(
        7,
        SyntheticConfig {
            tenants: 8,
            start_ms: now - 3_600_000,
            end_ms: now,
            include_unpriced: true,
        },
    )
    .take(cfg.events)
    .collect();
    let codec = UsageCodec::current();
    let records: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| Ok((e.tenant_id.clone(), codec.encode(e)?)))
        .collect::<anyhow::Result<_>>()?;
    let avro_bytes: usize = records.iter().map(|(_, p)| p.len()).sum();

    // HTTP bodies: JSON arrays of one tenant's events (a key emits only for its tenant).
    let mut by_tenant: BTreeMap<&str, Vec<&UsageEvent>> = BTreeMap::new();
    for e in &events {
        by_tenant.entry(&e.tenant_id).or_default().push(e);
    }
    let mut per_tenant = Vec::new();
    for (tenant, evs) in &by_tenant {
        let mut mine = Vec::new();
        for chunk in evs.chunks(cfg.batch) {
            mine.push((
                format!("bench-key-{tenant}"),
                Bytes::from(serde_json::to_vec(chunk)?),
                chunk.len(),
            ));
        }
        per_tenant.push(mine.into_iter());
    }
    // Tenants in turn, as concurrent senders would be.
    let mut bodies = Vec::new();
    loop {
        let before = bodies.len();
        for t in per_tenant.iter_mut() {
            bodies.extend(t.next());
        }
        if bodies.len() == before {
            break;
        }
    }
    let json_bytes: usize = bodies.iter().map(|(_, b, _)| b.len()).sum();
    let bodies = Arc::new(bodies);
    let keys: Vec<String> = by_tenant
        .keys()
        .map(|t| format!("{t}:{}", hash_key(&format!("bench-key-{t}"))))
        .collect();

    println!(
        "{} events/phase ({:.0} B Avro, {:.0} B JSON per event), {} partitions, {} rounds",
        cfg.events,
        avro_bytes as f64 / cfg.events as f64,
        json_bytes as f64 / cfg.events as f64,
        cfg.partitions,
        cfg.rounds
    );
    // CPU per event of the steps, without I/O: the best of three passes (the first touches
    // fresh memory).
    let per_event = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e6 / cfg.events as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let apache_us = per_event(&mut || {
        for e in &events {
            let _ = std::hint::black_box(codec.encode_with_apache_avro(e));
        }
    });
    let direct_us = per_event(&mut || {
        for e in &events {
            let _ = std::hint::black_box(codec.encode(e));
        }
    });
    let limits = ValidationLimits::default();
    let validate_us = per_event(&mut || {
        for e in &events {
            std::hint::black_box(limits.check(e, now).is_ok());
        }
    });
    let rules = HttpIngestConfig::new("", "", "", "").rules();
    let judge_us = per_event(&mut || {
        for (tenant, body, _) in bodies.iter() {
            let tenant = tenant.trim_start_matches("bench-key-");
            let _ = std::hint::black_box(judge_body(
                body,
                Some("application/json"),
                tenant,
                &rules,
                now,
            ));
        }
    });
    println!(
        "CPU per event, one thread, best of 3: codec encode (direct writer) {direct_us:.2} µs, apache-avro generic encode {apache_us:.2} µs, \
         validate {validate_us:.2} µs, HTTP split+parse+validate {judge_us:.2} µs"
    );

    let mut results: Vec<(&str, Run)> = Vec::new();
    let warmup = cfg.events.min(5000);
    let timed_phases = ["raw", "emitter", "http", "http-gzip", "http-zstd"]
        .iter()
        .filter(|p| phases.contains(p))
        .count();
    let bar = Progress::bar((timed_phases * cfg.rounds) as u64, "rounds", "");

    if phases.contains(&"raw") {
        let producer = raw_producer(&cfg.kafka.brokers)?;
        let raw_topic = topic("raw");
        run_raw(&producer, &raw_topic, &records[..warmup]).await?;
        let mut runs = Vec::new();
        for round in 1..=cfg.rounds {
            bar.set_message(format!("raw, round {round}"));
            runs.push(timed(cfg.broker_pid, || run_raw(&producer, &raw_topic, &records)).await?);
            bar.inc(1);
        }
        producer.flush(Timeout::After(Duration::from_secs(30)))?;
        results.push(("raw rdkafka FutureProducer", median(runs)));
    }
    if phases.contains(&"emitter") {
        let emitter = Emitter::new(EmitterConfig::new(&cfg.kafka.brokers, topic("emitter")))?;
        run_emitter(&emitter, &events[..warmup]).await?;
        let mut runs = Vec::new();
        for round in 1..=cfg.rounds {
            bar.set_message(format!("emitter, round {round}"));
            runs.push(timed(cfg.broker_pid, || run_emitter(&emitter, &events)).await?);
            bar.inc(1);
        }
        emitter.flush(Duration::from_secs(30))?;
        results.push(("emitter (validate + encode + produce)", median(runs)));
    }
    let http_phases: Vec<(&str, Option<&'static str>, &str)> = [
        ("http", None, "HTTP ingest (JSON arrays, in-process server)"),
        ("http-gzip", Some("gzip"), "HTTP ingest, gzip bodies"),
        ("http-zstd", Some("zstd"), "HTTP ingest, zstd bodies"),
    ]
    .into_iter()
    .filter(|(p, _, _)| phases.contains(p))
    .collect();
    if !http_phases.is_empty() {
        let mut http_config = HttpIngestConfig::new(
            &cfg.kafka.brokers,
            topic("http"),
            topic("dlq"),
            keys.join(","),
        );
        http_config.rate_events_per_s = cfg.tenant_events_per_s;
        http_config.rate_bytes_per_s = cfg.tenant_bytes_per_s;
        bar.println(format!(
            "HTTP limits on: rate {} events/s and {} B/s per tenant, body {} B, {} connections, \
             header read {} ms, request {} ms",
            http_config.rate_events_per_s,
            http_config.rate_bytes_per_s,
            http_config.max_body_bytes,
            http_config.max_connections,
            http_config.header_read_timeout_ms,
            http_config.request_timeout_ms
        ));
        let service = IngestHttp::new(&http_config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1/events", listener.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(service, listener, async {
            let _ = stop_rx.await;
        }));
        for (phase, encoding, name) in http_phases {
            let bodies = match encoding {
                None => bodies.clone(),
                Some(e) => {
                    let compressed = bodies
                        .iter()
                        .map(|(k, b, n)| Ok((k.clone(), compress(e, b)?, *n)))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let total: usize = compressed.iter().map(|(_, b, _)| b.len()).sum();
                    bar.println(format!(
                        "{e}: {:.0} B per event on the wire ({:.1}x smaller than JSON)",
                        total as f64 / cfg.events as f64,
                        json_bytes as f64 / total as f64
                    ));
                    Arc::new(compressed)
                }
            };
            let warm: Vec<_> = bodies.iter().take(4).cloned().collect();
            run_http(&url, Arc::new(warm), cfg.clients, encoding).await?;
            let mut runs = Vec::new();
            for round in 1..=cfg.rounds {
                bar.set_message(format!("{phase}, round {round}"));
                runs.push(
                    timed(cfg.broker_pid, || {
                        run_http(&url, bodies.clone(), cfg.clients, encoding)
                    })
                    .await?,
                );
                bar.inc(1);
            }
            results.push((name, median(runs)));
        }
        let _ = stop_tx.send(());
        server.await??;
    }

    let raw = results
        .iter()
        .find(|(n, _)| n.starts_with("raw"))
        .map(|(_, r)| cfg.events as f64 / r.secs);
    let elapsed = bar.elapsed().as_secs_f64();
    bar.clear();
    println!();
    println!(
        "| path | events/s | vs raw | s per {} | CPU s (this process) | CPU s (broker) |",
        cfg.events
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, r) in &results {
        let rate = cfg.events as f64 / r.secs;
        println!(
            "| {name} | {rate:.0} | {} | {:.2} | {:.2} | {} |",
            raw.map(|b| format!("{:.0} %", 100.0 * rate / b))
                .unwrap_or_else(|| "-".into()),
            r.secs,
            r.own_cpu,
            r.broker_cpu
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    let fastest = results
        .iter()
        .min_by(|a, b| a.1.secs.total_cmp(&b.1.secs))
        .map(|(name, r)| {
            format!(
                "; fastest: {name} at {:.0} events/s",
                cfg.events as f64 / r.secs
            )
        })
        .unwrap_or_default();
    println!(
        "bench-ingest: {} phases x {} rounds of {} events in {elapsed:.1} s (medians above){fastest}",
        results.len(),
        cfg.rounds,
        cfg.events
    );
    Ok(())
}
