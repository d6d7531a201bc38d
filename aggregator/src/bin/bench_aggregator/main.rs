//! costpipe-bench-aggregator: measures the aggregator against the raw limit of the same
//! machine and topic (see `aggregator/BENCHMARKS.md` for the method and the results).
//!
//! Subcommands:
//! - `raw`: one round of rdkafka consume + `UsageCodec::current().decode`, nothing else;
//! - `aggregator`: one round of the release `costpipe-aggregator` binary on a pre-filled
//!   topic (fresh database, fresh group), timed from its first stored row to its last;
//! - `throughput`: alternating `raw` and `aggregator` rounds, with medians;
//! - `restore`: the read and the rebuild a partition assignment does, for N window keys;
//! - `latency` (`bench_aggregator/latency.rs`): events produced at a steady rate into a topic
//!   the aggregator consumes, timed to their row in ClickHouse and to their count in the live
//!   view;
//! - `control-latency` (`bench_aggregator/control_latency.rs`): under a steady background
//!   load, probe events that each cross one rung of a budget, timed from their production to
//!   their control record being consumed;
//! - `budget-cost` (`bench_aggregator/budget_cost.rs`): the budgets' share of the run loop,
//!   per event and per tick, in process;
//! - `retime`: a copy of a topic with every event time moved into the last few minutes.
//!
//! On a terminal, rounds and timed runs show a progress bar on stderr (`costpipe-progress`);
//! every subcommand ends with a one-line summary.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use clickhouse::Row;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;

use costpipe_aggregator::clickhouse_store::ClickHouseStore;
use costpipe_aggregator_core::{
    plan_resume, EpochPolicy, PartitionCheckpoint, Processor, RecentIds,
};
use costpipe_clickhouse::ClickHouseArgs;
use costpipe_kafka::{ensure_topics, TopicSpec};
use costpipe_pricing::Catalog;
use costpipe_progress::Progress;
use costpipe_schemas::{UsageCodec, ValidationLimits};

mod budget_cost;
mod control_latency;
mod latency;

use budget_cost::{budget_cost, BudgetCostArgs};
use control_latency::{control_latency, ControlLatencyArgs};
use latency::{latency, LatencyArgs};

#[derive(Debug, Parser)]
#[command(
    name = "costpipe-bench-aggregator",
    about = "Aggregator benchmarks: raw limit, end to end, restore, latency"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Args)]
struct Common {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "COSTPIPE_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    brokers: String,
    /// ClickHouse HTTP URL.
    #[arg(
        long,
        env = "COSTPIPE_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:18123"
    )]
    clickhouse_url: String,
    /// The local stack's directory (its pid files give the broker's and ClickHouse's CPU).
    #[arg(long, default_value = ".stack")]
    stack_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One raw round: consume + decode, nothing else.
    Raw(RawArgs),
    /// One aggregator round on a pre-filled topic.
    Aggregator(AggArgs),
    /// Alternating raw and aggregator rounds, with medians.
    Throughput(ThroughputArgs),
    /// Window restore of N keys: the read and the rebuild.
    Restore(RestoreArgs),
    /// Production → ClickHouse row and production → live view latency.
    Latency(LatencyArgs),
    /// Production → control record consumed, for probe events under a background load.
    ControlLatency(ControlLatencyArgs),
    /// What budgets cost the run loop per event and per tick, in process (no I/O).
    BudgetCost(BudgetCostArgs),
    /// Copies a topic to a new one, moving every event time into the last few minutes
    /// (everything else, keys included, unchanged).
    Retime(RetimeArgs),
}

#[derive(Debug, Clone, Args)]
struct RetimeArgs {
    /// Source topic.
    #[arg(long)]
    from: String,
    /// Destination topic (created with `--partitions`).
    #[arg(long)]
    to: String,
    /// Events on the source topic.
    #[arg(long)]
    events: u64,
    /// New event times are spread over this many minutes before now.
    #[arg(long, default_value_t = 10)]
    minutes: i64,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// How the new event times follow the records' order on each partition.
    #[arg(long, value_enum, default_value_t = RetimeOrder::Shuffled)]
    order: RetimeOrder,
    /// With `--order arrival`: each event is up to this much older than its place in the
    /// stream, as emitters' clocks and batching make it.
    #[arg(long, default_value_t = 2_000)]
    jitter_ms: i64,
}

/// The order of event times on the copied topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RetimeOrder {
    /// The source's event time modulo the spread: as unordered as loadgen's month, the worst
    /// case for the events table, whose key starts with (tenant, event_time).
    Shuffled,
    /// Event times rise with the records' order, less a per-event jitter: what a live topic
    /// holds, where each event is emitted when its call ends.
    Arrival,
}

#[derive(Debug, Clone, Args)]
struct RawArgs {
    /// The pre-filled usage topic.
    #[arg(long)]
    topic: String,
    /// Events on the topic (tansu's watermarks under-report; give the produced count).
    #[arg(long)]
    events: u64,
    /// Consumer threads (partitions split between them with manual assignment).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Debug, Clone, Args)]
struct AggArgs {
    /// The pre-filled usage topic.
    #[arg(long)]
    topic: String,
    /// Events on the topic.
    #[arg(long)]
    events: u64,
    /// The aggregator binary (default: next to this one).
    #[arg(long)]
    aggregator_bin: Option<PathBuf>,
    /// Record a `perf` profile of the aggregator, from its first row to its last, here.
    #[arg(long)]
    perf_out: Option<PathBuf>,
    /// Extra `perf record` arguments (split on spaces).
    #[arg(long, default_value = "-F 499 -g")]
    perf_args: String,
    /// Give up when the stored count has not moved for this long, in seconds.
    #[arg(long, default_value_t = 120)]
    stall_s: u64,
    /// Extra environment for the aggregator, `NAME=value`.
    #[arg(long = "env")]
    env: Vec<String>,
    /// Keep the round's database (dropped by default, so that its merges do not load the
    /// next round).
    #[arg(long)]
    keep_db: bool,
    /// Sample ClickHouse's `system.processes` and `system.merges` this often (ms; 0: off)
    /// to see which of the aggregator's requests ClickHouse is busy with.
    #[arg(long, default_value_t = 0)]
    sample_clickhouse_ms: u64,
    /// Budgets the aggregator evaluates (`bench_budgets`: scopes over the synthetic stream's
    /// tenants, departments, features and models, calendar and rolling, limits too high to
    /// breach). `throughput` then runs each round with none and with this many.
    #[arg(long, default_value_t = 0)]
    budgets: usize,
    /// How the budgets are laid out over the stream (see `BudgetShape`).
    #[arg(long, value_enum, default_value_t = BudgetShape::Dense)]
    budget_shape: BudgetShape,
}

#[derive(Debug, Clone, Args)]
struct ThroughputArgs {
    #[command(flatten)]
    agg: AggArgs,
    /// Rounds of each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Raw rounds also run with these thread counts (1 is always run).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    raw_threads: Vec<usize>,
}

#[derive(Debug, Clone, Args)]
struct RestoreArgs {
    /// Distinct (tenant, department, model) keys, one minute row each.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Rounds (read + rebuild each).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Keep the scratch database.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let c = &cli.common;
    let started = Instant::now();
    let done = |what: &str| {
        println!(
            "costpipe-bench-aggregator {what}: finished in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    };
    match &cli.command {
        // One round: its result line is the summary.
        Cmd::Raw(a) => {
            let p = Progress::spinner("raw round: consuming and decoding");
            let r = raw_round(c, a).await?;
            p.finish(r.line(a.threads));
        }
        Cmd::Aggregator(a) => {
            let p = Progress::spinner("aggregator round: waiting for its last stored row");
            let r = aggregator_round(c, a).await?;
            p.finish(r.line());
        }
        // Ends with a summary of the medians.
        Cmd::Throughput(a) => throughput(c, a).await?,
        Cmd::Restore(a) => {
            restore(c, a).await?;
            done("restore");
        }
        Cmd::Latency(a) => {
            latency(c, a).await?;
            done("latency");
        }
        Cmd::ControlLatency(a) => {
            control_latency(c, a).await?;
            done("control-latency");
        }
        // Ends with its medians.
        Cmd::BudgetCost(a) => budget_cost(c, a).await?,
        Cmd::Retime(a) => {
            ensure_topics(
                &c.brokers,
                &[TopicSpec {
                    name: a.to.clone(),
                    partitions: a.partitions,
                    compacted: false,
                }],
            )
            .await?;
            let (brokers, a) = (c.brokers.clone(), a.clone());
            let p = Progress::bar(a.events, "events", "retiming");
            let summary = tokio::task::block_in_place(|| retime(&brokers, &a, &p))?;
            p.finish(summary);
        }
    }
    Ok(())
}

// --- shared helpers -------------------------------------------------------------------------

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// `--env NAME=value` arguments as pairs for [`Aggregator::spawn`] (an entry without `=` is
/// skipped).
fn env_pairs(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// user + system CPU seconds of `pid`, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `/proc/<pid>/status` field in kB (e.g. `VmHWM`).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn stack_pid(stack_dir: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(stack_dir.join("run").join(format!("{name}.pid")))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn sibling_binary(name: &str, given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("binary dir")?.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: cargo build --release -p costpipe-aggregator --bins",
        path.display()
    );
    Ok(path)
}

/// A blocking HTTP/1.1 GET on 127.0.0.1 (the live view and /metrics); status and body.
fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Prometheus samples whose name ends with `suffix`, summed.
fn metric(text: &str, suffix: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let bare = name.split('{').next().unwrap_or(name);
        if bare.ends_with(suffix) {
            if let Ok(v) = value.parse::<f64>() {
                *found.get_or_insert(0.0) += v;
            }
        }
    }
    found
}

fn ch_client(url: &str) -> clickhouse::Client {
    clickhouse::Client::default().with_url(url)
}

async fn ch_count(ch: &clickhouse::Client, sql: &str) -> u64 {
    ch.query(sql).fetch_one::<u64>().await.unwrap_or(0)
}

/// Deletes `topics` (tansu keeps topics in memory); failures are reported, not fatal.
async fn delete_topics(brokers: &str, topics: &[String]) {
    let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    match admin {
        Ok(admin) => match admin.delete_topics(&names, &AdminOptions::new()).await {
            Ok(results) => {
                for r in results {
                    if let Err((t, e)) = r {
                        eprintln!("topic {t} not deleted: {e}");
                    }
                }
            }
            Err(e) => eprintln!("topics {names:?} not deleted: {e}"),
        },
        Err(e) => eprintln!("admin client: {e}"),
    }
}

/// A running aggregator, stopped with SIGTERM (then SIGKILL) when finished.
struct Aggregator {
    child: Child,
    metrics_addr: String,
    log: PathBuf,
}

impl Aggregator {
    fn spawn(
        bin: &Path,
        common: &Common,
        topic: &str,
        database: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<Aggregator> {
        let port = free_port()?;
        let metrics_addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("{database}-aggregator.log"));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.env("COSTPIPE_KAFKA_BROKERS", &common.brokers)
            .env("COSTPIPE_CLICKHOUSE_URL", &common.clickhouse_url)
            .env("COSTPIPE_CLICKHOUSE_DATABASE", database)
            .env("COSTPIPE_USAGE_TOPIC", topic)
            .env("COSTPIPE_CONTROL_TOPIC", format!("{database}.control"))
            .env("COSTPIPE_DEAD_LETTER_TOPIC", format!("{database}.dlq"))
            .env("COSTPIPE_BUDGET_TOPIC", format!("{database}.budgets"))
            .env("COSTPIPE_GROUP_ID", format!("{database}.group"))
            .env("COSTPIPE_SESSION_TIMEOUT_MS", "6000")
            .env("COSTPIPE_AGGREGATOR_METRICS_ADDR", &metrics_addr)
            .env("RUST_LOG", "info,rdkafka=warn");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Aggregator {
            child,
            metrics_addr,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn metrics(&self) -> String {
        http_get(&self.metrics_addr, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    fn assert_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "aggregator exited with {status}; log {}:\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- raw ------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct ThreadResult {
    events: u64,
    errors: u64,
    bytes: u64,
    checksum: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

#[derive(Debug)]
struct RawResult {
    events: u64,
    errors: u64,
    bytes: u64,
    secs: f64,
}

impl RawResult {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }

    fn line(&self, threads: usize) -> String {
        format!(
            "raw threads={threads} events={} decode_errors={} MB={:.0} first→last={:.2}s rate={:.0} events/s",
            self.events,
            self.errors,
            self.bytes as f64 / 1e6,
            self.secs,
            self.rate()
        )
    }
}

fn partitions_of(brokers: &str, topic: &str) -> anyhow::Result<Vec<i32>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .context("topic not in metadata")?;
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

async fn raw_round(common: &Common, a: &RawArgs) -> anyhow::Result<RawResult> {
    let brokers = common.brokers.clone();
    let a = a.clone();
    tokio::task::spawn_blocking(move || raw_round_blocking(&brokers, &a)).await?
}

fn raw_round_blocking(brokers: &str, a: &RawArgs) -> anyhow::Result<RawResult> {
    let parts = partitions_of(brokers, &a.topic)?;
    anyhow::ensure!(!parts.is_empty(), "topic {} has no partitions", a.topic);
    let threads = a.threads.clamp(1, parts.len());
    let total = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..threads {
        let mine: Vec<i32> = parts.iter().copied().skip(t).step_by(threads).collect();
        let (total, done) = (total.clone(), done.clone());
        let (brokers, topic, expected) = (brokers.to_string(), a.topic.clone(), a.events);
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<ThreadResult> {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("group.id", format!("bench-raw-{}", short_id()))
                    .set("enable.auto.commit", "false")
                    // The aggregator's setting (see performance-facts.md).
                    .set("fetch.queue.backoff.ms", "10")
                    .create()?;
                let mut tpl = TopicPartitionList::new();
                for p in &mine {
                    tpl.add_partition_offset(&topic, *p, Offset::Beginning)?;
                }
                consumer.assign(&tpl)?;
                let codec = UsageCodec::current();
                let mut r = ThreadResult::default();
                let mut last_seen = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            let now = Instant::now();
                            r.first.get_or_insert(now);
                            r.last = Some(now);
                            last_seen = now;
                            if let Some(p) = m.payload() {
                                r.bytes += p.len() as u64;
                                match codec.decode(p) {
                                    Ok(e) => {
                                        r.checksum = r.checksum.wrapping_add(e.input_tokens as u64);
                                        r.events += 1;
                                    }
                                    Err(_) => r.errors += 1,
                                }
                            }
                            if total.fetch_add(1, Ordering::Relaxed) + 1 >= expected {
                                done.store(true, Ordering::Relaxed);
                            }
                        }
                        Some(Err(e)) => eprintln!("consumer error: {e}"),
                        None if last_seen.elapsed() > Duration::from_secs(5) => break,
                        None => {}
                    }
                }
                Ok(r)
            },
        ));
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??,
        );
    }
    let first = results.iter().filter_map(|r| r.first).min();
    let last = results.iter().filter_map(|r| r.last).max();
    let secs = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => f64::NAN,
    };
    std::hint::black_box(results.iter().map(|r| r.checksum).sum::<u64>());
    Ok(RawResult {
        events: results.iter().map(|r| r.events).sum(),
        errors: results.iter().map(|r| r.errors).sum(),
        bytes: results.iter().map(|r| r.bytes).sum(),
        secs,
    })
}

/// Copies the events and returns the summary line.
fn retime(brokers: &str, a: &RetimeArgs, progress: &Progress) -> anyhow::Result<String> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-retime-{}", short_id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions_of(brokers, &a.from)? {
        tpl.add_partition_offset(&a.from, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    // The emitter's settings.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "10")
        .set("batch.size", (1 << 20).to_string())
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let codec = UsageCodec::current();
    let now = chrono::Utc::now().timestamp_millis();
    let spread = a.minutes.max(1) * 60_000;
    let mut copied = 0u64;
    let mut last_seen = Instant::now();
    while copied < a.events && last_seen.elapsed() < Duration::from_secs(10) {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        last_seen = Instant::now();
        let Some(payload) = m.payload() else { continue };
        let mut e = codec.decode(payload)?;
        e.event_time = match a.order {
            RetimeOrder::Shuffled => now - e.event_time.rem_euclid(spread),
            RetimeOrder::Arrival => {
                let place = i64::try_from(copied.saturating_mul(spread as u64) / a.events.max(1))
                    .unwrap_or(spread);
                let jitter = i64::try_from(e.event_id.as_u64_pair().0 % a.jitter_ms.max(1) as u64)
                    .unwrap_or(0);
                now - spread + place - jitter
            }
        };
        let bytes = codec.encode(&e)?;
        let key = m.key().unwrap_or_default();
        loop {
            match producer.send(BaseRecord::to(&a.to).key(key).payload(&bytes)) {
                Ok(()) => break,
                Err((err, _)) => {
                    anyhow::ensure!(
                        err.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "produce failed: {err}"
                    );
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
        copied += 1;
        progress.inc(1);
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(format!(
        "copied {copied} events from {} to {} in {:.1} s, event times now within the last {} min ({:?} order)",
        a.from,
        a.to,
        progress.elapsed().as_secs_f64(),
        a.minutes,
        a.order
    ))
}

// --- aggregator end to end -----------------------------------------------------------------

#[derive(Debug)]
struct AggResult {
    database: String,
    stored: u64,
    /// Rows visible at the first poll that saw any.
    first_count: u64,
    /// First poll with rows → poll that saw all of them.
    secs: f64,
    /// Spawn → first rows.
    first_row_after_s: f64,
    /// (count − rows of the first insert) / (max − min ingested_at).
    ingested_rate: f64,
    inserts: u64,
    cpu_stream_s: f64,
    cpu_total_s: f64,
    clickhouse_cpu_s: Option<f64>,
    broker_cpu_s: Option<f64>,
    peak_rss_kb: u64,
    flush_seconds: f64,
    epochs: f64,
    rollup_rows: u64,
    window_minute_rows: u64,
}

impl AggResult {
    fn rate(&self) -> f64 {
        (self.stored - self.first_count) as f64 / self.secs
    }

    fn line(&self) -> String {
        let per_event = |s: f64| s * 1e6 / self.stored as f64;
        format!(
            "aggregator db={} stored={} first_count={} first→last={:.2}s rate={:.0} events/s \
             (ingested_at rate {:.0}, inserts {}), first row after {:.1}s; CPU {:.2} µs/event \
             (first→last; whole process {:.2} µs), ClickHouse {} µs/event, broker {} µs/event, \
             peak RSS {} MB, epochs {}, time inside writes {:.1}s, rollup rows {}, window-minute rows {}",
            self.database,
            self.stored,
            self.first_count,
            self.secs,
            self.rate(),
            self.ingested_rate,
            self.inserts,
            self.first_row_after_s,
            per_event(self.cpu_stream_s),
            per_event(self.cpu_total_s),
            self.clickhouse_cpu_s
                .map_or("?".into(), |s| format!("{:.2}", per_event(s))),
            self.broker_cpu_s
                .map_or("?".into(), |s| format!("{:.2}", per_event(s))),
            self.peak_rss_kb / 1024,
            self.epochs,
            self.flush_seconds,
            self.rollup_rows,
            self.window_minute_rows,
        )
    }
}

#[derive(Row, Deserialize)]
struct IngestedSpan {
    min_ms: i64,
    max_ms: i64,
    at_min: u64,
    inserts: u64,
}

/// The synthetic stream's tenants, departments and features (ingest/src/synthetic.rs).
const TENANTS: [&str; 10] = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
];
const DEPARTMENTS: [&str; 6] = [
    "engineering",
    "research",
    "support",
    "marketing",
    "sales",
    "legal",
];
const FEATURES: [&str; 5] = ["chat", "summarize", "search", "codegen", "classify"];

/// How `bench_budgets` spreads its budgets over the synthetic stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BudgetShape {
    /// Every budget on the stream's 10 tenants, a quarter each of department days, feature
    /// months, department × model rolling hours and user rolling days: many budgets share a
    /// scope, so each event meets ~100 of 10,000 (a worst case for the per-event work).
    Dense,
    /// Per stream tenant, one budget per tenant (month), department (day), feature (month) and
    /// user (rolling 24 h), 52 per tenant; the rest are monthly budgets of tenants the stream
    /// never names, as in a service with many customers of which a few are active at a time.
    /// Each event meets 4.
    Sparse,
}

/// `n` budgets over the synthetic stream's tenants (ingest/src/synthetic.rs), departments,
/// features, users and models, laid out by `shape`, with limits no stream reaches, so that
/// the round measures matching and accumulation, not publishing.
fn bench_budgets(n: usize, shape: BudgetShape) -> Vec<serde_json::Value> {
    const MODELS: [&str; 3] = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"];
    let budget = |i: usize, scope: serde_json::Value, period: serde_json::Value| {
        serde_json::json!({
            "budget_id": format!("bench:{i}"),
            "scope": scope,
            "period": period,
            "limit": "1000000000",
            "currency": "USD",
        })
    };
    let dense = |i: usize| {
        let tenant = TENANTS[i % TENANTS.len()];
        let j = i / TENANTS.len();
        let (scope, period) = match i % 4 {
            0 => (
                serde_json::json!({"tenant": tenant, "department": DEPARTMENTS[j % 6]}),
                serde_json::json!({"calendar": "day", "time_zone": "Europe/Paris"}),
            ),
            1 => (
                serde_json::json!({"tenant": tenant, "feature": FEATURES[j % 5]}),
                serde_json::json!({"calendar": "month"}),
            ),
            2 => (
                serde_json::json!({"tenant": tenant, "department": DEPARTMENTS[j % 6], "model": MODELS[j % 3]}),
                serde_json::json!({"rolling": "1h"}),
            ),
            _ => (
                // The stream's user ids are `<tenant>-user-<0..40>`.
                serde_json::json!({"tenant": tenant, "user": format!("{tenant}-user-{}", j % 40)}),
                serde_json::json!({"rolling": "24h"}),
            ),
        };
        budget(i, scope, period)
    };
    // Sparse: scopes of the stream's tenants first, then idle tenants.
    let mut active: Vec<(serde_json::Value, serde_json::Value)> = Vec::new();
    if shape == BudgetShape::Sparse {
        for tenant in TENANTS {
            active.push((
                serde_json::json!({"tenant": tenant}),
                serde_json::json!({"calendar": "month"}),
            ));
            for d in DEPARTMENTS {
                active.push((
                    serde_json::json!({"tenant": tenant, "department": d}),
                    serde_json::json!({"calendar": "day", "time_zone": "Europe/Paris"}),
                ));
            }
            for f in FEATURES {
                active.push((
                    serde_json::json!({"tenant": tenant, "feature": f}),
                    serde_json::json!({"calendar": "month"}),
                ));
            }
            for u in 0..40 {
                active.push((
                    serde_json::json!({"tenant": tenant, "user": format!("{tenant}-user-{u}")}),
                    serde_json::json!({"rolling": "24h"}),
                ));
            }
        }
    }
    (0..n)
        .map(|i| match shape {
            BudgetShape::Dense => dense(i),
            BudgetShape::Sparse => match active.get(i) {
                Some((scope, period)) => budget(i, scope.clone(), period.clone()),
                None => budget(
                    i,
                    serde_json::json!({"tenant": format!("idle-{i}")}),
                    serde_json::json!({"calendar": "month"}),
                ),
            },
        })
        .collect()
}

async fn aggregator_round(common: &Common, a: &AggArgs) -> anyhow::Result<AggResult> {
    let bin = sibling_binary("costpipe-aggregator", &a.aggregator_bin)?;
    let database = format!("bench_agg_{}", short_id());
    // The topic's last epochs are small; held for more records that never come, they would
    // land up to COSTPIPE_EPOCH_MAX_HOLD_MS late and stretch "first row to last", which is
    // about the steady rate, not the tail. `--env COSTPIPE_EPOCH_MIN_RECORDS=n` overrides.
    let mut extra: Vec<(String, String)> =
        vec![("COSTPIPE_EPOCH_MIN_RECORDS".to_string(), "0".to_string())];
    extra.extend(env_pairs(&a.env));
    let budgets_file =
        (a.budgets > 0).then(|| std::env::temp_dir().join(format!("{database}-budgets.json")));
    if let Some(path) = &budgets_file {
        std::fs::write(
            path,
            serde_json::to_vec(&bench_budgets(a.budgets, a.budget_shape))?,
        )?;
        extra.push((
            "COSTPIPE_BUDGETS_FILE".to_string(),
            path.display().to_string(),
        ));
    }
    let ch = ch_client(&common.clickhouse_url);
    let ch_pid = stack_pid(&common.stack_dir, "clickhouse");
    let broker_pid = stack_pid(&common.stack_dir, "kafka");
    let spawned = Instant::now();
    let mut agg = Aggregator::spawn(&bin, common, &a.topic, &database, &extra)?;
    let pid = agg.pid();
    let count_sql = format!("SELECT count() FROM {database}.usage_events_priced");
    let sampling = Arc::new(AtomicBool::new(a.sample_clickhouse_ms > 0));
    let sampler = (a.sample_clickhouse_ms > 0).then(|| {
        tokio::spawn(sample_clickhouse(
            ch.clone(),
            database.clone(),
            a.sample_clickhouse_ms,
            sampling.clone(),
        ))
    });
    let mut first: Option<(Instant, u64)> = None;
    let mut cpu_first = 0.0;
    let (mut ch_first, mut broker_first) = (None, None);
    let mut perf: Option<Child> = None;
    let mut last_change = Instant::now();
    let mut last_count = 0;
    let done_at;
    loop {
        agg.assert_running()?;
        let n = ch_count(&ch, &count_sql).await;
        let now = Instant::now();
        if n > 0 && first.is_none() {
            first = Some((now, n));
            cpu_first = cpu_seconds(pid).unwrap_or(0.0);
            ch_first = ch_pid.and_then(cpu_seconds);
            broker_first = broker_pid.and_then(cpu_seconds);
            if let Some(out) = &a.perf_out {
                let mut cmd = Command::new("perf");
                cmd.arg("record")
                    .args(a.perf_args.split_whitespace())
                    .arg("-o")
                    .arg(out)
                    .args(["-p", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                perf = Some(cmd.spawn().context("starting perf")?);
            }
        }
        if n != last_count {
            last_count = n;
            last_change = now;
        }
        if n >= a.events {
            done_at = now;
            break;
        }
        if last_change.elapsed() > Duration::from_secs(a.stall_s) {
            eprintln!(
                "stalled at {n} of {} rows for {} s; reporting what was stored",
                a.events, a.stall_s
            );
            done_at = last_change;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu_last = cpu_seconds(pid).unwrap_or(0.0);
    let ch_last = ch_pid.and_then(cpu_seconds);
    let broker_last = broker_pid.and_then(cpu_seconds);
    if let Some(mut p) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait();
    }
    let peak_rss_kb = status_kb(pid, "VmHWM").unwrap_or(0);
    sampling.store(false, Ordering::Relaxed);
    if let Some(s) = sampler {
        let (samples, busy) = s.await?;
        let mut busy: Vec<_> = busy.into_iter().collect();
        busy.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        println!("ClickHouse samples (share of {samples} samples in which each was running):");
        for (what, n) in busy {
            println!(
                "  {:5.1} %  {what}",
                n as f64 * 100.0 / samples.max(1) as f64
            );
        }
    }
    let metrics = agg.metrics();
    agg.stop().await;
    let (first_at, first_count) = first.context("no row was ever stored")?;
    let stored = ch_count(&ch, &count_sql).await;
    let span: IngestedSpan = ch
        .query(&format!(
            "SELECT toInt64(toUnixTimestamp64Milli(min(ingested_at))) AS min_ms, \
             toInt64(toUnixTimestamp64Milli(max(ingested_at))) AS max_ms, \
             countIf(ingested_at = (SELECT min(ingested_at) FROM {database}.usage_events_priced)) AS at_min, \
             uniqExact(ingested_at) AS inserts FROM {database}.usage_events_priced"
        ))
        .fetch_one()
        .await?;
    let rollup_rows = ch_count(
        &ch,
        &format!("SELECT count() FROM {database}.usage_cost_minute"),
    )
    .await;
    let window_minute_rows = ch_count(
        &ch,
        &format!("SELECT count() FROM {database}.usage_window_minute"),
    )
    .await;
    if !a.keep_db {
        ch.query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await?;
        // The round's own topics (the usage topic is the caller's).
        delete_topics(
            &common.brokers,
            &[
                format!("{database}.control"),
                format!("{database}.dlq"),
                format!("{database}.budgets"),
            ],
        )
        .await;
    }
    if let Some(path) = &budgets_file {
        let _ = std::fs::remove_file(path);
    }
    let delta = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
    Ok(AggResult {
        database,
        stored,
        first_count,
        secs: (done_at - first_at).as_secs_f64(),
        first_row_after_s: (first_at - spawned).as_secs_f64(),
        ingested_rate: (stored - span.at_min) as f64
            / ((span.max_ms - span.min_ms).max(1) as f64 / 1000.0),
        inserts: span.inserts,
        cpu_stream_s: cpu_last - cpu_first,
        cpu_total_s: cpu_last,
        clickhouse_cpu_s: delta(ch_first, ch_last),
        broker_cpu_s: delta(broker_first, broker_last),
        peak_rss_kb,
        flush_seconds: metric(&metrics, "flush_seconds_total").unwrap_or(f64::NAN),
        epochs: metric(&metrics, "epochs_written_total").unwrap_or(f64::NAN),
        rollup_rows,
        window_minute_rows,
    })
}

#[derive(Row, Deserialize)]
struct Running {
    query: String,
}

/// Polls `system.processes` and `system.merges`, until `on` turns false, counting in how
/// many samples each kind of request of `database` was running. (samples, counts)
async fn sample_clickhouse(
    ch: clickhouse::Client,
    database: String,
    every_ms: u64,
    on: Arc<AtomicBool>,
) -> (u64, BTreeMap<String, u64>) {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut samples = 0;
    let sql = format!(
        "SELECT query FROM system.processes WHERE current_database = '{database}' \
         UNION ALL SELECT concat('MERGE ', table) AS query FROM system.merges WHERE database = '{database}'"
    );
    while on.load(Ordering::Relaxed) {
        if let Ok(rows) = ch.query(&sql).fetch_all::<Running>().await {
            samples += 1;
            let mut kinds: Vec<&'static str> = rows
                .iter()
                .filter_map(|r| classify(&r.query, &database))
                .collect();
            kinds.sort_unstable();
            kinds.dedup();
            let any = !kinds.is_empty();
            for k in kinds {
                *counts.entry(k.to_string()).or_default() += 1;
            }
            if any {
                *counts.entry("(any of the above)".into()).or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
    }
    (samples, counts)
}

fn classify(query: &str, database: &str) -> Option<&'static str> {
    let q = query.to_ascii_lowercase();
    if q.contains("system.processes") || q.contains("sleepeachrow") {
        return None;
    }
    if q.starts_with("merge ") {
        return Some(if q.contains("usage_events_priced") {
            "merge: usage_events_priced"
        } else {
            "merge: rollup/window/marker tables"
        });
    }
    if q.contains("select count() from") && q.contains(database) {
        return None; // this benchmark's own progress poll
    }
    Some(
        if q.starts_with("insert") && q.contains("usage_events_priced") {
            "INSERT usage_events_priced (+ its views)"
        } else if q.starts_with("insert") && q.contains("ingest_positions") {
            "INSERT ingest_positions (intent/claim)"
        } else if q.starts_with("insert") {
            "INSERT other"
        } else if q.contains("ingest_epochs_done") && q.contains("max(generation)") {
            "SELECT fence + marker check (verify)"
        } else if q.contains("from usage_events_priced") || q.contains("from usage_window_minute") {
            "SELECT restore reads"
        } else {
            "SELECT other"
        },
    )
}

async fn throughput(common: &Common, a: &ThroughputArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut threads = vec![1];
    threads.extend(a.raw_threads.iter().copied().filter(|t| *t != 1));
    let mut raw: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut agg_rates = Vec::new();
    let mut agg_cpu = Vec::new();
    let mut agg_ch_cpu = Vec::new();
    let mut agg_rss = Vec::new();
    let mut ratios = Vec::new();
    let (mut with_budgets, mut budget_ratios) = (Vec::new(), Vec::new());
    let steps = threads.len() + 1 + usize::from(a.agg.budgets > 0);
    let bar = Progress::bar((a.rounds * steps) as u64, "runs", "");
    for round in 1..=a.rounds {
        let mut raw1 = f64::NAN;
        for &t in &threads {
            bar.set_message(format!("round {round}: raw, {t} thread(s)"));
            let r = raw_round(
                common,
                &RawArgs {
                    topic: a.agg.topic.clone(),
                    events: a.agg.events,
                    threads: t,
                },
            )
            .await?;
            bar.println(format!("round {round}: {}", r.line(t)));
            anyhow::ensure!(
                r.events == a.agg.events,
                "raw round read {} events, expected {}",
                r.events,
                a.agg.events
            );
            if t == 1 {
                raw1 = r.rate();
            }
            raw.entry(t).or_default().push(r.rate());
            bar.inc(1);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let none = AggArgs {
            budgets: 0,
            ..a.agg.clone()
        };
        bar.set_message(format!("round {round}: aggregator"));
        let r = aggregator_round(common, &none).await?;
        bar.inc(1);
        bar.println(format!("round {round}: {}", r.line()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        if a.agg.budgets > 0 {
            bar.set_message(format!("round {round}: aggregator with budgets"));
            let b = aggregator_round(common, &a.agg).await?;
            bar.inc(1);
            bar.println(format!(
                "round {round} with {} budgets ({:?}): {}",
                a.agg.budgets,
                a.agg.budget_shape,
                b.line()
            ));
            with_budgets.push(b.rate());
            budget_ratios.push(b.rate() / r.rate());
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        ratios.push(r.rate() / raw1);
        agg_rates.push(r.rate());
        agg_cpu.push(r.cpu_stream_s * 1e6 / r.stored as f64);
        if let Some(c) = r.clickhouse_cpu_s {
            agg_ch_cpu.push(c * 1e6 / r.stored as f64);
        }
        agg_rss.push(r.peak_rss_kb as f64 / 1024.0);
    }
    bar.clear();
    println!();
    println!("| what | events/s (median of {}) | rounds |", a.rounds);
    println!("|---|---:|---|");
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (t, v) in &raw {
        println!(
            "| raw: rdkafka + UsageCodec::decode, {t} thread(s) | {:.0} | {} |",
            median(v.clone()),
            fmt(v)
        );
    }
    println!(
        "| costpipe-aggregator, first row to last | {:.0} | {} |",
        median(agg_rates.clone()),
        fmt(&agg_rates)
    );
    if a.agg.budgets > 0 {
        println!(
            "| costpipe-aggregator with {} budgets, first row to last | {:.0} | {} |",
            a.agg.budgets,
            median(with_budgets.clone()),
            fmt(&with_budgets)
        );
        println!(
            "\nwith {} budgets / with none (same round): median {:.1} %",
            a.agg.budgets,
            median(budget_ratios.clone()) * 100.0
        );
    }
    println!(
        "\naggregator / raw (1 thread, same round): median {:.1} % (rounds: {})",
        median(ratios.clone()) * 100.0,
        ratios
            .iter()
            .map(|r| format!("{:.1} %", r * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "aggregator CPU per event, first row to last: median {:.2} µs ({:?}); ClickHouse {:.2} µs; peak RSS median {:.0} MB",
        median(agg_cpu.clone()),
        agg_cpu.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>(),
        median(agg_ch_cpu),
        median(agg_rss)
    );
    println!(
        "throughput: {} rounds in {:.1} s; aggregator median {:.0} events/s, {:.1} % of raw (1 thread, same round)",
        a.rounds,
        started.elapsed().as_secs_f64(),
        median(agg_rates.clone()),
        median(ratios.clone()) * 100.0
    );
    Ok(())
}

// --- restore --------------------------------------------------------------------------------

fn rss_kb() -> u64 {
    status_kb(std::process::id(), "VmRSS").unwrap_or(0)
}

async fn restore(common: &Common, a: &RestoreArgs) -> anyhow::Result<()> {
    let database = format!("bench_restore_{}", short_id());
    let topic = "bench.restore";
    let args = ClickHouseArgs {
        url: common.clickhouse_url.clone(),
        database: database.clone(),
        timeout_ms: 600_000,
        ..ClickHouseArgs::default()
    };
    let store = ClickHouseStore::new(&args)?;
    store.migrate().await?;
    let ch = ch_client(&common.clickhouse_url);
    // Keys: tenant = n % 1000, department = n / 1000 % 100, model = n / 100000 (distinct for
    // n < 1e6; beyond, models go on counting). Each key has one minute, spread over the last
    // 24 h, so the rolling windows and today's and yesterday's days get bins.
    let insert_started = Instant::now();
    ch.query(&format!(
        "INSERT INTO {database}.usage_window_minute \
         (source_topic, source_partition, tenant_id, department, model, minute, events, \
          input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, \
          cache_write_1h_tokens, billing_cost) \
         SELECT '{topic}', 0, concat('tenant-', toString(number % 1000)), \
          concat('dept-', toString(intDiv(number, 1000) % 100)), \
          concat('model-', toString(intDiv(number, 100000))), \
          toStartOfMinute(now() - toIntervalSecond(number % 86400)), \
          1 + number % 7, 1200, 300, 0, 0, 0, 0, toDecimal128(0.0025, 12) \
         FROM numbers({})",
        a.keys
    ))
    .execute()
    .await?;
    println!(
        "inserted {} window-minute rows into {database}.usage_window_minute in {:.1}s",
        a.keys,
        insert_started.elapsed().as_secs_f64()
    );
    let distinct = ch_count(
        &ch,
        &format!(
            "SELECT uniqExact(tenant_id, department, model) FROM {database}.usage_window_minute"
        ),
    )
    .await;
    println!("distinct keys stored: {distinct}");
    let catalog = Arc::new(Catalog::builtin());
    let (mut reads, mut rebuilds) = (Vec::new(), Vec::new());
    let bar = Progress::bar(a.rounds as u64, "rounds", "restore");
    for round in 1..=a.rounds {
        bar.set_message(format!("round {round}"));
        let now = chrono::Utc::now().timestamp_millis();
        let rss_before = rss_kb();
        let t = Instant::now();
        let minutes = store
            .window_minutes(
                topic,
                0,
                costpipe_aggregator::kafka_source::restore_since(now),
            )
            .await?;
        let read_s = t.elapsed().as_secs_f64();
        let rss_rows = rss_kb();
        let mut processor = Processor::new(
            topic,
            catalog.clone(),
            ValidationLimits::default(),
            EpochPolicy {
                max_records: 50_000,
                max_age_ms: 1_000,
                max_hold_ms: 5_000,
                min_records: 0,
            },
        );
        let t = Instant::now();
        // What `Pipeline::apply_partition_changes` does for an assigned partition.
        processor.assign_at(
            0,
            plan_resume(&PartitionCheckpoint::default()),
            RecentIds::restored(Vec::new()),
            now,
        );
        let mut restored_tenants = std::collections::BTreeSet::new();
        let mut errors = 0u64;
        for m in &minutes {
            if processor
                .restore_minute(
                    0,
                    &m.tenant_id,
                    &m.department,
                    &m.model,
                    m.minute_s.saturating_mul(1000),
                    &m.amounts(),
                    now,
                )
                .is_err()
            {
                errors += 1;
            }
            restored_tenants.insert(m.tenant_id.clone());
        }
        let rebuild_s = t.elapsed().as_secs_f64();
        let (keys, bytes) = processor.window_size();
        let rss_windows = rss_kb();
        bar.println(format!(
            "round {round}: read {} rows in {read_s:.2}s ({:.0} rows/s, RSS +{} MB for the rows); \
             rebuild {keys} keys in {rebuild_s:.2}s ({:.2} µs/row, {errors} errors, {} tenants); \
             heap_bytes {} MB ({} B/key), RSS +{} MB for the windows",
            minutes.len(),
            minutes.len() as f64 / read_s,
            rss_rows.saturating_sub(rss_before) / 1024,
            rebuild_s * 1e6 / minutes.len().max(1) as f64,
            restored_tenants.len(),
            bytes / (1 << 20),
            bytes / keys.max(1),
            rss_windows.saturating_sub(rss_rows) / 1024,
        ));
        reads.push(read_s);
        rebuilds.push(rebuild_s);
        drop(processor);
        drop(minutes);
        bar.inc(1);
    }
    bar.clear();
    println!(
        "median: read {:.2}s, rebuild {:.2}s, total {:.2}s",
        median(reads.clone()),
        median(rebuilds.clone()),
        median(reads.iter().zip(&rebuilds).map(|(a, b)| a + b).collect())
    );
    if !a.keep {
        ch.query(&format!("DROP DATABASE {database}"))
            .execute()
            .await?;
    }
    Ok(())
}
