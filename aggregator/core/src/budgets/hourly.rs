//! Hourly spend of one budget's scope, in the budget's currency, per UTC clock hour and
//! whatever the budget's period: the input of the month-end forecast's trend and of spike
//! detection. It keeps the current hour and the `keep_hours` hours before it, knows since
//! which hour its history is complete, and the statistics of a trailing window (its sum and
//! squared deviations, in `Decimal`), cached for the hour last asked for.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// The UTC hour (index since the epoch) containing `ms`.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS)
}

/// Sum and spread of the spend of `n` consecutive hours, hours without spend counted as 0.
///
/// With `S = Σ xᵢ`, `sq_dev = Σ (n·xᵢ − S)²`, which is `n³·σ²` for the population standard
/// deviation σ: kept in this form so that comparisons need neither division nor a root, and
/// a constant spend has exactly zero spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailing {
    pub n: u32,
    pub sum: Decimal,
    pub sq_dev: Decimal,
}

impl Trailing {
    /// The hourly mean, `S / n`.
    pub fn mean(&self) -> Option<Decimal> {
        self.sum.checked_div(Decimal::from(self.n))
    }

    /// The population standard deviation, `√(sq_dev / n³)` (for display: decisions compare
    /// squares, see `spike::check`).
    pub fn sigma(&self) -> Option<Decimal> {
        use rust_decimal::MathematicalOps;
        let n = Decimal::from(self.n);
        let n3 = n.checked_mul(n)?.checked_mul(n)?;
        self.sq_dev.checked_div(n3)?.sqrt()
    }
}

/// Hourly spend of one budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourlySpend {
    /// Hour index → spend.
    hours: BTreeMap<i64, Decimal>,
    /// Hours kept before the current one.
    keep_hours: u32,
    /// The earliest hour any spend was seen in (spend too old to keep included): the scope's
    /// history starts there.
    first_hour: Option<i64>,
    /// Hours before this one may be missing: the window was widened after they were dropped.
    complete_from: i64,
    /// The trailing statistics last computed: (hour, n, statistics of the n hours before).
    cached: Option<(i64, u32, Trailing)>,
}

impl HourlySpend {
    /// Empty, keeping `keep_hours` hours before the current one; complete (a new budget's
    /// history is restored from the store before it is evaluated).
    pub fn new(keep_hours: u32) -> Self {
        HourlySpend {
            hours: BTreeMap::new(),
            keep_hours,
            first_hour: None,
            complete_from: i64::MIN,
            cached: None,
        }
    }

    /// Keeps `keep_hours` hours from now on. A wider window than before has a gap: the hours
    /// already dropped are unknown, so the history counts as complete only from the hour
    /// the old window started at `now_ms`.
    pub fn set_keep(&mut self, keep_hours: u32, now_ms: i64) {
        if keep_hours > self.keep_hours {
            let from = hour_of(now_ms) - i64::from(self.keep_hours);
            self.complete_from = self.complete_from.max(from);
        }
        self.keep_hours = keep_hours;
        self.cached = None;
    }

    /// Forgets nothing but declares the history before `now_ms`'s hour unknown (hourly spend
    /// started being kept now).
    pub fn unknown_before(&mut self, now_ms: i64) {
        self.complete_from = self.complete_from.max(hour_of(now_ms));
        self.cached = None;
    }

    /// The oldest hour kept at `now_ms`.
    fn oldest(&self, now_ms: i64) -> i64 {
        hour_of(now_ms) - i64::from(self.keep_hours)
    }

    /// Adds spend at `at_ms` (not kept when older than the window reaches at `now_ms`, but
    /// still evidence of history).
    pub fn add(&mut self, at_ms: i64, amount: Decimal, now_ms: i64) {
        let hour = hour_of(at_ms);
        self.first_hour = Some(self.first_hour.map_or(hour, |f| f.min(hour)));
        if hour < self.oldest(now_ms) {
            return;
        }
        if self.cached.is_some_and(|(h, _, _)| hour < h) {
            // Late spend in a window already summed.
            self.cached = None;
        }
        let slot = self.hours.entry(hour).or_insert(Decimal::ZERO);
        // A sum beyond `Decimal` saturates: it is beyond every limit and threshold anyway.
        *slot = slot.checked_add(amount).unwrap_or(Decimal::MAX);
    }

    /// Drops hours the window no longer reaches.
    pub fn evict(&mut self, now_ms: i64) {
        self.hours = self.hours.split_off(&self.oldest(now_ms));
    }

    /// Spend from the hour containing `from_ms` on.
    pub fn since(&self, from_ms: i64) -> Decimal {
        self.hours
            .range(hour_of(from_ms)..)
            .fold(Decimal::ZERO, |acc, (_, v)| {
                acc.checked_add(*v).unwrap_or(Decimal::MAX)
            })
    }

    /// Spend in hour `hour`.
    pub fn at(&self, hour: i64) -> Decimal {
        self.hours.get(&hour).copied().unwrap_or(Decimal::ZERO)
    }

    /// Whether the `n` hours before `hour` are all known: spend was first seen at or before
    /// the first of them (the scope existed through the whole window), none of them was lost
    /// to a narrower window, and they are kept.
    pub fn covers(&self, hour: i64, n: u32) -> bool {
        let first = hour - i64::from(n);
        n <= self.keep_hours
            && self.complete_from <= first
            && self.first_hour.is_some_and(|f| f <= first)
    }

    /// Statistics of the `n` hours before `hour`; `None` beyond `Decimal`.
    pub fn trailing(&mut self, hour: i64, n: u32) -> Option<Trailing> {
        if let Some((h, k, t)) = self.cached {
            if h == hour && k == n {
                return Some(t);
            }
        }
        let t = self.compute(hour, n)?;
        self.cached = Some((hour, n, t));
        Some(t)
    }

    fn compute(&self, hour: i64, n: u32) -> Option<Trailing> {
        let window = self.hours.range(hour - i64::from(n)..hour);
        let sum = window
            .clone()
            .try_fold(Decimal::ZERO, |acc, (_, v)| acc.checked_add(*v))?;
        let nd = Decimal::from(n);
        let mut with_spend = 0u32;
        let mut sq_dev = Decimal::ZERO;
        for (_, v) in window {
            let d = nd.checked_mul(*v)?.checked_sub(sum)?;
            sq_dev = sq_dev.checked_add(d.checked_mul(d)?)?;
            with_spend += 1;
        }
        // Each hour without spend deviates by exactly −S.
        let empty = Decimal::from(n.saturating_sub(with_spend));
        sq_dev = sq_dev.checked_add(sum.checked_mul(sum)?.checked_mul(empty)?)?;
        Some(Trailing { n, sum, sq_dev })
    }
}
