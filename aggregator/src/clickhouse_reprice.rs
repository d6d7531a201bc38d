//! ClickHouse adapter of repricing: reads a tenant's stored events with their current
//! amounts (original row plus corrections) and writes a run's corrections in one insert.

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use costpipe_aggregator_core::reprice::Amount;
use costpipe_schemas::UsageEvent;

use crate::clickhouse_store::{money_to_ticks, ClickHouseStore};

/// Corrections table.
pub const CORRECTIONS_TABLE: &str = "usage_cost_corrections";

#[derive(Row, Deserialize)]
struct EventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    event_time_ms: i64,
    tenant_id: String,
    department: String,
    provider: String,
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
    cache_write_1h_tokens: u64,
    reasoning_tokens: u64,
    currency: String,
    billing_currency: String,
    cost_text: String,
    billing_cost_text: String,
    unpriced: bool,
}

#[derive(Row, Deserialize)]
struct CorrectionSumRow {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    currency: String,
    billing_currency: String,
    cost_text: String,
    billing_cost_text: String,
    unpriced: i64,
}

#[derive(Row, Serialize)]
struct CorrectionRow<'a> {
    run_id: &'a str,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    event_time: DateTime<Utc>,
    tenant_id: &'a str,
    department: &'a str,
    model: &'a str,
    price_model: &'a str,
    currency: &'a str,
    billing_currency: &'a str,
    cost_delta: i128,
    billing_cost_delta: i128,
    unpriced_delta: i64,
    catalog_version: &'a str,
    reason: &'a str,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    corrected_at: DateTime<Utc>,
    price_window: &'a str,
}

/// A stored event with what it currently costs.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event: UsageEvent,
    pub amounts: Vec<Amount>,
}

/// One correction to write.
#[derive(Debug, Clone)]
pub struct Correction {
    pub event: UsageEvent,
    pub price_model: String,
    /// The time-of-day window of the new price ('' when it has none).
    pub price_window: String,
    pub delta: Amount,
}

fn money(text: &str) -> anyhow::Result<Decimal> {
    Decimal::from_str(text).with_context(|| format!("ClickHouse returned {text:?} as money"))
}

/// Events of `tenant` with event time in `[start_ms, end_ms)`, with current amounts.
pub async fn stored_events(
    store: &ClickHouseStore,
    tenant: &str,
    start_ms: i64,
    end_ms: i64,
) -> anyhow::Result<Vec<StoredEvent>> {
    let client = store.client();
    let rows = client
        .query(
            "SELECT event_id, toUnixTimestamp64Milli(event_time) AS event_time_ms, tenant_id, department, provider, model, \
             input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, \
             currency, billing_currency, toString(cost) AS cost_text, toString(billing_cost) AS billing_cost_text, unpriced \
             FROM usage_events_priced \
             WHERE tenant_id = ? AND event_time >= fromUnixTimestamp64Milli(?) AND event_time < fromUnixTimestamp64Milli(?)",
        )
        .bind(tenant)
        .bind(start_ms)
        .bind(end_ms)
        .fetch_all::<EventRow>()
        .await
        .context("reading stored events")?;
    let sums = client
        .query(
            "SELECT event_id, currency, billing_currency, toString(sum(cost_delta)) AS cost_text, \
             toString(sum(billing_cost_delta)) AS billing_cost_text, sum(unpriced_delta) AS unpriced \
             FROM usage_cost_corrections \
             WHERE tenant_id = ? AND event_time >= fromUnixTimestamp64Milli(?) AND event_time < fromUnixTimestamp64Milli(?) \
             GROUP BY event_id, currency, billing_currency",
        )
        .bind(tenant)
        .bind(start_ms)
        .bind(end_ms)
        .fetch_all::<CorrectionSumRow>()
        .await
        .context("reading earlier corrections")?;
    let mut corrections: HashMap<Uuid, Vec<Amount>> = HashMap::new();
    for c in sums {
        corrections.entry(c.event_id).or_default().push(Amount {
            currency: c.currency,
            billing_currency: c.billing_currency,
            cost: money(&c.cost_text)?,
            billing_cost: money(&c.billing_cost_text)?,
            unpriced: c.unpriced,
        });
    }
    rows.into_iter()
        .map(|r| {
            let mut e = UsageEvent::new(
                r.event_id,
                r.event_time_ms,
                r.tenant_id,
                r.provider,
                r.model,
            );
            e.department = (!r.department.is_empty()).then_some(r.department);
            e.input_tokens = r.input_tokens as i64;
            e.output_tokens = r.output_tokens as i64;
            e.cached_input_tokens = r.cached_input_tokens as i64;
            e.cache_write_tokens = r.cache_write_tokens as i64;
            e.cache_write_1h_tokens =
                (r.cache_write_1h_tokens > 0).then_some(r.cache_write_1h_tokens as i64);
            e.reasoning_tokens = r.reasoning_tokens as i64;
            let mut amounts = vec![Amount {
                currency: r.currency,
                billing_currency: r.billing_currency,
                cost: money(&r.cost_text)?,
                billing_cost: money(&r.billing_cost_text)?,
                unpriced: i64::from(r.unpriced),
            }];
            amounts.extend(corrections.remove(&r.event_id).unwrap_or_default());
            Ok(StoredEvent { event: e, amounts })
        })
        .collect()
}

/// Writes one run's corrections in a single insert under the run's dedup token.
pub async fn write_corrections(
    store: &ClickHouseStore,
    run_id: &str,
    catalog_version: &str,
    reason: &str,
    corrections: &[Correction],
) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut insert = store
        .client()
        .insert::<CorrectionRow<'_>>(CORRECTIONS_TABLE)
        .await?
        .with_setting("insert_deduplication_token", format!("reprice/{run_id}"));
    for c in corrections {
        let e = &c.event;
        insert
            .write(&CorrectionRow {
                run_id,
                event_id: e.event_id,
                event_time: DateTime::<Utc>::from_timestamp_millis(e.event_time)
                    .unwrap_or_default(),
                tenant_id: &e.tenant_id,
                department: e.department.as_deref().unwrap_or(""),
                model: &e.model,
                price_model: &c.price_model,
                currency: &c.delta.currency,
                billing_currency: &c.delta.billing_currency,
                cost_delta: money_to_ticks(c.delta.cost),
                billing_cost_delta: money_to_ticks(c.delta.billing_cost),
                unpriced_delta: c.delta.unpriced,
                catalog_version,
                reason,
                corrected_at: now,
                price_window: &c.price_window,
            })
            .await?;
    }
    insert.end().await.context("writing corrections")
}
