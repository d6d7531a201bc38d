//! Time-of-day price windows: a week (Monday 00:00 to Monday 00:00, UTC) cut into named
//! windows (`peak`, `off-peak`), each with its own prices. This module owns the week
//! arithmetic and the rule that a period's windows cover every millisecond of the week
//! exactly once (no overlap, no gap); `catalog.rs` builds the prices, `cost.rs` applies them.

use std::sync::Arc;

use chrono::Weekday;

use crate::catalog::Prices;
use crate::error::CatalogError;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
/// Milliseconds in a week.
pub const WEEK_MS: i64 = 7 * DAY_MS;
/// 1970-01-01 (millisecond 0) was a Thursday: Monday 00:00 is 3 days earlier.
const EPOCH_MS_OF_WEEK: i64 = 3 * DAY_MS;

/// Milliseconds since Monday 00:00 UTC of the week containing `at_ms`, in `0..WEEK_MS`.
pub fn ms_of_week(at_ms: i64) -> i64 {
    // `rem_euclid` keeps times before 1970 in range; the addition cannot overflow after
    // the reduction.
    (at_ms.rem_euclid(WEEK_MS) + EPOCH_MS_OF_WEEK) % WEEK_MS
}

/// A named window and its prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceWindow {
    pub name: Arc<str>,
    pub prices: Prices,
}

/// A period's windows and where each starts within the week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekSchedule {
    pub windows: Vec<PriceWindow>,
    /// Ascending starts (ms of week) of contiguous runs; the first is 0, each run ends where
    /// the next starts and the last at `WEEK_MS`.
    starts: Vec<i64>,
    /// Index into `windows` of each run.
    run_window: Vec<usize>,
}

impl WeekSchedule {
    /// The window in force at `at_ms`.
    pub fn window_at(&self, at_ms: i64) -> &PriceWindow {
        let t = ms_of_week(at_ms);
        // starts[0] == 0 <= t, so the index is at least 1.
        let run = self.starts.partition_point(|s| *s <= t).saturating_sub(1);
        &self.windows[self.run_window[run]]
    }

    /// Every run of the week, in order: `(start, end, window)` in ms of week.
    pub fn runs(&self) -> impl Iterator<Item = (i64, i64, &PriceWindow)> + '_ {
        self.starts.iter().enumerate().map(|(i, &s)| {
            let end = self.starts.get(i + 1).copied().unwrap_or(WEEK_MS);
            (s, end, &self.windows[self.run_window[i]])
        })
    }
}

/// `ms` of week as "mon 04:00" (seconds shown only when not zero).
pub fn show_ms_of_week(ms: i64) -> String {
    const DAYS: [&str; 8] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "mon"];
    let day = DAYS[usize::try_from(ms / DAY_MS).unwrap_or(0).min(7)];
    let in_day = ms % DAY_MS;
    let (h, m, s) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60);
    if s == 0 {
        format!("{day} {h:02}:{m:02}")
    } else {
        format!("{day} {h:02}:{m:02}:{s:02}")
    }
}

/// "HH:MM" as ms of day; "24:00" only when `end`.
fn time_of_day(context: &str, value: &str, end: bool) -> Result<i64, CatalogError> {
    let bad = || CatalogError::BadWindowTime {
        context: context.to_string(),
        value: value.to_string(),
    };
    let (h, m) = value.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i64 = h.parse().map_err(|_| bad())?;
    let m: i64 = m.parse().map_err(|_| bad())?;
    let ok = (h < 24 && m < 60) || (end && h == 24 && m == 0);
    if !ok {
        return Err(bad());
    }
    Ok((h * 60 + m) * 60_000)
}

fn weekday(context: &str, value: &str) -> Result<i64, CatalogError> {
    value
        .parse::<Weekday>()
        .map(|d| i64::from(d.num_days_from_monday()) * DAY_MS)
        .map_err(|_| CatalogError::BadWeekday {
            context: context.to_string(),
            value: value.to_string(),
        })
}

/// One window as written: its name, prices and stretches of the week.
pub(crate) struct WindowSpec<'a> {
    pub name: &'a str,
    pub prices: Prices,
    /// `(days, from, to)` as written.
    pub times: Vec<(&'a [String], &'a str, &'a str)>,
}

/// Builds a schedule; refuses windows that overlap or leave a gap anywhere in the week.
pub(crate) fn schedule(
    context: &str,
    specs: Vec<WindowSpec<'_>>,
) -> Result<WeekSchedule, CatalogError> {
    let mut slots: Vec<(i64, i64, usize)> = Vec::new();
    let mut windows: Vec<PriceWindow> = Vec::with_capacity(specs.len());
    for (idx, spec) in specs.into_iter().enumerate() {
        let wctx = format!("{context} window {:?}", spec.name);
        if windows.iter().any(|w| &*w.name == spec.name) {
            return Err(CatalogError::DuplicateWindow {
                context: context.to_string(),
                name: spec.name.to_string(),
            });
        }
        if spec.times.is_empty() {
            return Err(CatalogError::EmptyWindow { context: wctx });
        }
        for (days, from, to) in spec.times {
            let (from_ms, to_ms) = (
                time_of_day(&wctx, from, false)?,
                time_of_day(&wctx, to, true)?,
            );
            if to_ms <= from_ms {
                return Err(CatalogError::BadWindowTime {
                    context: format!("{wctx}: `to` must be after `from` (split a stretch across midnight in two)"),
                    value: format!("{from}-{to}"),
                });
            }
            if days.is_empty() {
                return Err(CatalogError::EmptyWindow {
                    context: wctx.clone(),
                });
            }
            for day in days {
                let d = weekday(&wctx, day)?;
                slots.push((d + from_ms, d + to_ms, idx));
            }
        }
        windows.push(PriceWindow {
            name: Arc::from(spec.name),
            prices: spec.prices,
        });
    }
    slots.sort_by_key(|s| (s.0, s.1));
    let name = |i: usize| windows[i].name.to_string();
    let mut at = 0i64;
    let mut previous: Option<(i64, i64, usize)> = None;
    let mut starts = Vec::new();
    let mut run_window: Vec<usize> = Vec::new();
    for slot in slots {
        let (from, to, idx) = slot;
        if from < at {
            let (pf, pt, pi) = previous.unwrap_or(slot);
            return Err(CatalogError::WindowOverlap {
                context: context.to_string(),
                first: format!(
                    "{} [{}, {})",
                    name(pi),
                    show_ms_of_week(pf),
                    show_ms_of_week(pt)
                ),
                second: format!(
                    "{} [{}, {})",
                    name(idx),
                    show_ms_of_week(from),
                    show_ms_of_week(to)
                ),
            });
        }
        if from > at {
            return Err(CatalogError::WindowGap {
                context: context.to_string(),
                from: show_ms_of_week(at),
                to: show_ms_of_week(from),
            });
        }
        // Adjacent stretches of one window are one run.
        if run_window.last() != Some(&idx) {
            starts.push(from);
            run_window.push(idx);
        }
        at = to;
        previous = Some(slot);
    }
    if at < WEEK_MS {
        return Err(CatalogError::WindowGap {
            context: context.to_string(),
            from: show_ms_of_week(at),
            to: show_ms_of_week(WEEK_MS),
        });
    }
    Ok(WeekSchedule {
        windows,
        starts,
        run_window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn week_starts_on_monday_utc() {
        // 1970-01-05 was a Monday; 2026-11-30 is a Monday too.
        assert_eq!(ms_of_week(4 * DAY_MS), 0);
        let monday = chrono::DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(ms_of_week(monday), 0);
        assert_eq!(ms_of_week(monday - 1), WEEK_MS - 1);
        assert_eq!(ms_of_week(monday + 4 * 3_600_000), 4 * 3_600_000);
        // Before 1970 as well.
        assert_eq!(ms_of_week(4 * DAY_MS - 2 * WEEK_MS), 0);
        assert_eq!(show_ms_of_week(DAY_MS + 90 * 60_000), "tue 01:30");
        assert_eq!(show_ms_of_week(WEEK_MS), "mon 00:00");
    }
}
