//! Harness for costpipe's end-to-end tests: the real broker and ClickHouse started by
//! `scripts/stack`, the real service binaries as child processes, and an independent,
//! hand-written price table to check totals against.
//!
//! Every test gets its own topics and ClickHouse database, so tests run in parallel.

pub mod billing_client;
pub mod dashboard_data;
pub mod deploy;
pub mod gateway_client;
pub mod proxy;
pub mod registry_double;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use costpipe_schemas::UsageEvent;

/// Where the local stack listens (the same variables `scripts/stack` reads).
pub struct Stack {
    pub brokers: String,
    pub clickhouse_url: String,
}

impl Stack {
    /// From the environment, with `scripts/stack`'s defaults.
    pub fn from_env() -> Stack {
        let kafka_port = std::env::var("COSTPIPE_KAFKA_PORT").unwrap_or_else(|_| "19092".into());
        let ch_port = std::env::var("COSTPIPE_CH_HTTP_PORT").unwrap_or_else(|_| "18123".into());
        Stack {
            brokers: format!("127.0.0.1:{kafka_port}"),
            clickhouse_url: format!("http://127.0.0.1:{ch_port}"),
        }
    }

    /// Runs `sql` over ClickHouse's HTTP interface and returns the TSV answer, trimmed.
    pub async fn query(&self, sql: &str) -> String {
        let resp = reqwest::Client::new()
            .post(&self.clickhouse_url)
            .body(sql.to_string())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "ClickHouse unreachable at {} (is scripts/stack up?): {e}",
                    self.clickhouse_url
                )
            });
        let status = resp.status();
        let text = resp.text().await.expect("ClickHouse answer");
        assert!(status.is_success(), "query failed: {sql}\n{text}");
        text.trim().to_string()
    }

    /// Like [`Stack::query`], but `None` on an error answer (e.g. a table the aggregator has
    /// not created yet), for use inside waits.
    pub async fn try_query(&self, sql: &str) -> Option<String> {
        let resp = reqwest::Client::new()
            .post(&self.clickhouse_url)
            .body(sql.to_string())
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        Some(resp.text().await.ok()?.trim().to_string())
    }
}

/// A name unique to this test run.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Path of a workspace binary next to the test executable (`cargo build --bins` first), or
/// in `COSTPIPE_BIN_DIR` when set (a copy of one worktree's binaries, when several
/// worktrees share a target directory).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = match std::env::var_os("COSTPIPE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target dir")
            .to_path_buf(),
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Topics and database of one test.
#[derive(Clone)]
pub struct Names {
    pub usage: String,
    pub control: String,
    pub dead_letters: String,
    /// Budget definitions (compacted).
    pub budgets: String,
    pub database: String,
    pub group: String,
}

impl Names {
    /// Fresh names.
    pub fn new(test: &str) -> Names {
        let id = unique(test);
        Names {
            usage: format!("{id}.usage"),
            control: format!("{id}.control"),
            dead_letters: format!("{id}.dlq"),
            budgets: format!("{id}.budgets"),
            database: id.replace('.', "_"),
            group: format!("{id}.aggregator"),
        }
    }

    /// Creates the usage topic with one partition (events of one test stay in order).
    pub async fn create_usage_topic(&self, stack: &Stack) {
        costpipe_kafka::ensure_topics(
            &stack.brokers,
            &[costpipe_kafka::TopicSpec {
                name: self.usage.clone(),
                partitions: 1,
                compacted: false,
            }],
        )
        .await
        .expect("topics");
    }
}

/// The Prometheus text a service serves on `port`.
pub async fn metrics_text(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the unlabelled metric `name` a service serves on `port` (None when it is
/// not served, or the service does not answer).
pub async fn metric_value(port: u16, name: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The aggregator's live view of `tenant` (status and body), asked within `timeout`.
pub async fn live_view(port: u16, tenant: &str, timeout: Duration) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/live/tenants/{tenant}"))
        .timeout(timeout)
        .send()
        .await
        .expect("live view answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Waits until the minute rollup of `db` counts `n` events.
pub async fn wait_event_count(stack: &Stack, db: &str, n: u64) {
    wait_scalar(
        stack,
        &format!("SELECT sum(events) FROM {db}.usage_cost_minute"),
        n,
    )
    .await
}

/// A running service binary; killed (SIGKILL) when dropped.
pub struct Service {
    pub child: Child,
    pub log: PathBuf,
    pub port: u16,
}

impl Service {
    /// Starts the aggregator for `names` with `budget_limits` (e.g. `acme=10`).
    pub fn aggregator(
        stack: &Stack,
        names: &Names,
        budget_limits: &str,
        extra: &[(&str, &str)],
    ) -> Service {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}-aggregator-{port}.log", names.database));
        let mut cmd = Command::new(binary("costpipe-aggregator"));
        cmd.env("COSTPIPE_KAFKA_BROKERS", &stack.brokers)
            .env("COSTPIPE_CLICKHOUSE_URL", &stack.clickhouse_url)
            .env("COSTPIPE_CLICKHOUSE_DATABASE", &names.database)
            .env("COSTPIPE_USAGE_TOPIC", &names.usage)
            .env("COSTPIPE_CONTROL_TOPIC", &names.control)
            .env("COSTPIPE_DEAD_LETTER_TOPIC", &names.dead_letters)
            .env("COSTPIPE_BUDGET_TOPIC", &names.budgets)
            .env("COSTPIPE_GROUP_ID", &names.group)
            .env("COSTPIPE_SESSION_TIMEOUT_MS", "6000")
            .env("COSTPIPE_BUDGET_LIMITS", budget_limits)
            // Tests send a handful of events and then wait for their rows, so small epochs
            // are not held for more records (up to 5 s each time); `restart.rs` turns the
            // hold on under kills, and the core's simulation draws it at random.
            .env("COSTPIPE_EPOCH_MIN_RECORDS", "0")
            .env(
                "COSTPIPE_AGGREGATOR_METRICS_ADDR",
                format!("127.0.0.1:{port}"),
            )
            .env("RUST_LOG", "info,rdkafka=warn");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Service::spawn(cmd, log, port)
    }

    /// Starts the billing API for `names`.
    pub fn billing(stack: &Stack, names: &Names) -> Service {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}-billing-{port}.log", names.database));
        let mut cmd = Command::new(binary("costpipe-billing"));
        cmd.env("COSTPIPE_CLICKHOUSE_URL", &stack.clickhouse_url)
            .env("COSTPIPE_CLICKHOUSE_DATABASE", &names.database)
            .env("COSTPIPE_BILLING_ADDR", format!("127.0.0.1:{port}"));
        Service::spawn(cmd, log, port)
    }

    pub(crate) fn spawn(mut cmd: Command, log: PathBuf, port: u16) -> Service {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn service");
        Service { child, log, port }
    }

    /// SIGKILL: no shutdown hook runs, like a crash or an OOM kill.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The service's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("service exited with {status}; log:\n{}", self.log_text());
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 250 ms until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Prices per 1M tokens: input, cached input, 5-minute and 1-hour cache writes, output.
pub type ExpectedPrices = (Decimal, Decimal, Decimal, Decimal, Decimal);

/// Per-million-token prices, written by hand from the providers' price pages for these
/// tests, independently of `pricing/catalog/default.toml`: (input, cached input, 5-minute
/// cache write, 1-hour cache write, output). Prompts above a long-context threshold are
/// priced by [`expected_long_context_prices`]: the synthetic stream makes a few (a restart
/// test with seed 7299042670057365655 had one of 205,793 prompt tokens).
pub fn expected_prices(model: &str) -> Option<ExpectedPrices> {
    match model {
        "gpt-4o" | "gpt-4o-2024-08-06" => {
            Some((dec!(2.50), dec!(1.25), dec!(2.50), dec!(2.50), dec!(10.00)))
        }
        "gpt-4o-mini" => Some((dec!(0.15), dec!(0.075), dec!(0.15), dec!(0.15), dec!(0.60))),
        "claude-sonnet-4-5" => Some((dec!(3.00), dec!(0.30), dec!(3.75), dec!(6.00), dec!(15.00))),
        _ => None,
    }
}

/// Per 1M tokens (input, cached input, 5-minute and 1-hour cache writes, output) for a call
/// whose prompt (input, cache reads and cache writes together) is above `.0` tokens:
/// Anthropic's published long-context rates for Claude Sonnet 4.5, twice the input prices and
/// 1.5 times the output price above 200,000 prompt tokens.
pub fn expected_long_context_prices(model: &str) -> Option<(u64, ExpectedPrices)> {
    match model {
        "claude-sonnet-4-5" => Some((
            200_000,
            (dec!(6.00), dec!(0.60), dec!(7.50), dec!(12.00), dec!(22.50)),
        )),
        _ => None,
    }
}

/// The cost of `e` under [`expected_prices`], or [`expected_long_context_prices`] when its
/// prompt is above their threshold; unknown models cost zero.
pub fn expected_cost(e: &UsageEvent) -> Decimal {
    let Some(base) = expected_prices(&e.model) else {
        return Decimal::ZERO;
    };
    let prompt = e.input_tokens
        + e.cached_input_tokens
        + e.cache_write_tokens
        + e.cache_write_1h_tokens.unwrap_or(0);
    let (input, cached, write, write_1h, output) = match expected_long_context_prices(&e.model) {
        Some((above, prices)) if prompt > above as i64 => prices,
        _ => base,
    };
    (Decimal::from(e.input_tokens) * input
        + Decimal::from(e.cached_input_tokens) * cached
        + Decimal::from(e.cache_write_tokens) * write
        + Decimal::from(e.cache_write_1h_tokens.unwrap_or(0)) * write_1h
        + Decimal::from(e.output_tokens) * output)
        / dec!(1000000)
}

/// Expected spend per tenant.
pub fn expected_by_tenant(events: &[UsageEvent]) -> BTreeMap<String, Decimal> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry(e.tenant_id.clone()).or_insert(Decimal::ZERO) += expected_cost(e);
    }
    out
}

/// Spend per tenant in the database's rollup table, read as exact decimal strings.
pub async fn rollup_by_tenant(stack: &Stack, database: &str) -> BTreeMap<String, Decimal> {
    let tsv = stack
        .query(&format!(
            "SELECT tenant_id, toString(sum(cost)) FROM {database}.usage_cost_minute GROUP BY tenant_id FORMAT TSV"
        ))
        .await;
    tsv.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (t, c) = l.split_once('\t').expect("two columns");
            (t.to_string(), Decimal::from_str(c).expect("decimal"))
        })
        .collect()
}

/// Integer result of a scalar query, or `None` while the table does not exist yet.
pub async fn scalar(stack: &Stack, sql: &str) -> Option<u64> {
    let resp = reqwest::Client::new()
        .post(&stack.clickhouse_url)
        .body(sql.to_string())
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()?.trim().parse().ok()
}

/// Every record of partitions 0..`partitions` of `topic`, from the beginning until no new
/// record arrives for `idle` (tansu's high watermarks are not reliable enough to stop on).
pub fn read_topic(brokers: &str, topic: &str, partitions: i32) -> Vec<OwnedMessage> {
    let idle = Duration::from_millis(1500);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < idle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
            last = Instant::now();
        }
    }
    out
}

/// A header of `m` as text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Waits until `topic` (one partition) holds at least `n` records and returns them all.
pub async fn wait_records(stack: &Stack, topic: &str, n: usize) -> Vec<OwnedMessage> {
    wait_for(
        &format!("{n} records on {topic}"),
        Duration::from_secs(60),
        || async move {
            let got = read_topic(&stack.brokers, topic, 1);
            (got.len() >= n).then_some(got)
        },
    )
    .await
}

/// Waits until the scalar query `sql` answers `expected`.
pub async fn wait_scalar(stack: &Stack, sql: &str, expected: u64) {
    wait_for(
        &format!("`{sql}` = {expected}"),
        Duration::from_secs(90),
        || async move { (scalar(stack, sql).await? == expected).then_some(()) },
    )
    .await
}

/// A (tenant, department, model, minute) rollup key; the minute is UTC seconds.
pub type MinuteKey = (String, String, String, i64);

/// Expected events and cost (price currency) per rollup key, from [`expected_cost`].
pub fn expected_by_minute(events: &[UsageEvent]) -> BTreeMap<MinuteKey, (u64, Decimal)> {
    let mut out: BTreeMap<MinuteKey, (u64, Decimal)> = BTreeMap::new();
    for e in events {
        let key = (
            e.tenant_id.clone(),
            e.department.clone().unwrap_or_default(),
            e.model.clone(),
            e.event_time.div_euclid(60_000) * 60,
        );
        let v = out.entry(key).or_insert((0, Decimal::ZERO));
        v.0 += 1;
        v.1 += expected_cost(e);
    }
    out.retain(|_, v| v.0 > 0);
    out
}

/// Events and cost per rollup key in the database's minute rollup, exact.
pub async fn rollup_by_minute(
    stack: &Stack,
    database: &str,
) -> BTreeMap<MinuteKey, (u64, Decimal)> {
    let tsv = stack
        .query(&format!(
            "SELECT tenant_id, department, model, toInt64(toUnixTimestamp(minute)), sum(events), toString(sum(cost)) \
             FROM {database}.usage_cost_minute GROUP BY tenant_id, department, model, minute FORMAT TSV"
        ))
        .await;
    tsv.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "six columns in {l:?}");
            (
                (
                    f[0].to_string(),
                    f[1].to_string(),
                    f[2].to_string(),
                    f[3].parse().expect("minute"),
                ),
                (
                    f[4].parse().expect("events"),
                    Decimal::from_str(f[5]).expect("decimal"),
                ),
            )
        })
        .collect()
}

/// Waits until the completion markers of `topic` in `database` reach `ends` (one past the
/// last offset produced, per partition): after that the aggregator writes nothing more.
pub async fn wait_complete(
    stack: &Stack,
    database: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    timeout: Duration,
) {
    wait_for(
        "every produced offset in a complete epoch",
        timeout,
        || async move {
            let tsv = stack
                .query(&format!(
                    "SELECT partition, max(end_offset) FROM {database}.ingest_epochs_done \
                 WHERE topic = '{topic}' GROUP BY partition FORMAT TSV"
                ))
                .await;
            let done: BTreeMap<i32, i64> = tsv
                .lines()
                .filter_map(|l| {
                    let (p, e) = l.split_once('\t')?;
                    Some((p.parse().ok()?, e.parse().ok()?))
                })
                .collect();
            ends.iter()
                .all(|(p, end)| done.get(p).is_some_and(|d| d >= end))
                .then_some(())
        },
    )
    .await
}

/// The seed of a randomized test: `SEED` when set, else a fresh one. Printed either way.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed {seed} (replay with SEED={seed})");
    seed
}

/// `n` synthetic events (seeded) of `tenants` tenants with event times over `span_ms` ending
/// now: validation accepts them whatever the date of the run, and every assertion made on
/// them is per minute, so no month end can change an outcome.
pub fn synthetic_events(seed: u64, tenants: usize, span_ms: i64, n: usize) -> Vec<UsageEvent> {
    use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
    let now = chrono::Utc::now().timestamp_millis();
    SyntheticStream::new(
        seed,
        SyntheticConfig {
            tenants,
            start_ms: now - span_ms,
            end_ms: now,
            include_unpriced: true,
        },
    )
    .take(n)
    .collect()
}

/// Produces `events` with `emitter` in chunks of `chunk`, pausing `pause` between chunks, and
/// notes in `ends` one past the last offset delivered to each partition.
pub async fn produce_events(
    emitter: &costpipe_ingest::Emitter,
    events: &[UsageEvent],
    chunk: usize,
    pause: Duration,
    ends: &mut BTreeMap<i32, i64>,
) {
    for (i, part) in events.chunks(chunk.max(1)).enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        let mut pending = Vec::with_capacity(part.len());
        for e in part {
            pending.push(emitter.enqueue(e).await.expect("enqueue").wait());
        }
        for p in futures::future::join_all(pending).await {
            let d = p.expect("delivered");
            let end = ends.entry(d.partition).or_default();
            *end = (*end).max(d.offset + 1);
        }
    }
}

/// [`produce_events`] in a task of its own, with a new emitter; yields the end offsets.
pub fn spawn_producer(
    brokers: &str,
    topic: &str,
    events: Vec<UsageEvent>,
    chunk: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<BTreeMap<i32, i64>> {
    let config = costpipe_ingest::EmitterConfig::new(brokers, topic);
    tokio::spawn(async move {
        let emitter = costpipe_ingest::Emitter::new(config).expect("emitter");
        let mut ends = BTreeMap::new();
        produce_events(&emitter, &events, chunk, pause, &mut ends).await;
        ends
    })
}

/// Waits until `aggregator` has taken its partitions up (its migrations have run by then).
pub async fn wait_taken_up(aggregator: &Service) {
    wait_for(
        "the aggregator to take its partitions up",
        Duration::from_secs(60),
        || {
            let log = aggregator.log_text();
            async move { log.contains("partition taken up").then_some(()) }
        },
    )
    .await;
}

/// Asserts that `database` stores exactly `n` events, each id once, and that every minute
/// total equals `expected` (from [`expected_by_minute`]).
pub async fn assert_stored_exactly(
    stack: &Stack,
    database: &str,
    n: usize,
    expected: &BTreeMap<MinuteKey, (u64, Decimal)>,
    seed: u64,
) {
    assert_eq!(
        stack
            .query(&format!(
                "SELECT count(), uniqExact(event_id) FROM {database}.usage_events_priced"
            ))
            .await,
        format!("{n}\t{n}"),
        "each event_id stored once (seed {seed})"
    );
    let got = rollup_by_minute(stack, database).await;
    let differ = |(k, v): &(&MinuteKey, &(u64, Decimal))| got.get(*k) != Some(*v);
    let wrong: Vec<_> = expected.iter().filter(differ).take(5).collect();
    assert!(
        wrong.is_empty() && got.len() == expected.len(),
        "{} of {} minute totals differ (seed {seed}), e.g. {wrong:?}",
        expected.iter().filter(differ).count() + got.len().abs_diff(expected.len()),
        expected.len()
    );
}

/// The API key of `tenant` in tests of HTTP ingest.
pub fn key_of(tenant: &str) -> String {
    format!("key-of-{tenant}")
}

impl Service {
    /// Starts `costpipe-ingest-http` with a key per tenant ([`key_of`]), creating missing
    /// topics with `partitions` partitions, and waits until it is ready.
    pub async fn ingest_http(
        stack: &Stack,
        usage: &str,
        dead_letters: &str,
        tenants: &[&str],
        partitions: i32,
        extra: &[(&str, &str)],
    ) -> Service {
        Service::ingest_http_limited(stack, usage, dead_letters, tenants, partitions, extra, None)
            .await
    }

    /// [`Service::ingest_http`], with the process's descriptor limit (soft and hard) set to
    /// `nofile` through `prlimit` (util-linux, installed by `scripts/stack deps`).
    pub async fn ingest_http_limited(
        stack: &Stack,
        usage: &str,
        dead_letters: &str,
        tenants: &[&str],
        partitions: i32,
        extra: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Service {
        use costpipe_ingest::http::auth::hash_key;
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}-ingest-http-{port}.log", unique("http")));
        let keys: Vec<String> = tenants
            .iter()
            .map(|t| format!("{t}:{}", hash_key(&key_of(t))))
            .collect();
        let mut cmd = match nofile {
            None => Command::new(binary("costpipe-ingest-http")),
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(binary("costpipe-ingest-http"));
                c
            }
        };
        cmd.env("COSTPIPE_INGEST_ADDR", format!("127.0.0.1:{port}"))
            .env("COSTPIPE_KAFKA_BROKERS", &stack.brokers)
            .env("COSTPIPE_USAGE_TOPIC", usage)
            .env("COSTPIPE_DEAD_LETTER_TOPIC", dead_letters)
            .env("COSTPIPE_INGEST_API_KEYS", keys.join(","))
            .env("COSTPIPE_CREATE_TOPICS_PARTITIONS", partitions.to_string())
            .env("RUST_LOG", "info,rdkafka=warn");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut service = Service::spawn(cmd, log, port);
        let url = format!("http://127.0.0.1:{port}/readyz");
        wait_for(
            "costpipe-ingest-http ready",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let r = reqwest::get(&url).await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
        service.assert_running();
        service
    }
}
