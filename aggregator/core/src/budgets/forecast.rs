//! Month-end forecasts of calendar-month budgets: the seeds' method (month-to-date rate ×
//! days in the month, corrected by the last 7 days' trend), exact in `Decimal`, the same
//! arithmetic as the billing API's forecast. The last 7 days' spend comes from hourly bins,
//! so the trend window starts on a whole hour.

use rust_decimal::{Decimal, RoundingStrategy};

use super::hourly::{HourlySpend, HOUR_MS};

/// The method, stated in every forecast record.
pub const METHOD: &str =
    "projected = max(spent, round12(spent * period_ms / elapsed_ms * correction)), \
spent = budget spend from the period start to now, elapsed_ms = now - period start, period_ms = \
period length; correction = clamp(round6((recent * elapsed_ms) / (spent * window_ms)), 0.5, 2), \
the daily rate of the trend window [max(period start, now - 7 days) rounded down to the hour, now) \
over the month-to-date daily rate; fires once per period when spent < limit < projected";

const WEEK_MS: i64 = 7 * 86_400_000;

/// Hours of hourly spend the trend window needs kept.
pub const TREND_HOURS: u32 = 7 * 24;

fn round(d: Decimal, dp: u32) -> Decimal {
    d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

/// The projected spend of the period `[start_ms, end_ms)` at `now_ms`, given the spend so
/// far; `None` when it cannot be computed (no time elapsed, or beyond `Decimal`).
pub fn project(
    spent: Decimal,
    hours: &HourlySpend,
    start_ms: i64,
    end_ms: i64,
    now_ms: i64,
) -> Option<Decimal> {
    let elapsed = now_ms.min(end_ms) - start_ms;
    if elapsed <= 0 || spent.is_zero() {
        return None;
    }
    let period = end_ms - start_ms;
    let window_start = (now_ms - WEEK_MS).max(start_ms).div_euclid(HOUR_MS) * HOUR_MS;
    let window = now_ms - window_start.max(start_ms);
    let correction = if now_ms >= end_ms || window <= 0 {
        Decimal::ONE
    } else {
        let recent = hours.since(window_start.max(start_ms));
        let num = recent.checked_mul(Decimal::from(elapsed))?;
        let den = spent.checked_mul(Decimal::from(window))?;
        round(num.checked_div(den)?, 6).clamp(Decimal::new(5, 1), Decimal::TWO)
    };
    let projected = spent
        .checked_mul(Decimal::from(period))?
        .checked_div(Decimal::from(elapsed))?
        .checked_mul(correction)?;
    Some(round(projected, 12).max(spent))
}
