//! `AggregatorConfig`: every setting, from flags or the environment (the same binary runs
//! on a laptop and in docker-compose).

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::Context;
use clap::Parser;
use rust_decimal::Decimal;

use costpipe_aggregator_core::{BudgetPolicy, EpochPolicy};

/// The aggregator's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "costpipe-aggregator",
    about = "Prices usage events, rolls them up into ClickHouse and publishes budget levels"
)]
pub struct AggregatorConfig {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "COSTPIPE_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    pub brokers: String,
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
    /// Consumer group id.
    #[arg(long, env = "COSTPIPE_GROUP_ID", default_value = "costpipe-aggregator")]
    pub group_id: String,
    /// Consumer session timeout in milliseconds (the first group join takes about half of it).
    #[arg(long, env = "COSTPIPE_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,
    /// Create missing topics at start-up with this many usage partitions (0: do not create).
    #[arg(long, env = "COSTPIPE_CREATE_TOPICS_PARTITIONS", default_value_t = 8)]
    pub create_topics_partitions: i32,
    /// ClickHouse HTTP URL.
    #[arg(
        long,
        env = "COSTPIPE_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:18123"
    )]
    pub clickhouse_url: String,
    /// ClickHouse database (created by the migrations).
    #[arg(long, env = "COSTPIPE_CLICKHOUSE_DATABASE", default_value = "costpipe")]
    pub clickhouse_database: String,
    /// ClickHouse user.
    #[arg(long, env = "COSTPIPE_CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,
    /// ClickHouse password.
    #[arg(
        long,
        env = "COSTPIPE_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub clickhouse_password: String,
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
    /// Seal a partition epoch after this many records.
    #[arg(long, env = "COSTPIPE_EPOCH_MAX_RECORDS", default_value_t = 50_000)]
    pub epoch_max_records: usize,
    /// Seal a partition epoch after it has been open this long, in milliseconds.
    #[arg(long, env = "COSTPIPE_EPOCH_MAX_AGE_MS", default_value_t = 1_000)]
    pub epoch_max_age_ms: i64,
    /// Monthly limit of tenants without their own (unset: such tenants are not budgeted).
    #[arg(long, env = "COSTPIPE_BUDGET_DEFAULT_LIMIT")]
    pub budget_default_limit: Option<Decimal>,
    /// Per-tenant monthly limits, e.g. `acme=500,globex=120.50`.
    #[arg(long, env = "COSTPIPE_BUDGET_LIMITS", default_value = "")]
    pub budget_limits: String,
    /// Currency of the limits; spend in other currencies is not counted against them.
    #[arg(long, env = "COSTPIPE_BUDGET_CURRENCY", default_value = "USD")]
    pub budget_currency: String,
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
}

impl AggregatorConfig {
    /// The epoch sealing policy.
    pub fn epoch_policy(&self) -> anyhow::Result<EpochPolicy> {
        anyhow::ensure!(self.epoch_max_records > 0, "epoch_max_records must be > 0");
        anyhow::ensure!(self.epoch_max_age_ms > 0, "epoch_max_age_ms must be > 0");
        Ok(EpochPolicy {
            max_records: self.epoch_max_records,
            max_age_ms: self.epoch_max_age_ms,
        })
    }

    /// The budget policy, with limits parsed and checked.
    pub fn budget_policy(&self) -> anyhow::Result<BudgetPolicy> {
        Ok(BudgetPolicy {
            default_limit: self.budget_default_limit,
            tenant_limits: parse_limits(&self.budget_limits)?,
            thresholds: BudgetPolicy::default_thresholds(),
            currency: self.budget_currency.clone(),
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
