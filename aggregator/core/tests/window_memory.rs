//! Memory per active key of `SpendWindows` in realistic shapes, measured with a counting
//! allocator (bytes requested; the allocator's own overhead is not included). Ignored by
//! default (they take a few seconds in release); run with
//!
//! ```sh
//! cargo test -p costpipe-aggregator-core --release --test window_memory -- --include-ignored --nocapture --test-threads=1
//! ```
//!
//! `measured_bytes_per_active_key_at_100k_keys` in `windows_props.rs` covers the smallest
//! shape (one event per key: one bin in each series).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use chrono::{TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use costpipe_aggregator_core::windows::{Amounts, SpendWindows, Window, WindowKey, WindowKeyRef};

/// Counts the bytes allocated minus freed by the current thread.
struct ThreadCounting;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
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

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

const NOW: (i32, u32, u32, u32) = (2026, 7, 15, 12);

fn now_ms() -> i64 {
    Utc.with_ymd_and_hms(NOW.0, NOW.1, NOW.2, NOW.3, 0, 0)
        .single()
        .expect("valid time")
        .timestamp_millis()
}

fn one() -> Amounts {
    Amounts {
        cost_ticks: 1_500_000_000,
        tokens: [1200, 300, 0, 0, 0, 0],
        events: 1,
    }
}

/// 100 tenants × 50 departments × 20 models, as in `windows_props.rs`.
fn key_names(keys: usize) -> Vec<(String, String, String)> {
    (0..keys)
        .map(|i| {
            (
                format!("name-{:03}", i / 1000),
                format!("name-{:03}", i / 20 % 50),
                format!("name-{:03}", i % 20),
            )
        })
        .collect()
}

/// Adds `events` (event time, key index) in time order with the watermark at `now`, and
/// reports bytes per key. Returns (measured, estimated) bytes per key.
fn measure(
    label: &str,
    names: &[(String, String, String)],
    mut events: Vec<(i64, u32)>,
) -> (usize, usize) {
    let now = now_ms();
    events.sort_unstable();
    let rss_before = rss_kb();
    let before = live_bytes();
    let mut w: SpendWindows<WindowKey> = SpendWindows::new();
    for &(t, k) in &events {
        let (a, b, c) = &names[k as usize];
        w.add(&WindowKeyRef::new(a, b, c), t, &one(), chrono_tz::UTC, now)
            .expect("no overflow");
    }
    let measured = (live_bytes() - before) as usize;
    let rss = rss_kb().saturating_sub(rss_before) as usize * 1024;
    let keys = w.key_count();
    let estimate = w.heap_bytes();
    // Bins held per series, averaged over keys: read back through the public API.
    let k0 = &names[0];
    let key0 = WindowKeyRef::new(&k0.0, &k0.1, &k0.2);
    let m1 = w.rolling(&key0, Window::M1, now).expect("sum").events;
    let h24 = w.rolling(&key0, Window::H24, now).expect("sum").events;
    let total_events: u64 = events.len() as u64;
    drop(w);
    println!(
        "{label}: {keys} keys, {total_events} events ({:.1}/key); measured {} B/key \
         (requested from the allocator), heap_bytes() {} B/key, RSS +{} B/key; \
         first key: {m1} events in 1m, {h24} in 24h",
        total_events as f64 / keys as f64,
        measured / keys,
        estimate / keys,
        rss / keys,
    );
    (measured / keys, estimate / keys)
}

#[test]
#[ignore = "measurement; run in release with --nocapture"]
fn realistic_100k_keys_with_events_over_the_last_24h() {
    // Each key has 32 events with ages log-uniform between 1 s and 24 h: about a third in
    // the last minute, half in the last 5 minutes, 70 % in the last hour, so every rolling
    // window holds several bins.
    let keys = 100_000;
    let names = key_names(keys);
    let now = now_ms();
    let mut rng = StdRng::seed_from_u64(7);
    let max_ln = (86_400_000f64).ln();
    let min_ln = (1_000f64).ln();
    let mut events = Vec::with_capacity(keys * 32);
    for k in 0..keys {
        for _ in 0..32 {
            let age = rng.random_range(min_ln..max_ln).exp() as i64;
            events.push((now - age, k as u32));
        }
    }
    let (measured, estimate) = measure("realistic, 32 events/key over 24 h", &names, events);
    assert!(estimate.abs_diff(measured) * 10 <= measured);
}

#[test]
#[ignore = "measurement; run in release with --nocapture"]
fn sparse_100k_keys_with_a_few_events_over_the_last_24h() {
    // 4 events per key, uniform over the last 24 h: most keys of a large tenant base.
    let keys = 100_000;
    let names = key_names(keys);
    let now = now_ms();
    let mut rng = StdRng::seed_from_u64(8);
    let events: Vec<(i64, u32)> = (0..keys)
        .flat_map(|k| (0..4).map(move |_| k as u32))
        .map(|k| (now - rng.random_range(0..86_400_000), k))
        .collect();
    measure("sparse, 4 events/key uniform over 24 h", &names, events);
}

#[test]
#[ignore = "measurement; run in release with --nocapture"]
fn busiest_keys_every_bin_of_every_window_filled() {
    // Upper bound: every one of the 60 bins of each of the 4 windows holds an event (one
    // event per bin), plus today and one month. 10,000 keys (the per-key cost does not
    // depend on the key count beyond the map's slots).
    let keys = 10_000;
    let names = key_names(keys);
    let now = now_ms();
    let mut events = Vec::new();
    for k in 0..keys {
        for w in Window::ALL {
            for b in 0..60 {
                events.push((now - b * w.bin_ms(), k as u32));
            }
        }
    }
    measure("busiest, one event in each of the 240 bins", &names, events);
}
