//! Calendar periods in a tenant's time zone: which local day and month an instant falls in,
//! as plain integers the bins can be keyed by. Local midnight is wherever the zone puts it,
//! so a day may last 23, 24 or 25 hours.

use chrono::{DateTime, Datelike, NaiveDate};
use chrono_tz::Tz;

use super::WindowError;

/// A calendar total: the local day or the local month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Calendar {
    Day,
    Month,
}

/// How many periods before the current one are kept, for days and months alike.
pub const PREVIOUS_PERIODS_KEPT: i64 = 1;

/// Day index of a local date: days since 0001-01-01 (proleptic Gregorian), so consecutive
/// dates differ by one.
pub(crate) fn day_index(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce())
}

/// Month index: `year * 12 + month - 1`, so consecutive months differ by one.
pub(crate) fn month_index(year: i32, month: u32) -> i64 {
    i64::from(year) * 12 + i64::from(month) - 1
}

/// The local (day index, month index) of `ms` in `tz`.
pub(crate) fn local_periods(ms: i64, tz: Tz) -> Result<(i64, i64), WindowError> {
    let date = DateTime::from_timestamp_millis(ms)
        .ok_or(WindowError::TimeOutOfRange { ms })?
        .with_timezone(&tz)
        .date_naive();
    Ok((day_index(date), month_index(date.year(), date.month())))
}

/// The current (day, month) at watermark `ms`. A watermark before anything chrono can
/// represent (`i64::MIN` means "none yet") makes every period current-or-later; one after it
/// makes every period old.
pub(crate) fn current_periods(ms: i64, tz: Tz) -> (i64, i64) {
    match local_periods(ms, tz) {
        Ok(p) => p,
        Err(_) if ms < 0 => (i64::MIN, i64::MIN),
        Err(_) => (i64::MAX, i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_consecutive_across_year_ends() {
        let d = |y, m, d| day_index(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        assert_eq!(d(2027, 1, 1) - d(2026, 12, 31), 1);
        assert_eq!(d(2028, 3, 1) - d(2028, 2, 28), 2);
        assert_eq!(month_index(2027, 1) - month_index(2026, 12), 1);
    }

    #[test]
    fn unrepresentable_watermarks_bound_everything() {
        assert_eq!(current_periods(i64::MIN, Tz::UTC), (i64::MIN, i64::MIN));
        assert_eq!(current_periods(i64::MAX, Tz::UTC), (i64::MAX, i64::MAX));
        assert_eq!(
            local_periods(i64::MAX, Tz::UTC),
            Err(WindowError::TimeOutOfRange { ms: i64::MAX })
        );
    }
}
