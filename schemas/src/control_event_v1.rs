//! The budget control record v1 (`avro/budget_control_v1.avsc`), as builds before v2 wrote
//! it, and its upgrade to v2: records already on a control topic stay readable. v1 had one
//! hard-wired budget per tenant (monthly, UTC, WARNING 80 %, THROTTLE 95 %, BLOCK 100 %).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::control_event::{control_id, BudgetControl, BudgetLevel, ControlKind, Direction};

/// One record of the compacted control topic, keyed by `scope_key`.
/// Money is carried as exact decimal strings (Avro has no decimal that serde maps losslessly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetControlV1 {
    pub scope_key: String,
    pub scope_kind: String,
    pub tenant_id: String,
    pub period: String,
    pub level: BudgetLevel,
    pub previous_level: Option<BudgetLevel>,
    pub spend: String,
    pub limit: String,
    pub currency: String,
    /// UTC milliseconds since the Unix epoch.
    pub decided_at: i64,
    pub reason: String,
}

/// The ratio v1 budgets reached each level at (they were not configurable in v1).
fn v1_threshold(level: BudgetLevel) -> &'static str {
    match level {
        BudgetLevel::Ok => "0",
        BudgetLevel::Warning => "0.8",
        BudgetLevel::Downgrade | BudgetLevel::Throttle => "0.95",
        BudgetLevel::Block => "1",
    }
}

/// Start and exclusive end of a v1 period label (`YYYY-MM`, a UTC month), in UTC ms.
fn v1_period_bounds(period: &str) -> Option<(i64, i64)> {
    let (y, m) = period.split_once('-')?;
    let start = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)?;
    let next = if start.month() == 12 {
        NaiveDate::from_ymd_opt(start.year() + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(start.year(), start.month() + 1, 1)?
    };
    let ms = |d: NaiveDate| {
        Some(
            Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)
                .timestamp_millis(),
        )
    };
    Some((ms(start)?, ms(next)?))
}

impl From<BudgetControlV1> for BudgetControl {
    /// v1 → v2: `scope_key` becomes `budget_id`, the tenant becomes the scope, the period's
    /// UTC month bounds and the ratio are derived, and the id is the deterministic one of the
    /// same transition (period start, direction from the previous level, level).
    fn from(v1: BudgetControlV1) -> Self {
        let bounds = v1_period_bounds(&v1.period);
        let direction = match v1.previous_level {
            Some(prev) if prev > v1.level => Direction::Down,
            _ => Direction::Up,
        };
        let ratio = match (v1.spend.parse::<Decimal>(), v1.limit.parse::<Decimal>()) {
            (Ok(spend), Ok(limit)) if !limit.is_zero() => spend
                .checked_div(limit)
                .map_or_else(String::new, |r| r.normalize().to_string()),
            _ => String::new(),
        };
        let scope = if v1.scope_kind == "tenant" {
            BTreeMap::from([("tenant".to_string(), v1.tenant_id.clone())])
        } else {
            BTreeMap::new()
        };
        BudgetControl {
            control_id: control_id(
                &v1.scope_key,
                ControlKind::State,
                bounds.map_or(0, |b| b.0),
                &v1.limit,
                direction,
                v1.level,
            ),
            budget_id: v1.scope_key,
            kind: ControlKind::State,
            scope,
            tenant_id: Some(v1.tenant_id),
            level: v1.level,
            previous_level: v1.previous_level,
            threshold: v1_threshold(v1.level).to_string(),
            throttle_requests_per_minute: None,
            downgrade_to: None,
            retry_after_ms: bounds.map(|(_, end)| end.saturating_sub(v1.decided_at).max(0)),
            spend: v1.spend,
            limit: v1.limit,
            ratio,
            currency: v1.currency,
            period_kind: "month".to_string(),
            period: v1.period,
            period_start: bounds.map(|b| b.0),
            period_end: bounds.map(|b| b.1),
            shadow: false,
            whitelist_features: Vec::new(),
            reason: v1.reason,
            trigger_event_id: None,
            fx_rates: Vec::new(),
            forecast_spend: None,
            method: None,
            decided_at: v1.decided_at,
        }
    }
}
