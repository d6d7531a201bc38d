//! Local reservations: a call holds its worst-case cost against every budget it falls under
//! before it is forwarded, so that concurrent calls on this instance cannot together pass a
//! budget that each alone would fit.
//!
//! A call is admitted when, for each budget that constrains it (see
//! `ControlState::constrains`),
//!
//! ```text
//! open holds + settled-not-yet-published + estimate <= share × max(0, limit − known spend)
//! ```
//!
//! where "known spend" is the spend of the budget's latest STATE record (0 once its
//! calendar period has ended), and "settled-not-yet-published" is what calls settled on this
//! instance since: the aggregator publishes a new STATE only on a level change, so costs
//! settled here are counted locally until a record decided `settled_lag_ms` after them
//! arrives (by then the pipeline has counted them; see gateway/README.md for the bound).
//! Pure: the table, the catalog and the time are passed in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use foldhash::fast::RandomState;
use rust_decimal::Decimal;

use costpipe_pricing::Catalog;

use crate::core::estimate::{Cost, EstimateError};
use crate::core::state::{ControlState, RequestContext};
use crate::core::table::BudgetTable;

/// Reservation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// This instance's share of each budget's headroom, in (0, 1]; e.g. 1 / instances.
    pub share: Decimal,
    /// How long after a call settles the aggregator's STATE records are assumed to include
    /// its cost (emit + broker + aggregator latency, with margin), in milliseconds.
    pub settled_lag_ms: i64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            share: Decimal::ONE,
            settled_lag_ms: 10_000,
        }
    }
}

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The call's worst case does not fit this instance's share of a budget's headroom.
    #[error("budget {budget_id}: estimate {needed} {currency} exceeds the {available} {currency} left to this instance")]
    Budget {
        budget_id: Arc<str>,
        needed: Decimal,
        available: Decimal,
        currency: Arc<str>,
    },
    /// The estimate could not be converted into a budget's currency.
    #[error("budget {budget_id}: {source}")]
    Estimate {
        budget_id: Arc<str>,
        source: EstimateError,
    },
}

/// One budget's hold for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub budget_id: Arc<str>,
    /// In the budget's currency.
    pub amount: Decimal,
    pub currency: Arc<str>,
    /// The rate the estimate was converted at (1 when the currencies were the same).
    pub rate: Decimal,
}

/// An admitted call's holds; give it back to [`Ledger::settle`] or [`Ledger::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation holds budget until it is settled or released"]
pub struct Reservation {
    pub holds: Vec<Hold>,
}

#[derive(Debug, Default, Clone)]
struct Account {
    open: Decimal,
    /// (settled at, amount), oldest first.
    settled: VecDeque<(i64, Decimal)>,
    settled_sum: Decimal,
}

/// Settled costs within this many milliseconds of the newest are merged into one entry.
const SETTLED_BUCKET_MS: i64 = 1_000;
/// Most settled entries kept per budget; beyond it the two oldest are merged.
const MAX_SETTLED_ENTRIES: usize = 256;

impl Account {
    /// Records a settled cost. Merging keeps the later time of the merged entries, so a
    /// merged cost is dropped only once its latest part is included: memory stays bounded
    /// and the count errs towards holding, never towards admitting.
    fn record_settled(&mut self, at: i64, amount: Decimal) {
        self.settled_sum += amount;
        if let Some(back) = self.settled.back_mut() {
            if at.saturating_sub(back.0) < SETTLED_BUCKET_MS {
                back.0 = back.0.max(at);
                back.1 += amount;
                return;
            }
        }
        self.settled.push_back((at, amount));
        if self.settled.len() > MAX_SETTLED_ENTRIES {
            if let (Some(first), Some(second)) =
                (self.settled.pop_front(), self.settled.front_mut())
            {
                second.1 += first.1;
            }
        }
    }

    /// Drops settled costs the budget's state must include by now: those settled
    /// `lag` before the state was decided, and all of a period that has ended.
    fn prune(&mut self, state: &ControlState, lag_ms: i64, now_ms: i64) {
        let included_before = state.decided_at_ms.saturating_sub(lag_ms);
        let period_over = state.period_end_ms.filter(|_| state.expired(now_ms));
        while let Some(&(at, amount)) = self.settled.front() {
            let included = at <= included_before || period_over.is_some_and(|end| at < end);
            if !included {
                break;
            }
            self.settled.pop_front();
            self.settled_sum -= amount;
        }
    }
}

/// This instance's open holds and recently settled costs, per budget.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    config: LedgerConfig,
    accounts: HashMap<Arc<str>, Account, RandomState>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(config: LedgerConfig) -> Ledger {
        Ledger {
            config,
            accounts: HashMap::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// What this instance may still hold against `state` at `now_ms` (negative when already
    /// past its share).
    fn available(&mut self, state: &ControlState, now_ms: i64) -> Option<Decimal> {
        let lag = self.config.settled_lag_ms;
        let acct = self.accounts.entry(state.budget_id.clone()).or_default();
        acct.prune(state, lag, now_ms);
        let spend = if state.expired(now_ms) {
            Decimal::ZERO
        } else {
            state.spend
        };
        let headroom = state.limit.checked_sub(spend)?.max(Decimal::ZERO);
        headroom
            .checked_mul(self.config.share)?
            .checked_sub(acct.open)?
            .checked_sub(acct.settled_sum)
    }

    /// Holds `estimate` against every budget that applies to `ctx`, or nothing if any of
    /// them has no room for it.
    pub fn reserve(
        &mut self,
        table: &BudgetTable,
        ctx: &RequestContext<'_>,
        estimate: &Cost,
        catalog: &Catalog,
        now_ms: i64,
    ) -> Result<Reservation, Denied> {
        let mut holds = Vec::new();
        for state in table.constraining(ctx) {
            let converted = estimate
                .in_currency(catalog, &state.currency)
                .map_err(|source| Denied::Estimate {
                    budget_id: state.budget_id.clone(),
                    source,
                })?;
            let available = self.available(state, now_ms).unwrap_or(Decimal::ZERO);
            if converted.amount > available {
                return Err(Denied::Budget {
                    budget_id: state.budget_id.clone(),
                    needed: converted.amount,
                    available: available.max(Decimal::ZERO),
                    currency: state.currency.clone(),
                });
            }
            holds.push(Hold {
                budget_id: state.budget_id.clone(),
                amount: converted.amount,
                currency: state.currency.clone(),
                rate: converted.rate,
            });
        }
        for h in &holds {
            let acct = self.accounts.entry(h.budget_id.clone()).or_default();
            // Fits: `available` was computed with checked arithmetic from the same values.
            acct.open += h.amount;
        }
        Ok(Reservation { holds })
    }

    /// Releases the holds and records `actual` (converted into each budget's currency; at
    /// the hold's rate when the catalog has no rate) as settled at `now_ms`.
    pub fn settle(
        &mut self,
        reservation: Reservation,
        actual: &Cost,
        catalog: &Catalog,
        now_ms: i64,
    ) {
        for h in reservation.holds {
            let amount = actual
                .in_currency(catalog, &h.currency)
                .map(|c| c.amount)
                .ok()
                .or_else(|| actual.amount.checked_mul(h.rate))
                .unwrap_or(h.amount);
            let acct = self.accounts.entry(h.budget_id).or_default();
            acct.open -= h.amount;
            acct.record_settled(now_ms, amount);
        }
    }

    /// Settles a call whose actual cost is unknown (it could not be priced) at its holds:
    /// the worst case stays counted, never less.
    pub fn settle_as_held(&mut self, reservation: Reservation, now_ms: i64) {
        for h in reservation.holds {
            let acct = self.accounts.entry(h.budget_id).or_default();
            acct.open -= h.amount;
            acct.record_settled(now_ms, h.amount);
        }
    }

    /// Releases the holds of a call that cost nothing (refused before it reached the
    /// provider).
    pub fn release(&mut self, reservation: Reservation) {
        for h in reservation.holds {
            if let Some(acct) = self.accounts.get_mut(&h.budget_id) {
                acct.open -= h.amount;
            }
        }
    }

    /// Open holds and settled-not-yet-published cost of `budget_id`, in its currency.
    pub fn held(&self, budget_id: &str) -> (Decimal, Decimal) {
        self.accounts
            .get(budget_id)
            .map_or((Decimal::ZERO, Decimal::ZERO), |a| (a.open, a.settled_sum))
    }
}
