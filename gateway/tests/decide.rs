//! `decide()`: most restrictive matching budget, whitelist, shadow, expiry, idempotent
//! application. Expected decisions are written by hand (unit tests) or computed by a
//! brute-force rule written separately from the table (property test).

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use rust_decimal::Decimal;

use common::{state, MONTH_END, NOW};
use costpipe_gateway::core::table::Applied;
use costpipe_gateway::{Action, BudgetTable, ControlState, Dimension, RequestContext, Scope};
use costpipe_schemas::BudgetLevel;

fn ctx(tenant: &str) -> RequestContext<'_> {
    RequestContext {
        tenant,
        department: Some("research"),
        model: Some("gpt-4o"),
        feature: Some("chat"),
        ..Default::default()
    }
}

#[test]
fn unknown_tenants_are_allowed_and_the_most_restrictive_budget_wins() {
    let mut t = BudgetTable::default();
    assert_eq!(t.decide(&ctx("acme"), NOW).action, Action::Allow);
    t.apply(state("acme-month", Some("acme"), BudgetLevel::Downgrade));
    let mut dept = state("acme-research", Some("acme"), BudgetLevel::Throttle);
    dept.scope = dept.scope.with(Dimension::Department, "research");
    t.apply(dept);
    let d = t.decide(&ctx("acme"), NOW);
    assert_eq!(
        d.action,
        Action::Throttle {
            requests_per_minute: 60
        }
    );
    assert_eq!(d.budget_id.as_deref(), Some("acme-research"));
    // Another department only sees the tenant budget.
    let other = RequestContext {
        department: Some("sales"),
        ..ctx("acme")
    };
    assert_eq!(
        t.decide(&other, NOW).action,
        Action::Downgrade {
            model: "gpt-4o-mini".into()
        }
    );
    // A global block applies to every tenant.
    t.apply(state("global", None, BudgetLevel::Block));
    let d = t.decide(&ctx("globex"), NOW);
    assert!(matches!(d.action, Action::Block { .. }));
    assert_eq!(d.budget_id.as_deref(), Some("global"));
}

#[test]
fn block_retry_after_is_the_time_to_period_end() {
    let mut t = BudgetTable::default();
    t.apply(state("acme-month", Some("acme"), BudgetLevel::Block));
    assert_eq!(
        t.decide(&ctx("acme"), NOW).action,
        Action::Block {
            retry_after_ms: (MONTH_END - NOW) as u64
        }
    );
    // Rolling: published wait counted from the decision, at least a second.
    let mut rolling = state("acme-1h", Some("acme"), BudgetLevel::Block);
    rolling.period_end_ms = None;
    rolling.retry_after_ms = Some(30_000);
    let mut t = BudgetTable::default();
    t.apply(rolling);
    assert_eq!(
        t.decide(&ctx("acme"), NOW).action,
        Action::Block {
            retry_after_ms: 29_000
        }
    );
    assert_eq!(
        t.decide(&ctx("acme"), NOW + 60_000).action,
        Action::Block {
            retry_after_ms: 1_000
        }
    );
}

#[test]
fn a_block_expires_with_its_period() {
    let mut t = BudgetTable::default();
    t.apply(state("acme-month", Some("acme"), BudgetLevel::Block));
    assert!(matches!(
        t.decide(&ctx("acme"), MONTH_END - 1).action,
        Action::Block { .. }
    ));
    assert_eq!(t.decide(&ctx("acme"), MONTH_END).action, Action::Allow);
}

#[test]
fn whitelisted_features_and_shadow_budgets_are_not_enforced() {
    let mut t = BudgetTable::default();
    let mut b = state("acme-month", Some("acme"), BudgetLevel::Block);
    b.whitelist_features = vec!["healthcheck".into()].into_boxed_slice();
    t.apply(b);
    let health = RequestContext {
        feature: Some("healthcheck"),
        ..ctx("acme")
    };
    assert_eq!(t.decide(&health, NOW).action, Action::Allow);
    assert!(matches!(
        t.decide(&ctx("acme"), NOW).action,
        Action::Block { .. }
    ));
    let mut s = state("globex-month", Some("globex"), BudgetLevel::Block);
    s.shadow = true;
    t.apply(s);
    assert_eq!(t.decide(&ctx("globex"), NOW).action, Action::Allow);
}

#[test]
fn the_model_dimension_matches_the_catalog_model() {
    let mut t = BudgetTable::default();
    let mut b = state("acme-gpt4o", Some("acme"), BudgetLevel::Block);
    b.scope = b.scope.with(Dimension::Model, "gpt-4o");
    t.apply(b);
    let catalog = costpipe_pricing::Catalog::builtin();
    // The caller's alias resolves to the catalog key the scope names.
    let model = costpipe_gateway::core::estimate::catalog_model(&catalog, "openai/gpt-4o");
    let c = RequestContext {
        model: model.map(|m| &**m),
        ..ctx("acme")
    };
    assert!(matches!(t.decide(&c, NOW).action, Action::Block { .. }));
    let mini = RequestContext {
        model: Some("gpt-4o-mini"),
        ..ctx("acme")
    };
    assert_eq!(t.decide(&mini, NOW).action, Action::Allow);
}

#[test]
fn latest_record_wins_and_republished_transitions_change_nothing() {
    let mut t = BudgetTable::default();
    let block = state("b", Some("acme"), BudgetLevel::Block);
    let ok = state("b", Some("acme"), BudgetLevel::Ok);
    assert_eq!(t.apply(block.clone()), Applied::Updated);
    assert_eq!(t.apply(ok.clone()), Applied::Updated);
    // A crashed aggregator re-publishes the BLOCK transition after the recovery: same id.
    assert_eq!(t.apply(block), Applied::Duplicate);
    assert_eq!(t.apply(ok), Applied::Duplicate);
    assert_eq!(t.decide(&ctx("acme"), NOW).action, Action::Allow);
    // A budget moved to another tenant is re-indexed; a tombstone removes it.
    let mut moved = state("b", Some("globex"), BudgetLevel::Block);
    moved.control_id = "moved".into();
    t.apply(moved);
    assert_eq!(t.decide(&ctx("acme"), NOW).action, Action::Allow);
    assert!(matches!(
        t.decide(&ctx("globex"), NOW).action,
        Action::Block { .. }
    ));
    t.remove("b");
    assert_eq!(t.decide(&ctx("globex"), NOW).action, Action::Allow);
    assert!(t.is_empty());
}

/// Brute force, written without the table: among all applicable non-OK states, the maximum
/// by (level, restrictiveness within level) — returned as (level, rate or wait).
fn expected(states: &[ControlState], c: &RequestContext<'_>, now: i64) -> (BudgetLevel, u64) {
    let mut best = (BudgetLevel::Ok, 0u64);
    for s in states {
        let whitelisted = c
            .feature
            .is_some_and(|f| s.whitelist_features.iter().any(|w| &**w == f));
        let in_scope = Dimension::ALL
            .iter()
            .all(|d| s.scope.get(*d).is_none_or(|v| c.get(*d) == Some(v)));
        let expired = s.period_end_ms.is_some_and(|e| now >= e);
        if s.shadow || whitelisted || !in_scope || expired || s.level == BudgetLevel::Ok {
            continue;
        }
        let within = match s.level {
            // Lower rate is more restrictive: compare on u32::MAX - rate.
            BudgetLevel::Throttle => u64::from(u32::MAX - s.throttle_requests_per_minute.unwrap()),
            BudgetLevel::Block => s.retry_after_ms(now),
            _ => 0,
        };
        if (s.level, within) > best {
            best = (s.level, within);
        }
    }
    best
}

fn arb_state() -> impl Strategy<Value = ControlState> {
    (
        0usize..5,                          // budget id index
        prop::option::of(0usize..3),        // tenant
        prop::option::of(0usize..2),        // department
        0usize..5,                          // level
        1u32..100,                          // rate
        any::<bool>(),                      // shadow
        any::<bool>(),                      // whitelist "health"
        prop::option::of(-5_000i64..5_000), // period end relative to NOW
        0u32..1000,                         // control id salt
    )
        .prop_map(|(id, tenant, dept, level, rate, shadow, wl, end, salt)| {
            let tenants = ["acme", "globex", "initech"];
            let depts = ["research", "sales"];
            let level = BudgetLevel::ALL[level];
            let mut s = state(&format!("b{id}"), tenant.map(|t| tenants[t]), level);
            if let Some(d) = dept {
                s.scope = s.scope.clone().with(Dimension::Department, depts[d]);
            }
            s.control_id = format!("c{id}-{salt}").into();
            s.throttle_requests_per_minute = (level == BudgetLevel::Throttle).then_some(rate);
            s.shadow = shadow;
            if wl {
                s.whitelist_features = vec!["health".into()].into_boxed_slice();
            }
            s.period_end_ms = end.map(|e| NOW + e);
            s.spend = Decimal::from(rate);
            s
        })
}

proptest! {
    /// The table's decision equals the brute-force one over the latest state per budget.
    #[test]
    fn decide_is_the_most_restrictive_applicable_state(
        records in prop::collection::vec(arb_state(), 0..30),
        tenant in 0usize..3,
        dept in prop::option::of(0usize..2),
        health in any::<bool>(),
    ) {
        let mut t = BudgetTable::default();
        let mut latest: Vec<ControlState> = Vec::new();
        let mut seen: Vec<Arc<str>> = Vec::new();
        for r in records {
            // Model of idempotence: an id seen before is ignored.
            if seen.contains(&r.control_id) {
                prop_assert_eq!(t.apply(r), Applied::Duplicate);
                continue;
            }
            seen.push(r.control_id.clone());
            latest.retain(|s| s.budget_id != r.budget_id);
            latest.push(r.clone());
            t.apply(r);
        }
        let tenants = ["acme", "globex", "initech"];
        let depts = ["research", "sales"];
        let c = RequestContext {
            tenant: tenants[tenant],
            department: dept.map(|d| depts[d]),
            feature: health.then_some("health"),
            ..Default::default()
        };
        let d = t.decide(&c, NOW);
        let (level, within) = expected(&latest, &c, NOW);
        let got = match d.action {
            Action::Allow => None,
            Action::Downgrade { .. } => Some((BudgetLevel::Downgrade, 0)),
            Action::Throttle { requests_per_minute } => Some((BudgetLevel::Throttle, u64::from(u32::MAX - requests_per_minute))),
            Action::Block { retry_after_ms } => Some((BudgetLevel::Block, retry_after_ms)),
        };
        match got {
            None => prop_assert!(level <= BudgetLevel::Warning),
            Some(g) => prop_assert_eq!(g, (level, within)),
        }
        prop_assert_eq!(Scope::global().matches(&c), true);
    }
}
