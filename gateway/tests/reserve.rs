//! Reservations: never admit past this instance's share of any applicable budget, under any
//! interleaving of reserve, settle and release; several instances with 1/n shares never
//! admit more than the headroom together. Expected bounds are computed from the test's own
//! numbers, not the ledger's.

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use common::{state, MONTH_END, NOW};
use costpipe_gateway::core::estimate::Cost;
use costpipe_gateway::{
    BudgetTable, Denied, Dimension, Ledger, LedgerConfig, RequestContext, Reservation,
};
use costpipe_pricing::Catalog;
use costpipe_schemas::BudgetLevel;

fn usd(amount: Decimal) -> Cost {
    Cost {
        amount,
        currency: "USD".into(),
        at_ms: NOW,
    }
}

fn acme() -> RequestContext<'static> {
    RequestContext {
        tenant: "acme",
        department: Some("research"),
        ..Default::default()
    }
}

/// acme: limit 100 USD, spend 60 (headroom 40).
fn table() -> BudgetTable {
    let mut t = BudgetTable::default();
    let mut s = state("acme-month", Some("acme"), BudgetLevel::Warning);
    s.spend = dec!(60);
    t.apply(s);
    t
}

#[test]
fn admits_until_the_share_of_headroom_is_held() {
    let catalog = Catalog::builtin();
    let t = table();
    let mut l = Ledger::new(LedgerConfig {
        share: dec!(0.5),
        settled_lag_ms: 10_000,
    });
    // Share: 0.5 × 40 = 20 → two calls of 10.
    let a = l
        .reserve(&t, &acme(), &usd(dec!(10)), &catalog, NOW)
        .unwrap();
    let b = l
        .reserve(&t, &acme(), &usd(dec!(10)), &catalog, NOW)
        .unwrap();
    let denied = l.reserve(&t, &acme(), &usd(dec!(0.01)), &catalog, NOW);
    assert!(matches!(denied, Err(Denied::Budget { ref available, .. }) if available.is_zero()));
    // Settling below the estimate frees the difference; the settled cost stays counted.
    l.settle(a, &usd(dec!(4)), &catalog, NOW);
    assert_eq!(l.held("acme-month"), (dec!(10), dec!(4)));
    let c = l
        .reserve(&t, &acme(), &usd(dec!(6)), &catalog, NOW)
        .unwrap();
    assert!(l
        .reserve(&t, &acme(), &usd(dec!(0.01)), &catalog, NOW)
        .is_err());
    l.release(b);
    l.release(c);
    assert_eq!(l.held("acme-month"), (dec!(0), dec!(4)));
}

#[test]
fn settled_cost_is_dropped_once_a_later_state_includes_it() {
    let catalog = Catalog::builtin();
    let mut t = table();
    let mut l = Ledger::new(LedgerConfig::default());
    let r = l
        .reserve(&t, &acme(), &usd(dec!(40)), &catalog, NOW)
        .unwrap();
    l.settle(r, &usd(dec!(40)), &catalog, NOW);
    assert!(l
        .reserve(&t, &acme(), &usd(dec!(1)), &catalog, NOW)
        .is_err());
    // The aggregator publishes a new state decided past the lag: spend 100 includes it.
    let mut s = state("acme-month", Some("acme"), BudgetLevel::Block);
    s.spend = dec!(100);
    s.decided_at_ms = NOW + 10_000;
    t.apply(s);
    assert!(l
        .reserve(&t, &acme(), &usd(dec!(1)), &catalog, NOW + 10_001)
        .is_err());
    assert_eq!(l.held("acme-month"), (dec!(0), dec!(0)));
    // Next month: spend is 0 and the headroom the whole limit.
    let r = l
        .reserve(&t, &acme(), &usd(dec!(100)), &catalog, MONTH_END)
        .unwrap();
    assert_eq!(r.holds[0].amount, dec!(100));
}

#[test]
fn estimates_are_held_in_each_budgets_currency_at_the_dated_rate() {
    let catalog = Catalog::builtin();
    let mut t = table();
    let mut eur = state("acme-research-eur", Some("acme"), BudgetLevel::Ok);
    eur.scope = eur.scope.with(Dimension::Department, "research");
    eur.currency = "EUR".into();
    eur.limit = dec!(10);
    t.apply(eur);
    let (u, e): (Arc<str>, Arc<str>) = ("USD".into(), "EUR".into());
    let rate = catalog.rate(&u, &e, NOW).unwrap().rate;
    let mut l = Ledger::new(LedgerConfig::default());
    let r = l
        .reserve(&t, &acme(), &usd(dec!(5)), &catalog, NOW)
        .unwrap();
    let eur_hold = r
        .holds
        .iter()
        .find(|h| &*h.budget_id == "acme-research-eur")
        .unwrap();
    assert_eq!(eur_hold.amount, (dec!(5) * rate).round_dp(12));
    assert_eq!(eur_hold.rate, rate);
    // 10 EUR is about 11.7 USD at that rate: a second 5 USD call fits, a third does not.
    let r2 = l
        .reserve(&t, &acme(), &usd(dec!(5)), &catalog, NOW)
        .unwrap();
    let expected_third_fits = dec!(15) * rate <= dec!(10);
    assert_eq!(
        l.reserve(&t, &acme(), &usd(dec!(5)), &catalog, NOW).is_ok(),
        expected_third_fits
    );
    l.release(r);
    l.release(r2);
}

#[derive(Debug, Clone)]
enum Op {
    /// Reserve this many cents.
    Reserve(u32),
    /// Settle the i-th open reservation at this fraction (per mille) of its estimate.
    Settle(usize, u32),
    /// Release the i-th open reservation.
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u32..2_000).prop_map(Op::Reserve),
        (0usize..50, 0u32..=1000).prop_map(|(i, f)| Op::Settle(i, f)),
        (0usize..50).prop_map(Op::Release),
    ]
}

proptest! {
    /// Under any interleaving, with actual costs at most the estimates, what this instance
    /// holds plus what it settled never exceeds its share of the headroom; and n instances
    /// with 1/n shares, interleaved, never exceed the headroom together.
    #[test]
    fn never_admits_past_the_share(
        instances in 1usize..4,
        ops in prop::collection::vec((0usize..4, op()), 0..200),
    ) {
        let catalog = Catalog::builtin();
        let t = table();
        let headroom = dec!(40);
        let share = Decimal::ONE / Decimal::from(instances as u64);
        let mut ledgers: Vec<Ledger> = (0..instances)
            .map(|_| Ledger::new(LedgerConfig { share, settled_lag_ms: 10_000 }))
            .collect();
        let mut open: Vec<Vec<(Reservation, Decimal)>> = (0..instances).map(|_| Vec::new()).collect();
        // The test's own accounts: admitted-and-open and settled per instance.
        let mut held = vec![Decimal::ZERO; instances];
        let mut spent = vec![Decimal::ZERO; instances];
        for (who, op) in ops {
            let who = who % instances;
            let l = &mut ledgers[who];
            match op {
                Op::Reserve(cents) => {
                    let est = Decimal::new(i64::from(cents), 2);
                    let fits = held[who] + spent[who] + est <= headroom * share;
                    let got = l.reserve(&t, &acme(), &usd(est), &catalog, NOW);
                    prop_assert_eq!(got.is_ok(), fits, "estimate {} held {} spent {}", est, held[who], spent[who]);
                    if let Ok(r) = got {
                        held[who] += est;
                        open[who].push((r, est));
                    }
                }
                Op::Settle(i, per_mille) => {
                    if open[who].is_empty() { continue; }
                    let n = open[who].len();
                    let (r, est) = open[who].swap_remove(i % n);
                    let actual = est * Decimal::from(per_mille) / dec!(1000);
                    l.settle(r, &usd(actual), &catalog, NOW);
                    held[who] -= est;
                    spent[who] += actual;
                }
                Op::Release(i) => {
                    if open[who].is_empty() { continue; }
                    let n = open[who].len();
                    let (r, est) = open[who].swap_remove(i % n);
                    l.release(r);
                    held[who] -= est;
                }
            }
            let (h, s) = ledgers[who].held("acme-month");
            prop_assert_eq!((h, s), (held[who], spent[who]));
            prop_assert!(h + s <= headroom * share);
            let total: Decimal = held.iter().chain(&spent).sum();
            prop_assert!(total <= headroom);
        }
    }
}

#[test]
fn an_unpriced_call_stays_counted_at_its_worst_case() {
    let catalog = Catalog::builtin();
    let t = table();
    let mut l = Ledger::new(LedgerConfig::default());
    let r = l
        .reserve(&t, &acme(), &usd(dec!(30)), &catalog, NOW)
        .unwrap();
    l.settle_as_held(r, NOW);
    assert_eq!(l.held("acme-month"), (dec!(0), dec!(30)));
    assert!(l
        .reserve(&t, &acme(), &usd(dec!(10.01)), &catalog, NOW)
        .is_err());
    assert!(l
        .reserve(&t, &acme(), &usd(dec!(10)), &catalog, NOW)
        .is_ok());
}
