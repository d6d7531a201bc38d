//! Builders shared by the gateway's core tests.
#![allow(dead_code)]

use std::sync::Arc;

use rust_decimal::Decimal;

use costpipe_gateway::{ControlState, Dimension, Scope};
use costpipe_schemas::BudgetLevel;

/// 2026-11-15T00:00:00Z.
pub const NOW: i64 = 1_794_700_800_000;
/// 2026-12-01T00:00:00Z: end of November.
pub const MONTH_END: i64 = 1_796_083_200_000;

pub fn state(budget: &str, tenant: Option<&str>, level: BudgetLevel) -> ControlState {
    let mut scope = Scope::global();
    if let Some(t) = tenant {
        scope = scope.with(Dimension::Tenant, t);
    }
    ControlState {
        control_id: format!("{budget}-{level}").into(),
        budget_id: budget.into(),
        scope,
        level,
        throttle_requests_per_minute: (level == BudgetLevel::Throttle).then_some(60),
        downgrade_to: (level == BudgetLevel::Downgrade).then(|| Arc::from("gpt-4o-mini")),
        retry_after_ms: None,
        spend: Decimal::ZERO,
        limit: Decimal::from(100),
        currency: "USD".into(),
        period_end_ms: Some(MONTH_END),
        shadow: false,
        whitelist_features: Box::new([]),
        reason: format!("{budget} at {level}").into(),
        decided_at_ms: NOW - 1_000,
    }
}
