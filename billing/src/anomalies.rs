//! The anomaly rules, pure and exact: which hours cost too much against their trailing 24
//! hours, and which days' tokens per request jumped against the day before. (The request
//! rule, cost > 2 × p95, is a comparison ClickHouse makes on exact decimals; see
//! `anomalies_api`.) The texts in `METHOD_*` are the definitions.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};

pub const METHOD_HOURS: &str = "hourly billing cost (events + repricing corrections, hours of the tenant's zone) \
per billing currency; the trailing window of hour h is the 24 hours before it, hours without spend counting \
as 0; h is judged when it has spend and its window has some; flagged when cost > 3 x trailing mean \
(above_3x_trailing_mean) or cost > trailing mean + 3 x population standard deviation \
(above_mean_plus_3_sigma), both compared exactly: 8 x cost > S and (24 x cost - S)^2 > 9 x (24 x Q - S^2) \
with 24 x cost > S, where S and Q are the window's sum and sum of squares";
pub const METHOD_REQUESTS: &str = "request cost = an event's billing cost plus its repricing corrections; \
p95 = ClickHouse quantileExact(0.95) over the tenant's requests in the range per billing currency \
(the element at 0-based index floor(0.95 x n) of the n costs sorted ascending); flagged when cost > 2 x p95";
pub const METHOD_TOKENS: &str = "tokens per request = input + cached input + cache writes (5 m and 1 h) + output \
(reasoning is part of output); per day of the tenant's zone p95 = quantileExact(0.95) of it; a day is flagged \
when the previous calendar day had requests with p95 > 0 and p95 >= 4 x the previous day's p95";

/// Hours in the trailing window.
pub const TRAILING_HOURS: i64 = 24;
const HOUR_S: i64 = 3600;

/// A flagged hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourFlag {
    pub hour_s: i64,
    pub billing_currency: String,
    pub cost: Decimal,
    /// Σ of the trailing window / 24, to 12 places (informational).
    pub trailing_mean: Decimal,
    pub rules: Vec<&'static str>,
}

/// Whether `cost` is flagged against the trailing window's sum `s` and sum of squares `q`
/// (24 values): the rules of `METHOD_HOURS`, without division or square root.
pub fn hour_rules(cost: Decimal, s: Decimal, q: Decimal) -> Option<Vec<&'static str>> {
    let n = Decimal::from(TRAILING_HOURS);
    let mut rules = Vec::new();
    // cost > 3 × s/24  ⇔  8 × cost > s.
    if Decimal::from(8) * cost > s {
        rules.push("above_3x_trailing_mean");
    }
    // cost − s/n > 3σ with σ² = (nQ − s²)/n²  ⇔  nc − s > 0 and (nc − s)² > 9(nQ − s²).
    let d = n * cost - s;
    let var_n2 = (n * q - s * s).max(Decimal::ZERO);
    if d > Decimal::ZERO && d * d > Decimal::from(9) * var_n2 {
        rules.push("above_mean_plus_3_sigma");
    }
    (!rules.is_empty()).then_some(rules)
}

/// Flags hours with start in `[from_s, to_s)` from hourly costs by (currency, hour start);
/// the map must hold the 24 hours before `from_s` too.
pub fn flag_hours(
    costs: &BTreeMap<(String, i64), Decimal>,
    from_s: i64,
    to_s: i64,
) -> Vec<HourFlag> {
    let mut out = Vec::new();
    for ((currency, hour_s), cost) in costs {
        if *hour_s < from_s || *hour_s >= to_s || cost.is_zero() {
            continue;
        }
        let (mut s, mut q) = (Decimal::ZERO, Decimal::ZERO);
        for k in 1..=TRAILING_HOURS {
            if let Some(x) = costs.get(&(currency.clone(), hour_s - k * HOUR_S)) {
                s += x;
                q += x * x;
            }
        }
        if s.is_zero() {
            continue;
        }
        if let Some(rules) = hour_rules(*cost, s, q) {
            out.push(HourFlag {
                hour_s: *hour_s,
                billing_currency: currency.clone(),
                cost: *cost,
                trailing_mean: (s / Decimal::from(TRAILING_HOURS))
                    .round_dp_with_strategy(12, RoundingStrategy::MidpointAwayFromZero)
                    .normalize(),
                rules,
            });
        }
    }
    out
}

/// A day whose p95 tokens per request jumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenJump {
    pub day: NaiveDate,
    pub p95: u64,
    pub previous_p95: u64,
    pub requests: u64,
}

/// Flags days in `[first, last]` from `(day → (p95, requests))`, which must hold the day
/// before `first` too.
pub fn flag_token_jumps(
    days: &BTreeMap<NaiveDate, (u64, u64)>,
    first: NaiveDate,
    last: NaiveDate,
) -> Vec<TokenJump> {
    days.range(first..=last)
        .filter_map(|(day, (p95, requests))| {
            let (prev, _) = days.get(&day.pred_opt()?)?;
            (*prev > 0 && *p95 >= prev.saturating_mul(4)).then_some(TokenJump {
                day: *day,
                p95: *p95,
                previous_p95: *prev,
                requests: *requests,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn window(values: &[Decimal]) -> (Decimal, Decimal) {
        (values.iter().sum(), values.iter().map(|x| x * x).sum())
    }

    #[test]
    fn three_times_the_mean_and_three_sigma() {
        // 24 hours of 1: mean 1, σ 0.
        let (s, q) = window(&[dec!(1); 24]);
        assert_eq!(hour_rules(dec!(1), s, q), None);
        // Above mean + 0σ but not 3×: only the σ rule.
        assert_eq!(
            hour_rules(dec!(1.5), s, q),
            Some(vec!["above_mean_plus_3_sigma"])
        );
        assert_eq!(hour_rules(dec!(3), s, q).map(|r| r.len()), Some(1));
        assert_eq!(hour_rules(dec!(3.000001), s, q).map(|r| r.len()), Some(2));
        // Alternating 0 and 2: mean 1, σ 1, so 3× the mean (3) comes before mean + 3σ (4).
        let vals: Vec<Decimal> = (0..24).map(|i| Decimal::from(2 * (i % 2))).collect();
        let (s, q) = window(&vals);
        assert_eq!(hour_rules(dec!(2.9), s, q), None);
        assert_eq!(
            hour_rules(dec!(4), s, q),
            Some(vec!["above_3x_trailing_mean"])
        );
        assert_eq!(hour_rules(dec!(4.1), s, q).map(|r| r.len()), Some(2));
    }

    #[test]
    fn hours_need_a_window_with_spend() {
        let mut m = BTreeMap::new();
        m.insert(("EUR".to_string(), 0), dec!(5));
        m.insert(("EUR".to_string(), 3600), dec!(1));
        m.insert(("EUR".to_string(), 7200), dec!(9));
        let f = flag_hours(&m, 0, 3 * 3600);
        // Hour 0 has no window; hour 1 (1 vs window {5}: mean 5/24) is flagged too.
        assert_eq!(
            f.iter().map(|h| h.hour_s).collect::<Vec<_>>(),
            vec![3600, 7200]
        );
        assert_eq!(f[1].trailing_mean, dec!(0.25));
    }

    #[test]
    fn token_jumps_against_the_previous_day() {
        let d = |n| NaiveDate::from_ymd_opt(2026, 3, n).unwrap();
        let days = BTreeMap::from([
            (d(1), (500, 10)),
            (d(2), (1999, 10)),
            (d(3), (8000, 10)),
            (d(4), (500, 10)),
            (d(6), (9000, 10)),
        ]);
        let j = flag_token_jumps(&days, d(2), d(6));
        assert_eq!(j.len(), 1);
        assert_eq!((j[0].day, j[0].p95, j[0].previous_p95), (d(3), 8000, 1999));
    }
}
