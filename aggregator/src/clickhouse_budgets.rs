//! ClickHouse adapter of budgets: the spend already recorded (events plus the corrections of
//! estimates by complete epochs), read once per assignment (or once for a budget created
//! mid-period) to restore budgets' spend, and the history of
//! published control records (`budget_control_history`, migration 050). Never on the breach
//! path: a breach is decided from memory.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use costpipe_schemas::BudgetControl;

use crate::clickhouse_store::{money_to_ticks, ClickHouseStore, MONEY_SCALE};

/// History table.
pub const HISTORY_TABLE: &str = "budget_control_history";

/// Spend of one combination of scope dimensions in one bin: 1-minute bins over the last
/// 8 days (rolling windows up to 7 days), 15-minute bins before (calendar periods start at
/// local midnights, which every zone puts on a quarter hour).
#[derive(Debug, Row, Deserialize)]
pub struct SpendRow {
    pub tenant_id: String,
    pub department: String,
    pub user_id: String,
    pub project_id: String,
    pub feature: String,
    pub price_model: String,
    pub api_key: String,
    pub billing_currency: String,
    pub bin_ms: i64,
    /// `Decimal(38, 12)` as its wire integer.
    pub cost_ticks: i128,
}

impl SpendRow {
    /// The row's spend, exactly.
    pub fn amount(&self) -> Decimal {
        Decimal::from_i128_with_scale(self.cost_ticks, MONEY_SCALE)
    }
}

#[derive(Row, Serialize)]
struct HistoryRow<'a> {
    control_id: &'a str,
    budget_id: &'a str,
    kind: &'a str,
    tenant_id: &'a str,
    scope: String,
    level: &'a str,
    previous_level: &'a str,
    threshold: i128,
    spend: i128,
    limit: i128,
    currency: &'a str,
    period_kind: &'a str,
    period: &'a str,
    shadow: bool,
    reason: &'a str,
    trigger_event_id: &'a str,
    record: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    decided_at: DateTime<Utc>,
}

fn ticks(s: &str) -> i128 {
    s.parse::<Decimal>().map(money_to_ticks).unwrap_or(0)
}

impl ClickHouseStore {
    /// Spend recorded since `since_ms` on the `partitions` of `topic` (all partitions when
    /// empty), of `tenant` only when given; one query.
    pub async fn budget_spend(
        &self,
        topic: &str,
        partitions: &[i32],
        tenant: Option<&str>,
        since_ms: i64,
        now_ms: i64,
    ) -> anyhow::Result<Vec<SpendRow>> {
        let fine_since = now_ms - 8 * 86_400_000;
        let query = self
            .client()
            .query(
                "SELECT tenant_id, department, user_id, project_id, feature, price_model, api_key, billing_currency, \
                 toInt64(intDiv(t, if(t >= ?, 60000, 900000)) * if(t >= ?, 60000, 900000)) AS bin_ms, \
                 sum(c) AS cost_ticks FROM ( \
                 SELECT toString(tenant_id) AS tenant_id, toString(department) AS department, user_id, project_id, \
                 toString(feature) AS feature, toString(price_model) AS price_model, labels['api_key'] AS api_key, \
                 toString(billing_currency) AS billing_currency, toUnixTimestamp64Milli(event_time) AS t, billing_cost AS c \
                 FROM usage_events_priced \
                 WHERE source_topic = ? AND (length(?) = 0 OR has(?, source_partition)) \
                 AND (? = '' OR tenant_id = ?) AND event_time >= fromUnixTimestamp64Milli(?) \
                 UNION ALL \
                 SELECT toString(tenant_id), toString(department), user_id, project_id, feature, toString(price_model), \
                 api_key, toString(billing_currency), toUnixTimestamp64Milli(event_time), billing_cost_delta \
                 FROM usage_cost_corrections \
                 WHERE reason = 'estimate_corrected' AND source_topic = ? AND (length(?) = 0 OR has(?, source_partition)) \
                 AND (? = '' OR tenant_id = ?) AND event_time >= fromUnixTimestamp64Milli(?) \
                 AND (source_topic, source_partition, epoch_start, epoch_end) IN \
                   (SELECT topic, partition, start_offset, end_offset FROM ingest_epochs_done \
                    WHERE topic = ? AND (length(?) = 0 OR has(?, partition)))) \
                 GROUP BY tenant_id, department, user_id, project_id, feature, price_model, \
                 api_key, billing_currency, bin_ms",
            )
            .bind(fine_since)
            .bind(fine_since)
            .bind(topic)
            .bind(partitions)
            .bind(partitions)
            .bind(tenant.unwrap_or(""))
            .bind(tenant.unwrap_or(""))
            .bind(since_ms.max(0))
            .bind(topic)
            .bind(partitions)
            .bind(partitions)
            .bind(tenant.unwrap_or(""))
            .bind(tenant.unwrap_or(""))
            .bind(since_ms.max(0))
            .bind(topic)
            .bind(partitions)
            .bind(partitions);
        self.timed_call("reading budget spend", query.fetch_all::<SpendRow>())
            .await
    }

    /// Appends control records to the history (re-published ones collapse on `control_id`).
    pub async fn write_control_history(&self, records: &[BudgetControl]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client()
            .insert::<HistoryRow<'_>>(HISTORY_TABLE)
            .await?;
        self.timed_call("writing budget control history", async {
            for c in records {
                insert
                    .write(&HistoryRow {
                        control_id: &c.control_id,
                        budget_id: &c.budget_id,
                        kind: c.kind.as_str(),
                        tenant_id: c.tenant_id.as_deref().unwrap_or(""),
                        scope: serde_json::to_string(&c.scope).unwrap_or_default(),
                        level: c.level.as_str(),
                        previous_level: c.previous_level.map_or("", |l| l.as_str()),
                        threshold: ticks(&c.threshold),
                        spend: ticks(&c.spend),
                        limit: ticks(&c.limit),
                        currency: &c.currency,
                        period_kind: &c.period_kind,
                        period: &c.period,
                        shadow: c.shadow,
                        reason: &c.reason,
                        trigger_event_id: c.trigger_event_id.as_deref().unwrap_or(""),
                        record: serde_json::to_string(c).unwrap_or_default(),
                        decided_at: DateTime::<Utc>::from_timestamp_millis(c.decided_at)
                            .unwrap_or_default(),
                    })
                    .await?;
            }
            insert.end().await
        })
        .await
    }
}
