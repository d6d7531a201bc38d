//! `evaluate`: budget levels from spend. A tenant's level is the most severe threshold its
//! spend in the current period has reached; a change of level (up, or back down when a new
//! period starts or a limit is raised) becomes a control record for the compacted topic.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;

use costpipe_schemas::{control_id, BudgetControl, BudgetLevel, ControlKind, Direction};

use crate::period::Period;

/// Limits and thresholds, per tenant, for one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Limit of tenants without their own; `None` means such tenants are not budgeted.
    pub default_limit: Option<Decimal>,
    /// Per-tenant limits per period.
    pub tenant_limits: HashMap<String, Decimal>,
    /// Fraction of the limit at which each level starts, e.g. WARNING at 0.8, BLOCK at 1.
    /// Levels not listed are skipped.
    pub thresholds: Vec<(BudgetLevel, Decimal)>,
    /// Currency of the limits.
    pub currency: String,
}

impl BudgetPolicy {
    /// WARNING at 80 %, THROTTLE at 95 %, BLOCK at 100 % of the limit.
    pub fn default_thresholds() -> Vec<(BudgetLevel, Decimal)> {
        vec![
            (BudgetLevel::Warning, Decimal::new(80, 2)),
            (BudgetLevel::Throttle, Decimal::new(95, 2)),
            (BudgetLevel::Block, Decimal::ONE),
        ]
    }

    /// The limit of `tenant`, if it has one.
    pub fn limit_of(&self, tenant: &str) -> Option<Decimal> {
        self.tenant_limits
            .get(tenant)
            .copied()
            .or(self.default_limit)
    }

    /// The level `spend` reaches against `limit`. Exact: compares `spend >= ratio * limit`.
    pub fn level_for(&self, spend: Decimal, limit: Decimal) -> BudgetLevel {
        self.thresholds
            .iter()
            .filter(|(_, ratio)| spend >= *ratio * limit)
            .map(|(level, _)| *level)
            .max()
            .unwrap_or(BudgetLevel::Ok)
    }
}

#[derive(Debug, Clone, Copy)]
struct Known {
    period: Period,
    level: BudgetLevel,
}

/// The levels last published, per tenant, and the rule for publishing the next.
#[derive(Debug)]
pub struct BudgetTracker {
    policy: BudgetPolicy,
    known: HashMap<String, Known>,
}

impl BudgetTracker {
    /// A tracker that knows no published level yet, so its first evaluation of each tenant
    /// is published (harmless: the control topic is compacted and keyed by scope).
    pub fn new(policy: BudgetPolicy) -> Self {
        BudgetTracker {
            policy,
            known: HashMap::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &BudgetPolicy {
        &self.policy
    }

    /// Evaluates `tenant`'s `spend` in `period` at `now_ms`. Returns the control record to
    /// publish when the level changed. Spend of a period older than the newest one seen for
    /// the tenant changes nothing: late events of last month do not block this month.
    /// Forgets what was last published for `tenant`, so its next evaluation publishes again
    /// (after a failed publish).
    pub fn forget(&mut self, tenant: &str) {
        self.known.remove(tenant);
    }

    /// The level of `tenant` at `spend` in `period`, as a control record when it changed.
    pub fn evaluate(
        &mut self,
        tenant: &str,
        period: Period,
        spend: Decimal,
        now_ms: i64,
    ) -> Option<BudgetControl> {
        let limit = self.policy.limit_of(tenant)?;
        let known = self.known.get(tenant).copied();
        if known.is_some_and(|k| k.period > period) {
            return None;
        }
        let level = self.policy.level_for(spend, limit);
        if known.is_some_and(|k| k.period == period && k.level == level) {
            return None;
        }
        self.known
            .insert(tenant.to_string(), Known { period, level });
        let percent = if limit.is_zero() {
            Decimal::ZERO
        } else {
            (spend / limit * Decimal::ONE_HUNDRED).round_dp(2)
        };
        let budget_id = format!("tenant:{tenant}");
        let previous_level = known.map(|k| k.level);
        let direction = match previous_level {
            Some(prev) if prev > level => Direction::Down,
            _ => Direction::Up,
        };
        let threshold = self
            .policy
            .thresholds
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, r)| r.normalize().to_string())
            .next()
            .unwrap_or_else(|| "0".to_string());
        let (start, end) = (period.start_millis(), period.next().start_millis());
        Some(BudgetControl {
            control_id: control_id(
                &budget_id,
                ControlKind::State,
                start,
                &limit.normalize().to_string(),
                direction,
                level,
            ),
            budget_id,
            kind: ControlKind::State,
            scope: BTreeMap::from([("tenant".to_string(), tenant.to_string())]),
            tenant_id: Some(tenant.to_string()),
            level,
            previous_level,
            threshold,
            throttle_requests_per_minute: None,
            downgrade_to: None,
            retry_after_ms: Some(end.saturating_sub(now_ms).max(0)),
            spend: spend.normalize().to_string(),
            limit: limit.normalize().to_string(),
            ratio: if limit.is_zero() {
                "0".to_string()
            } else {
                (spend / limit).normalize().to_string()
            },
            currency: self.policy.currency.clone(),
            period_kind: "month".to_string(),
            period: period.to_string(),
            period_start: Some(start),
            period_end: Some(end),
            shadow: false,
            whitelist_features: Vec::new(),
            trigger_event_id: None,
            fx_rates: Vec::new(),
            forecast_spend: None,
            method: None,
            decided_at: now_ms,
            reason: format!(
                "spend {} {} is {percent}% of the {period} limit {}",
                spend.normalize(),
                self.policy.currency,
                limit.normalize()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    const NOV: Period = Period {
        year: 2026,
        month: 11,
    };
    const DEC: Period = Period {
        year: 2026,
        month: 12,
    };

    fn tracker() -> BudgetTracker {
        BudgetTracker::new(BudgetPolicy {
            default_limit: None,
            tenant_limits: HashMap::from([("acme".to_string(), dec!(100))]),
            thresholds: BudgetPolicy::default_thresholds(),
            currency: "USD".into(),
        })
    }

    #[test]
    fn thresholds_are_exact() {
        let t = tracker();
        let p = t.policy();
        assert_eq!(
            p.level_for(dec!(79.999999999999), dec!(100)),
            BudgetLevel::Ok
        );
        assert_eq!(p.level_for(dec!(80), dec!(100)), BudgetLevel::Warning);
        assert_eq!(p.level_for(dec!(95), dec!(100)), BudgetLevel::Throttle);
        assert_eq!(
            p.level_for(dec!(99.999999999999), dec!(100)),
            BudgetLevel::Throttle
        );
        assert_eq!(p.level_for(dec!(100), dec!(100)), BudgetLevel::Block);
    }

    #[test]
    fn publishes_changes_only_and_goes_back_in_a_new_period() {
        let mut t = tracker();
        let first = t.evaluate("acme", NOV, dec!(10), 1).unwrap();
        assert_eq!((first.level, first.previous_level), (BudgetLevel::Ok, None));
        assert!(t.evaluate("acme", NOV, dec!(20), 2).is_none());
        let warn = t.evaluate("acme", NOV, dec!(85), 3).unwrap();
        assert_eq!(
            (warn.level, warn.previous_level),
            (BudgetLevel::Warning, Some(BudgetLevel::Ok))
        );
        let block = t.evaluate("acme", NOV, dec!(100.5), 4).unwrap();
        assert_eq!(block.level, BudgetLevel::Block);
        assert_eq!(block.budget_id, "tenant:acme");
        assert_eq!(
            block.reason,
            "spend 100.5 USD is 100.50% of the 2026-11 limit 100"
        );
        let back = t.evaluate("acme", DEC, dec!(1), 5).unwrap();
        assert_eq!(
            (back.level, back.previous_level),
            (BudgetLevel::Ok, Some(BudgetLevel::Block))
        );
        assert!(
            t.evaluate("acme", NOV, dec!(500), 6).is_none(),
            "late spend of an older period"
        );
        assert!(
            t.evaluate("other", NOV, dec!(500), 7).is_none(),
            "unbudgeted tenant"
        );
    }

    proptest! {
        #[test]
        fn level_is_monotonic_in_spend(a in 0u64..1_000_000, b in 0u64..1_000_000) {
            let t = tracker();
            let (lo, hi) = (a.min(b), a.max(b));
            let limit = dec!(5000);
            prop_assert!(t.policy().level_for(Decimal::new(lo as i64, 2), limit) <= t.policy().level_for(Decimal::new(hi as i64, 2), limit));
        }
    }
}
