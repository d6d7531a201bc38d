//! Hand-written cases: bin edges, late events, local midnights across DST and month ends,
//! overflow, eviction and memory. Every expected value is written out, not computed by the
//! code under test; instants are built from UTC fields with chrono's `Utc`, which knows no
//! zone rules.

use chrono::{NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::*;

const NO_WATERMARK: i64 = i64::MIN;
const BERLIN: Tz = chrono_tz::Europe::Berlin;
const NEW_YORK: Tz = chrono_tz::America::New_York;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid UTC time")
        .timestamp_millis()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn ticks(cost: i128) -> Amounts {
    Amounts {
        cost_ticks: cost,
        tokens: [1, 2, 0, 0, 0, 0],
        events: 1,
    }
}

fn key() -> WindowKeyRef<'static> {
    WindowKeyRef::new("acme", "eng", "gpt-5")
}

/// Adds `(instant, cost)` events with no watermark and returns the store.
fn store_with(tz: Tz, events: &[(i64, i128)]) -> SpendWindows<WindowKey> {
    let mut w = SpendWindows::new();
    for &(t, c) in events {
        let out = w.add(&key(), t, &ticks(c), tz, NO_WATERMARK).unwrap();
        assert_eq!(out.rolling, WindowSet::ALL);
        assert!(out.day && out.month);
    }
    w
}

fn day_cost(w: &SpendWindows<WindowKey>, d: NaiveDate) -> i128 {
    w.day(&key(), d).cost_ticks
}

fn month_cost(w: &SpendWindows<WindowKey>, y: i32, m: u32) -> i128 {
    w.month(&key(), y, m).cost_ticks
}

#[test]
fn bins_are_a_sixtieth_of_each_window() {
    let bins: Vec<i64> = Window::ALL.iter().map(|w| w.bin_ms()).collect();
    assert_eq!(bins, vec![1_000, 5_000, 60_000, 1_440_000]);
}

#[test]
fn a_window_is_the_sixty_bins_ending_with_the_bin_of_its_end() {
    let w = store_with(Tz::UTC, &[(0, 1), (59_999, 10), (60_000, 100)]);
    let m1 = |end| w.rolling(&key(), Window::M1, end).unwrap().cost_ticks;
    assert_eq!(m1(-1), 0);
    assert_eq!(m1(0), 1);
    // Ends inside bin 59: bins 0..=59.
    assert_eq!(m1(59_000), 11);
    assert_eq!(m1(59_999), 11);
    // Ends inside bin 60: bins 1..=60; the event at 0 is out though it is 60 s old at most.
    assert_eq!(m1(60_000), 110);
    assert_eq!(m1(60_999), 110);
    assert_eq!(m1(119_999), 100);
    assert_eq!(m1(120_000), 0);
    // 5 s bins: the events sit in bins 0, 11 and 12.
    let m5 = |end| w.rolling(&key(), Window::M5, end).unwrap().cost_ticks;
    assert_eq!(m5(299_999), 111);
    assert_eq!(m5(300_000), 110);
    assert_eq!(m5(354_999), 110);
    assert_eq!(m5(355_000), 100);
    assert_eq!(m5(359_999), 100);
    assert_eq!(m5(360_000), 0);
    assert_eq!(
        w.rolling(&key(), Window::H24, 86_399_999).unwrap().events,
        3
    );
}

#[test]
fn a_late_event_skips_the_windows_that_no_longer_cover_it() {
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    // Watermark 120 s: the 1-min window covers bins > 60 (1 s bins), i.e. t >= 61_000.
    let out = w.add(&key(), 60_999, &ticks(7), Tz::UTC, 120_000).unwrap();
    assert!(!out.rolling.contains(Window::M1));
    assert!(out.rolling.contains(Window::M5));
    assert!(out.rolling.contains(Window::H1));
    assert!(out.rolling.contains(Window::H24));
    assert!(out.day && out.month && out.is_late() && !out.too_old_for_calendar());
    assert_eq!(
        w.rolling(&key(), Window::M1, 120_000).unwrap(),
        Amounts::ZERO
    );
    assert_eq!(
        w.rolling(&key(), Window::M5, 120_000).unwrap().cost_ticks,
        7
    );
    let out = w.add(&key(), 61_000, &ticks(5), Tz::UTC, 120_000).unwrap();
    assert_eq!(out.rolling, WindowSet::ALL);
    assert_eq!(
        w.rolling(&key(), Window::M1, 120_000).unwrap().cost_ticks,
        5
    );
    // Ahead of the watermark is fine.
    let out = w.add(&key(), 500_000, &ticks(1), Tz::UTC, 120_000).unwrap();
    assert_eq!(out.rolling, WindowSet::ALL);
    assert_eq!(day_cost(&w, date(1970, 1, 1)), 13);
}

#[test]
fn berlin_spring_forward_day_has_23_hours() {
    let w = store_with(
        BERLIN,
        &[
            (utc(2026, 3, 28, 22, 59, 59) + 999, 1),
            (utc(2026, 3, 28, 23, 0, 0), 10),
            (utc(2026, 3, 29, 21, 59, 59) + 999, 100),
            (utc(2026, 3, 29, 22, 0, 0), 1000),
        ],
    );
    assert_eq!(day_cost(&w, date(2026, 3, 28)), 1);
    assert_eq!(day_cost(&w, date(2026, 3, 29)), 110);
    assert_eq!(day_cost(&w, date(2026, 3, 30)), 1000);
    assert_eq!(month_cost(&w, 2026, 3), 1111);
    let at = utc(2026, 3, 29, 12, 0, 0);
    assert_eq!(
        w.calendar(&key(), Calendar::Day, at, BERLIN)
            .unwrap()
            .cost_ticks,
        110
    );
    assert_eq!(w.zone_of(&key()), Some(BERLIN));
}

#[test]
fn berlin_fall_back_day_has_25_hours() {
    let w = store_with(
        BERLIN,
        &[
            (utc(2026, 10, 24, 21, 59, 59) + 999, 1),
            (utc(2026, 10, 24, 22, 0, 0), 10),
            // 02:30 local, twice: before and after the clocks go back.
            (utc(2026, 10, 25, 0, 30, 0), 20),
            (utc(2026, 10, 25, 1, 30, 0), 40),
            (utc(2026, 10, 25, 22, 59, 59) + 999, 100),
            (utc(2026, 10, 25, 23, 0, 0), 1000),
        ],
    );
    assert_eq!(day_cost(&w, date(2026, 10, 24)), 1);
    assert_eq!(day_cost(&w, date(2026, 10, 25)), 170);
    assert_eq!(day_cost(&w, date(2026, 10, 26)), 1000);
    assert_eq!(month_cost(&w, 2026, 10), 1171);
}

#[test]
fn new_york_spring_forward_day_has_23_hours() {
    let w = store_with(
        NEW_YORK,
        &[
            (utc(2026, 3, 8, 4, 59, 59) + 999, 1),
            (utc(2026, 3, 8, 5, 0, 0), 10),
            (utc(2026, 3, 9, 3, 59, 59) + 999, 100),
            (utc(2026, 3, 9, 4, 0, 0), 1000),
        ],
    );
    assert_eq!(day_cost(&w, date(2026, 3, 7)), 1);
    assert_eq!(day_cost(&w, date(2026, 3, 8)), 110);
    assert_eq!(day_cost(&w, date(2026, 3, 9)), 1000);
}

#[test]
fn new_york_fall_back_day_is_also_a_month_start() {
    let w = store_with(
        NEW_YORK,
        &[
            (utc(2026, 11, 1, 3, 59, 59) + 999, 1),
            (utc(2026, 11, 1, 4, 0, 0), 10),
            (utc(2026, 11, 2, 4, 59, 59) + 999, 100),
            (utc(2026, 11, 2, 5, 0, 0), 1000),
        ],
    );
    assert_eq!(day_cost(&w, date(2026, 10, 31)), 1);
    assert_eq!(day_cost(&w, date(2026, 11, 1)), 110);
    assert_eq!(day_cost(&w, date(2026, 11, 2)), 1000);
    assert_eq!(month_cost(&w, 2026, 10), 1);
    assert_eq!(month_cost(&w, 2026, 11), 1110);
}

#[test]
fn february_ends_at_local_midnight_in_each_zone() {
    let events = [
        (utc(2026, 2, 28, 22, 59, 59) + 999, 1),
        (utc(2026, 2, 28, 23, 0, 0), 10),
        (utc(2026, 3, 1, 4, 59, 59) + 999, 100),
        (utc(2026, 3, 1, 5, 0, 0), 1000),
    ];
    // Berlin (UTC+1): midnight is 23:00 UTC.
    let w = store_with(BERLIN, &events);
    assert_eq!(day_cost(&w, date(2026, 2, 28)), 1);
    assert_eq!(day_cost(&w, date(2026, 3, 1)), 1110);
    assert_eq!(month_cost(&w, 2026, 2), 1);
    assert_eq!(month_cost(&w, 2026, 3), 1110);
    // New York (UTC-5): midnight is 05:00 UTC on March 1.
    let w = store_with(NEW_YORK, &events);
    assert_eq!(day_cost(&w, date(2026, 2, 28)), 111);
    assert_eq!(day_cost(&w, date(2026, 3, 1)), 1000);
    assert_eq!(month_cost(&w, 2026, 2), 111);
    assert_eq!(month_cost(&w, 2026, 3), 1000);
    // UTC, the default zone.
    let w = store_with(Tz::UTC, &events);
    assert_eq!(month_cost(&w, 2026, 2), 11);
    assert_eq!(month_cost(&w, 2026, 3), 1100);
}

#[test]
fn berlin_october_ends_in_winter_time() {
    let w = store_with(
        BERLIN,
        &[
            (utc(2026, 10, 31, 22, 59, 59) + 999, 1),
            (utc(2026, 10, 31, 23, 0, 0), 10),
        ],
    );
    assert_eq!(month_cost(&w, 2026, 10), 1);
    assert_eq!(month_cost(&w, 2026, 11), 10);
    assert_eq!(day_cost(&w, date(2026, 11, 1)), 10);
}

#[test]
fn the_watermark_crossing_local_midnight_retires_the_day_before_yesterday() {
    // Berlin midnight starting 2026-03-30 is 2026-03-29 22:00 UTC (summer time).
    let midnight = utc(2026, 3, 29, 22, 0, 0);
    let on_28th = utc(2026, 3, 28, 12, 0, 0);
    let on_29th = utc(2026, 3, 29, 12, 0, 0);
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    // One millisecond before: today is the 29th, the 28th is yesterday.
    let out = w
        .add(&key(), on_28th, &ticks(1), BERLIN, midnight - 1)
        .unwrap();
    assert!(out.day && out.month);
    // At midnight: today is the 30th, the 28th is too old, the 29th is yesterday.
    let out = w
        .add(&key(), on_28th, &ticks(10), BERLIN, midnight)
        .unwrap();
    assert!(!out.day && out.month && out.too_old_for_calendar());
    let out = w
        .add(&key(), on_29th, &ticks(100), BERLIN, midnight)
        .unwrap();
    assert!(out.day && out.month);
    assert_eq!(day_cost(&w, date(2026, 3, 28)), 1);
    assert_eq!(month_cost(&w, 2026, 3), 111);
    w.evict(midnight - 1);
    assert_eq!(day_cost(&w, date(2026, 3, 28)), 1);
    w.evict(midnight);
    assert_eq!(day_cost(&w, date(2026, 3, 28)), 0);
    assert_eq!(day_cost(&w, date(2026, 3, 29)), 100);
    assert_eq!(w.key_count(), 1);
}

#[test]
fn the_month_before_last_is_too_old_for_the_month_total() {
    // New York: 2026-04-01 00:00 EDT is 04:00 UTC; March is then the previous month.
    let april = utc(2026, 4, 1, 4, 0, 0);
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    let feb = utc(2026, 2, 20, 12, 0, 0);
    let out = w.add(&key(), feb, &ticks(1), NEW_YORK, april - 1).unwrap();
    assert!(out.month && !out.day);
    let out = w.add(&key(), feb, &ticks(1), NEW_YORK, april).unwrap();
    assert!(!out.month && !out.day && out.rolling.is_empty());
    assert_eq!(month_cost(&w, 2026, 2), 1);
}

#[test]
fn an_overflowing_add_changes_nothing() {
    let t = utc(2026, 5, 5, 10, 0, 0);
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    let big = Amounts {
        cost_ticks: i128::MAX - 5,
        tokens: [u64::MAX - 1, 0, 0, 0, 0, 0],
        events: 1,
    };
    w.add(&key(), t, &big, Tz::UTC, NO_WATERMARK).unwrap();
    let snapshot = |w: &SpendWindows<WindowKey>| {
        let mut v: Vec<Amounts> = Window::ALL
            .iter()
            .map(|&win| w.rolling(&key(), win, t).unwrap())
            .collect();
        v.push(w.day(&key(), date(2026, 5, 5)));
        v.push(w.month(&key(), 2026, 5));
        v
    };
    let before = snapshot(&w);
    assert_eq!(
        w.add(&key(), t, &ticks(10), Tz::UTC, NO_WATERMARK),
        Err(WindowError::Overflow)
    );
    let mut tokens_only = Amounts::ZERO;
    tokens_only.tokens[0] = 2;
    assert_eq!(
        w.add(&key(), t, &tokens_only, Tz::UTC, NO_WATERMARK),
        Err(WindowError::Overflow)
    );
    assert_eq!(snapshot(&w), before);
    // Two hours later every rolling bin is fresh, but the day and month totals would
    // overflow: the fresh bins must not be written either.
    let later = t + 2 * 3_600_000;
    assert_eq!(
        w.add(&key(), later, &ticks(10), Tz::UTC, NO_WATERMARK),
        Err(WindowError::Overflow)
    );
    for win in [Window::M1, Window::M5, Window::H1] {
        assert_eq!(w.rolling(&key(), win, later).unwrap().events, 0);
    }
    assert_eq!(w.rolling(&key(), Window::H24, later).unwrap(), before[3]);
    assert_eq!(snapshot(&w), before);
}

#[test]
fn a_window_sum_that_overflows_is_an_error() {
    let k = WindowKeyRef::new("t", "", "m");
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    let m = Amounts {
        cost_ticks: 0,
        tokens: [u64::MAX, 0, 0, 0, 0, 0],
        events: 1,
    };
    // Different months so only the rolling windows' sums see both bins.
    let jan31 = utc(2026, 1, 31, 23, 59, 59);
    w.add(&k, jan31, &m, Tz::UTC, NO_WATERMARK).unwrap();
    w.add(&k, jan31 + 1_000, &m, Tz::UTC, NO_WATERMARK).unwrap();
    assert_eq!(
        w.rolling(&k, Window::M1, jan31 + 1_000),
        Err(WindowError::Overflow)
    );
    assert_eq!(
        w.rolling(&k, Window::M1, jan31).unwrap().tokens[0],
        u64::MAX
    );
}

#[test]
fn an_idle_key_is_dropped_once_its_windows_empty_and_periods_roll() {
    // UTC: the event at 23:00 on January 31; 25 h later it is February 2.
    let t = utc(2026, 1, 31, 23, 0, 0);
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    w.add(&key(), t, &ticks(5), Tz::UTC, t).unwrap();
    let other = WindowKeyRef::new("other", "ops", "m");
    w.add(&other, utc(2026, 2, 2, 0, 0, 0), &ticks(1), Tz::UTC, t)
        .unwrap();
    let full = w.heap_bytes();
    assert_eq!(w.key_count(), 2);
    // 23 h later the 24 h window still holds the event (in its 24-minute bin), and the
    // 31st is yesterday.
    let out = w.evict(t + 23 * 3_600_000);
    assert_eq!(out.keys, 0);
    assert_eq!(
        w.rolling(&key(), Window::H24, t + 23 * 3_600_000)
            .unwrap()
            .cost_ticks,
        5
    );
    let out = w.evict(t + 25 * 3_600_000);
    assert_eq!(out.keys, 1);
    assert_eq!(w.key_count(), 1);
    assert_eq!(w.keys_of_tenant("acme").count(), 0);
    assert!(w.heap_bytes() < full, "{} < {full}", w.heap_bytes());
    assert_eq!(w.month(&key(), 2026, 1), Amounts::ZERO);
}

#[test]
fn a_key_with_spend_this_month_stays_with_only_its_totals() {
    let t = utc(2026, 1, 10, 12, 0, 0);
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    w.add(&key(), t, &ticks(5), BERLIN, t).unwrap();
    let full = w.heap_bytes();
    let wm = utc(2026, 1, 20, 0, 0, 0);
    w.evict(wm);
    assert_eq!(w.key_count(), 1);
    assert!(w.heap_bytes() < full);
    for win in Window::ALL {
        assert_eq!(w.rolling(&key(), win, wm).unwrap(), Amounts::ZERO);
    }
    assert_eq!(month_cost(&w, 2026, 1), 5);
    assert_eq!(day_cost(&w, date(2026, 1, 10)), 0);
    // Berlin's February starts at 23:00 UTC on January 31.
    w.evict(utc(2026, 1, 31, 22, 59, 59));
    assert_eq!(w.key_count(), 1);
    w.evict(utc(2026, 1, 31, 23, 0, 0));
    assert_eq!(w.key_count(), 0);
}

#[test]
fn restored_minutes_rebuild_hour_day_and_month_windows() {
    let minute = utc(2026, 6, 1, 10, 7, 0);
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    let sum = Amounts {
        cost_ticks: 300,
        tokens: [30, 3, 0, 0, 0, 0],
        events: 3,
    };
    let out = w
        .restore_minute(&key(), minute, &sum, Tz::UTC, NO_WATERMARK)
        .unwrap();
    assert_eq!(out.rolling, WindowSet::ALL);
    assert_eq!(w.rolling(&key(), Window::H1, minute + 59_999).unwrap(), sum);
    assert_eq!(w.day(&key(), date(2026, 6, 1)), sum);
    // The whole minute sits in the 1 s bin of its first second.
    assert_eq!(w.rolling(&key(), Window::M1, minute).unwrap(), sum);
    assert_eq!(
        w.rolling(&key(), Window::M1, minute + 60_000).unwrap(),
        Amounts::ZERO
    );
}

#[test]
fn the_live_view_lists_a_tenants_keys_with_every_window() {
    let now = utc(2026, 7, 1, 12, 0, 0);
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    w.add(
        &WindowKeyRef::new("a", "eng", "m1"),
        now - 30_000,
        &ticks(1),
        Tz::UTC,
        now,
    )
    .unwrap();
    w.add(
        &WindowKeyRef::new("a", "eng", "m1"),
        now - 600_000,
        &ticks(10),
        Tz::UTC,
        now,
    )
    .unwrap();
    w.add(
        &WindowKeyRef::new("a", "ops", "m2"),
        now,
        &ticks(100),
        Tz::UTC,
        now,
    )
    .unwrap();
    w.add(
        &WindowKeyRef::new("b", "eng", "m1"),
        now,
        &ticks(1000),
        Tz::UTC,
        now,
    )
    .unwrap();
    let mut rows = w.live_view("a", now).unwrap();
    rows.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].key, WindowKey::new("a", "eng", "m1"));
    let costs: Vec<i128> = rows[0].rolling.iter().map(|a| a.cost_ticks).collect();
    assert_eq!(costs, vec![1, 1, 11, 11]);
    assert_eq!(rows[0].day.cost_ticks, 11);
    assert_eq!(rows[0].month.cost_ticks, 11);
    assert_eq!(rows[1].key.department(), "ops");
    assert_eq!(rows[1].rolling[Window::M1.index()].cost_ticks, 100);
    assert!(w.live_view("nobody", now).unwrap().is_empty());
}

#[test]
fn bytes_per_active_key_with_one_event_in_each_window() {
    let t = utc(2026, 7, 1, 12, 0, 0);
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    let n = 10_000;
    for i in 0..n {
        let dept = format!("d{}", i % 100);
        let model = format!("m{}", i / 100);
        let k = WindowKeyRef::new("tenant", &dept, &model);
        w.add(&k, t, &ticks(1), BERLIN, t).unwrap();
    }
    assert_eq!(w.key_count(), n);
    let per_key = w.heap_bytes() / n;
    println!("approximate heap bytes per active key: {per_key}");
    assert!(per_key <= 2048, "{per_key} bytes per key");
}
