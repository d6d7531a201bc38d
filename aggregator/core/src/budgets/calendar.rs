//! Budget periods: calendar day, ISO week and month in a time zone (DST-aware), and rolling
//! windows. A period is identified by its start instant, which also keys control ids.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use costpipe_schemas::{CalendarUnit, RollingWindow};

/// How a budget's period is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodSpec {
    Calendar { unit: CalendarUnit, zone: Tz },
    Rolling(RollingWindow),
}

/// The calendar period containing an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodWindow {
    /// First instant, UTC ms.
    pub start_ms: i64,
    /// First instant of the next period, UTC ms.
    pub end_ms: i64,
    /// e.g. `2026-11-30`, `2026-W49`, `2026-11` (local dates).
    pub label: String,
}

/// The first instant of local date `d` in `zone`. A local midnight skipped by a DST change
/// (some zones switch at 00:00) falls back to the first valid minute after it.
fn local_start(zone: Tz, d: NaiveDate) -> i64 {
    let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    for minutes in 0..=180 {
        let t = midnight + Duration::minutes(minutes);
        if let Some(at) = zone.from_local_datetime(&t).earliest() {
            return at.timestamp_millis();
        }
    }
    Utc.from_utc_datetime(&midnight).timestamp_millis()
}

impl PeriodSpec {
    /// Period kind as published: `day`, `week`, `month`, `rolling_1h`, …
    pub fn kind_label(&self) -> String {
        match self {
            PeriodSpec::Calendar { unit, .. } => unit.as_str().to_string(),
            PeriodSpec::Rolling(w) => format!("rolling_{}", w.as_str()),
        }
    }

    /// The calendar period containing `at_ms`; `None` for rolling windows.
    pub fn calendar_at(&self, at_ms: i64) -> Option<PeriodWindow> {
        let PeriodSpec::Calendar { unit, zone } = *self else {
            return None;
        };
        let local = DateTime::<Utc>::from_timestamp_millis(at_ms)?
            .with_timezone(&zone)
            .date_naive();
        let (first, next, label) = match unit {
            CalendarUnit::Day => (
                local,
                local.succ_opt()?,
                local.format("%Y-%m-%d").to_string(),
            ),
            CalendarUnit::Week => {
                let monday =
                    local - Duration::days(i64::from(local.weekday().num_days_from_monday()));
                let iso = local.iso_week();
                (
                    monday,
                    monday + Duration::days(7),
                    format!("{:04}-W{:02}", iso.year(), iso.week()),
                )
            }
            CalendarUnit::Month => {
                let first = local.with_day(1)?;
                let next = if first.month() == 12 {
                    NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)?
                };
                (first, next, first.format("%Y-%m").to_string())
            }
        };
        Some(PeriodWindow {
            start_ms: local_start(zone, first),
            end_ms: local_start(zone, next),
            label,
        })
    }
}
