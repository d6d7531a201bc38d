//! ClickHouse queries behind the billing API. Money is read as `toString(sum(cost))` and
//! parsed into `Decimal`, so no float ever touches it.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clickhouse::{Client, Row};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One line of a tenant's bill: spend of one model in one department, in the tenant's
/// billing currency.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CostLine {
    pub model: String,
    pub department: String,
    pub currency: String,
    pub events: u64,
    pub unpriced_events: i64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost: Decimal,
}

#[derive(Row, Deserialize)]
struct LineRow {
    model: String,
    department: String,
    currency: String,
    events: u64,
    unpriced_events: i64,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    cost_text: String,
}

#[derive(Row, Deserialize)]
struct TenantRow {
    tenant_id: String,
}

/// Read access to costpipe's database.
#[derive(Clone)]
pub struct BillingStore {
    client: Client,
    /// Deadline of the readiness probe (kept for callers that build the store alone).
    #[allow(dead_code)]
    ping_timeout: Duration,
}

fn parse_money(s: &str) -> anyhow::Result<Decimal> {
    Decimal::from_str(s).with_context(|| format!("ClickHouse returned {s:?} as a cost"))
}

impl BillingStore {
    /// A store reading through `client` (bound to costpipe's database, with its timeouts:
    /// `costpipe_clickhouse::ClickHouseArgs::client`); the readiness probe gives up after
    /// `ping_timeout`.
    pub fn new(client: Client, ping_timeout: Duration) -> Self {
        BillingStore {
            client,
            ping_timeout,
        }
    }

    /// Bill lines of `tenant` for event times in `[start_s, end_s)` (UTC seconds).
    pub async fn cost_lines(
        &self,
        tenant: &str,
        start_s: i64,
        end_s: i64,
    ) -> anyhow::Result<Vec<CostLine>> {
        let rows = self
            .client
            .query(
                "SELECT model, department, billing_currency AS currency, sum(events) AS events, \
                 sum(unpriced_events) AS unpriced_events, \
                 sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, \
                 sum(cached_input_tokens) AS cached_input_tokens, sum(cache_write_tokens) AS cache_write_tokens, \
                 sum(reasoning_tokens) AS reasoning_tokens, toString(sum(billing_cost)) AS cost_text \
                 FROM usage_cost_minute \
                 WHERE tenant_id = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) \
                 GROUP BY model, department, billing_currency ORDER BY model, department, currency",
            )
            .bind(tenant)
            .bind(start_s)
            .bind(end_s)
            .fetch_all::<LineRow>()
            .await
            .context("querying cost lines")?;
        let mut lines = rows
            .into_iter()
            .map(|r| {
                Ok(CostLine {
                    cost: parse_money(&r.cost_text)?,
                    model: r.model,
                    department: r.department,
                    currency: r.currency,
                    events: r.events,
                    unpriced_events: r.unpriced_events,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cached_input_tokens: r.cached_input_tokens,
                    cache_write_tokens: r.cache_write_tokens,
                    reasoning_tokens: r.reasoning_tokens,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Sorted here: in SQL, `cost` would resolve to the string alias, not the column.
        lines.sort_by_key(|l| std::cmp::Reverse(l.cost));
        Ok(lines)
    }

    /// Tenants with usage in `[start_s, end_s)`.
    pub async fn tenants(&self, start_s: i64, end_s: i64) -> anyhow::Result<Vec<String>> {
        let rows = self
            .client
            .query(
                "SELECT DISTINCT tenant_id FROM usage_cost_minute \
                 WHERE minute >= toDateTime(?) AND minute < toDateTime(?) ORDER BY tenant_id",
            )
            .bind(start_s)
            .bind(end_s)
            .fetch_all::<TenantRow>()
            .await
            .context("querying tenants")?;
        Ok(rows.into_iter().map(|r| r.tenant_id).collect())
    }
}

/// Unpriced usage of one model: what an operator must add to the catalog, then reprice.
#[derive(Debug, Clone, Serialize, Row, Deserialize, PartialEq, Eq)]
pub struct UnpricedModel {
    pub model: String,
    pub provider: String,
    pub reason: String,
    pub events: u64,
    pub tenants: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl BillingStore {
    /// Models with unpriced events in `[start_s, end_s)`.
    pub async fn unpriced(&self, start_s: i64, end_s: i64) -> anyhow::Result<Vec<UnpricedModel>> {
        self.client
            .query(
                "SELECT model, provider, unpriced_reason AS reason, count() AS events, uniqExact(tenant_id) AS tenants, \
                 sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens \
                 FROM usage_events_priced \
                 WHERE unpriced AND event_time >= toDateTime64(?, 3) AND event_time < toDateTime64(?, 3) \
                 AND event_id NOT IN (SELECT event_id FROM usage_cost_corrections GROUP BY event_id HAVING sum(unpriced_delta) < 0) \
                 GROUP BY model, provider, reason ORDER BY events DESC",
            )
            .bind(start_s)
            .bind(end_s)
            .fetch_all::<UnpricedModel>()
            .await
            .context("querying unpriced events")
    }
}
