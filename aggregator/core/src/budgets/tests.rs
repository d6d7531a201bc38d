//! Budget core tests: every expected value is written by hand or computed here by brute
//! force, independently of the code under test.

use std::collections::BTreeSet;

use chrono::DateTime;
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use costpipe_pricing::Catalog;
use costpipe_schemas::{
    BudgetControl, BudgetDefinition, BudgetLevel, CalendarUnit, ControlKind, RollingWindow,
    RungAction,
};

use super::*;

const SMALL: &str = include_str!("../../../../pricing/testdata/small.toml");

pub(super) fn catalog() -> Catalog {
    Catalog::from_toml(SMALL).expect("small catalog")
}

pub(super) fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("time")
        .timestamp_millis()
}

pub(super) fn def(json: serde_json::Value) -> BudgetDefinition {
    serde_json::from_value(json).expect("definition")
}

/// A book owning every tenant (one partition, assigned).
pub(super) fn book() -> BudgetBook {
    let mut b = BudgetBook::new();
    b.set_assignment(1, BTreeSet::from([0]));
    b
}

pub(super) fn add(b: &mut BudgetBook, id: &str, json: serde_json::Value, now: i64) {
    let mut d = json;
    d["budget_id"] = id.into();
    let needs = b.upsert(def(d), &catalog(), now).expect("valid");
    assert!(needs, "a new budget waits for its backfill");
    b.mark_backfilled(id, now);
}

/// Adds a budget that waits for its backfill (restored rows, then `mark_backfilled`).
pub(super) fn add_pending(b: &mut BudgetBook, id: &str, json: serde_json::Value, now: i64) {
    let mut d = json;
    d["budget_id"] = id.into();
    assert!(b.upsert(def(d), &catalog(), now).expect("valid"));
}

pub(super) fn spend(
    tenant: &str,
    dept: &str,
    amount: Decimal,
    currency: &str,
    at: i64,
) -> SpendFacts<'static> {
    SpendFacts {
        tenant: Box::leak(tenant.to_string().into_boxed_str()),
        department: Some(Box::leak(dept.to_string().into_boxed_str())),
        user: None,
        project: None,
        feature: None,
        model: Some("gpt-4o"),
        api_key: None,
        at_ms: at,
        amount,
        currency: Box::leak(currency.to_string().into_boxed_str()),
        event_id: None,
    }
}

pub(super) fn drain(b: &mut BudgetBook) -> Vec<BudgetControl> {
    std::iter::from_fn(|| b.poll_output()).collect()
}

fn levels(v: &[BudgetControl]) -> Vec<BudgetLevel> {
    v.iter().map(|c| c.level).collect()
}

fn dept_day() -> serde_json::Value {
    serde_json::json!({
        "scope": {"tenant": "acme", "department": "research"},
        "period": {"calendar": "day", "time_zone": "Europe/Paris"},
        "limit": "100", "currency": "USD",
        "ladder": [
            {"at": "0.5", "action": "notify"},
            {"at": "0.8", "action": {"downgrade": {"to": "gpt-4o-mini"}}},
            {"at": "1", "action": "block"}
        ],
        "whitelist_features": ["healthcheck"]
    })
}

#[test]
fn ladder_climbs_one_record_per_level_with_actions() {
    let mut b = book();
    let t = ms("2026-11-10T12:00:00Z");
    add(&mut b, "acme:research:day", dept_day(), t);
    let cat = catalog();
    for (amount, at) in [
        (dec!(49.99), 0),
        (dec!(0.01), 1),
        (dec!(29.99), 2),
        (dec!(0.01), 3),
    ] {
        b.handle_spend(
            &spend("acme", "research", amount, "USD", t + at),
            &cat,
            t + at,
            SpendMode::Live,
        );
    }
    // Another department and another tenant do not count.
    b.handle_spend(
        &spend("acme", "sales", dec!(500), "USD", t),
        &cat,
        t + 4,
        SpendMode::Live,
    );
    b.handle_spend(
        &spend("globex", "research", dec!(500), "USD", t),
        &cat,
        t + 4,
        SpendMode::Live,
    );
    b.handle_spend(
        &spend("acme", "research", dec!(20), "USD", t + 5),
        &cat,
        t + 5,
        SpendMode::Live,
    );
    let out = drain(&mut b);
    assert_eq!(
        levels(&out),
        [
            BudgetLevel::Warning,
            BudgetLevel::Downgrade,
            BudgetLevel::Block
        ]
    );
    assert_eq!(out[0].spend, "50");
    assert_eq!(out[0].ratio, "0.5");
    assert_eq!(out[0].threshold, "0.5");
    assert_eq!(out[1].spend, "80");
    assert_eq!(out[1].downgrade_to.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(out[2].spend, "100");
    assert_eq!(out[2].previous_level, Some(BudgetLevel::Downgrade));
    assert_eq!(out[2].whitelist_features, ["healthcheck"]);
    assert_eq!(out[2].tenant_id.as_deref(), Some("acme"));
    assert_eq!(out[2].period, "2026-11-10");
    // Paris is UTC+1 in November: the day runs 2026-11-09T23:00Z .. 2026-11-10T23:00Z.
    assert_eq!(out[2].period_start, Some(ms("2026-11-09T23:00:00Z")));
    assert_eq!(out[2].period_end, Some(ms("2026-11-10T23:00:00Z")));
    assert_eq!(
        out[2].retry_after_ms,
        Some(ms("2026-11-10T23:00:00Z") - (t + 5))
    );
    let ids: BTreeSet<_> = out.iter().map(|c| c.control_id.clone()).collect();
    assert_eq!(ids.len(), 3, "distinct ids");
}

#[test]
fn rollover_recovers_on_a_tick_with_no_spend_across_dst_and_month_end() {
    let mut b = book();
    // Paris leaves summer time on 2026-10-25 03:00 local (01:00Z); the month ends on the 31st.
    let t = ms("2026-10-31T20:00:00Z");
    let mut d = dept_day();
    d["period"] = serde_json::json!({"calendar": "month", "time_zone": "Europe/Paris"});
    add(&mut b, "m", d, t);
    b.handle_spend(
        &spend("acme", "research", dec!(150), "USD", t),
        &catalog(),
        t,
        SpendMode::Live,
    );
    let up = drain(&mut b);
    assert_eq!(levels(&up), [BudgetLevel::Block]);
    // October in Paris: 2026-09-30T22:00Z (summer time) .. 2026-10-31T23:00Z (winter time).
    assert_eq!(up[0].period_start, Some(ms("2026-09-30T22:00:00Z")));
    assert_eq!(up[0].period_end, Some(ms("2026-10-31T23:00:00Z")));
    b.handle_tick(ms("2026-10-31T22:59:59.999Z"));
    let early = drain(&mut b);
    assert!(early.is_empty(), "still October in Paris: {early:#?}");
    b.handle_tick(ms("2026-10-31T23:00:00Z"));
    let down = drain(&mut b);
    assert_eq!(levels(&down), [BudgetLevel::Ok]);
    assert_eq!(down[0].previous_level, Some(BudgetLevel::Block));
    assert_eq!(down[0].period, "2026-11");
    assert_eq!(down[0].spend, "0");
    assert!(
        down[0].reason.starts_with("recovered"),
        "{}",
        down[0].reason
    );
    b.handle_tick(ms("2026-11-01T00:00:00Z"));
    assert!(drain(&mut b).is_empty(), "one recovery only");
}

#[test]
fn calendar_periods_by_brute_force_in_several_zones() {
    // For each hour across DST changes and a year end, the period containing it starts at a
    // local midnight (or the first minute after a skipped one) and is followed by the next.
    for zone in [
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "Asia/Kolkata",
        "America/Sao_Paulo",
    ] {
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        for unit in [CalendarUnit::Day, CalendarUnit::Week, CalendarUnit::Month] {
            let spec = PeriodSpec::Calendar { unit, zone: tz };
            let mut t = ms("2026-03-01T00:00:00Z");
            while t < ms("2026-04-05T00:00:00Z") {
                let w = spec.calendar_at(t).unwrap();
                assert!(w.start_ms <= t && t < w.end_ms, "{zone} {unit:?} {t}");
                let next = spec.calendar_at(w.end_ms).unwrap();
                assert_eq!(next.start_ms, w.end_ms, "periods tile time");
                let local = DateTime::from_timestamp_millis(w.start_ms)
                    .unwrap()
                    .with_timezone(&tz);
                use chrono::{Datelike, Timelike};
                assert!(
                    local.hour() <= 1 && local.minute() == 0,
                    "{zone} starts at {local}"
                );
                match unit {
                    CalendarUnit::Week => assert_eq!(local.weekday(), chrono::Weekday::Mon),
                    CalendarUnit::Month => assert_eq!(local.day(), 1),
                    CalendarUnit::Day => {}
                }
                t += 3_600_000;
            }
        }
    }
    // New York's 2026-03-08 is 23 hours long.
    let ny = PeriodSpec::Calendar {
        unit: CalendarUnit::Day,
        zone: "America/New_York".parse().unwrap(),
    };
    let w = ny.calendar_at(ms("2026-03-08T12:00:00Z")).unwrap();
    assert_eq!(w.end_ms - w.start_ms, 23 * 3_600_000);
    assert_eq!(w.label, "2026-03-08");
}

#[test]
fn hysteresis_holds_a_rolling_level_until_below_at_minus_hysteresis() {
    let mut b = book();
    let t0 = ms("2026-11-10T12:00:00Z");
    add(
        &mut b,
        "r",
        serde_json::json!({"scope": {"tenant": "acme"}, "period": {"rolling": "1h"},
            "limit": "100", "currency": "USD", "hysteresis": "0.05",
            "ladder": [{"at": "0.5", "action": "notify"}]}),
        t0,
    );
    let cat = catalog();
    // 30 at t0, 20 at t0+10 min: 50 % → WARNING.
    b.handle_spend(
        &spend("acme", "x", dec!(30), "USD", t0),
        &cat,
        t0,
        SpendMode::Live,
    );
    b.handle_spend(
        &spend("acme", "x", dec!(20), "USD", t0 + 600_000),
        &cat,
        t0 + 600_000,
        SpendMode::Live,
    );
    let up = drain(&mut b);
    assert_eq!(levels(&up), [BudgetLevel::Warning]);
    // t0 is minute-aligned, so the 30's bin leaves the window at t0 + 60 min, 50 min after
    // the WARNING: then 20 % is below 0.5 − 0.05 and the slide recovers. retry_after says so.
    let retry = up[0].retry_after_ms.unwrap();
    assert_eq!(retry, 50 * 60_000);
    b.handle_tick(t0 + 600_000 + retry - 1);
    assert!(drain(&mut b).is_empty());
    b.handle_tick(t0 + 600_000 + retry);
    let down = drain(&mut b);
    assert_eq!(levels(&down), [BudgetLevel::Ok]);
    assert!(down[0].reason.contains("slid"), "{}", down[0].reason);
    assert_eq!(down[0].period_start, None);
    // Hovering: 46 % does not drop a WARNING (0.5 − 0.05 = 0.45), 44 % does.
    let mut b = book();
    add(
        &mut b,
        "r",
        serde_json::json!({"scope": {"tenant": "acme"}, "period": {"rolling": "1h"},
            "limit": "100", "currency": "USD", "hysteresis": "0.05",
            "ladder": [{"at": "0.5", "action": "notify"}]}),
        t0,
    );
    b.handle_spend(
        &spend("acme", "x", dec!(4), "USD", t0),
        &cat,
        t0,
        SpendMode::Live,
    );
    b.handle_spend(
        &spend("acme", "x", dec!(46), "USD", t0 + 120_000),
        &cat,
        t0 + 120_000,
        SpendMode::Live,
    );
    assert_eq!(levels(&drain(&mut b)), [BudgetLevel::Warning]);
    // At t0 + 61 min the window is the minutes t0+2 .. t0+61: the 4 left, the 46 stays;
    // 46 % ≥ 45 %, held.
    b.handle_tick(t0 + 61 * 60_000);
    assert!(drain(&mut b).is_empty(), "46 % holds WARNING");
    // At t0 + 62 min the 46 leaves too: recovered.
    b.handle_tick(t0 + 62 * 60_000);
    assert_eq!(levels(&drain(&mut b)), [BudgetLevel::Ok]);
}

#[test]
fn mid_period_creation_starts_from_restored_spend() {
    let mut b = book();
    let t = ms("2026-11-10T12:00:00Z");
    let cat = catalog();
    let mut d = dept_day();
    d["budget_id"] = "late".into();
    assert!(b.upsert(def(d), &cat, t).unwrap());
    // Not evaluated before its backfill.
    b.handle_tick(t);
    assert!(drain(&mut b).is_empty());
    // The shell restores today's rows (one from yesterday, Paris time, does not count).
    b.handle_spend(
        &spend("acme", "research", dec!(70), "USD", t - 3_600_000),
        &cat,
        t,
        SpendMode::Restore(&|b| &*b.id == "late"),
    );
    b.handle_spend(
        &spend(
            "acme",
            "research",
            dec!(500),
            "USD",
            ms("2026-11-09T22:59:00Z"),
        ),
        &cat,
        t,
        SpendMode::Restore(&|b| &*b.id == "late"),
    );
    assert!(drain(&mut b).is_empty(), "restored rows do not evaluate");
    b.mark_backfilled("late", t);
    let out = drain(&mut b);
    assert_eq!(levels(&out), [BudgetLevel::Warning]);
    assert_eq!(out[0].spend, "70");
}

#[test]
fn eur_spend_is_converted_at_the_dated_rate_and_the_rate_recorded() {
    let mut b = book();
    let t = ms("2026-11-10T12:00:00Z");
    add(
        &mut b,
        "eur-tenant",
        serde_json::json!({"scope": {"tenant": "euro"}, "period": {"calendar": "month"},
            "limit": "100", "currency": "USD"}),
        t,
    );
    let cat = catalog();
    // small.toml: 1 EUR = 1.25 USD from 2026-01-01. 79.99 EUR = 99.9875 USD; + 0.01 EUR =
    // 100.0000 USD exactly.
    b.handle_spend(
        &spend("euro", "d", dec!(79.99), "EUR", t),
        &cat,
        t,
        SpendMode::Live,
    );
    let first = drain(&mut b);
    assert_eq!(
        levels(&first),
        [BudgetLevel::Throttle],
        "default ladder: 0.8 throttle"
    );
    assert_eq!(first[0].spend, "99.9875");
    assert_eq!(first[0].throttle_requests_per_minute, Some(60));
    b.handle_spend(
        &spend("euro", "d", dec!(0.01), "EUR", t + 1),
        &cat,
        t + 1,
        SpendMode::Live,
    );
    let block = drain(&mut b);
    assert_eq!(levels(&block), [BudgetLevel::Block]);
    assert_eq!(block[0].spend, "100");
    assert_eq!(block[0].currency, "USD");
    assert_eq!(block[0].fx_rates.len(), 1);
    let fx = &block[0].fx_rates[0];
    assert_eq!(
        (
            fx.from.as_str(),
            fx.to.as_str(),
            fx.rate.as_str(),
            fx.date.as_str()
        ),
        ("EUR", "USD", "1.25", "2026-01-01")
    );
    // No rate GBP→USD: not counted, and counted as such.
    b.handle_spend(
        &spend("euro", "d", dec!(1000), "GBP", t + 2),
        &cat,
        t + 2,
        SpendMode::Live,
    );
    assert_eq!(b.stats().unconverted, 1);
    assert_eq!(b.spend_of("eur-tenant", t + 2), Some(dec!(100)));
}

#[test]
fn shadow_overrides_limit_changes_and_deletion() {
    let mut b = book();
    let t = ms("2026-11-10T12:00:00Z");
    let cat = catalog();
    let mut d = dept_day();
    d["shadow"] = true.into();
    d["overrides"] = serde_json::json!([{"limit": "200", "expires_at": "2026-11-10T18:00:00Z"}]);
    add(&mut b, "s", d.clone(), t);
    b.handle_spend(
        &spend("acme", "research", dec!(100), "USD", t),
        &cat,
        t,
        SpendMode::Live,
    );
    let out = drain(&mut b);
    // Against the override's 200: 50 % → WARNING, published as shadow.
    assert_eq!(levels(&out), [BudgetLevel::Warning]);
    assert!(out[0].shadow);
    assert_eq!(out[0].limit, "200");
    // The override expires at 18:00Z: the limit is 100 again, 100 % → BLOCK on the tick.
    b.handle_tick(ms("2026-11-10T18:00:00Z"));
    let out = drain(&mut b);
    assert_eq!(levels(&out), [BudgetLevel::Block]);
    assert_eq!(out[0].limit, "100");
    // A raised limit recovers at once, without a tick.
    let mut raised = d.clone();
    raised["budget_id"] = "s".into();
    raised["limit"] = "1000".into();
    raised["overrides"] = serde_json::json!([]);
    assert!(!b
        .upsert(def(raised), &cat, ms("2026-11-10T18:30:00Z"))
        .unwrap());
    let out = drain(&mut b);
    assert_eq!(levels(&out), [BudgetLevel::Ok]);
    assert!(
        out[0].reason.contains("limit now 1000"),
        "{}",
        out[0].reason
    );
    // Lowered again: the same level in the same period under another limit is a new id.
    let mut lowered = d.clone();
    lowered["budget_id"] = "s".into();
    lowered["overrides"] = serde_json::json!([]);
    b.upsert(def(lowered), &cat, ms("2026-11-10T18:40:00Z"))
        .unwrap();
    let again = drain(&mut b);
    assert_eq!(levels(&again), [BudgetLevel::Block]);
    // Deleting a budget that blocks publishes its recovery.
    b.remove("s", ms("2026-11-10T19:00:00Z"));
    let out = drain(&mut b);
    assert_eq!(levels(&out), [BudgetLevel::Ok]);
    assert!(out[0].reason.contains("deleted"));
    assert!(b.is_empty());
}

#[test]
fn after_a_crash_the_same_transition_gets_the_same_id_and_no_false_recovery() {
    let t = ms("2026-11-10T12:00:00Z");
    let cat = catalog();
    let mut first = book();
    add(&mut first, "b", dept_day(), t);
    first.handle_spend(
        &spend("acme", "research", dec!(60), "USD", t),
        &cat,
        t,
        SpendMode::Live,
    );
    first.handle_spend(
        &spend("acme", "research", dec!(25), "USD", t + 1),
        &cat,
        t + 1,
        SpendMode::Live,
    );
    let published = drain(&mut first);
    assert_eq!(
        levels(&published),
        [BudgetLevel::Warning, BudgetLevel::Downgrade]
    );
    // Crash after publishing WARNING only; the restart reads it back from the control topic
    // and restores 60 from ClickHouse (the 25 was not written yet and is replayed).
    let mut second = book();
    second.restore_published(&published[0]);
    add_pending(&mut second, "b", dept_day(), t + 10);
    second.handle_spend(
        &spend("acme", "research", dec!(60), "USD", t),
        &cat,
        t + 10,
        SpendMode::Restore(&|_| true),
    );
    second.mark_backfilled("b", t + 10);
    second.handle_tick(t + 10);
    assert!(
        drain(&mut second).is_empty(),
        "WARNING is already published"
    );
    second.handle_spend(
        &spend("acme", "research", dec!(25), "USD", t + 1),
        &cat,
        t + 11,
        SpendMode::Live,
    );
    let again = drain(&mut second);
    assert_eq!(levels(&again), [BudgetLevel::Downgrade]);
    assert_eq!(
        again[0].control_id, published[1].control_id,
        "same transition, same id"
    );
    // Crash after publishing DOWNGRADE, with ClickHouse still at 60: no false recovery.
    let mut third = book();
    third.restore_published(&published[1]);
    add_pending(&mut third, "b", dept_day(), t + 20);
    third.handle_spend(
        &spend("acme", "research", dec!(60), "USD", t),
        &cat,
        t + 20,
        SpendMode::Restore(&|_| true),
    );
    third.mark_backfilled("b", t + 20);
    third.handle_tick(t + 20);
    assert!(
        drain(&mut third).is_empty(),
        "spend behind a published level is held"
    );
}

#[test]
fn scopes_match_every_dimension_and_index_by_tenant_with_global_budgets() {
    let mut b = book();
    let t = ms("2026-11-10T12:00:00Z");
    let cat = catalog();
    add(
        &mut b,
        "global",
        serde_json::json!({"period": {"calendar": "day"}, "limit": "10", "currency": "USD", "ladder": [{"at": "1", "action": "block"}]}),
        t,
    );
    add(
        &mut b,
        "model",
        serde_json::json!({"scope": {"tenant": "acme", "model": "gpt-4o-2024-08-06"}, "period": {"calendar": "day"}, "limit": "5", "currency": "USD", "ladder": [{"at": "1", "action": "block"}]}),
        t,
    );
    add(
        &mut b,
        "feature",
        serde_json::json!({"scope": {"tenant": "acme", "feature": "chat"}, "period": {"calendar": "day"}, "limit": "1", "currency": "USD", "ladder": [{"at": "1", "action": "block"}]}),
        t,
    );
    b.handle_spend(
        &spend("acme", "d", dec!(6), "USD", t),
        &cat,
        t,
        SpendMode::Live,
    );
    b.handle_spend(
        &spend("globex", "d", dec!(4), "USD", t),
        &cat,
        t,
        SpendMode::Live,
    );
    let out = drain(&mut b);
    let blocked: BTreeSet<_> = out.iter().map(|c| c.budget_id.as_str()).collect();
    // The model alias resolves to the catalog key gpt-4o; no event had feature "chat".
    assert_eq!(blocked, BTreeSet::from(["global", "model"]));
    // An instance not holding every partition does not evaluate the global budget.
    let mut partial = book();
    partial.set_assignment(2, BTreeSet::from([0]));
    add(
        &mut partial,
        "global",
        serde_json::json!({"period": {"calendar": "day"}, "limit": "1", "currency": "USD"}),
        t,
    );
    partial.handle_spend(
        &spend("acme", "d", dec!(6), "USD", t),
        &cat,
        t,
        SpendMode::Live,
    );
    assert!(drain(&mut partial).is_empty());
    assert!(partial.pending_backfill().is_empty());
}

#[test]
fn catalog_checks_name_the_field() {
    let cat = catalog();
    let mut b = book();
    for (json, field) in [
        (
            serde_json::json!({"budget_id": "x", "period": {"calendar": "day"}, "limit": "1", "currency": "JPY"}),
            "currency",
        ),
        (
            serde_json::json!({"budget_id": "x", "scope": {"model": "no-such-model"}, "period": {"calendar": "day"}, "limit": "1", "currency": "USD"}),
            "scope.model",
        ),
        (
            serde_json::json!({"budget_id": "x", "period": {"calendar": "day"}, "limit": "1", "currency": "USD", "ladder": [{"at": "1", "action": {"downgrade": {"to": "nope"}}}]}),
            "ladder[0].action.downgrade.to",
        ),
    ] {
        let err = b.upsert(def(json), &cat, 0).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}

/// The rung a ladder should hold after a ratio sequence, by the rule stated in words: up to
/// the highest rung reached; down only while the ratio is below at − h of the rung held.
fn brute_force(ats: &[Decimal], h: Decimal, ratios: &[Decimal]) -> Vec<Option<usize>> {
    let mut held: Option<usize> = None;
    let mut out = Vec::new();
    for &r in ratios {
        let reached = (0..ats.len()).filter(|&i| r >= ats[i]).max();
        if reached > held {
            held = reached;
        } else {
            while let Some(i) = held {
                if r < ats[i] - h {
                    held = if i == 0 { None } else { Some(i - 1) };
                } else {
                    break;
                }
            }
        }
        out.push(held);
    }
    out
}

proptest! {
    #[test]
    fn ladder_matches_the_rule_in_words(
        steps in proptest::collection::vec(1u32..40, 1..5),
        h in 0u32..10,
        ratios in proptest::collection::vec(0u32..200, 1..60),
    ) {
        let mut at = 0u32;
        let ats: Vec<Decimal> = steps.iter().map(|s| { at += s; Decimal::new(at.into(), 2) }).collect();
        let h = Decimal::new(h.into(), 2);
        let ratios: Vec<Decimal> = ratios.iter().map(|r| Decimal::new((*r).into(), 2)).collect();
        let ladder = Ladder {
            rungs: ats.iter().map(|a| RuntimeRung::new(*a, &RungAction::Notify)).collect(),
            hysteresis: h,
        };
        let mut held = None;
        let got: Vec<_> = ratios.iter().map(|r| { held = ladder.next(held, *r); held }).collect();
        prop_assert_eq!(got, brute_force(&ats, h, &ratios));
    }

    #[test]
    fn rolling_sum_equals_brute_force(
        events in proptest::collection::vec((0i64..7_200_000, 1i64..10_000), 1..80),
        now in 3_600_000i64..7_200_000,
    ) {
        let spec = PeriodSpec::Rolling(RollingWindow::Hour);
        let mut s = spend::Spend::new(&spec);
        let base = ms("2026-11-10T00:00:00Z");
        for (at, cents) in &events {
            // Added in arrival order at their own time (so none is refused as too old).
            let _ = s.add(&spec, base + at, Decimal::new(*cents, 2), base + at);
        }
        // Brute force: 1-minute bins; the window is the 60 bins ending with now's.
        let now_bin = (base + now).div_euclid(60_000);
        let expected: Decimal = events.iter()
            .filter(|(at, _)| (base + at).div_euclid(60_000) > now_bin - 60)
            .map(|(_, c)| Decimal::new(*c, 2))
            .sum();
        prop_assert_eq!(s.total(&spec, base + now).unwrap(), expected);
    }

    #[test]
    fn a_climb_publishes_each_level_once_in_order(amounts in proptest::collection::vec(1i64..3000, 1..60)) {
        let mut b = book();
        let t = ms("2026-11-10T12:00:00Z");
        add(&mut b, "p", dept_day(), t);
        let cat = catalog();
        let mut total = Decimal::ZERO;
        let mut expected = Vec::new();
        let mut held = BudgetLevel::Ok;
        for (i, cents) in amounts.iter().enumerate() {
            let a = Decimal::new(*cents, 2);
            total += a;
            let level = if total >= dec!(100) { BudgetLevel::Block } else if total >= dec!(80) { BudgetLevel::Downgrade } else if total >= dec!(50) { BudgetLevel::Warning } else { BudgetLevel::Ok };
            if level != held { expected.push((level, total)); held = level; }
            b.handle_spend(&spend("acme", "research", a, "USD", t + i as i64), &cat, t + i as i64, SpendMode::Live);
        }
        let out = drain(&mut b);
        let got: Vec<_> = out.iter().map(|c| (c.level, c.spend.parse::<Decimal>().unwrap())).collect();
        prop_assert_eq!(got, expected);
    }
}

proptest! {
    /// The tenant index finds exactly the budgets a full scan of every scope would.
    #[test]
    fn indexed_matching_equals_a_full_scan(
        scopes in proptest::collection::vec(
            (0usize..3, proptest::option::of(0usize..3), proptest::option::of(0usize..3), proptest::option::of(0usize..2)),
            1..40,
        ),
        events in proptest::collection::vec((0usize..3, 0usize..3, 0usize..3, 0usize..2), 1..20),
    ) {
        let tenants = ["a", "b", "c"];
        let depts = ["d0", "d1", "d2"];
        let feats = ["f0", "f1", "f2"];
        let models = ["gpt-4o", "gpt-4o-mini"];
        let t = ms("2026-11-10T12:00:00Z");
        let cat = catalog();
        let mut b = book();
        for (i, (tenant, dept, feat, model)) in scopes.iter().enumerate() {
            let mut scope = serde_json::Map::new();
            // Every third budget names no tenant (global or other dimensions only).
            if i % 3 != 2 {
                scope.insert("tenant".into(), tenants[*tenant].into());
            }
            if let Some(d) = dept { scope.insert("department".into(), depts[*d].into()); }
            if let Some(f) = feat { scope.insert("feature".into(), feats[*f].into()); }
            if let Some(m) = model { scope.insert("model".into(), models[*m].into()); }
            add(&mut b, &format!("b{i}"), serde_json::json!({"scope": scope, "period": {"calendar": "day"},
                "limit": "1000000", "currency": "USD"}), t);
        }
        for (n, (tenant, dept, feat, model)) in events.iter().enumerate() {
            let before: Vec<Decimal> = (0..scopes.len()).map(|i| b.spend_of(&format!("b{i}"), t).unwrap()).collect();
            let facts = SpendFacts {
                tenant: tenants[*tenant],
                department: Some(depts[*dept]),
                user: None,
                project: None,
                feature: Some(feats[*feat]),
                model: Some(models[*model]),
                api_key: None,
                at_ms: t + n as i64,
                amount: dec!(1),
                currency: "USD",
                event_id: None,
            };
            b.handle_spend(&facts, &cat, t + n as i64, SpendMode::Live);
            for (i, (bt, bd, bf, bm)) in scopes.iter().enumerate() {
                let matches = (i % 3 == 2 || bt == tenant)
                    && bd.is_none_or(|d| d == *dept)
                    && bf.is_none_or(|f| f == *feat)
                    && bm.is_none_or(|m| m == *model);
                let after = b.spend_of(&format!("b{i}"), t).unwrap();
                prop_assert_eq!(after - before[i], if matches { dec!(1) } else { dec!(0) }, "budget b{}", i);
            }
        }
    }
}

proptest! {
    /// Crash simulation: a climb of random amounts with crashes at random points. Before a
    /// crash, some events are committed to the store and some control records published;
    /// the restarted book restores what was published (the control topic) and the committed
    /// spend (the store), then replays the rest. Whatever the crash points, consumers see
    /// at most one control id per level (one logical transition), no recovery in the
    /// period, and the final level last.
    #[test]
    fn crashes_leave_one_transition_per_level(
        amounts in proptest::collection::vec(1i64..2500, 5..60),
        crashes in proptest::collection::vec((0usize..60, 0usize..60, any::<bool>()), 0..4),
    ) {
        let t = ms("2026-11-10T12:00:00Z");
        let cat = catalog();
        let amount = |i: usize| Decimal::new(amounts[i], 2);
        let mut topic: Vec<BudgetControl> = Vec::new();
        let mut committed = 0usize; // events in the store
        let mut next = 0usize; // next event to process
        let mut b = book();
        add(&mut b, "sim", dept_day(), t);
        let mut crash_at: Vec<(usize, usize, bool)> = crashes.clone();
        crash_at.sort();
        let mut pending: Vec<BudgetControl> = Vec::new();
        while next < amounts.len() {
            let now = t + next as i64;
            b.handle_spend(&spend("acme", "research", amount(next), "USD", now), &cat, now, SpendMode::Live);
            next += 1;
            pending.extend(drain(&mut b));
            if let Some(pos) = crash_at.iter().position(|(at, _, _)| *at == next) {
                let (_, commit, publish) = crash_at.remove(pos);
                // Some of what was decided reached the topic, some of the events the store.
                if publish {
                    topic.append(&mut pending);
                }
                pending.clear();
                committed = committed.max(commit.min(next));
                let mut restarted = book();
                if let Some(last) = topic.last() {
                    restarted.restore_published(last);
                }
                add_pending(&mut restarted, "sim", dept_day(), now);
                for i in 0..committed {
                    restarted.handle_spend(&spend("acme", "research", amount(i), "USD", t + i as i64), &cat, now, SpendMode::Restore(&|_| true));
                }
                restarted.mark_backfilled("sim", now);
                restarted.handle_tick(now);
                pending.extend(drain(&mut restarted));
                next = committed; // replay what the store does not have
                b = restarted;
            } else {
                topic.append(&mut pending);
                committed = next;
            }
        }
        topic.append(&mut pending);
        let total: Decimal = (0..amounts.len()).map(amount).sum();
        let expected: Vec<BudgetLevel> = [(dec!(50), BudgetLevel::Warning), (dec!(80), BudgetLevel::Downgrade), (dec!(100), BudgetLevel::Block)]
            .iter().filter(|(at, _)| total >= *at).map(|(_, l)| *l).collect();
        let mut ids: std::collections::BTreeMap<BudgetLevel, BTreeSet<String>> = Default::default();
        for c in &topic {
            ids.entry(c.level).or_default().insert(c.control_id.clone());
        }
        prop_assert!(!ids.contains_key(&BudgetLevel::Ok), "no recovery: {:?}", levels(&topic));
        // A jump over a rung publishes only the level reached, so the levels published are
        // some of those up to the final one, which is last.
        prop_assert!(ids.keys().all(|l| expected.contains(l)), "{:?}", levels(&topic));
        for (level, set) in &ids {
            prop_assert_eq!(set.len(), 1, "one id for {}", level);
        }
        prop_assert_eq!(topic.last().map(|c| c.level), expected.last().copied());
    }
}

#[test]
fn a_month_forecast_over_the_limit_fires_once_per_period() {
    let mut b = book();
    let start = ms("2026-11-01T00:00:00Z");
    add(
        &mut b,
        "fc",
        serde_json::json!({"scope": {"tenant": "acme"}, "period": {"calendar": "month"},
            "limit": "100", "currency": "USD"}),
        start,
    );
    let cat = catalog();
    // 4 USD at the start of each of November's first 10 days (UTC).
    for day in 0..10 {
        let at = start + day * 86_400_000;
        b.handle_spend(
            &spend("acme", "d", dec!(4), "USD", at),
            &cat,
            at,
            SpendMode::Live,
        );
    }
    // (A daily 4 USD is a spike each day against the hours between: those are not looked at.)
    assert!(
        drain(&mut b).iter().all(|c| c.kind == ControlKind::Spike),
        "40 of 100 is below every rung"
    );
    // On Nov 11 00:00: spent 40 over 10 days; the trend window (Nov 4 .. Nov 11) holds 28
    // over 7 days: correction (28 × 10) / (40 × 7) = 1; projected 40 × 30 / 10 = 120 > 100.
    let now = ms("2026-11-11T00:00:00Z");
    b.handle_tick(now);
    let out = drain(&mut b);
    assert_eq!(out.len(), 1);
    let f = &out[0];
    assert_eq!(f.kind, ControlKind::Forecast);
    assert_eq!(f.forecast_spend.as_deref(), Some("120"));
    assert_eq!(f.spend, "40");
    assert_eq!(f.level, BudgetLevel::Ok);
    assert!(f.method.as_deref().is_some_and(|m| m.contains("7 days")));
    b.handle_tick(now + 1000);
    assert!(drain(&mut b).is_empty(), "once per period");
    // A restarted book that read the forecast back does not fire it again.
    let mut again = book();
    again.restore_published(f);
    add(
        &mut again,
        "fc",
        serde_json::json!({"scope": {"tenant": "acme"}, "period": {"calendar": "month"},
            "limit": "100", "currency": "USD"}),
        now,
    );
    again.handle_spend(
        &spend("acme", "d", dec!(40), "USD", now - 1),
        &cat,
        now,
        SpendMode::Live,
    );
    again.handle_tick(now + 2000);
    assert!(drain(&mut again)
        .iter()
        .all(|c| c.kind != ControlKind::Forecast));
}

#[test]
fn a_revoked_and_retaken_budget_does_not_count_its_hours_twice() {
    // The forecast scenario above (4 USD a day, projected 120 with a trend correction of 1),
    // revoked and taken back with its spend restored: the trend's hours must not double (a
    // correction of 2 would project 240).
    let start = ms("2026-11-01T00:00:00Z");
    let month = serde_json::json!({"scope": {"tenant": "acme"}, "period": {"calendar": "month"},
        "limit": "100", "currency": "USD"});
    let mut b = book();
    add(&mut b, "fc", month, start);
    let rows: Vec<_> = (0..10).map(|d| (dec!(4), start + d * 86_400_000)).collect();
    for (amount, at) in &rows {
        b.handle_spend(
            &spend("acme", "d", *amount, "USD", *at),
            &catalog(),
            *at,
            SpendMode::Live,
        );
    }
    let now = ms("2026-11-11T00:00:00Z");
    b.set_assignment(1, std::collections::BTreeSet::new());
    b.drop_unowned();
    b.set_assignment(1, std::collections::BTreeSet::from([0]));
    for (amount, at) in &rows {
        b.handle_spend(
            &spend("acme", "d", *amount, "USD", *at),
            &catalog(),
            now,
            SpendMode::Restore(&|_| true),
        );
    }
    b.mark_backfilled_where(&|_| true, now);
    b.handle_tick(now);
    let forecasts: Vec<_> = drain(&mut b)
        .into_iter()
        .filter(|c| c.kind == ControlKind::Forecast)
        .collect();
    assert_eq!(forecasts.len(), 1);
    assert_eq!(forecasts[0].forecast_spend.as_deref(), Some("120"));
}

#[test]
fn two_rungs_of_one_level_get_distinct_control_ids() {
    // Two `notify` thresholds (50 % and 70 %): each crossing is its own transition, so a
    // consumer applying records idempotently by `control_id` must see two ids.
    let mut b = book();
    let t = ms("2026-11-10T12:00:00Z");
    add(
        &mut b,
        "acme:two-notify",
        serde_json::json!({
            "scope": {"tenant": "acme"},
            "period": {"calendar": "month", "time_zone": "UTC"},
            "limit": "100", "currency": "USD",
            "ladder": [
                {"at": "0.5", "action": "notify"},
                {"at": "0.7", "action": "notify"},
                {"at": "1", "action": "block"}
            ]
        }),
        t,
    );
    let cat = catalog();
    for (amount, at) in [(dec!(55), 1), (dec!(20), 2)] {
        b.handle_spend(
            &spend("acme", "research", amount, "USD", t + at),
            &cat,
            t + at,
            SpendMode::Live,
        );
    }
    let out = drain(&mut b);
    assert_eq!(levels(&out), [BudgetLevel::Warning, BudgetLevel::Warning]);
    assert_eq!(
        out.iter().map(|c| c.threshold.as_str()).collect::<Vec<_>>(),
        ["0.5", "0.7"]
    );
    assert_ne!(
        out[0].control_id, out[1].control_id,
        "the 70 % rung must not reuse the 50 % rung's id"
    );
}

#[test]
fn control_ids_of_ladders_with_one_rung_per_level_are_unchanged() {
    // The rung enters the id only where a level has several rungs: every other id is the
    // one earlier builds published (consumers that remember ids see no change).
    let mut b = book();
    let t = ms("2026-11-10T12:00:00Z");
    add(&mut b, "acme:research:day", dept_day(), t);
    b.handle_spend(
        &spend("acme", "research", dec!(60), "USD", t + 1),
        &catalog(),
        t + 1,
        SpendMode::Live,
    );
    let out = drain(&mut b);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].control_id,
        costpipe_schemas::control_id(
            "acme:research:day",
            ControlKind::State,
            ms("2026-11-09T23:00:00Z"),
            "100",
            costpipe_schemas::Direction::Up,
            BudgetLevel::Warning
        )
    );
}
