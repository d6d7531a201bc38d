//! `control-latency`: the delay from a usage event's production to the control record it
//! triggers being consumed, while the aggregator carries a steady background load.
//!
//! - **Background:** usage events at `--rate` per second over the synthetic stream's tenants,
//!   departments, features, users and models (the scopes `bench_budgets` names, so that
//!   `--budgets N` loads budgets the background actually meets), event time = now.
//! - **Probes:** budgets `probe:<k>` scoped to `{tenant, department: probe-<k>}` (a department
//!   the background never uses), rolling 24 h, limit = 4 × the price of one probe event,
//!   ladder 0.2 notify / 0.45 downgrade / 0.7 throttle / 0.95 block. Each probe event raises
//!   its budget's ratio by exactly 0.25, so it crosses exactly one rung and makes exactly one
//!   control record, whose `trigger_event_id` is the probe's id. The four rungs have four
//!   different levels, so the four records of a budget have four different control ids.
//!   Probe `i` goes to budget `i % B`, so each budget's four probes are spread over the run.
//! - **Timing:** a probe's production time is the wall clock just before `send`, also set as
//!   the record's timestamp. Control-topic consumers (one per `--control-fetch-wait-ms`
//!   value; 50 ms is the gateway follower's default, librdkafka's 500 ms its earlier one)
//!   note the wall clock when they receive the record naming the probe. The record itself
//!   carries when the aggregator decided (`decided_at`) and, as its Kafka timestamp, when the
//!   aggregator's control producer was handed it, which splits the delay into its hops.
//! - **The Kafka floor:** a plain consumer of the usage topic, set up as the aggregator's own
//!   (`fetch.queue.backoff.ms=10`, default fetch wait), times the probes' first hop alone.
//!   Probes carry a header so that it does not decode the background.
//! - **The relay floor** (`--relay-fetch-wait-ms`): the first floor consumer also re-produces
//!   each probe at once to a relay topic, with the aggregator's control-producer settings, and
//!   a consumer of that topic times it. That is both hops of a control record with no work
//!   in between: what any aggregator on this broker and machine could do at best.
//!   `--without-aggregator` runs the same load with no aggregator (nor ClickHouse work), to
//!   tell the broker's share of the delay from the CPU the rest of the pipeline takes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rust_decimal::Decimal;

use costpipe_kafka::{ensure_topics, TopicSpec};
use costpipe_pricing::{price_event, Catalog};
use costpipe_progress::Progress;
use costpipe_schemas::{ControlCodec, UsageCodec, UsageEvent};

use super::{
    bench_budgets, ch_client, cpu_seconds, delete_topics, env_pairs, metric, partitions_of,
    percentile, short_id, sibling_binary, stack_pid, wall_ms, Aggregator, BudgetShape, Common,
    DEPARTMENTS, FEATURES, TENANTS,
};

/// Probes a probe budget takes: one per rung.
const RUNGS: usize = 4;
/// Header marking a probe record (its value is the probe's index).
const PROBE_HEADER: &str = "costpipe-bench-probe";
/// The probe events' model: no time-of-day price windows, so every probe costs the same.
const PROBE_MODEL: &str = "gpt-4o-mini";

#[derive(Debug, Clone, Args)]
pub struct ControlLatencyArgs {
    /// Background events per second (the benchmark takes 50 % of the aggregator's maximum,
    /// measured by `throughput` on the same machine).
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Measured seconds; the probes are spread evenly over them.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Warm-up seconds of background alone, before the first probe.
    #[arg(long, default_value_t = 10)]
    warmup_s: u64,
    /// Probe events (rounded up to a multiple of 4: each probe budget takes 4).
    #[arg(long, default_value_t = 600)]
    probes: usize,
    /// Background budgets (`bench_budgets`, as in `throughput --budgets`) loaded besides the
    /// probe budgets.
    #[arg(long, default_value_t = 0)]
    budgets: usize,
    /// How those budgets are laid out over the stream.
    #[arg(long, value_enum, default_value_t = BudgetShape::Dense)]
    budget_shape: BudgetShape,
    /// Partitions of the fresh usage topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// `fetch.wait.max.ms` of the control-topic consumers: one consumer per value, all in the
    /// same run. 50 is the gateway follower's default, 500 librdkafka's (the follower's
    /// before it had a setting).
    #[arg(long, value_delimiter = ',', default_value = "500,50,10")]
    control_fetch_wait_ms: Vec<u32>,
    /// `fetch.wait.max.ms` of the usage-topic floor consumers, one per value (50: the
    /// aggregator's default, `COSTPIPE_USAGE_FETCH_WAIT_MAX_MS`). Given with no value: none,
    /// so that the broker serves the usage topic to the aggregator alone, as in production.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "50")]
    floor_fetch_wait_ms: Vec<u32>,
    /// Seconds to wait after the last probe for the control records still in flight.
    #[arg(long, default_value_t = 15)]
    drain_s: u64,
    /// Extra environment for the aggregator, `NAME=value` (its settings under test).
    #[arg(long = "env")]
    env: Vec<String>,
    /// The aggregator binary (default: next to this one).
    #[arg(long)]
    aggregator_bin: Option<PathBuf>,
    /// Keep the database and the topics (dropped and deleted by default).
    #[arg(long)]
    keep: bool,
    /// Relay each probe from the first floor consumer to a relay topic at once, and time it
    /// there with a consumer with this `fetch.wait.max.ms` (the relay floor; off when unset).
    #[arg(long)]
    relay_fetch_wait_ms: Option<u32>,
    /// Run no aggregator: only the background, the probes, the floor consumers and the relay.
    #[arg(long)]
    without_aggregator: bool,
}

/// One probe, as produced.
#[derive(Debug, Clone)]
struct Probe {
    id: String,
    produced_ms: f64,
}

/// A control record naming a probe, as one consumer received it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    received_ms: f64,
    decided_ms: i64,
    /// The control record's Kafka timestamp: when the aggregator's producer was handed it.
    record_ms: i64,
}

/// What one control consumer saw: trigger event id → receptions (more than one would be a
/// duplicate record).
type SeenMap = Arc<Mutex<HashMap<String, Vec<Seen>>>>;

/// What one usage-topic consumer saw: probe index → when it was received.
type FloorMap = Arc<Mutex<HashMap<usize, f64>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another bench thread panicked; its data is still what was
    // recorded, and the run's report is more useful than a second panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn stats_line(name: &str, mut v: Vec<f64>, expected: usize) -> String {
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

/// The probe event of probe budget `k`, priced like any other.
fn probe_event(id: uuid::Uuid, at_ms: i64, k: usize) -> UsageEvent {
    let mut e = UsageEvent::new(id, at_ms, TENANTS[k % TENANTS.len()], "openai", PROBE_MODEL);
    e.department = Some(format!("probe-{k}"));
    e.input_tokens = 1200;
    e.output_tokens = 300;
    e
}

/// Probe budgets: `n` budgets, limit 4 × `cost`, one rung per probe.
fn probe_budgets(n: usize, cost: Decimal, currency: &str) -> Vec<serde_json::Value> {
    (0..n)
        .map(|k| {
            serde_json::json!({
                "budget_id": format!("probe:{k}"),
                "scope": {"tenant": TENANTS[k % TENANTS.len()], "department": format!("probe-{k}")},
                // Rolling: a calendar month would also publish a forecast per budget
                // (month-to-date rate × days), records that are not probes'.
                "period": {"rolling": "24h"},
                "limit": (cost * Decimal::from(RUNGS)).normalize().to_string(),
                "currency": currency,
                "ladder": [
                    {"at": "0.2", "action": "notify"},
                    {"at": "0.45", "action": {"downgrade": {"to": PROBE_MODEL}}},
                    {"at": "0.7", "action": {"throttle": {"requests_per_minute": 60}}},
                    {"at": "0.95", "action": "block"},
                ],
            })
        })
        .collect()
}

/// Background events: templates over the synthetic stream's dimensions (mutated in place
/// for each send: new id, new event time), so that producing costs one encode per event.
fn background_templates() -> Vec<UsageEvent> {
    const MODELS: [(&str, &str); 3] = [
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4o"),
        ("anthropic", "claude-sonnet-4-5"),
    ];
    // 10 tenants × 6 departments × 5 features × 3 models × 4 users = 3,600 combinations,
    // walked with co-prime strides so that consecutive events differ in every dimension.
    (0..3_600usize)
        .map(|i| {
            let (provider, model) = MODELS[i % 3];
            let tenant = TENANTS[i % TENANTS.len()];
            let mut e = UsageEvent::new(uuid::Uuid::nil(), 0, tenant, provider, model);
            e.department = Some(DEPARTMENTS[(i / 7) % DEPARTMENTS.len()].to_string());
            e.feature = Some(FEATURES[(i / 11) % FEATURES.len()].to_string());
            e.user_id = Some(format!("{tenant}-user-{}", (i / 13) % 40));
            e.input_tokens = 800 + (i as i64 % 9) * 100;
            e.output_tokens = 200 + (i as i64 % 5) * 50;
            e
        })
        .collect()
}

/// Unique event ids without a syscall each: a random run prefix and a counter, as a v4 UUID
/// (the version and variant bits sit above the counter's 56 bits).
struct Ids {
    prefix: u64,
    next: u64,
}

impl Ids {
    fn new() -> Self {
        Ids {
            prefix: uuid::Uuid::new_v4().as_u64_pair().0,
            next: 0,
        }
    }

    fn next(&mut self) -> uuid::Uuid {
        self.next += 1;
        let v = (u128::from(self.prefix) << 64) | u128::from(self.next);
        uuid::Builder::from_random_bytes(v.to_be_bytes()).into_uuid()
    }
}

/// Everything the producer thread needs.
struct ProducePlan {
    brokers: String,
    topic: String,
    rate: u64,
    warmup: Duration,
    measured: Duration,
    probes: usize,
    probe_budgets: usize,
}

struct Produced {
    background: u64,
    /// Probe index → when the broker acknowledged it (it is in the log from then on).
    acked: HashMap<usize, f64>,
    probes: Vec<Probe>,
    failed: u64,
    secs: f64,
}

/// Counts records the broker never acknowledged, and notes when each probe was (its
/// opaque is the probe's index + 1; background records carry 0).
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    probes_acked: Mutex<HashMap<usize, f64>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, probe: usize) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        } else if probe > 0 {
            lock(&self.probes_acked).insert(probe - 1, wall_ms());
        }
    }
}

/// Produces the background at a steady rate and the probes at their times, with the
/// emitter's producer settings (ingest/src/emitter.rs).
fn produce(plan: &ProducePlan) -> anyhow::Result<Produced> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &plan.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "10")
        .set("batch.size", (1 << 20).to_string())
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Deliveries::default())?;
    let codec = UsageCodec::current();
    let mut templates = background_templates();
    let mut ids = Ids::new();
    let total = plan.rate * (plan.warmup + plan.measured).as_secs();
    let probe_at = |i: usize| {
        plan.warmup
            + plan
                .measured
                .mul_f64((i as f64 + 0.5) / plan.probes.max(1) as f64)
    };
    let mut probes = Vec::with_capacity(plan.probes);
    let mut sent = 0u64;
    let mut failed = 0u64;
    let t0 = Instant::now();
    while sent < total || probes.len() < plan.probes {
        let elapsed = t0.elapsed();
        let due = ((elapsed.as_secs_f64() * plan.rate as f64) as u64).min(total);
        let now = wall_ms() as i64;
        while sent < due {
            let e = &mut templates[(sent % 3_600) as usize];
            e.event_id = ids.next();
            e.event_time = now;
            let bytes = codec.encode(e)?;
            let record = BaseRecord::with_opaque_to(&plan.topic, 0)
                .key(e.tenant_id.as_bytes())
                .payload(bytes.as_slice());
            send_record(&producer, record, &mut failed);
            sent += 1;
        }
        if probes.len() < plan.probes && probe_at(probes.len()) <= elapsed {
            let i = probes.len();
            let id = ids.next();
            // The production time: the wall clock just before send, also the record's
            // timestamp and the event's time.
            let at = wall_ms();
            let e = probe_event(id, at as i64, i % plan.probe_budgets);
            let bytes = codec.encode(&e)?;
            let index = i.to_string();
            let record = BaseRecord::with_opaque_to(&plan.topic, i + 1)
                .key(e.tenant_id.as_bytes())
                .payload(bytes.as_slice())
                .timestamp(at as i64)
                .headers(OwnedHeaders::new().insert(Header {
                    key: PROBE_HEADER,
                    value: Some(index.as_bytes()),
                }));
            send_record(&producer, record, &mut failed);
            probes.push(Probe {
                id: id.to_string(),
                produced_ms: at,
            });
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = t0.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(60))?;
    let acked = std::mem::take(&mut *lock(&producer.context().probes_acked));
    Ok(Produced {
        background: sent,
        probes,
        failed: failed + producer.context().failed.load(Ordering::Relaxed),
        acked,
        secs,
    })
}

/// Sends a record, retrying while the producer's queue is full (serving deliveries in
/// between); other errors are counted as failed.
fn send_record(
    producer: &BaseProducer<Deliveries>,
    mut record: BaseRecord<'_, [u8], [u8], usize>,
    failed: &mut u64,
) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((e, back)) => {
                if e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                    *failed += 1;
                    return;
                }
                producer.poll(Duration::from_millis(1));
                record = back;
            }
        }
    }
}

/// A consumer of every partition of `topic` from the beginning.
fn consumer_of(brokers: &str, topic: &str, fetch_wait_ms: u32) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-ctl-{}", short_id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        // The aggregator's setting: librdkafka's 1 s default stalls a partition whose
        // queue was full once.
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions_of(brokers, topic)? {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Follows the control topic, noting each record that names a trigger event.
fn follow_controls(
    brokers: &str,
    topic: &str,
    fetch_wait_ms: u32,
    seen: &SeenMap,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let consumer = consumer_of(brokers, topic, fetch_wait_ms)?;
    let codec = ControlCodec::current();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let received_ms = wall_ms();
        let Some(c) = m.payload().and_then(|p| codec.decode(p).ok()) else {
            continue;
        };
        if let Some(trigger) = c.trigger_event_id {
            lock(seen).entry(trigger).or_default().push(Seen {
                received_ms,
                decided_ms: c.decided_at,
                record_ms: m.timestamp().to_millis().unwrap_or(0),
            });
        }
    }
    Ok(())
}

/// The producer that relays probes: the aggregator's control-producer settings.
fn relay_producer(brokers: &str) -> anyhow::Result<BaseProducer> {
    Ok(costpipe_aggregator::kafka_sinks::producer_config(brokers).create()?)
}

/// Each probe's delay from its production to when `seen` noted it, for the probes it noted.
fn delays_to(probes: &[Probe], seen: &HashMap<usize, f64>) -> Vec<f64> {
    probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| seen.get(&i).map(|at| at - p.produced_ms))
        .collect()
}

/// Follows the usage topic, noting when each probe (by its header) is received; with
/// `relay_to`, re-produces each probe's index to that topic at once.
fn follow_probes(
    brokers: &str,
    topic: &str,
    fetch_wait_ms: u32,
    seen: &Mutex<HashMap<usize, f64>>,
    relay_to: Option<&str>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let consumer = consumer_of(brokers, topic, fetch_wait_ms)?;
    let relay = relay_to
        .map(|t| relay_producer(brokers).map(|p| (p, t)))
        .transpose()?;
    while !stop.load(Ordering::Relaxed) {
        if let Some((producer, _)) = &relay {
            producer.poll(Duration::ZERO);
        }
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let Some(headers) = m.headers() else { continue };
        let at = wall_ms();
        for h in headers.iter() {
            if h.key != PROBE_HEADER {
                continue;
            }
            let Some(i) = h
                .value
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<usize>().ok())
            else {
                continue;
            };
            let first = {
                let mut seen = lock(seen);
                let first = !seen.contains_key(&i);
                seen.entry(i).or_insert(at);
                first
            };
            if let (true, Some((producer, relay_topic))) = (first, &relay) {
                let index = i.to_string();
                if let Err((e, _)) = producer.send(
                    BaseRecord::<str, str>::to(relay_topic)
                        .key(&index)
                        .payload(&index),
                ) {
                    eprintln!("relaying probe {i}: {e}");
                }
                producer.poll(Duration::ZERO);
            }
        }
    }
    if let Some((producer, _)) = &relay {
        let _ = producer.flush(Duration::from_secs(5));
    }
    Ok(())
}

/// Follows the relay topic, noting when each relayed probe is received.
fn follow_relay(
    brokers: &str,
    topic: &str,
    fetch_wait_ms: u32,
    seen: &Mutex<HashMap<usize, f64>>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let consumer = consumer_of(brokers, topic, fetch_wait_ms)?;
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let at = wall_ms();
        if let Some(i) = m
            .payload()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            lock(seen).entry(i).or_insert(at);
        }
    }
    Ok(())
}

pub async fn control_latency(common: &Common, a: &ControlLatencyArgs) -> anyhow::Result<()> {
    let bin = sibling_binary("costpipe-aggregator", &a.aggregator_bin)?;
    let id = short_id();
    let topic = format!("bench.ctl.{id}");
    let database = format!("bench_ctl_{id}");
    let control_topic = format!("{database}.control");
    let probe_budget_n = a.probes.div_ceil(RUNGS).max(1);
    let probes_n = probe_budget_n * RUNGS;

    // One probe's price, as the aggregator will compute it (same catalog, same model).
    let catalog = Catalog::builtin();
    let priced = price_event(
        &catalog,
        &probe_event(uuid::Uuid::nil(), wall_ms() as i64, 0),
    );
    anyhow::ensure!(
        priced.billing_cost > Decimal::ZERO,
        "the probe event is not priced: {:?}",
        priced.unpriced
    );
    let mut budgets = probe_budgets(
        probe_budget_n,
        priced.billing_cost,
        &priced.billing_currency,
    );
    budgets.extend(bench_budgets(a.budgets, a.budget_shape));
    let budgets_file = std::env::temp_dir().join(format!("{database}-budgets.json"));
    std::fs::write(&budgets_file, serde_json::to_vec(&budgets)?)?;

    let relay_topic = format!("{database}.relay");
    let mut topics = vec![TopicSpec {
        name: topic.clone(),
        partitions: a.partitions,
        compacted: false,
    }];
    if a.relay_fetch_wait_ms.is_some() {
        topics.push(TopicSpec {
            name: relay_topic.clone(),
            partitions: 1,
            compacted: false,
        });
    }
    ensure_topics(&common.brokers, &topics).await?;
    let mut extra = env_pairs(&a.env);
    extra.push((
        "COSTPIPE_BUDGETS_FILE".into(),
        budgets_file.display().to_string(),
    ));
    let load_before = loadavg();
    let mut agg = if a.without_aggregator {
        println!("no aggregator (--without-aggregator); load average {load_before}");
        None
    } else {
        let mut agg = Aggregator::spawn(&bin, common, &topic, &database, &extra)?;
        let started = Instant::now();
        loop {
            agg.assert_running()?;
            let m = agg.metrics();
            if metric(&m, "assigned_partitions") == Some(a.partitions as f64)
                && metric(&m, "budgets") == Some(budgets.len() as f64)
            {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(90),
                "partitions or budgets not taken up after 90 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "aggregator holds {} partitions and {} budgets ({probe_budget_n} probe budgets, limit {} {}) after {:.1}s; load average {load_before}",
            a.partitions,
            budgets.len(),
            (priced.billing_cost * Decimal::from(RUNGS)).normalize(),
            priced.billing_currency,
            started.elapsed().as_secs_f64()
        );
        Some(agg)
    };

    let stop = Arc::new(AtomicBool::new(false));
    let mut control_seen: Vec<(u32, SeenMap)> = Vec::new();
    let mut threads = Vec::new();
    let control_waits: &[u32] = if agg.is_some() {
        &a.control_fetch_wait_ms
    } else {
        &[]
    };
    for &wait in control_waits {
        let seen: SeenMap = Default::default();
        control_seen.push((wait, seen.clone()));
        let (brokers, t, stop) = (common.brokers.clone(), control_topic.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            follow_controls(&brokers, &t, wait, &seen, &stop)
        }));
    }
    let mut floor_seen: Vec<(u32, FloorMap)> = Vec::new();
    for (k, &wait) in a.floor_fetch_wait_ms.iter().enumerate() {
        let seen: FloorMap = Default::default();
        floor_seen.push((wait, seen.clone()));
        let (brokers, t, stop) = (common.brokers.clone(), topic.clone(), stop.clone());
        let relay_to = (k == 0 && a.relay_fetch_wait_ms.is_some()).then(|| relay_topic.clone());
        threads.push(std::thread::spawn(move || {
            follow_probes(&brokers, &t, wait, &seen, relay_to.as_deref(), &stop)
        }));
    }
    anyhow::ensure!(
        a.relay_fetch_wait_ms.is_none() || !a.floor_fetch_wait_ms.is_empty(),
        "--relay-fetch-wait-ms needs a floor consumer (--floor-fetch-wait-ms) to relay from"
    );
    let relay_seen: Option<(u32, FloorMap)> = a.relay_fetch_wait_ms.map(|wait| {
        let seen: FloorMap = Default::default();
        let (brokers, t, stop) = (common.brokers.clone(), relay_topic.clone(), stop.clone());
        let thread_seen = seen.clone();
        threads.push(std::thread::spawn(move || {
            follow_relay(&brokers, &t, wait, &thread_seen, &stop)
        }));
        (wait, seen)
    });

    let plan = ProducePlan {
        brokers: common.brokers.clone(),
        topic: topic.clone(),
        rate: a.rate,
        warmup: Duration::from_secs(a.warmup_s),
        measured: Duration::from_secs(a.seconds),
        probes: probes_n,
        probe_budgets: probe_budget_n,
    };
    let pid = agg.as_ref().map(Aggregator::pid);
    let ch_pid = stack_pid(&common.stack_dir, "clickhouse");
    let broker_pid = stack_pid(&common.stack_dir, "kafka");
    let cpu_of = |p: Option<u32>| p.and_then(cpu_seconds);
    let self_pid = Some(std::process::id());
    let bar = Progress::over_time(
        Duration::from_secs(a.warmup_s + a.seconds),
        &format!("background {}/s with probes", a.rate),
    );
    let producer = tokio::task::spawn_blocking(move || produce(&plan));
    // CPU over the measured phase (the warm-up is left out).
    tokio::time::sleep(Duration::from_secs(a.warmup_s)).await;
    let cpu0 = (
        cpu_of(pid),
        cpu_of(ch_pid),
        cpu_of(broker_pid),
        cpu_of(self_pid),
    );
    let load_start = loadavg();
    let produced = producer.await??;
    bar.clear();
    let cpu1 = (
        cpu_of(pid),
        cpu_of(ch_pid),
        cpu_of(broker_pid),
        cpu_of(self_pid),
    );
    let load_end = loadavg();
    println!(
        "produced {} background events and {} probes in {:.1}s ({:.0} events/s), {} failed; load average {load_start} at the first probe, {load_end} at the last",
        produced.background,
        produced.probes.len(),
        produced.secs,
        produced.background as f64 / produced.secs,
        produced.failed
    );
    // Wait for the probes' control and relayed records (every consumer) or the drain time.
    let waited = Instant::now();
    loop {
        let all = control_seen
            .iter()
            .all(|(_, s)| lock(s).len() >= produced.probes.len())
            && relay_seen
                .iter()
                .all(|(_, s)| lock(s).len() >= produced.probes.len());
        if all || waited.elapsed() > Duration::from_secs(a.drain_s) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = agg.as_ref().map(Aggregator::metrics);
    let stored = ch_client(&common.clickhouse_url)
        .query(&format!(
            "SELECT count() FROM {database}.usage_events_priced"
        ))
        .fetch_one::<u64>()
        .await
        .unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        match t.join() {
            Ok(Err(e)) => eprintln!("consumer thread: {e:#}"),
            Err(_) => eprintln!("consumer thread panicked"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(agg) = agg.take() {
        agg.stop().await;
    }
    if !a.keep {
        ch_client(&common.clickhouse_url)
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await?;
        delete_topics(
            &common.brokers,
            &[
                topic.clone(),
                control_topic.clone(),
                format!("{database}.dlq"),
                format!("{database}.budgets"),
                relay_topic.clone(),
            ],
        )
        .await;
        let _ = std::fs::remove_file(&budgets_file);
    }

    // --- report ---
    let n = produced.probes.len();
    let measured_s = a.seconds as f64;
    let delta = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| y - x);
    let share =
        |d: Option<f64>| d.map_or("?".into(), |d| format!("{:.0} %", d / measured_s * 100.0));
    println!(
        "background {:.0} events/s over {} s; probes {n} ({} budgets × {RUNGS} rungs, one every {:.0} ms); background budgets {}; stored rows {stored}",
        a.rate,
        a.seconds,
        probe_budget_n,
        measured_s * 1000.0 / n.max(1) as f64,
        a.budgets
    );
    println!(
        "CPU over the measured phase, share of one core: aggregator {}, ClickHouse {}, broker {}, this benchmark (producer and consumers) {}",
        share(delta(cpu0.0, cpu1.0)),
        share(delta(cpu0.1, cpu1.1)),
        share(delta(cpu0.2, cpu1.2)),
        share(delta(cpu0.3, cpu1.3)),
    );
    if let Some(metrics) = &metrics {
        println!(
            "aggregator: epochs written {}, time inside writes {:.1}s, control records {}, aggregator env {:?}",
            metric(metrics, "epochs_written_total").unwrap_or(f64::NAN),
            metric(metrics, "flush_seconds_total").unwrap_or(f64::NAN),
            metric(metrics, "control_events_total").unwrap_or(f64::NAN),
            a.env,
        );
    }
    let to_acked = delays_to(&produced.probes, &produced.acked);
    println!(
        "{}",
        stats_line(
            "probe production → acknowledged by the broker (linger, produce request, append; acks=all)",
            to_acked,
            n
        )
    );
    for (wait, seen) in &floor_seen {
        let to_floor = delays_to(&produced.probes, &lock(seen));
        println!(
            "{}",
            stats_line(
                &format!(
                    "probe production → received by a plain usage-topic consumer (fetch.wait.max.ms={wait})"
                ),
                to_floor,
                n
            )
        );
    }
    if let Some((wait, seen)) = &relay_seen {
        let to_relayed = delays_to(&produced.probes, &lock(seen));
        println!(
            "{}",
            stats_line(
                &format!(
                    "probe production → relayed at once by the first floor consumer → received (fetch.wait.max.ms={wait}): the two hops of a control record, no work between"
                ),
                to_relayed,
                n
            )
        );
    }
    for (wait, seen) in &control_seen {
        let seen = lock(seen);
        let (mut total, mut to_decided, mut to_record, mut to_received) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut duplicates = 0usize;
        for p in &produced.probes {
            let Some(list) = seen.get(&p.id) else {
                continue;
            };
            duplicates += list.len() - 1;
            let s = list[0];
            total.push(s.received_ms - p.produced_ms);
            to_decided.push(s.decided_ms as f64 - p.produced_ms);
            to_record.push((s.record_ms - s.decided_ms) as f64);
            to_received.push(s.received_ms - s.record_ms as f64);
        }
        println!("control consumer with fetch.wait.max.ms={wait}: {duplicates} duplicate records");
        println!(
            "  {}",
            stats_line("production → control record received", total, n)
        );
        println!(
            "  {}",
            stats_line(
                "  of which production → decided (decided_at; usage hop + aggregator)",
                to_decided,
                n
            )
        );
        println!(
            "  {}",
            stats_line(
                "  of which decided → handed to the control producer (record timestamp)",
                to_record,
                n
            )
        );
        println!(
            "  {}",
            stats_line(
                "  of which handed to the producer → received (control hop)",
                to_received,
                n
            )
        );
    }
    Ok(())
}
