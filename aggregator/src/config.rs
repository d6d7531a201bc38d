//! `AggregatorConfig`: every setting, from flags or the environment (the same binary runs
//! on a laptop and in docker-compose).

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::Context;
use clap::Parser;
use rust_decimal::Decimal;

use costpipe_aggregator_core::{EpochPolicy, RecentIdsPolicy};
use costpipe_clickhouse::ClickHouseArgs;
use costpipe_kafka::{KafkaArgs, DEFAULT_MAX_VALUE_BYTES};

/// The aggregator's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "costpipe-aggregator",
    about = "Prices usage events, rolls them up into ClickHouse and publishes budget levels"
)]
pub struct AggregatorConfig {
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Usage events topic.
    #[arg(
        long,
        env = "COSTPIPE_USAGE_TOPIC",
        default_value = "costpipe.usage.v1"
    )]
    pub usage_topic: String,
    /// Compacted budget control topic.
    #[arg(
        long,
        env = "COSTPIPE_CONTROL_TOPIC",
        default_value = "costpipe.control.v1"
    )]
    pub control_topic: String,
    /// Dead-letter topic.
    #[arg(
        long,
        env = "COSTPIPE_DEAD_LETTER_TOPIC",
        default_value = "costpipe.usage.dlq"
    )]
    pub dead_letter_topic: String,
    /// Largest dead-letter value in bytes; a longer record is cut and flagged
    /// `costpipe.truncated` (Kafka refuses records over about 1 MB).
    #[arg(
        long,
        env = "COSTPIPE_DEAD_LETTER_MAX_BYTES",
        default_value_t = DEFAULT_MAX_VALUE_BYTES
    )]
    pub dead_letter_max_bytes: usize,
    /// Consumer group id.
    #[arg(long, env = "COSTPIPE_GROUP_ID", default_value = "costpipe-aggregator")]
    pub group_id: String,
    /// Consumer session timeout in milliseconds (the first group join takes about half of it).
    #[arg(long, env = "COSTPIPE_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,
    /// How long the broker may hold a fetch of the usage topic that has too little data, in
    /// ms (librdkafka's `fetch.wait.max.ms`, whose default is 500). Real Kafka answers as soon
    /// as data arrives, so there this only sets how often an idle consumer asks (20 times a
    /// second at 50). tansu holds fetches up to about that long even when it has data, which
    /// every event then waits for before the budgets see it: 50 instead of 500 took
    /// production → budget decision from p50 ~170 ms to ~90 ms at 23,000 events/s, and from
    /// ~100 ms to ~20 ms when idle, for +2 % of a core on tansu (aggregator/BENCHMARKS.md).
    #[arg(long, env = "COSTPIPE_USAGE_FETCH_WAIT_MAX_MS", default_value_t = 50)]
    pub usage_fetch_wait_max_ms: u32,
    /// Create missing topics at start-up with this many usage partitions (0: do not create).
    #[arg(long, env = "COSTPIPE_CREATE_TOPICS_PARTITIONS", default_value_t = 8)]
    pub create_topics_partitions: i32,
    /// ClickHouse connection.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Price catalog file (TOML); the shipped catalog when unset.
    #[arg(long, env = "COSTPIPE_CATALOG")]
    pub catalog: Option<std::path::PathBuf>,
    /// How often the catalog file is checked for changes, in milliseconds.
    #[arg(
        long,
        env = "COSTPIPE_CATALOG_RELOAD_INTERVAL_MS",
        default_value_t = 2_000
    )]
    pub catalog_reload_interval_ms: u64,
    /// Seal a partition epoch after this many records. Large epochs mean few, large inserts:
    /// ClickHouse's merges, not the inserts themselves, were most of its cost per event
    /// (aggregator/BENCHMARKS.md). At low rates the age bound seals epochs long before this.
    #[arg(long, env = "COSTPIPE_EPOCH_MAX_RECORDS", default_value_t = 200_000)]
    pub epoch_max_records: usize,
    /// Seal a partition epoch after it has been open this long, in milliseconds.
    #[arg(long, env = "COSTPIPE_EPOCH_MAX_AGE_MS", default_value_t = 1_000)]
    pub epoch_max_age_ms: i64,
    /// While the epoch sink is still writing earlier epochs, keep an epoch past its age open
    /// until it is this old (or full), in milliseconds. It would only wait in the sink's queue
    /// otherwise; under load this makes fewer, larger inserts (aggregator/BENCHMARKS.md).
    #[arg(long, env = "COSTPIPE_EPOCH_MAX_HOLD_MS", default_value_t = 5_000)]
    pub epoch_max_hold_ms: i64,
    /// An epoch past its age with fewer records than this keeps taking records until it is
    /// `COSTPIPE_EPOCH_MAX_HOLD_MS` old (or full), even when the sink is idle. Each insert costs
    /// ClickHouse about 75 ms of CPU whatever its size, and every partition makes its own, so
    /// at low rates this cuts the store's CPU several times over, for rows that land up to the
    /// hold later; budgets and the live view do not wait for epochs. 0 turns it off.
    #[arg(long, env = "COSTPIPE_EPOCH_MIN_RECORDS", default_value_t = 10_000)]
    pub epoch_min_records: usize,
    /// Compacted topic of budget definitions (JSON keyed by budget id; a tombstone deletes).
    #[arg(
        long,
        env = "COSTPIPE_BUDGET_TOPIC",
        default_value = "costpipe.budgets.v1"
    )]
    pub budget_topic: String,
    /// Budgets file (JSON array or TOML `[[budgets]]`) seeding the budgets topic with the
    /// budgets it does not have yet.
    #[arg(long, env = "COSTPIPE_BUDGETS_FILE")]
    pub budgets_file: Option<std::path::PathBuf>,
    /// Legacy shorthand: per-tenant monthly limits, e.g. `acme=500,globex=120.50`, seeded as
    /// budgets `tenant:<tenant>:month` (notify 80 %, throttle 95 %, block 100 %).
    #[arg(long, env = "COSTPIPE_BUDGET_LIMITS", default_value = "")]
    pub budget_limits: String,
    /// Currency of the legacy limits.
    #[arg(long, env = "COSTPIPE_BUDGET_CURRENCY", default_value = "USD")]
    pub budget_currency: String,
    /// How often every budget is re-evaluated without new spend (period rollovers, override
    /// expiries, rolling windows sliding), in milliseconds.
    #[arg(long, env = "COSTPIPE_BUDGET_TICK_MS", default_value_t = 1_000)]
    pub budget_tick_ms: i64,
    /// Confluent-compatible schema registry to fetch unknown schema ids from (optional; the
    /// compiled-in schemas are always known).
    #[arg(long, env = "COSTPIPE_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// Address of the /metrics and /healthz endpoint.
    #[arg(
        long,
        env = "COSTPIPE_AGGREGATOR_METRICS_ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_addr: std::net::SocketAddr,
    /// Address other instances and clients reach this one at (the live view names it when a
    /// tenant lives elsewhere); `http://<metrics addr>` when unset.
    #[arg(long, env = "COSTPIPE_AGGREGATOR_ADVERTISED_URL")]
    pub advertised_url: Option<String>,
    /// How long counted event ids are remembered per partition to drop copies, in ms.
    #[arg(
        long,
        env = "COSTPIPE_RECENT_IDS_HORIZON_MS",
        default_value_t = 86_400_000
    )]
    pub recent_ids_horizon_ms: i64,
    /// At most this many counted ids are remembered per partition (oldest go first).
    #[arg(
        long,
        env = "COSTPIPE_RECENT_IDS_MAX_PER_PARTITION",
        default_value_t = 5_000_000
    )]
    pub recent_ids_max_per_partition: usize,
    /// How long an estimate (label `costpipe_usage=estimated`) waits for its real count, in
    /// ms: past the id horizon it is still remembered, so that a late real count corrects it
    /// instead of being counted beside it. 35 days: longer than a billing month.
    #[arg(
        long,
        env = "COSTPIPE_ESTIMATE_HORIZON_MS",
        default_value_t = 35 * 86_400_000
    )]
    pub estimate_horizon_ms: i64,
    /// At most this many estimates per partition wait past the id horizon (oldest go first).
    #[arg(
        long,
        env = "COSTPIPE_ESTIMATES_MAX_PER_PARTITION",
        default_value_t = 1_000_000
    )]
    pub estimates_max_per_partition: usize,
    /// How far a partition's watermark trails its newest event time, in ms.
    #[arg(long, env = "COSTPIPE_ALLOWED_LATENESS_MS", default_value_t = 5_000)]
    pub allowed_lateness_ms: i64,
    /// After this long without events a partition's watermark follows the wall clock, in ms.
    #[arg(long, env = "COSTPIPE_IDLE_PARTITION_MS", default_value_t = 10_000)]
    pub idle_partition_ms: i64,
    /// Time zone of calendar days and months (IANA name).
    #[arg(long, env = "COSTPIPE_CALENDAR_ZONE", default_value = "UTC")]
    pub calendar_zone: String,
    /// Records (events and dead letters) that may wait to be written; at the bound, consumption
    /// pauses until the writer catches up (a ClickHouse outage stops consumption, not the process).
    #[arg(
        long,
        env = "COSTPIPE_SINK_MAX_PENDING_RECORDS",
        default_value_t = 800_000
    )]
    pub sink_max_pending_records: usize,
    /// Longest backoff between retries of a failed ClickHouse or broker write, in ms.
    #[arg(
        long,
        env = "COSTPIPE_CLICKHOUSE_MAX_BACKOFF_MS",
        default_value_t = 5_000
    )]
    pub clickhouse_max_backoff_ms: u64,
    /// Tenants with a `tenant` label of their own in `llm_cost_usd_total`: the top N by USD
    /// cost counted since start; the rest are `tenant="other"` (DEVELOPERS.md, "Metrics").
    #[arg(long, env = "COSTPIPE_METRICS_MAX_TENANTS", default_value_t = 50)]
    pub metrics_max_tenants: usize,
    /// Departments with a label of their own per named tenant (the same rule; the rest are
    /// `department="other"`).
    #[arg(long, env = "COSTPIPE_METRICS_MAX_DEPARTMENTS", default_value_t = 20)]
    pub metrics_max_departments: usize,
    /// Budgets exported in `llm_budget_usage_ratio` (the highest ratios when there are more).
    #[arg(long, env = "COSTPIPE_METRICS_MAX_BUDGETS", default_value_t = 500)]
    pub metrics_max_budgets: usize,
}

impl AggregatorConfig {
    /// The usage metrics' label caps.
    pub fn metrics_caps(&self) -> crate::usage_metrics::Caps {
        crate::usage_metrics::Caps {
            tenants: self.metrics_max_tenants,
            departments: self.metrics_max_departments,
        }
    }

    /// Where this instance is reached.
    pub fn advertised_url(&self) -> String {
        self.advertised_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.metrics_addr))
    }

    /// Watermark settings (validated at start-up).
    pub fn watermark_config(&self) -> costpipe_aggregator_core::WatermarkConfig {
        costpipe_aggregator_core::WatermarkConfig {
            allowed_lateness_ms: self.allowed_lateness_ms,
            idle_timeout_ms: self.idle_partition_ms,
        }
    }

    /// The calendar zone.
    pub fn zone(&self) -> anyhow::Result<costpipe_aggregator_core::processor::Tz> {
        self.calendar_zone
            .parse()
            .map_err(|e| anyhow::anyhow!("calendar zone {:?}: {e}", self.calendar_zone))
    }

    /// How long and how many counted ids and estimates each partition remembers; the
    /// processor evicts by it and a partition taken up is restored by it.
    pub fn recent_ids_policy(&self) -> RecentIdsPolicy {
        RecentIdsPolicy {
            horizon_ms: self.recent_ids_horizon_ms,
            max_ids: self.recent_ids_max_per_partition,
            estimate_horizon_ms: self.estimate_horizon_ms,
            max_estimates: self.estimates_max_per_partition,
        }
    }

    /// The epoch sealing policy.
    pub fn epoch_policy(&self) -> anyhow::Result<EpochPolicy> {
        anyhow::ensure!(self.epoch_max_records > 0, "epoch_max_records must be > 0");
        anyhow::ensure!(self.epoch_max_age_ms > 0, "epoch_max_age_ms must be > 0");
        anyhow::ensure!(
            self.epoch_max_hold_ms >= self.epoch_max_age_ms,
            "epoch_max_hold_ms must be at least epoch_max_age_ms"
        );
        Ok(EpochPolicy {
            max_records: self.epoch_max_records,
            max_age_ms: self.epoch_max_age_ms,
            max_hold_ms: self.epoch_max_hold_ms,
            min_records: self.epoch_min_records,
        })
    }
}

/// Parses `tenant=amount,tenant=amount`.
pub fn parse_limits(text: &str) -> anyhow::Result<HashMap<String, Decimal>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (tenant, amount) = pair
                .split_once('=')
                .with_context(|| format!("budget limit {pair:?} is not tenant=amount"))?;
            let amount = Decimal::from_str(amount.trim()).with_context(|| {
                format!("budget limit of {tenant:?}: {amount:?} is not a decimal")
            })?;
            anyhow::ensure!(
                amount >= Decimal::ZERO,
                "budget limit of {tenant:?} is negative"
            );
            Ok((tenant.trim().to_string(), amount))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_flags_keep_their_names() {
        let c = AggregatorConfig::try_parse_from([
            "costpipe-aggregator",
            "--brokers",
            "k:9092",
            "--clickhouse-url",
            "http://ch:8123",
            "--clickhouse-database",
            "db1",
            "--clickhouse-user",
            "u",
            "--clickhouse-password",
            "p",
            "--clickhouse-timeout-ms",
            "1234",
            "--dead-letter-max-bytes",
            "4096",
        ])
        .unwrap();
        assert_eq!(c.kafka.brokers, "k:9092");
        assert_eq!(c.clickhouse.url, "http://ch:8123");
        assert_eq!(c.clickhouse.database, "db1");
        assert_eq!(c.clickhouse.user, "u");
        assert_eq!(c.clickhouse.password, "p");
        assert_eq!(c.clickhouse.timeout_ms, 1234);
        assert_eq!(c.dead_letter_max_bytes, 4096);
    }

    #[test]
    fn limits_parse_and_fail_clearly() {
        let l = parse_limits("acme=500, globex=120.50").unwrap();
        assert_eq!(l["globex"], Decimal::new(12050, 2));
        assert!(parse_limits("acme")
            .unwrap_err()
            .to_string()
            .contains("not tenant=amount"));
        assert!(parse_limits("acme=ten")
            .unwrap_err()
            .to_string()
            .contains("not a decimal"));
        assert!(parse_limits("").unwrap().is_empty());
    }
}
