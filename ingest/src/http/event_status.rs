//! `GET /v1/events/{event_id}`: what became of an event, read from ClickHouse without
//! scanning the events table.
//!
//! Two point reads: `usage_event_fates` by its primary key `(tenant, event id)` (the
//! aggregator's duplicates and dead letters, and a row per priced event derived by a view),
//! then, for a priced event, its cost from `usage_events_priced` by that table's full primary
//! key `(tenant, event time, event id)`. Scoped to the key's tenant: another tenant's id is
//! "not seen", the same answer as an unknown id, so nothing about it leaks.

use std::time::Duration;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Most copies listed for one id (a client resending forever cannot grow the answer).
pub const MAX_COPIES: u64 = 100;

/// One copy of the event the aggregator read, in the order it read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventCopy {
    /// `priced` (counted), `duplicate` (an exact copy of a counted event, dropped),
    /// `conflict` (the same id with other content: dead-lettered) or `dead_lettered` (for
    /// another reason).
    pub fate: String,
    /// For dead letters: the reason code (`duplicate_event_id_conflict` for a conflict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// For dead letters: the reason, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the aggregator read it: usage topic partition and offset.
    pub partition: i32,
    pub offset: i64,
}

/// What the priced copy cost (exact decimals, as strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventCost {
    /// In the tenant's billing currency.
    pub billing_cost: String,
    pub billing_currency: String,
    /// In the price's currency.
    pub cost: String,
    pub currency: String,
    /// The model had no price: cost 0, with the reason.
    pub unpriced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpriced_reason: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventFate {
    pub event_id: String,
    /// The fate of the latest copy: `priced`, `duplicate`, `conflict`, `dead_lettered`, or
    /// `not_seen` (404: the aggregator has not stored anything about this id for this
    /// tenant, yet or at all).
    pub status: String,
    /// When an event with this id was priced: its cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<EventCost>,
    /// Every copy, oldest first (at most 100).
    pub copies: Vec<EventCopy>,
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// ClickHouse did not answer in time or refused the query.
    #[error("ClickHouse: {0}")]
    ClickHouse(String),
}

#[derive(Debug, Row, Deserialize)]
struct FateRow {
    fate: String,
    event_time_ms: i64,
    reason_code: String,
    reason: String,
    source_partition: i32,
    source_offset: i64,
}

#[derive(Debug, Row, Deserialize)]
struct CostRow {
    billing_cost: String,
    billing_currency: String,
    cost: String,
    currency: String,
    unpriced: bool,
    unpriced_reason: String,
}

/// The lookups, against the aggregator's database.
#[derive(Clone)]
pub struct EventStatusStore {
    client: Client,
    timeout: Duration,
}

impl EventStatusStore {
    /// `client` is bound to the aggregator's database and has its own timeouts;
    /// `timeout` bounds each lookup as a whole.
    pub fn new(client: Client, timeout: Duration) -> Self {
        EventStatusStore { client, timeout }
    }

    /// The fate of `event_id` for `tenant`.
    pub async fn fate(&self, tenant: &str, event_id: Uuid) -> Result<EventFate, StatusError> {
        let id = event_id.hyphenated().to_string();
        let rows = self
            .timed(
                self.client
                    .query(
                        "SELECT DISTINCT toString(fate) AS fate, \
                         toUnixTimestamp64Milli(event_time) AS event_time_ms, reason_code, \
                         reason, source_partition, source_offset \
                         FROM usage_event_fates \
                         WHERE tenant_id = ? AND event_id = toUUID(?) \
                         ORDER BY source_partition, source_offset LIMIT ?",
                    )
                    .bind(tenant)
                    .bind(&id)
                    .bind(MAX_COPIES)
                    .fetch_all::<FateRow>(),
            )
            .await?;
        let copies: Vec<EventCopy> = rows.iter().map(copy_of).collect();
        let priced = rows.iter().find(|r| r.fate == "priced");
        let cost = match priced {
            None => None,
            Some(p) => self
                .timed(
                    self.client
                        .query(
                            "SELECT toString(billing_cost) AS billing_cost, billing_currency, \
                             toString(cost) AS cost, currency, unpriced, unpriced_reason \
                             FROM usage_events_priced \
                             WHERE tenant_id = ? \
                             AND event_time = fromUnixTimestamp64Milli(toInt64(?), 'UTC') \
                             AND event_id = toUUID(?) LIMIT 1",
                        )
                        .bind(tenant)
                        .bind(p.event_time_ms)
                        .bind(&id)
                        .fetch_optional::<CostRow>(),
                )
                .await?
                .map(|c| EventCost {
                    billing_cost: c.billing_cost,
                    billing_currency: c.billing_currency,
                    cost: c.cost,
                    currency: c.currency,
                    unpriced: c.unpriced,
                    unpriced_reason: (!c.unpriced_reason.is_empty()).then_some(c.unpriced_reason),
                }),
        };
        Ok(EventFate {
            event_id: id,
            status: copies
                .last()
                .map_or_else(|| "not_seen".to_string(), |c| c.fate.clone()),
            cost,
            copies,
        })
    }

    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, StatusError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StatusError::ClickHouse(e.to_string())),
            Err(_) => Err(StatusError::ClickHouse(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

/// The conflict reason code, as the aggregator writes it.
const CONFLICT: &str = "duplicate_event_id_conflict";

fn copy_of(r: &FateRow) -> EventCopy {
    let fate = match (r.fate.as_str(), r.reason_code.as_str()) {
        ("dead_letter", CONFLICT) => "conflict",
        ("dead_letter", _) => "dead_lettered",
        (other, _) => other,
    };
    let dead = r.fate == "dead_letter";
    EventCopy {
        fate: fate.to_string(),
        reason_code: dead.then(|| r.reason_code.clone()),
        reason: dead.then(|| r.reason.clone()),
        partition: r.source_partition,
        offset: r.source_offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fate: &str, code: &str, offset: i64) -> FateRow {
        FateRow {
            fate: fate.into(),
            event_time_ms: 0,
            reason_code: code.into(),
            reason: format!("because {code}"),
            source_partition: 0,
            source_offset: offset,
        }
    }

    #[test]
    fn copies_name_conflicts_apart_from_other_dead_letters() {
        let c = copy_of(&row("dead_letter", CONFLICT, 3));
        assert_eq!(c.fate, "conflict");
        assert_eq!(c.reason_code.as_deref(), Some(CONFLICT));
        let c = copy_of(&row("dead_letter", "sum_overflow", 4));
        assert_eq!(c.fate, "dead_lettered");
        let c = copy_of(&row("duplicate", "", 5));
        assert_eq!((c.fate.as_str(), c.reason_code), ("duplicate", None));
        let c = copy_of(&row("priced", "", 1));
        assert_eq!((c.fate.as_str(), c.offset), ("priced", 1));
    }
}
