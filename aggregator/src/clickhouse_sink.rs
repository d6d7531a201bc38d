//! ClickHouse adapter: migrations, the position store (epoch intents), the epoch writer and
//! the spend query budgets are evaluated from. Rows here mirror `schemas/clickhouse/*.sql`.

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use costpipe_aggregator_core::dedup::{Fingerprint, StoredLookup};
use costpipe_aggregator_core::{EpochIntent, Period, SealedEpoch};
use costpipe_schemas::clickhouse_ddl::{is_valid_database_name, MIGRATIONS};

/// Scale of every `Decimal(38, 12)` money column.
pub const MONEY_SCALE: u32 = 12;

/// Exact `Decimal(18, 6)` wire value of a percentage (catalog percents have at most 6 places).
pub fn percent_to_ticks(d: Decimal) -> i64 {
    let mut d = d;
    d.rescale(6);
    i64::try_from(d.mantissa()).unwrap_or(i64::MAX)
}

/// Events table.
pub const EVENTS_TABLE: &str = "usage_events_priced";
/// Per-minute rollup table.
pub const ROLLUP_TABLE: &str = "usage_cost_minute";
/// Position store table.
pub const POSITIONS_TABLE: &str = "ingest_positions";

/// Exact `Decimal(38, 12)` wire value of `d`. Costs are computed with at most 12 decimal
/// places (see `costpipe_pricing`), so rescaling never rounds.
pub fn money_to_ticks(d: Decimal) -> i128 {
    let mut d = d;
    d.rescale(MONEY_SCALE);
    d.mantissa()
}

#[derive(Row, Serialize)]
struct EventRow<'a> {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: uuid::Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    event_time: DateTime<Utc>,
    tenant_id: &'a str,
    department: &'a str,
    user_id: &'a str,
    project_id: &'a str,
    feature: &'a str,
    environment: &'a str,
    provider: &'a str,
    model: &'a str,
    price_model: &'a str,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    cache_write_1h_tokens: u64,
    cost: i128,
    currency: &'a str,
    billing_cost: i128,
    billing_currency: &'a str,
    exchange_rate: i128,
    tier_above: Option<u64>,
    contract_price: bool,
    adjustment_percent: i64,
    unpriced: bool,
    unpriced_reason: &'a str,
    catalog_version: &'a str,
    request_id: &'a str,
    trace_id: &'a str,
    span_name: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    source_partition: i32,
    source_offset: i64,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    ingested_at: DateTime<Utc>,
}

#[derive(Row, Serialize)]
struct RollupRow<'a> {
    tenant_id: &'a str,
    department: &'a str,
    model: &'a str,
    currency: &'a str,
    billing_currency: &'a str,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    minute: DateTime<Utc>,
    events: u64,
    unpriced_events: i64,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    cache_write_1h_tokens: u64,
    cost: i128,
    billing_cost: i128,
}

#[derive(Row, Serialize)]
struct IntentRow<'a> {
    topic: &'a str,
    partition: i32,
    start_offset: i64,
    end_offset: i64,
    events: u64,
    dead_letters: u64,
    catalog_version: &'a str,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    written_at: DateTime<Utc>,
}

#[derive(Row, Deserialize)]
struct LatestIntent {
    partition: i32,
    last_start: i64,
    last_end: i64,
}

#[derive(Row, Deserialize)]
struct FingerprintRow {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: uuid::Uuid,
    tenant_id: String,
    event_time_ms: i64,
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    cache_write_1h_tokens: u64,
}

#[derive(Row, Deserialize)]
struct SpendRow {
    tenant_id: String,
    spend: String,
}

/// Connection to costpipe's database.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    database: String,
}

fn ms_to_datetime(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

impl ClickHouseStore {
    /// A store for `database` on the server at `url` (HTTP interface).
    pub fn new(url: &str, database: &str, user: &str, password: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            is_valid_database_name(database),
            "invalid ClickHouse database name {database:?}"
        );
        let client = Client::default()
            .with_url(url)
            .with_user(user)
            .with_password(password);
        Ok(ClickHouseStore {
            client: client.with_database(database),
            database: database.to_string(),
        })
    }

    /// The client, bound to costpipe's database (for the other ClickHouse adapters).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Applies every migration; each is idempotent.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        // The database may not exist yet, so DDL runs without a default database.
        let bare = self.client.clone().with_database("default");
        for m in MIGRATIONS {
            bare.query(&m.render(&self.database))
                .execute()
                .await
                .with_context(|| format!("migration {} failed", m.name))?;
        }
        Ok(())
    }

    /// The latest intent of every partition of `topic`: `(start, end)` by partition.
    pub async fn latest_intents(&self, topic: &str) -> anyhow::Result<HashMap<i32, (i64, i64)>> {
        let rows = self
            .client
            .query(
                "SELECT partition, argMax(start_offset, end_offset) AS last_start, max(end_offset) AS last_end \
                 FROM ingest_positions WHERE topic = ? GROUP BY partition",
            )
            .bind(topic)
            .fetch_all::<LatestIntent>()
            .await
            .context("reading positions")?;
        Ok(rows
            .into_iter()
            .map(|r| (r.partition, (r.last_start, r.last_end)))
            .collect())
    }

    /// Records that `epoch` is about to be written.
    pub async fn write_intent(&self, intent: &EpochIntent) -> anyhow::Result<()> {
        let mut insert = self.client.insert::<IntentRow<'_>>(POSITIONS_TABLE).await?;
        insert
            .write(&IntentRow {
                topic: &intent.topic,
                partition: intent.partition,
                start_offset: intent.start_offset,
                end_offset: intent.end_offset,
                events: intent.events,
                dead_letters: intent.dead_letters,
                catalog_version: &intent.catalog_version,
                written_at: Utc::now(),
            })
            .await?;
        insert.end().await.context("writing epoch intent")
    }

    /// Writes an epoch's events and rollups, each under its dedup token, so that writing
    /// the same epoch again (a replay after a crash) adds nothing.
    pub async fn write_epoch(&self, epoch: &SealedEpoch) -> anyhow::Result<()> {
        let now = Utc::now();
        if !epoch.events.is_empty() {
            let mut insert = self
                .client
                .insert::<EventRow<'_>>(EVENTS_TABLE)
                .await?
                .with_setting(
                    "insert_deduplication_token",
                    epoch.dedup_token(EVENTS_TABLE),
                );
            for p in &epoch.events {
                let e = &p.event;
                insert
                    .write(&EventRow {
                        event_id: e.event_id,
                        event_time: ms_to_datetime(e.event_time),
                        tenant_id: &e.tenant_id,
                        department: opt(&e.department),
                        user_id: opt(&e.user_id),
                        project_id: opt(&e.project_id),
                        feature: opt(&e.feature),
                        environment: opt(&e.environment),
                        provider: &e.provider,
                        model: &e.model,
                        price_model: p.priced.price_model.as_deref().unwrap_or(""),
                        input_tokens: e.input_tokens as u64,
                        output_tokens: e.output_tokens as u64,
                        cached_input_tokens: e.cached_input_tokens as u64,
                        cache_write_tokens: e.cache_write_tokens as u64,
                        reasoning_tokens: e.reasoning_tokens as u64,
                        cache_write_1h_tokens: e.cache_write_1h_tokens.unwrap_or(0) as u64,
                        cost: money_to_ticks(p.priced.cost),
                        currency: &p.priced.currency,
                        billing_cost: money_to_ticks(p.priced.billing_cost),
                        billing_currency: &p.priced.billing_currency,
                        exchange_rate: money_to_ticks(p.priced.exchange_rate),
                        tier_above: p.priced.tier_above,
                        contract_price: p.priced.contract,
                        adjustment_percent: percent_to_ticks(p.priced.adjustment_percent),
                        unpriced: p.priced.is_unpriced(),
                        unpriced_reason: p.priced.unpriced.map_or("", |r| r.as_str()),
                        catalog_version: &epoch.catalog_version,
                        request_id: opt(&e.request_id),
                        trace_id: opt(&e.trace_id),
                        span_name: opt(&e.span_name),
                        labels: e
                            .labels
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect(),
                        source_partition: p.partition,
                        source_offset: p.offset,
                        ingested_at: now,
                    })
                    .await?;
            }
            insert.end().await.context("writing priced events")?;
        }
        if !epoch.rollups.is_empty() {
            let mut insert = self
                .client
                .insert::<RollupRow<'_>>(ROLLUP_TABLE)
                .await?
                .with_setting(
                    "insert_deduplication_token",
                    epoch.dedup_token(ROLLUP_TABLE),
                );
            for (k, t) in &epoch.rollups {
                insert
                    .write(&RollupRow {
                        tenant_id: &k.tenant_id,
                        department: &k.department,
                        model: &k.model,
                        currency: &k.currency,
                        billing_currency: &k.billing_currency,
                        minute: ms_to_datetime(k.minute * 1000),
                        events: t.events,
                        unpriced_events: t.unpriced_events,
                        input_tokens: t.input_tokens,
                        output_tokens: t.output_tokens,
                        cached_input_tokens: t.cached_input_tokens,
                        cache_write_tokens: t.cache_write_tokens,
                        reasoning_tokens: t.reasoning_tokens,
                        cache_write_1h_tokens: t.cache_write_1h_tokens,
                        cost: money_to_ticks(t.cost),
                        billing_cost: money_to_ticks(t.billing_cost),
                    })
                    .await?;
            }
            insert.end().await.context("writing rollups")?;
        }
        Ok(())
    }

    /// Fingerprints of stored events with the lookup's ids, outside the epoch's own range.
    pub async fn stored_fingerprints(
        &self,
        l: &StoredLookup,
    ) -> anyhow::Result<HashMap<uuid::Uuid, Fingerprint>> {
        // ClickHouse caps a query's text at 256 KiB: ask for ids a few thousand at a time.
        const IDS_PER_QUERY: usize = 4_000;
        let mut found = HashMap::new();
        for chunk in l.ids.chunks(IDS_PER_QUERY) {
            let ids: Vec<String> = chunk.iter().map(|id| id.to_string()).collect();
            let rows = self
                .client
                .query(
                    "SELECT event_id, tenant_id, toUnixTimestamp64Milli(event_time) AS event_time_ms, model, \
                     input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, \
                     cache_write_1h_tokens \
                     FROM usage_events_priced \
                     WHERE event_time >= fromUnixTimestamp64Milli(?) AND event_time <= fromUnixTimestamp64Milli(?) \
                     AND event_id IN ? \
                     AND NOT (source_partition = ? AND source_offset >= ? AND source_offset < ?)",
                )
                .bind(l.min_event_time)
                .bind(l.max_event_time)
                .bind(ids)
                .bind(l.partition)
                .bind(l.start_offset)
                .bind(l.end_offset)
                .fetch_all::<FingerprintRow>()
                .await
                .context("looking up already-counted event ids")?;
            found.extend(rows.into_iter().map(|r| {
                let fp = Fingerprint {
                    tenant_id: r.tenant_id,
                    event_time: r.event_time_ms,
                    model: r.model,
                    tokens: [
                        r.input_tokens as i64,
                        r.output_tokens as i64,
                        r.cached_input_tokens as i64,
                        r.cache_write_tokens as i64,
                        r.reasoning_tokens as i64,
                        r.cache_write_1h_tokens as i64,
                    ],
                };
                (r.event_id, fp)
            }));
        }
        Ok(found)
    }

    /// Spend per tenant in `period` in billing `currency`, from the rollup (the source of truth).
    /// `tenants = None` means every tenant with spend in the period.
    pub async fn period_spend(
        &self,
        period: Period,
        currency: &str,
        tenants: Option<&[String]>,
    ) -> anyhow::Result<Vec<(String, Decimal)>> {
        let start = period.start_millis() / 1000;
        let end = period.next().start_millis() / 1000;
        let tenant_filter = if tenants.is_some() {
            "AND tenant_id IN ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT tenant_id, toString(sum(billing_cost)) AS spend FROM usage_cost_minute \
             WHERE minute >= toDateTime(?) AND minute < toDateTime(?) AND billing_currency = ? {tenant_filter} \
             GROUP BY tenant_id"
        );
        let mut q = self.client.query(&sql).bind(start).bind(end).bind(currency);
        if let Some(t) = tenants {
            q = q.bind(t);
        }
        let rows = q
            .fetch_all::<SpendRow>()
            .await
            .context("reading period spend")?;
        rows.into_iter()
            .map(|r| {
                let spend = Decimal::from_str(&r.spend)
                    .with_context(|| format!("spend {:?} is not a decimal", r.spend))?;
                Ok((r.tenant_id, spend))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn money_ticks_are_exact() {
        assert_eq!(money_to_ticks(dec!(0.000000525)), 525_000);
        assert_eq!(money_to_ticks(dec!(12.5)), 12_500_000_000_000);
        assert_eq!(money_to_ticks(Decimal::ZERO), 0);
    }
}
