//! Spike detection tests: the expected numbers are written by hand (mean, σ and thresholds
//! worked out in the comments), or, in the property tests, computed here in floating point
//! from the definition (mean, population σ), independently of the exact arithmetic under
//! test.

use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use costpipe_schemas::{control_id, BudgetControl, BudgetLevel, ControlKind, Direction};

use super::hourly::HourlySpend;
use super::spike::{self, Fired, SpikeRule};
use super::tests::{add, add_pending, book, catalog, def, drain, ms, spend};
use super::*;

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;

/// Hour 0 of every scenario: a UTC midnight, so that hour 24 starts the next day and the
/// trailing windows of a day budget reach into the previous day.
fn t0() -> i64 {
    ms("2026-11-09T00:00:00Z")
}

/// The start of scenario hour `h`.
fn hour(h: i64) -> i64 {
    t0() + h * HOUR
}

/// A tenant day budget (UTC) far from its limit, with `spike` options.
fn spiky(spike: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"scope": {"tenant": "acme"}, "period": {"calendar": "day"},
        "limit": "1000000", "currency": "USD", "spike": spike})
}

/// Live spend of `amount` at `at`, decided at `at`, by event `event`.
fn live(b: &mut BudgetBook, amount: Decimal, at: i64, event: &'static str) {
    let mut facts = spend("acme", "d", amount, "USD", at);
    facts.event_id = Some(event);
    b.handle_spend(&facts, &catalog(), at, SpendMode::Live);
}

/// `amounts[i]` spent at 30 minutes past hour `from + i`, each hour ticked at its end.
fn hours_of(b: &mut BudgetBook, from: i64, amounts: &[Decimal]) {
    for (i, a) in amounts.iter().enumerate() {
        let h = from + i as i64;
        if !a.is_zero() {
            live(b, *a, hour(h) + 30 * MINUTE, "history");
        }
        b.handle_tick(hour(h + 1) - 1);
    }
}

fn spikes(out: Vec<BudgetControl>) -> Vec<BudgetControl> {
    out.into_iter()
        .filter(|c| c.kind == ControlKind::Spike)
        .collect()
}

#[test]
fn a_steady_stream_never_spikes() {
    let mut b = book();
    add(&mut b, "s", spiky(serde_json::json!({})), t0());
    // 72 hours of 2 USD an hour in two events, ticks in between, over three days of the
    // day budget: the hour so far never exceeds the trailing mean of 2, σ 0.
    for h in 0..72 {
        for (minute, amount) in [(10, dec!(0.5)), (40, dec!(1.5))] {
            let at = hour(h) + minute * MINUTE;
            live(&mut b, amount, at, "steady");
            b.handle_tick(at + 5 * MINUTE);
        }
    }
    assert_eq!(spikes(drain(&mut b)), []);
}

#[test]
fn a_four_times_hour_fires_once_and_a_later_spiking_hour_again() {
    let mut b = book();
    add(&mut b, "s", spiky(serde_json::json!({})), t0());
    // Hours 0..=24 at 2 USD: hour 25's trailing window (hours 1..=24) has mean 2, σ 0.
    hours_of(&mut b, 0, &[dec!(2); 25]);
    assert_eq!(spikes(drain(&mut b)), []);
    live(&mut b, dec!(8), hour(25) + 10 * MINUTE, "e-spike");
    let out = spikes(drain(&mut b));
    assert_eq!(out.len(), 1, "{out:#?}");
    let s = &out[0];
    // 8 > 3 × 2 = 6 and 8 > 2 + 3 × 0 = 2.
    assert_eq!(
        s.reason,
        "spike: 8 USD spent in the hour from 2026-11-10T01:00:00Z so far, above 3 * mean = 6 \
and above mean + 3 * sigma = 2; trailing 24 h: mean 2, sigma 0"
    );
    assert_eq!(s.kind, ControlKind::Spike);
    assert_eq!(s.level, BudgetLevel::Ok);
    assert_eq!(s.trigger_event_id.as_deref(), Some("e-spike"));
    // The record's spend is the period's: 2 (hour 24, the day's first) + 8.
    assert_eq!(s.spend, "10");
    assert_eq!(s.period, "2026-11-10");
    assert!(!s.shadow);
    let method = s.method.as_deref().unwrap_or_default();
    assert!(
        method.contains("3 * mean") && method.contains("24 full hours"),
        "{method}"
    );
    assert_eq!(
        s.control_id,
        control_id(
            "s",
            ControlKind::Spike,
            ms("2026-11-10T01:00:00Z"),
            "",
            Direction::Up,
            BudgetLevel::Ok
        )
    );

    // More in the same hour, and ticks: nothing new.
    live(&mut b, dec!(8), hour(25) + 20 * MINUTE, "e-more");
    b.handle_tick(hour(26) - 1);
    assert_eq!(spikes(drain(&mut b)), []);

    // Hour 26 at 2: below the new mean (hours 2..=25: 23 × 2 + 16 = 62, mean 62/24).
    hours_of(&mut b, 26, &[dec!(2)]);
    assert_eq!(spikes(drain(&mut b)), []);
    // Hour 27 at 40: 24 × 40 = 960 > 3 × 62 = 186.
    live(&mut b, dec!(40), hour(27) + 5 * MINUTE, "e-again");
    let again = spikes(drain(&mut b));
    assert_eq!(again.len(), 1, "{again:#?}");
    assert!(
        again[0]
            .reason
            .starts_with("spike: 40 USD spent in the hour from 2026-11-10T03:00:00Z so far"),
        "{}",
        again[0].reason
    );
    assert_ne!(again[0].control_id, s.control_id);
}

#[test]
fn the_sigma_rule_fires_where_three_times_the_mean_does_not() {
    let mut b = book();
    add(&mut b, "s", spiky(serde_json::json!({})), t0());
    // Hours 0..=23 alternate 1 and 3: mean 2; every hour is 1 from it, so σ = 1. For hour
    // 24: mean + 3σ = 5, 3 × mean = 6.
    let alternating: Vec<Decimal> = (0..24)
        .map(|i| if i % 2 == 0 { dec!(1) } else { dec!(3) })
        .collect();
    hours_of(&mut b, 0, &alternating);
    live(&mut b, dec!(5), hour(24) + 10 * MINUTE, "at-5");
    assert_eq!(spikes(drain(&mut b)), [], "5 is not above 5");
    live(&mut b, dec!(0.5), hour(24) + 20 * MINUTE, "at-5.5");
    let out = spikes(drain(&mut b));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].reason,
        "spike: 5.5 USD spent in the hour from 2026-11-10T00:00:00Z so far, above mean + 3 * \
sigma = 5; trailing 24 h: mean 2, sigma 1"
    );
}

#[test]
fn three_times_the_mean_fires_where_the_sigma_rule_does_not() {
    let mut b = book();
    add(&mut b, "s", spiky(serde_json::json!({})), t0());
    // 24 USD in hour 0, nothing in hours 1..=23: mean 1; σ² = (23² + 23 × 1²) / 24 = 23,
    // σ = √23 = 4.7958315…, so mean + 3σ ≈ 15.39 while 3 × mean = 3.
    let mut history = vec![Decimal::ZERO; 24];
    history[0] = dec!(24);
    hours_of(&mut b, 0, &history);
    live(&mut b, dec!(3), hour(24) + 5 * MINUTE, "at-3");
    assert_eq!(spikes(drain(&mut b)), [], "3 is not above 3");
    live(&mut b, dec!(1), hour(24) + 6 * MINUTE, "at-4");
    let out = spikes(drain(&mut b));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].reason,
        "spike: 4 USD spent in the hour from 2026-11-10T00:00:00Z so far, above 3 * mean = 3; \
trailing 24 h: mean 1, sigma 4.795832"
    );
}

#[test]
fn below_min_spend_never_fires() {
    let mut b = book();
    add(
        &mut b,
        "s",
        spiky(serde_json::json!({"min_spend": "10"})),
        t0(),
    );
    // 0.10 an hour: mean 0.1, σ 0. 9.99 is 99.9 times the mean, but below 10.
    hours_of(&mut b, 0, &[dec!(0.1); 24]);
    live(&mut b, dec!(9.99), hour(24) + 5 * MINUTE, "small");
    b.handle_tick(hour(24) + 30 * MINUTE);
    assert_eq!(spikes(drain(&mut b)), []);
    // At 10 it is no longer below.
    live(&mut b, dec!(0.01), hour(24) + 40 * MINUTE, "ten");
    let out = spikes(drain(&mut b));
    assert_eq!(out.len(), 1);
    assert!(
        out[0].reason.starts_with("spike: 10 USD"),
        "{}",
        out[0].reason
    );

    // With the default minimum of 1, a scope spending cents never pages.
    let mut small = book();
    add(&mut small, "s", spiky(serde_json::json!({})), t0());
    hours_of(&mut small, 0, &[dec!(0.01); 24]);
    live(&mut small, dec!(0.99), hour(24) + 5 * MINUTE, "cents");
    small.handle_tick(hour(25) - 1);
    assert_eq!(spikes(drain(&mut small)), []);
}

#[test]
fn no_spike_without_a_full_trailing_window_of_history() {
    let mut b = book();
    add(&mut b, "s", spiky(serde_json::json!({})), t0());
    // First spend in hour 1: hour 24's window (hours 0..=23) starts before it.
    hours_of(&mut b, 1, &[dec!(0.1); 23]);
    live(&mut b, dec!(50), hour(24) + 5 * MINUTE, "too-early");
    b.handle_tick(hour(25) - 1);
    assert_eq!(spikes(drain(&mut b)), []);
    // Hour 25's window (hours 1..=24) is all known.
    live(&mut b, dec!(500), hour(25) + 5 * MINUTE, "known");
    let out = spikes(drain(&mut b));
    assert_eq!(out.len(), 1);
    assert!(
        out[0].reason.contains("2026-11-10T01:00:00Z"),
        "{}",
        out[0].reason
    );
}

#[test]
fn disabled_and_shadow_budgets() {
    let mut b = book();
    add(
        &mut b,
        "off",
        spiky(serde_json::json!({"enabled": false})),
        t0(),
    );
    let mut shadow = spiky(serde_json::json!({}));
    shadow["shadow"] = true.into();
    add(&mut b, "shadow", shadow, t0());
    hours_of(&mut b, 0, &[dec!(2); 25]);
    live(&mut b, dec!(200), hour(25) + 5 * MINUTE, "big");
    let out = spikes(drain(&mut b));
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].budget_id, "shadow");
    assert!(out[0].shadow, "flagged shadow like its other records");
}

/// The spend of the 4× scenario: 2 USD in hours 0..=24, then 8 in hour 25.
fn scenario() -> Vec<(Decimal, i64)> {
    let mut v: Vec<_> = (0..25).map(|h| (dec!(2), hour(h) + 30 * MINUTE)).collect();
    v.push((dec!(8), hour(25) + 10 * MINUTE));
    v
}

/// A book that restored `spend` from the store at `now` (after a restart), not yet ticked.
fn restored(
    spend_rows: &[(Decimal, i64)],
    now: i64,
    published: Option<&BudgetControl>,
) -> BudgetBook {
    let mut b = book();
    if let Some(c) = published {
        b.restore_published(c);
    }
    add_pending(&mut b, "s", spiky(serde_json::json!({})), now);
    for (amount, at) in spend_rows {
        b.handle_spend(
            &spend("acme", "d", *amount, "USD", *at),
            &catalog(),
            now,
            SpendMode::Restore(&|_| true),
        );
    }
    b.mark_backfilled("s", now);
    b
}

#[test]
fn a_replay_publishes_the_same_id_and_a_restart_that_read_it_back_none() {
    let first = {
        let mut b = book();
        add(&mut b, "s", spiky(serde_json::json!({})), t0());
        for (amount, at) in scenario() {
            live(&mut b, amount, at, "e");
            b.handle_tick(at + MINUTE);
        }
        let out = spikes(drain(&mut b));
        assert_eq!(out.len(), 1);
        out[0].clone()
    };
    // The same spend replayed live into a rebuilt book.
    let mut rebuilt = book();
    add(&mut rebuilt, "s", spiky(serde_json::json!({})), t0());
    for (amount, at) in scenario() {
        live(&mut rebuilt, amount, at, "e");
    }
    let again = spikes(drain(&mut rebuilt));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].control_id, first.control_id);

    // Restored from the store after a crash that lost the record: the same id, once the
    // replay is over.
    let now = hour(25) + 30 * MINUTE;
    let mut b = restored(&scenario(), now, None);
    b.set_hold_downward(true);
    b.handle_tick(now);
    assert_eq!(spikes(drain(&mut b)), [], "held while replaying");
    b.set_hold_downward(false);
    b.handle_tick(now + 1000);
    let replayed = spikes(drain(&mut b));
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].control_id, first.control_id);
    assert_eq!(replayed[0].reason, first.reason);

    // A restart that read the record back: nothing more this hour, a new id next hour.
    let mut b = restored(&scenario(), now, Some(&first));
    b.handle_tick(now);
    live(&mut b, dec!(100), now + MINUTE, "more");
    assert_eq!(spikes(drain(&mut b)), []);
    live(&mut b, dec!(500), hour(26) + MINUTE, "next-hour");
    let next = spikes(drain(&mut b));
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].control_id, first.control_id);
}

#[test]
fn restored_history_of_ended_periods_and_slid_windows_makes_the_trailing_window() {
    // Restored rows of earlier days (a day budget) and older than the window (a rolling
    // hour) still make the trailing window: after a restart a steady hour is no spike, and
    // a real one is judged at once (mean 2, σ 0: 20 is above both rules).
    for period in [
        serde_json::json!({"calendar": "day"}),
        serde_json::json!({"rolling": "1h"}),
    ] {
        let mut json = spiky(serde_json::json!({}));
        json["period"] = period.clone();
        let now = hour(30) + 50 * MINUTE;
        let rows: Vec<_> = (0..=30).map(|h| (dec!(2), hour(h) + 30 * MINUTE)).collect();
        let mut b = book();
        add_pending(&mut b, "s", json, now);
        for (amount, at) in &rows {
            b.handle_spend(
                &spend("acme", "d", *amount, "USD", *at),
                &catalog(),
                now,
                SpendMode::Restore(&|_| true),
            );
        }
        b.mark_backfilled("s", now);
        b.handle_tick(now);
        assert_eq!(spikes(drain(&mut b)), [], "{period}");
        live(&mut b, dec!(18), now + MINUTE, "real");
        let out = spikes(drain(&mut b));
        assert_eq!(out.len(), 1, "{period}");
        assert!(
            out[0].reason.ends_with("mean 2, sigma 0"),
            "{}",
            out[0].reason
        );
    }
}

#[test]
fn a_wider_trailing_window_waits_for_its_history() {
    let mut b = book();
    add(
        &mut b,
        "s",
        spiky(serde_json::json!({"trailing_hours": 4})),
        t0(),
    );
    hours_of(&mut b, 0, &[dec!(2); 30]);
    // Widened to 8 hours at hour 30: hours before 26 were dropped, so hours 30..33 cannot
    // be judged against 8 full hours; hour 34 (window 26..=33) can.
    let mut json = spiky(serde_json::json!({"trailing_hours": 8}));
    json["budget_id"] = "s".into();
    assert!(!b.upsert(def(json), &catalog(), hour(30)).expect("valid"));
    live(&mut b, dec!(100), hour(30) + 5 * MINUTE, "gap");
    hours_of(&mut b, 31, &[dec!(2); 3]);
    assert_eq!(spikes(drain(&mut b)), []);
    live(&mut b, dec!(100), hour(34) + 5 * MINUTE, "known");
    assert_eq!(spikes(drain(&mut b)).len(), 1);
}

/// The trailing statistics of `values` (hours 0..n) for hour n.
fn trailing_of(values: &[i64]) -> super::hourly::Trailing {
    let n = values.len() as i64;
    let mut h = HourlySpend::new(values.len() as u32);
    let now = hour(n);
    for (i, v) in values.iter().enumerate() {
        h.add(hour(i as i64), Decimal::new(*v, 2), now);
    }
    h.trailing(hour(n) / HOUR, values.len() as u32)
        .expect("in range")
}

#[test]
fn trailing_statistics_by_hand() {
    // Hours of 1 and 3 (in cents: 100, 300): S = 4, n = 2, deviations n·x − S = ±2.
    let t = trailing_of(&[100, 300]);
    assert_eq!((t.n, t.sum, t.sq_dev), (2, dec!(4), dec!(8)));
    assert_eq!(t.mean(), Some(dec!(2)));
    assert_eq!(t.sigma().map(|s| s.round_dp(20)), Some(dec!(1)));
    // A missing hour counts as 0: 0, 0, 6 → S = 6, deviations −6, −6, 12 → 36 + 36 + 144.
    let t = trailing_of(&[0, 0, 600]);
    assert_eq!((t.sum, t.sq_dev), (dec!(6), dec!(216)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any positive constant hourly spend, in any number of events per hour, with ticks:
    /// the hour so far never exceeds the mean, so nothing fires (even with no minimum).
    #[test]
    fn constant_hourly_spend_never_spikes(
        mantissa in 1i64..1_000_000_000_000,
        scale in 0u32..=12,
        weights in proptest::collection::vec(0i64..1000, 1..5),
        trailing in 2u32..=30,
        first_hour in 0i64..48,
        hours in 32i64..72,
    ) {
        let per_hour = Decimal::new(mantissa, scale);
        let total: i64 = weights.iter().sum::<i64>().max(1);
        // Integer parts of the mantissa, the remainder in the last: they sum to it exactly.
        let mut parts: Vec<i64> = weights.iter().map(|w| mantissa / total * w).collect();
        let given: i64 = parts.iter().sum();
        if let Some(last) = parts.last_mut() {
            *last += mantissa - given;
        }
        prop_assert_eq!(parts.iter().map(|p| Decimal::new(*p, scale)).sum::<Decimal>(), per_hour);
        let mut b = book();
        let spike = serde_json::json!({"min_spend": "0", "trailing_hours": trailing});
        add(&mut b, "c", spiky(spike), hour(first_hour));
        let step = 60 / (parts.len() as i64 + 1);
        for h in first_hour..first_hour + hours {
            for (k, p) in parts.iter().enumerate() {
                let at = hour(h) + (k as i64 + 1) * step * MINUTE;
                live(&mut b, Decimal::new(*p, scale), at, "c");
                b.handle_tick(at + 1);
            }
        }
        let out = spikes(drain(&mut b));
        prop_assert!(out.is_empty(), "{:?}", out.iter().map(|c| &c.reason).collect::<Vec<_>>());
    }

    /// The exact decision equals the definition computed in floating point (mean, population
    /// σ), away from the thresholds where floating point cannot tell.
    #[test]
    fn check_equals_the_definition_in_floating_point(
        values in proptest::collection::vec(0i64..10_000, 2..48),
        last in 0i64..40_000,
        factor in prop::sample::select(vec![dec!(1), dec!(1.5), dec!(3)]),
        sigmas in prop::sample::select(vec![dec!(1), dec!(2.5), dec!(3)]),
    ) {
        use rust_decimal::prelude::ToPrimitive;
        let t = trailing_of(&values);
        let rule = SpikeRule { min_spend: Decimal::ZERO, factor, sigmas, trailing_hours: values.len() as u32 };
        let xs: Vec<f64> = values.iter().map(|v| *v as f64 / 100.0).collect();
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let sigma = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let l = last as f64 / 100.0;
        let (f, k) = (factor.to_f64().unwrap_or(0.0), sigmas.to_f64().unwrap_or(0.0));
        let by_mean = f * mean;
        let by_sigma = mean + k * sigma;
        prop_assume!((l - by_mean).abs() > 1e-7 && (l - by_sigma).abs() > 1e-7);
        let expected = match (l > by_mean, l > by_sigma) {
            (true, true) => Some(Fired::Both),
            (true, false) => Some(Fired::Mean),
            (false, true) => Some(Fired::Sigma),
            (false, false) => None,
        };
        prop_assert_eq!(spike::check(&rule, Decimal::new(last, 2), &t), expected);
    }
}
