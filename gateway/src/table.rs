//! `BudgetTable`: the latest control record per scope, and the decision it implies.

use std::collections::HashMap;

use costpipe_schemas::{BudgetControl, BudgetLevel};

/// What a gateway does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allow, and tell the caller it is close to its limit.
    AllowWithWarning,
    /// Route to a cheaper model.
    Downgrade,
    /// Rate-limit the scope.
    Throttle,
    /// Refuse.
    Block,
}

impl From<BudgetLevel> for Decision {
    fn from(level: BudgetLevel) -> Self {
        match level {
            BudgetLevel::Ok => Decision::Allow,
            BudgetLevel::Warning => Decision::AllowWithWarning,
            BudgetLevel::Downgrade => Decision::Downgrade,
            BudgetLevel::Throttle => Decision::Throttle,
            BudgetLevel::Block => Decision::Block,
        }
    }
}

/// Latest control record per tenant; later records replace earlier ones, as compaction does.
#[derive(Debug, Default, Clone)]
pub struct BudgetTable {
    by_tenant: HashMap<String, BudgetControl>,
}

impl BudgetTable {
    /// Applies one record of the control topic.
    pub fn apply(&mut self, control: BudgetControl) {
        let tenant = control.tenant_id.clone().unwrap_or_default();
        self.by_tenant.insert(tenant, control);
    }

    /// The decision for a request of `tenant`. Unknown tenants are allowed: the aggregator
    /// publishes every budgeted tenant's level, and an unbudgeted tenant has no limit.
    pub fn decide(&self, tenant: &str) -> Decision {
        self.by_tenant
            .get(tenant)
            .map_or(Decision::Allow, |c| c.level.into())
    }

    /// The latest record of `tenant`.
    pub fn get(&self, tenant: &str) -> Option<&BudgetControl> {
        self.by_tenant.get(tenant)
    }

    /// Every tenant's latest record.
    pub fn iter(&self) -> impl Iterator<Item = &BudgetControl> {
        self.by_tenant.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(tenant: &str, level: BudgetLevel) -> BudgetControl {
        costpipe_schemas::BudgetControlV1 {
            scope_key: format!("tenant:{tenant}"),
            scope_kind: "tenant".into(),
            tenant_id: tenant.into(),
            period: "2026-11".into(),
            level,
            previous_level: None,
            spend: "1".into(),
            limit: "1".into(),
            currency: "USD".into(),
            decided_at: 0,
            reason: String::new(),
        }
        .into()
    }

    #[test]
    fn latest_record_wins_and_unknown_tenants_are_allowed() {
        let mut t = BudgetTable::default();
        assert_eq!(t.decide("acme"), Decision::Allow);
        t.apply(control("acme", BudgetLevel::Block));
        assert_eq!(t.decide("acme"), Decision::Block);
        t.apply(control("acme", BudgetLevel::Ok));
        assert_eq!(t.decide("acme"), Decision::Allow);
        t.apply(control("globex", BudgetLevel::Throttle));
        assert_eq!(t.decide("globex"), Decision::Throttle);
    }
}
