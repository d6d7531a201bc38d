//! Property tests of `SpendWindows` against a brute-force model, and a measurement of the
//! memory an active key costs.
//!
//! The model keeps every event with the totals it belongs to and recomputes each window and
//! calendar total from the documented rules: bin `b(t) = ⌊t/bin⌋`; added to a window iff
//! `b(t) > ⌊watermark/bin⌋ − 60`; a window ending at `T` sums `⌊T/bin⌋ − 60 < b ≤ ⌊T/bin⌋`;
//! local days and months come from chrono directly; the previous period is kept.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use costpipe_aggregator_core::windows::{
    Amounts, SpendWindows, Window, WindowError, WindowKey, WindowKeyRef, WindowSet,
};

// --- memory measurement -------------------------------------------------------------------

/// Counts the bytes allocated minus freed by the current thread, so tests running in
/// parallel do not disturb each other's measurement.
struct ThreadCounting;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: the allocator runs during thread teardown too.
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + delta));
}

unsafe impl GlobalAlloc for ThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: ThreadCounting = ThreadCounting;

fn live_bytes() -> isize {
    LIVE_BYTES.with(|c| c.get())
}

#[test]
fn measured_bytes_per_active_key_at_100k_keys() {
    let t = Utc
        .with_ymd_and_hms(2026, 7, 1, 12, 0, 0)
        .single()
        .expect("valid time")
        .timestamp_millis();
    let one = Amounts {
        cost_ticks: 1_500_000_000,
        tokens: [1200, 300, 0, 0, 0, 0],
        events: 1,
    };
    let names: Vec<String> = (0..100).map(|i| format!("name-{i:03}")).collect();
    let before = live_bytes();
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    // 100 tenants x 50 departments x 20 models, one event each: one bin in each of the four
    // windows, one day and one month.
    for tenant in &names {
        for dept in &names[..50] {
            for model in &names[..20] {
                let k = WindowKeyRef::new(tenant, dept, model);
                w.add(&k, t, &one, chrono_tz::Europe::Berlin, t)
                    .expect("no overflow");
            }
        }
    }
    let measured = (live_bytes() - before) as usize;
    let keys = w.key_count();
    assert_eq!(keys, 100_000);
    let estimate = w.heap_bytes();
    let wm = t + 40 * 86_400_000;
    assert_eq!(w.evict(wm).keys, 100_000);
    assert_eq!(w.key_count(), 0);
    let idle = w.heap_bytes();
    drop(w);
    // Everything was given back (checked before printing: captured output allocates).
    assert_eq!(live_bytes(), before);
    println!(
        "100k active keys: measured {} bytes/key (allocator overhead not included), \
         heap_bytes() estimates {} bytes/key; after eviction {idle} bytes in all",
        measured / keys,
        estimate / keys
    );
    assert!(measured / keys <= 2048);
    // The estimate is within 10 % of what was allocated.
    assert!(
        estimate.abs_diff(measured) * 10 <= measured,
        "{estimate} vs {measured}"
    );
    assert!(idle < 4096, "{idle}");
}

// --- model --------------------------------------------------------------------------------

const KEYS: [(&str, &str, &str); 5] = [
    ("t1", "eng", "gpt"),
    ("t1", "", "gpt"),
    ("t2", "eng", "claude"),
    ("t3", "ops", "gemini"),
    ("t4", "x", "y"),
];

fn zone_of(key: usize) -> Tz {
    [
        Tz::UTC,
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::Asia::Kolkata,
        chrono_tz::Australia::Lord_Howe,
    ][key]
}

fn key_ref(key: usize) -> WindowKeyRef<'static> {
    let (t, d, m) = KEYS[key];
    WindowKeyRef::new(t, d, m)
}

fn local_date(ms: i64, tz: Tz) -> NaiveDate {
    tz.timestamp_millis_opt(ms)
        .single()
        .expect("UTC instants map to one local time")
        .date_naive()
}

fn month_number(d: NaiveDate) -> i32 {
    d.year() * 12 + d.month0() as i32
}

#[derive(Debug, Clone)]
struct ModelEvent {
    key: usize,
    time_ms: i64,
    amounts: Amounts,
    /// Which series still hold the event: the four windows, then day, then month.
    held: [bool; 6],
}

impl ModelEvent {
    fn date(&self) -> NaiveDate {
        local_date(self.time_ms, zone_of(self.key))
    }
}

fn bin(w: Window, ms: i64) -> i64 {
    ms.div_euclid(w.length_ms() / 60)
}

fn covered_at_watermark(w: Window, t: i64, watermark: i64) -> bool {
    bin(w, t) > bin(w, watermark) - 60
}

/// The exact sum, or `None` if it does not fit `Amounts`: costs are split into 64-bit halves
/// so no partial sum can overflow.
fn sum<'a>(events: impl Iterator<Item = &'a ModelEvent>) -> Option<Amounts> {
    const HALF: i128 = 1 << 64;
    let (mut hi, mut lo) = (0i128, 0i128);
    let mut total = Amounts::ZERO;
    for e in events {
        hi += e.amounts.cost_ticks.div_euclid(HALF);
        lo += e.amounts.cost_ticks.rem_euclid(HALF);
        for (t, x) in total.tokens.iter_mut().zip(e.amounts.tokens) {
            *t = t.checked_add(x)?;
        }
        total.events = total.events.checked_add(e.amounts.events)?;
    }
    hi += lo.div_euclid(HALF);
    lo = lo.rem_euclid(HALF);
    total.cost_ticks = hi.checked_mul(HALF)?.checked_add(lo)?;
    Some(total)
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        key: usize,
        offset_ms: i64,
        amounts: Amounts,
    },
    Advance(i64),
    Evict,
}

const TWO_DAYS_MS: i64 = 2 * 86_400_000;

fn amounts(huge: bool) -> impl Strategy<Value = Amounts> {
    let cost = if huge {
        prop_oneof![
            -1_000_000i128..1_000_000,
            Just(i128::MAX / 2 + 1),
            Just(i128::MIN / 2)
        ]
        .boxed()
    } else {
        (-1_000_000_000_000i128..1_000_000_000_000).boxed()
    };
    let token = if huge {
        prop_oneof![0u64..1000, Just(u64::MAX / 2 + 1)].boxed()
    } else {
        (0u64..1_000_000).boxed()
    };
    (cost, proptest::array::uniform6(token), 1u64..3).prop_map(|(cost_ticks, tokens, events)| {
        Amounts {
            cost_ticks,
            tokens,
            events,
        }
    })
}

fn op(huge: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KEYS.len(), 0..TWO_DAYS_MS, amounts(huge))
            .prop_map(|(key, offset_ms, amounts)| Op::Add { key, offset_ms, amounts }),
        // Mostly small steps, sometimes hours.
        2 => prop_oneof![0i64..120_000, 0i64..4 * 3_600_000].prop_map(Op::Advance),
        1 => Just(Op::Evict),
    ]
}

/// Starts near DST changes and month ends of the zones used.
fn base() -> impl Strategy<Value = i64> {
    let utc = |y, m, d, h| {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("valid time")
            .timestamp_millis()
    };
    prop_oneof![
        Just(utc(2026, 3, 28, 0)),
        Just(utc(2026, 10, 24, 0)),
        Just(utc(2026, 3, 7, 12)),
        Just(utc(2026, 10, 31, 6)),
        Just(utc(2026, 2, 27, 0)),
        Just(utc(2026, 4, 4, 0)),
        Just(utc(2026, 12, 31, 0)),
    ]
}

fn run(base: i64, start_lag_ms: i64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut store: SpendWindows<WindowKey> = SpendWindows::new();
    let mut model: Vec<ModelEvent> = Vec::new();
    let mut watermark = base - start_lag_ms;
    for op in ops {
        match op {
            Op::Add {
                key,
                offset_ms,
                amounts,
            } => {
                let t = base + offset_ms;
                let tz = zone_of(key);
                let date = local_date(t, tz);
                let wm_date = local_date(watermark, tz);
                let mut held = [false; 6];
                for w in Window::ALL {
                    held[w.index()] = covered_at_watermark(w, t, watermark);
                }
                held[4] = date >= wm_date.pred_opt().expect("a day before");
                held[5] = month_number(date) >= month_number(wm_date) - 1;
                // The add overflows iff some total it goes into would.
                let overflows = (0..6).any(|s| {
                    if !held[s] {
                        return false;
                    }
                    let same =
                        model
                            .iter()
                            .filter(|e| e.key == key && e.held[s])
                            .filter(|e| match s {
                                4 => e.date() == date,
                                5 => month_number(e.date()) == month_number(date),
                                _ => {
                                    let w = Window::ALL[s];
                                    bin(w, e.time_ms) == bin(w, t)
                                }
                            });
                    sum(same).and_then(|a| a.checked_add(&amounts)).is_none()
                });
                let got = store.add(&key_ref(key), t, &amounts, tz, watermark);
                if overflows {
                    prop_assert_eq!(got, Err(WindowError::Overflow));
                    continue;
                }
                let out = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut expected = WindowSet::EMPTY;
                for w in Window::ALL {
                    if held[w.index()] {
                        expected.insert(w);
                    }
                }
                prop_assert_eq!(out.rolling, expected);
                prop_assert_eq!(out.day, held[4]);
                prop_assert_eq!(out.month, held[5]);
                prop_assert_eq!(out.too_old_for_calendar(), !(held[4] && held[5]));
                model.push(ModelEvent {
                    key,
                    time_ms: t,
                    amounts,
                    held,
                });
            }
            Op::Advance(d) => watermark += d,
            Op::Evict => {
                store.evict(watermark);
                for e in model.iter_mut() {
                    for w in Window::ALL {
                        if !covered_at_watermark(w, e.time_ms, watermark) {
                            e.held[w.index()] = false;
                        }
                    }
                    let wm_date = local_date(watermark, zone_of(e.key));
                    let date = e.date();
                    if date < wm_date.pred_opt().expect("a day before") {
                        e.held[4] = false;
                    }
                    if month_number(date) < month_number(wm_date) - 1 {
                        e.held[5] = false;
                    }
                }
                for key in 0..KEYS.len() {
                    let wm_date = local_date(watermark, zone_of(key));
                    let mine = || model.iter().filter(|e| e.key == key);
                    let keep = mine().any(|e| {
                        e.held[..4].iter().any(|h| *h)
                            || (e.held[4] && e.date() >= wm_date)
                            || (e.held[5] && month_number(e.date()) >= month_number(wm_date))
                    });
                    if !keep {
                        for e in model.iter_mut().filter(|e| e.key == key) {
                            e.held = [false; 6];
                        }
                    }
                }
                let alive = (0..KEYS.len())
                    .filter(|k| {
                        model
                            .iter()
                            .any(|e| e.key == *k && e.held.iter().any(|h| *h))
                    })
                    .count();
                prop_assert_eq!(store.key_count(), alive);
            }
        }
    }
    check(&store, &model, watermark)
}

/// Every window at many end times and every day and month touched equal the model's sums.
fn check(
    store: &SpendWindows<WindowKey>,
    model: &[ModelEvent],
    watermark: i64,
) -> Result<(), TestCaseError> {
    let mut ends: Vec<i64> = model.iter().map(|e| e.time_ms).collect();
    ends.extend([
        watermark,
        watermark + 1,
        watermark + 59_999,
        watermark + 3_600_000,
    ]);
    ends.extend(model.iter().map(|e| e.time_ms + 86_399_999));
    for key in 0..KEYS.len() {
        let mine: Vec<&ModelEvent> = model.iter().filter(|e| e.key == key).collect();
        for w in Window::ALL {
            for &end in &ends {
                let last = bin(w, end);
                let expected = sum(mine.iter().copied().filter(|e| {
                    let b = bin(w, e.time_ms);
                    e.held[w.index()] && last - 60 < b && b <= last
                }));
                let got = store.rolling(&key_ref(key), w, end);
                match expected {
                    Some(a) => prop_assert_eq!(got, Ok(a), "{:?} {:?} end {}", key, w, end),
                    None => prop_assert_eq!(got, Err(WindowError::Overflow)),
                }
            }
        }
        let mut dates: Vec<NaiveDate> = mine.iter().map(|e| e.date()).collect();
        dates.extend(dates.clone().iter().filter_map(|d| d.succ_opt()));
        dates.push(local_date(watermark, zone_of(key)));
        for date in dates {
            let day = sum(mine
                .iter()
                .copied()
                .filter(|e| e.held[4] && e.date() == date));
            prop_assert_eq!(Some(store.day(&key_ref(key), date)), day, "day {}", date);
            let month = sum(mine
                .iter()
                .copied()
                .filter(|e| e.held[5] && month_number(e.date()) == month_number(date)));
            prop_assert_eq!(
                Some(store.month(&key_ref(key), date.year(), date.month())),
                month,
                "month of {}",
                date
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 192,
        // Next to this file: integration tests have no lib.rs for the default to find.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn windows_and_calendar_totals_equal_brute_force(
        base in base(),
        start_lag_ms in 0i64..6 * 3_600_000,
        ops in proptest::collection::vec(op(false), 1..250),
    ) {
        run(base, start_lag_ms, ops)?;
    }

    #[test]
    fn overflowing_adds_change_nothing_and_sums_never_wrap(
        base in base(),
        start_lag_ms in 0i64..3_600_000,
        ops in proptest::collection::vec(op(true), 1..80),
    ) {
        run(base, start_lag_ms, ops)?;
    }
}
