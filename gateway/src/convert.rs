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

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use std::collections::BTreeMap;

    fn record(level: BudgetLevel) -> BudgetControl {
        BudgetControl {
            control_id: "c1".into(),
            budget_id: "b1".into(),
            kind: ControlKind::State,
            scope: BTreeMap::from([
                ("tenant".to_string(), "acme".to_string()),
                ("model".to_string(), "gpt-4o".to_string()),
            ]),
            tenant_id: Some("acme".into()),
            level,
            previous_level: None,
            threshold: "0.8".into(),
            throttle_requests_per_minute: None,
            downgrade_to: None,
            retry_after_ms: Some(5_000),
            spend: "80.5".into(),
            limit: "100".into(),
            ratio: "0.805".into(),
            currency: "EUR".into(),
            period_kind: "month".into(),
            period: "2026-11".into(),
            period_start: Some(1_793_491_200_000),
            period_end: Some(1_796_083_200_000),
            shadow: true,
            whitelist_features: vec!["health".into()],
            reason: "80 %".into(),
            trigger_event_id: None,
            fx_rates: Vec::new(),
            forecast_spend: None,
            method: None,
            decided_at: 1_794_700_800_000,
        }
    }

    #[test]
    fn a_state_record_converts_field_by_field() {
        let mut r = record(BudgetLevel::Downgrade);
        r.downgrade_to = Some("gpt-4o-mini".into());
        let s = state_of(&r).unwrap().unwrap();
        assert_eq!(&*s.budget_id, "b1");
        assert_eq!(s.scope.get(Dimension::Tenant), Some("acme"));
        assert_eq!(s.scope.get(Dimension::Model), Some("gpt-4o"));
        assert_eq!(s.scope.get(Dimension::Department), None);
        assert_eq!((s.spend, s.limit), (dec!(80.5), dec!(100)));
        assert_eq!(&*s.currency, "EUR");
        assert_eq!(s.downgrade_to.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(s.period_end_ms, Some(1_796_083_200_000));
        assert_eq!(s.retry_after_ms, Some(5_000));
        assert!(s.shadow);
        assert_eq!(&*s.whitelist_features[0], "health");
    }

    #[test]
    fn unenforceable_or_non_state_records_are_refused_or_ignored() {
        let mut forecast = record(BudgetLevel::Block);
        forecast.kind = ControlKind::Forecast;
        assert_eq!(state_of(&forecast), Ok(None));
        assert!(matches!(
            state_of(&record(BudgetLevel::Throttle)),
            Err(ConvertError::MissingAction { .. })
        ));
        assert!(matches!(
            state_of(&record(BudgetLevel::Downgrade)),
            Err(ConvertError::MissingAction { .. })
        ));
        let mut bad = record(BudgetLevel::Ok);
        bad.scope.insert("region".into(), "eu".into());
        assert!(matches!(
            state_of(&bad),
            Err(ConvertError::UnknownDimension { .. })
        ));
        let mut bad = record(BudgetLevel::Ok);
        bad.spend = "lots".into();
        assert!(matches!(
            state_of(&bad),
            Err(ConvertError::NotDecimal { .. })
        ));
    }
}
