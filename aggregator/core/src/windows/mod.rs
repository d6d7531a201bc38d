//! `SpendWindows`: per key, event-time rolling-window and calendar totals of cost, tokens and
//! events. It owns the bins, what goes into them and when they are evicted. It never reads a
//! clock (every instant is an argument), does not decide lateness (see [`crate::watermark`])
//! and does not evaluate budgets.
//!
//! Times are UTC milliseconds since the epoch; `⌊x/y⌋` rounds toward −∞.
//!
//! # Rolling windows
//! Four windows ([`Window`]): 1 min, 5 min, 1 h and 24 h, each cut into exactly
//! [`BINS_PER_WINDOW`] = 60 bins of `bin = W/60` (1 s, 5 s, 1 min, 24 min), like Arroyo's
//! slide-sized partial aggregates. An event at `t` belongs to bin `b(t) = ⌊t/bin⌋`.
//!
//! - **Query.** The window ending at `T` sums every bin `b` with
//!   `⌊T/bin⌋ − 60 < b ≤ ⌊T/bin⌋`: the 60 bins up to and including the one containing `T`,
//!   i.e. exactly the event times `[(⌊T/bin⌋ − 59)·bin, (⌊T/bin⌋ + 1)·bin)`. The granularity
//!   is one bin: compared with the exact window `(T − W, T]` it is shifted later by
//!   `bin − 1 − (T mod bin)` ms, so it may leave out up to one bin of the oldest part and
//!   include events up to one bin after `T`. It is exact when `T` is the last millisecond of
//!   a bin. It never includes an event older than `W`.
//! - **Add.** An event goes into window `w` iff some window ending at or after the watermark
//!   still covers its bin: `b(t) > ⌊watermark/bin⌋ − 60`. Events ahead of the watermark are
//!   added. A window that no longer covers the event is left as it is (the caller counts the
//!   event as late from [`AddOutcome`]); the calendar totals still get it.
//! - **Evict.** [`SpendWindows::evict`] at watermark `M` drops the bins with
//!   `b ≤ ⌊M/bin⌋ − 60`, which no window ending at or after `M` covers. A query ending
//!   before the latest eviction's watermark may therefore miss evicted bins.
//!
//! # Calendar totals
//! Each key also sums its local **day** and local **month** in its tenant's time zone (the
//! `tz` of the key's latest `add`; midnight is local, so a day lasts 23, 24 or 25 h). The
//! **current** period is the one containing the watermark. Kept per key: the current period,
//! [`PREVIOUS_PERIODS_KEPT`] = 1 period before it, and any later period that events ahead of
//! the watermark opened. An event whose day (month) is older than the previous one is not
//! added to that total and is reported as [`AddOutcome::too_old_for_calendar`]; it is not an
//! error. Eviction drops periods older than the previous one.
//!
//! # Keys
//! A key is dropped by eviction when all its rolling windows are empty and it holds no
//! period at or after the current day and month. Its previous-period totals go with it: a
//! later event for that previous period starts a new total (closed periods are read from the
//! ClickHouse rollups, not from here). A dropped key costs nothing; strings no key uses are
//! freed from the interner.
//!
//! # Restore
//! [`SpendWindows::restore_minute`] adds a minute rollup at the minute's start. The 1 h and
//! 24 h bins are whole minutes and local midnight falls on a minute boundary for present-day
//! zones, so those windows and the calendar totals restore exactly; the 1 min and 5 min
//! windows restore at minute granularity (a whole minute lands in the bin of its first
//! second).
//!
//! # Arithmetic
//! Money is integer ticks of 10^-12 ([`Amounts`]); every sum is checked. An `add` that would
//! overflow any bin or total returns [`WindowError::Overflow`] and changes nothing.

mod amounts;
mod bins;
mod calendar;
mod key;

use std::borrow::Borrow;
use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;

pub use amounts::{cost_ticks, Amounts, TokenKind, COST_SCALE, TOKEN_KINDS};
pub use calendar::{Calendar, PREVIOUS_PERIODS_KEPT};
pub use key::{Interner, KeyLookup, SpendKey, TenantDepartmentModel, WindowKey, WindowKeyRef};

use bins::{Pending, SparseBins};
use calendar::{current_periods, day_index, local_periods, month_index};

/// Bins per rolling window.
pub const BINS_PER_WINDOW: i64 = 60;

/// Why a window operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// A bin, a calendar total or a query's sum would leave the range of its integer
    /// (i128 ticks, u64 tokens or events). Nothing was changed.
    #[error("amounts overflow")]
    Overflow,
    /// A decimal cost had more than 12 significant decimal places; rounding it is the
    /// pricing crate's decision, not the window's.
    #[error("cost has {scale} decimal places, more than the 12 a tick holds")]
    InexactCost { scale: u32 },
    /// An event time (or query instant) lies outside the dates chrono can represent.
    #[error("time {ms} ms is outside the representable calendar")]
    TimeOutOfRange { ms: i64 },
}

/// A rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    M1,
    M5,
    H1,
    H24,
}

impl Window {
    /// Every window, shortest first; also the order of [`LiveRow::rolling`].
    pub const ALL: [Window; 4] = [Window::M1, Window::M5, Window::H1, Window::H24];

    /// The window's length in ms.
    pub const fn length_ms(self) -> i64 {
        match self {
            Window::M1 => 60_000,
            Window::M5 => 300_000,
            Window::H1 => 3_600_000,
            Window::H24 => 86_400_000,
        }
    }

    /// Length of one bin in ms: a 60th of the window.
    pub const fn bin_ms(self) -> i64 {
        self.length_ms() / BINS_PER_WINDOW
    }

    /// Position in [`Window::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The bin containing `ms`.
    pub const fn bin_of(self, ms: i64) -> i64 {
        ms.div_euclid(self.bin_ms())
    }

    /// The highest bin that the windows ending at or after `watermark_ms` no longer cover.
    pub const fn last_uncovered_bin(self, watermark_ms: i64) -> i64 {
        self.bin_of(watermark_ms) - BINS_PER_WINDOW
    }
}

/// A set of rolling windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct WindowSet(u8);

impl WindowSet {
    pub const EMPTY: WindowSet = WindowSet(0);
    pub const ALL: WindowSet = WindowSet(0b1111);

    pub fn contains(self, w: Window) -> bool {
        self.0 & (1 << w.index()) != 0
    }

    pub fn insert(&mut self, w: Window) {
        self.0 |= 1 << w.index();
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What an [`SpendWindows::add`] updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddOutcome {
    /// The rolling windows the event went into; the others no longer covered it.
    pub rolling: WindowSet,
    /// The event's local day total was updated.
    pub day: bool,
    /// The event's local month total was updated.
    pub month: bool,
}

impl AddOutcome {
    /// True if the event's day or month was older than the previous one at the watermark,
    /// so that total was left as it is.
    pub fn too_old_for_calendar(&self) -> bool {
        !(self.day && self.month)
    }

    /// True if the event missed anything: a rolling window or a calendar total.
    pub fn is_late(&self) -> bool {
        self.rolling != WindowSet::ALL || self.too_old_for_calendar()
    }
}

/// What [`SpendWindows::evict`] dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EvictOutcome {
    /// Bins and calendar periods dropped.
    pub bins: usize,
    /// Keys dropped.
    pub keys: usize,
}

/// One key's current totals, for the live view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRow<K> {
    pub key: K,
    /// Indexed by [`Window::index`].
    pub rolling: [Amounts; 4],
    /// The local day containing the view's instant.
    pub day: Amounts,
    /// The local month containing the view's instant.
    pub month: Amounts,
}

const DAY: usize = 4;
const MONTH: usize = 5;

/// One key's series: the four rolling windows, then days, then months.
#[derive(Debug)]
struct KeyState {
    series: [SparseBins; 6],
    tz: Tz,
}

impl KeyState {
    fn new(tz: Tz) -> Self {
        KeyState {
            series: Default::default(),
            tz,
        }
    }

    fn heap_bytes(&self) -> usize {
        self.series.iter().map(SparseBins::heap_bytes).sum()
    }
}

/// Where one event goes: the bin per series, or `None` where it is not added.
type Targets = [Option<i64>; 6];

/// Per-key rolling-window and calendar totals. See the module docs for the semantics.
#[derive(Debug)]
pub struct SpendWindows<K> {
    keys: HashMap<K, KeyState>,
    strings: Interner,
    /// The current periods of the last (watermark, zone) asked: consecutive events share
    /// both, and a zone lookup is the costliest step of an add.
    current_cache: Option<(i64, Tz, (i64, i64))>,
}

impl<K> Default for SpendWindows<K> {
    fn default() -> Self {
        SpendWindows {
            keys: HashMap::new(),
            strings: Interner::default(),
            current_cache: None,
        }
    }
}

impl<K: SpendKey> SpendWindows<K> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn current(&mut self, watermark_ms: i64, tz: Tz) -> (i64, i64) {
        match self.current_cache {
            Some((w, z, p)) if w == watermark_ms && z == tz => p,
            _ => {
                let p = current_periods(watermark_ms, tz);
                self.current_cache = Some((watermark_ms, tz, p));
                p
            }
        }
    }

    /// Adds one event (or a pre-summed group of events at one instant) for `key` at
    /// `event_time_ms`, to every rolling window that still covers it at `watermark_ms` and to
    /// its local day and month in `tz` unless those are too old. `tz` becomes the key's zone.
    /// On error nothing changed.
    pub fn add<L>(
        &mut self,
        key: &L,
        event_time_ms: i64,
        amounts: &Amounts,
        tz: Tz,
        watermark_ms: i64,
    ) -> Result<AddOutcome, WindowError>
    where
        L: KeyLookup<K> + ?Sized,
        K: Borrow<L::Query>,
    {
        let (day, month) = local_periods(event_time_ms, tz)?;
        let (cur_day, cur_month) = self.current(watermark_ms, tz);
        let mut outcome = AddOutcome::default();
        let mut targets: Targets = [None; 6];
        for w in Window::ALL {
            let bin = w.bin_of(event_time_ms);
            if bin > w.last_uncovered_bin(watermark_ms) {
                targets[w.index()] = Some(bin);
                outcome.rolling.insert(w);
            }
        }
        if day >= cur_day.saturating_sub(PREVIOUS_PERIODS_KEPT) {
            targets[DAY] = Some(day);
            outcome.day = true;
        }
        if month >= cur_month.saturating_sub(PREVIOUS_PERIODS_KEPT) {
            targets[MONTH] = Some(month);
            outcome.month = true;
        }
        if let Some(state) = self.keys.get_mut(key.query()) {
            apply(state, &targets, amounts)?;
            state.tz = tz;
        } else if targets.iter().any(Option::is_some) {
            let mut state = KeyState::new(tz);
            apply(&mut state, &targets, amounts)?;
            self.keys.insert(key.to_key(&mut self.strings), state);
        }
        Ok(outcome)
    }

    /// Takes `amounts`, added earlier at `event_time_ms`, back out of `key`'s windows and
    /// calendar totals (a correction replacing a counted estimate): from every bin and total
    /// that [`SpendWindows::add`] would target at `watermark_ms` and that exists; token and
    /// event counts are floored at zero. On error nothing changed.
    pub fn subtract<L>(
        &mut self,
        key: &L,
        event_time_ms: i64,
        amounts: &Amounts,
        tz: Tz,
        watermark_ms: i64,
    ) -> Result<(), WindowError>
    where
        L: KeyLookup<K> + ?Sized,
        K: Borrow<L::Query>,
    {
        let (day, month) = local_periods(event_time_ms, tz)?;
        let (cur_day, cur_month) = self.current(watermark_ms, tz);
        let mut targets: Targets = [None; 6];
        for w in Window::ALL {
            let bin = w.bin_of(event_time_ms);
            if bin > w.last_uncovered_bin(watermark_ms) {
                targets[w.index()] = Some(bin);
            }
        }
        if day >= cur_day.saturating_sub(PREVIOUS_PERIODS_KEPT) {
            targets[DAY] = Some(day);
        }
        if month >= cur_month.saturating_sub(PREVIOUS_PERIODS_KEPT) {
            targets[MONTH] = Some(month);
        }
        let Some(state) = self.keys.get_mut(key.query()) else {
            return Ok(());
        };
        let mut pending: [Option<Pending>; 6] = [None; 6];
        for ((p, target), series) in pending.iter_mut().zip(&targets).zip(&state.series) {
            if let Some(index) = target {
                *p = series.prepare_sub(*index, amounts)?;
            }
        }
        for (p, series) in pending.into_iter().zip(state.series.iter_mut()) {
            if let Some(p) = p {
                series.commit(p);
            }
        }
        Ok(())
    }

    /// Adds a minute rollup read back from storage (see "Restore" in the module docs): the
    /// same as [`SpendWindows::add`] at `minute_start_ms`.
    pub fn restore_minute<L>(
        &mut self,
        key: &L,
        minute_start_ms: i64,
        amounts: &Amounts,
        tz: Tz,
        watermark_ms: i64,
    ) -> Result<AddOutcome, WindowError>
    where
        L: KeyLookup<K> + ?Sized,
        K: Borrow<L::Query>,
    {
        self.add(key, minute_start_ms, amounts, tz, watermark_ms)
    }

    /// Drops the bins no window ending at or after `watermark_ms` covers, the calendar
    /// periods older than the previous one, and the keys left with nothing current.
    pub fn evict(&mut self, watermark_ms: i64) -> EvictOutcome {
        let mut out = EvictOutcome::default();
        // Zones are few; compute each one's current periods once per call.
        let mut current: Vec<(Tz, (i64, i64))> = Vec::new();
        self.keys.retain(|_, state| {
            for w in Window::ALL {
                out.bins +=
                    state.series[w.index()].evict_through(w.last_uncovered_bin(watermark_ms));
            }
            let (cur_day, cur_month) = match current.iter().find(|(z, _)| *z == state.tz) {
                Some((_, p)) => *p,
                None => {
                    let p = current_periods(watermark_ms, state.tz);
                    current.push((state.tz, p));
                    p
                }
            };
            let keep_from = |cur: i64| cur.saturating_sub(PREVIOUS_PERIODS_KEPT);
            out.bins += state.series[DAY].evict_through(keep_from(cur_day).saturating_sub(1));
            out.bins += state.series[MONTH].evict_through(keep_from(cur_month).saturating_sub(1));
            let rolling_empty = state.series[..DAY].iter().all(SparseBins::is_empty);
            let has_current = |s: &SparseBins, cur: i64| s.last_index().is_some_and(|i| i >= cur);
            let keep = !rolling_empty
                || has_current(&state.series[DAY], cur_day)
                || has_current(&state.series[MONTH], cur_month);
            if !keep {
                out.keys += 1;
            }
            keep
        });
        if out.keys > 0 {
            self.strings.purge_unused();
            if self.keys.capacity() > 2 * self.keys.len().max(64) {
                self.keys.shrink_to_fit();
            }
        }
        out
    }

    /// The rolling window `window` of `key` ending at `end_ms` (see the module docs for
    /// which bins that is). Fails only if the sum overflows.
    pub fn rolling<L>(&self, key: &L, window: Window, end_ms: i64) -> Result<Amounts, WindowError>
    where
        L: KeyLookup<K> + ?Sized,
        K: Borrow<L::Query>,
    {
        match self.keys.get(key.query()) {
            Some(state) => rolling_of(state, window, end_ms),
            None => Ok(Amounts::ZERO),
        }
    }

    /// The total of `key` on the local date `date` (zero if not kept).
    pub fn day<L>(&self, key: &L, date: NaiveDate) -> Amounts
    where
        L: KeyLookup<K> + ?Sized,
        K: Borrow<L::Query>,
    {
        self.keys
            .get(key.query())
            .map_or(Amounts::ZERO, |s| s.series[DAY].get(day_index(date)))
    }

    /// The total of `key` in the local month `year`-`month` (zero if not kept).
    pub fn month<L>(&self, key: &L, year: i32, month: u32) -> Amounts
    where
        L: KeyLookup<K> + ?Sized,
        K: Borrow<L::Query>,
    {
        self.keys.get(key.query()).map_or(Amounts::ZERO, |s| {
            s.series[MONTH].get(month_index(year, month))
        })
    }

    /// The day or month total of `key` for the local period containing `instant_ms` in `tz`.
    pub fn calendar<L>(
        &self,
        key: &L,
        calendar: Calendar,
        instant_ms: i64,
        tz: Tz,
    ) -> Result<Amounts, WindowError>
    where
        L: KeyLookup<K> + ?Sized,
        K: Borrow<L::Query>,
    {
        let (day, month) = local_periods(instant_ms, tz)?;
        let Some(state) = self.keys.get(key.query()) else {
            return Ok(Amounts::ZERO);
        };
        Ok(match calendar {
            Calendar::Day => state.series[DAY].get(day),
            Calendar::Month => state.series[MONTH].get(month),
        })
    }

    /// The zone `key`'s calendar totals are kept in, if the key is held.
    pub fn zone_of<L>(&self, key: &L) -> Option<Tz>
    where
        L: KeyLookup<K> + ?Sized,
        K: Borrow<L::Query>,
    {
        self.keys.get(key.query()).map(|s| s.tz)
    }

    /// Every key held, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.keys.keys()
    }

    /// The keys of `tenant`, in no particular order. Scans every key.
    pub fn keys_of_tenant<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a K> + 'a {
        self.keys.keys().filter(move |k| k.tenant() == tenant)
    }

    /// Each key of `tenant` with its four rolling windows ending at `end_ms` and its day and
    /// month containing `end_ms` in the key's zone (e.g. for `GET /v1/live/tenants/{tenant}`,
    /// with `end_ms` the watermark). Unordered; scans every key.
    pub fn live_view(&self, tenant: &str, end_ms: i64) -> Result<Vec<LiveRow<K>>, WindowError> {
        self.keys
            .iter()
            .filter(|(k, _)| k.tenant() == tenant)
            .map(|(k, state)| {
                let mut rolling = [Amounts::ZERO; 4];
                for w in Window::ALL {
                    rolling[w.index()] = rolling_of(state, w, end_ms)?;
                }
                let (day, month) = local_periods(end_ms, state.tz)?;
                Ok(LiveRow {
                    key: k.clone(),
                    rolling,
                    day: state.series[DAY].get(day),
                    month: state.series[MONTH].get(month),
                })
            })
            .collect()
    }

    /// Drops every key for which `leaves` is true (e.g. the tenants of a revoked partition).
    pub fn remove_where(&mut self, leaves: impl Fn(&K) -> bool) {
        self.keys.retain(|k, _| !leaves(k));
    }

    /// Number of keys held.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Approximate heap bytes: the map's slots, every bin allocation and the interned
    /// strings; allocator overhead is not counted. Scans every key.
    pub fn heap_bytes(&self) -> usize {
        let slots = self.keys.capacity() * (std::mem::size_of::<(K, KeyState)>() + 1);
        let bins: usize = self.keys.values().map(KeyState::heap_bytes).sum();
        slots + bins + self.strings.heap_bytes()
    }
}

fn rolling_of(state: &KeyState, window: Window, end_ms: i64) -> Result<Amounts, WindowError> {
    let last = window.bin_of(end_ms);
    state.series[window.index()].sum(last - BINS_PER_WINDOW, last)
}

/// Adds `amounts` to every targeted bin, or to none if any would overflow.
fn apply(state: &mut KeyState, targets: &Targets, amounts: &Amounts) -> Result<(), WindowError> {
    let mut pending: [Option<Pending>; 6] = [None; 6];
    for ((p, target), series) in pending.iter_mut().zip(targets).zip(&state.series) {
        if let Some(index) = target {
            *p = Some(series.prepare(*index, amounts)?);
        }
    }
    for (p, series) in pending.into_iter().zip(state.series.iter_mut()) {
        if let Some(p) = p {
            series.commit(p);
        }
    }
    Ok(())
}

/// The local date of `ms` in `tz`, for callers building [`SpendWindows::day`] queries.
pub fn local_date(ms: i64, tz: Tz) -> Result<NaiveDate, WindowError> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&tz).date_naive())
        .ok_or(WindowError::TimeOutOfRange { ms })
}

/// The local (year, month) of `ms` in `tz`.
pub fn local_month(ms: i64, tz: Tz) -> Result<(i32, u32), WindowError> {
    local_date(ms, tz).map(|d| (d.year(), d.month()))
}

#[cfg(test)]
mod tests;
