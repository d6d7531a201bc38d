//! The forecast's arithmetic: projected period-end spend from the spend so far and the
//! spend of the last 7 days. Pure and exact (`Decimal`, no float), so the method text in
//! `METHOD` is the whole definition and tests can recompute it.

use rust_decimal::{Decimal, RoundingStrategy};

/// How the projection is computed, stated in every answer.
pub const METHOD: &str = "projected = max(spent, round12(spent * period_ms / elapsed_ms * correction)), \
where spent = billing cost (events + repricing corrections) from the period start to as_of, \
elapsed_ms = as_of - period start (as_of is capped at the period end), period_ms = period length; \
i.e. (spend so far / elapsed days) x days in the period x correction. \
correction = clamp(round6((recent * elapsed_ms) / (spent * window_ms)), 0.5, 2), i.e. the daily rate \
of the trend window divided by the month-to-date daily rate, where the trend window is \
[max(period start, as_of - 7 days), as_of), recent = its billing cost and window_ms = its length; \
correction = 1 when spent = 0 or as_of is at or after the period end (then projected = spent). \
round6/round12: to 6/12 decimal places, half away from zero; days = 86,400,000 ms.";

/// Lowest and highest trend correction: one odd week can halve or double a projection,
/// no more.
pub const MIN_CORRECTION: Decimal = Decimal::from_parts(5, 0, 0, false, 1);
pub const MAX_CORRECTION: Decimal = Decimal::from_parts(2, 0, 0, false, 0);

const DAY_MS: i64 = 86_400_000;

/// Lengths of the forecast's spans, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spans {
    /// Period start to as_of (capped at the period end); > 0.
    pub elapsed_ms: i64,
    /// The trend window; > 0 and ≤ `elapsed_ms`.
    pub window_ms: i64,
    /// The whole period.
    pub period_ms: i64,
}

/// A projection for one billing currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    pub month_to_date_daily_rate: Decimal,
    pub recent_daily_rate: Decimal,
    pub correction: Decimal,
    pub projected: Decimal,
}

/// The arithmetic overflowed `Decimal` (a spend beyond ~7.9e28).
#[derive(Debug, thiserror::Error)]
#[error("the forecast overflows exact decimal arithmetic")]
pub struct Overflow;

fn round(d: Decimal, dp: u32) -> Decimal {
    d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

/// `a * b / c`, checked.
fn mul_div(a: Decimal, b: Decimal, c: Decimal) -> Result<Decimal, Overflow> {
    a.checked_mul(b)
        .and_then(|x| x.checked_div(c))
        .ok_or(Overflow)
}

/// Daily rate of `spend` over `ms` milliseconds, to 12 places (informational).
fn daily_rate(spend: Decimal, ms: i64) -> Result<Decimal, Overflow> {
    Ok(round(
        mul_div(spend, Decimal::from(DAY_MS), Decimal::from(ms))?,
        12,
    ))
}

/// Projects `spent` (so far) with `recent` (spend of the trend window) over `s`; see `METHOD`.
pub fn project(spent: Decimal, recent: Decimal, s: Spans) -> Result<Projection, Overflow> {
    let complete = s.elapsed_ms >= s.period_ms;
    let correction = if spent.is_zero() || complete {
        Decimal::ONE
    } else {
        let num = recent
            .checked_mul(Decimal::from(s.elapsed_ms))
            .ok_or(Overflow)?;
        let den = spent
            .checked_mul(Decimal::from(s.window_ms))
            .ok_or(Overflow)?;
        round(num.checked_div(den).ok_or(Overflow)?, 6).clamp(MIN_CORRECTION, MAX_CORRECTION)
    };
    let projected = if complete {
        spent
    } else {
        let linear = mul_div(
            spent,
            Decimal::from(s.period_ms),
            Decimal::from(s.elapsed_ms),
        )?;
        round(linear.checked_mul(correction).ok_or(Overflow)?, 12).max(spent)
    };
    Ok(Projection {
        month_to_date_daily_rate: daily_rate(spent, s.elapsed_ms)?,
        recent_daily_rate: daily_rate(recent, s.window_ms)?,
        correction: correction.normalize(),
        projected: projected.normalize(),
    })
}

/// `ms` as days, to 6 places (informational).
pub fn days(ms: i64) -> Decimal {
    round(Decimal::from(ms) / Decimal::from(DAY_MS), 6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const D: i64 = DAY_MS;

    #[test]
    fn steady_spend_projects_linearly() {
        // 10 a day for 10 days of a 30-day month, 10 a day in the last 7: 300.
        let p = project(
            dec!(100),
            dec!(70),
            Spans {
                elapsed_ms: 10 * D,
                window_ms: 7 * D,
                period_ms: 30 * D,
            },
        )
        .unwrap();
        assert_eq!(p.correction, dec!(1));
        assert_eq!(p.projected, dec!(300));
        assert_eq!(p.month_to_date_daily_rate, dec!(10));
    }

    #[test]
    fn a_rising_week_raises_and_is_clamped() {
        let s = Spans {
            elapsed_ms: 10 * D,
            window_ms: 7 * D,
            period_ms: 30 * D,
        };
        // Last 7 days at 15/day against 10/day: ×1.5.
        let p = project(dec!(100), dec!(105), s).unwrap();
        assert_eq!(p.correction, dec!(1.5));
        assert_eq!(p.projected, dec!(450));
        // All 100 in the last week (14.28…/day against 10/day: 1.428571).
        let p = project(dec!(100), dec!(100), s).unwrap();
        assert_eq!(p.correction, dec!(1.428571));
        // Nothing in the last week: clamped to 0.5, never below what is spent.
        let p = project(dec!(100), dec!(0), s).unwrap();
        assert_eq!(p.correction, dec!(0.5));
        assert_eq!(p.projected, dec!(150));
        let late = Spans {
            elapsed_ms: 29 * D,
            ..s
        };
        assert_eq!(
            project(dec!(100), dec!(0), late).unwrap().projected,
            dec!(100)
        );
    }

    #[test]
    fn edges() {
        let s = Spans {
            elapsed_ms: 30 * D,
            window_ms: 7 * D,
            period_ms: 30 * D,
        };
        assert_eq!(project(dec!(7.5), dec!(1), s).unwrap().projected, dec!(7.5));
        let s = Spans {
            elapsed_ms: D,
            window_ms: D,
            period_ms: 31 * D,
        };
        let p = project(dec!(0), dec!(0), s).unwrap();
        assert_eq!((p.correction, p.projected), (dec!(1), dec!(0)));
        assert_eq!(days(36 * 3_600_000), dec!(1.5));
    }
}
