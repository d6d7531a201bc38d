//! Avro control record (v2) → the core's [`ControlState`]. A record the gateway cannot
//! enforce correctly (unknown scope dimension, THROTTLE without a rate, DOWNGRADE without a
//! target, a money field that is not a decimal) is refused with a reason, and the follower
//! keeps the budget's previous state.

use std::str::FromStr;

use rust_decimal::Decimal;

use costpipe_schemas::{BudgetControl, BudgetLevel, ControlKind};

use crate::core::state::{ControlState, Dimension, Scope};

/// Why a control record was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The scope names a dimension this gateway does not know.
    #[error("budget {budget_id}: unknown scope dimension {dimension:?}")]
    UnknownDimension {
        budget_id: String,
        dimension: String,
    },
    /// A money field is not a decimal.
    #[error("budget {budget_id}: {field} {value:?} is not a decimal")]
    NotDecimal {
        budget_id: String,
        field: &'static str,
        value: String,
    },
    /// A THROTTLE without a usable rate, or a DOWNGRADE without a target.
    #[error("budget {budget_id}: level {level} without its {missing}")]
    MissingAction {
        budget_id: String,
        level: BudgetLevel,
        missing: &'static str,
    },
}

fn decimal(c: &BudgetControl, field: &'static str, value: &str) -> Result<Decimal, ConvertError> {
    Decimal::from_str(value).map_err(|_| ConvertError::NotDecimal {
        budget_id: c.budget_id.clone(),
        field,
        value: value.chars().take(64).collect(),
    })
}

/// The state a STATE record sets; `Ok(None)` for FORECAST and SPIKE records, which gateways
/// do not enforce.
pub fn state_of(c: &BudgetControl) -> Result<Option<ControlState>, ConvertError> {
    if c.kind != ControlKind::State {
        return Ok(None);
    }
    let mut scope = Scope::global();
    for (name, value) in &c.scope {
        let d = Dimension::parse(name).ok_or_else(|| ConvertError::UnknownDimension {
            budget_id: c.budget_id.clone(),
            dimension: name.chars().take(64).collect(),
        })?;
        scope = scope.with(d, value.as_str());
    }
    let missing = |missing| ConvertError::MissingAction {
        budget_id: c.budget_id.clone(),
        level: c.level,
        missing,
    };
    let throttle = c
        .throttle_requests_per_minute
        .map(|r| u32::try_from(r.max(0)).unwrap_or(u32::MAX));
    if c.level == BudgetLevel::Throttle && throttle.is_none() {
        return Err(missing("throttle_requests_per_minute"));
    }
    if c.level == BudgetLevel::Downgrade && c.downgrade_to.as_deref().is_none_or(str::is_empty) {
        return Err(missing("downgrade_to"));
    }
    Ok(Some(ControlState {
        control_id: c.control_id.as_str().into(),
        budget_id: c.budget_id.as_str().into(),
        scope,
        level: c.level,
        throttle_requests_per_minute: throttle,
        downgrade_to: c.downgrade_to.as_deref().map(Into::into),
        retry_after_ms: c.retry_after_ms.map(|r| u64::try_from(r).unwrap_or(0)),
        spend: decimal(c, "spend", &c.spend)?,
        limit: decimal(c, "limit", &c.limit)?,
        currency: c.currency.as_str().into(),
        period_end_ms: c.period_end,
        shadow: c.shadow,
        whitelist_features: c
            .whitelist_features
            .iter()
            .map(|f| f.as_str().into())
            .collect(),
        reason: c.reason.as_str().into(),
        decided_at_ms: c.decided_at,
    }))
}
