//! One budget's spend, in the budget's currency: per calendar period (keyed by the period's
//! start), or per bin of a rolling window. Bins are 1/60 of the window (1 min for 1 h, 24 min
//! for 24 h, 168 min for 7 d): the rolling sum at `now` covers the 60 bins ending with the
//! current one, so it may include up to one bin more than the exact window (the
//! granularity, as in the aggregator's windows). Spend of a period or bin that has already
//! left the window when it arrives is not counted for the budget (billing counts it).

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::calendar::PeriodSpec;

/// Bins per rolling window.
pub const BINS_PER_WINDOW: i64 = 60;

/// Spend accumulators of one budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spend {
    /// Period start → (period end, spend).
    Calendar(BTreeMap<i64, (i64, Decimal)>),
    /// Bin index → spend; bin `i` covers `[i·bin_ms, (i+1)·bin_ms)`.
    Rolling {
        bin_ms: i64,
        bins: BTreeMap<i64, Decimal>,
    },
}

/// A sum no longer fits a `Decimal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendOverflow;

impl Spend {
    /// Empty accumulators for `spec`.
    pub fn new(spec: &PeriodSpec) -> Spend {
        match spec {
            PeriodSpec::Calendar { .. } => Spend::Calendar(BTreeMap::new()),
            PeriodSpec::Rolling(w) => Spend::Rolling {
                bin_ms: w.millis() / BINS_PER_WINDOW,
                bins: BTreeMap::new(),
            },
        }
    }

    /// Adds `amount` spent at `at_ms`, unless its period or bin has already left the window
    /// at `now_ms`. Returns whether it was counted.
    pub fn add(
        &mut self,
        spec: &PeriodSpec,
        at_ms: i64,
        amount: Decimal,
        now_ms: i64,
    ) -> Result<bool, SpendOverflow> {
        match self {
            Spend::Calendar(periods) => {
                // The period of most events is the latest one; skip the zone arithmetic then.
                let known = periods
                    .range(..=at_ms)
                    .next_back()
                    .filter(|(_, (end, _))| at_ms < *end)
                    .map(|(start, (end, _))| (*start, *end));
                let (start, end) = match known {
                    Some(se) => se,
                    None => match spec.calendar_at(at_ms) {
                        Some(w) => (w.start_ms, w.end_ms),
                        None => return Ok(false),
                    },
                };
                if end <= now_ms {
                    return Ok(false);
                }
                let slot = &mut periods.entry(start).or_insert((end, Decimal::ZERO)).1;
                *slot = slot.checked_add(amount).ok_or(SpendOverflow)?;
                Ok(true)
            }
            Spend::Rolling { bin_ms, bins } => {
                let index = at_ms.div_euclid(*bin_ms);
                if index <= now_ms.div_euclid(*bin_ms) - BINS_PER_WINDOW {
                    return Ok(false);
                }
                let slot = bins.entry(index).or_insert(Decimal::ZERO);
                *slot = slot.checked_add(amount).ok_or(SpendOverflow)?;
                Ok(true)
            }
        }
    }

    /// Spend in the period containing `now_ms`, or in the rolling window ending at it.
    pub fn total(&self, spec: &PeriodSpec, now_ms: i64) -> Result<Decimal, SpendOverflow> {
        match self {
            Spend::Calendar(periods) => {
                let start = periods
                    .range(..=now_ms)
                    .next_back()
                    .filter(|(_, (end, _))| now_ms < *end)
                    .map(|(start, _)| *start)
                    .or_else(|| spec.calendar_at(now_ms).map(|w| w.start_ms));
                Ok(start
                    .and_then(|s| periods.get(&s))
                    .map_or(Decimal::ZERO, |(_, v)| *v))
            }
            Spend::Rolling { bin_ms, bins } => {
                let first = now_ms.div_euclid(*bin_ms) - BINS_PER_WINDOW + 1;
                bins.range(first..)
                    .try_fold(Decimal::ZERO, |acc, (_, v)| acc.checked_add(*v))
                    .ok_or(SpendOverflow)
            }
        }
    }

    /// Drops periods that ended and bins that left the window by `now_ms`.
    pub fn evict(&mut self, now_ms: i64) {
        match self {
            Spend::Calendar(periods) => periods.retain(|_, (end, _)| *end > now_ms),
            Spend::Rolling { bin_ms, bins } => {
                let first = now_ms.div_euclid(*bin_ms) - BINS_PER_WINDOW + 1;
                *bins = bins.split_off(&first);
            }
        }
    }

    /// For a rolling window: milliseconds from `now_ms` until the window's spend falls below
    /// `threshold` with no new spend (bins leaving oldest first). `None` for calendar periods
    /// or when it is already below.
    pub fn rolling_retry_after(&self, now_ms: i64, threshold: Decimal) -> Option<i64> {
        let Spend::Rolling { bin_ms, bins } = self else {
            return None;
        };
        let first = now_ms.div_euclid(*bin_ms) - BINS_PER_WINDOW + 1;
        let mut remaining = bins
            .range(first..)
            .try_fold(Decimal::ZERO, |acc, (_, v)| acc.checked_add(*v))?;
        if remaining < threshold {
            return None;
        }
        for (index, value) in bins.range(first..) {
            remaining -= *value;
            if remaining < threshold {
                return Some(((index + BINS_PER_WINDOW) * bin_ms - now_ms).max(0));
            }
        }
        None
    }
}
