//! `BudgetTable`: the latest STATE per budget, indexed by tenant, and `decide()`.
//!
//! Applying is idempotent on `control_id` (a transition re-published after an aggregator
//! crash changes nothing, even when it arrives after a newer one) and the latest record per
//! budget wins, as compaction keeps it. Budgets scoped to a tenant are found with one hash
//! lookup; budgets without a tenant dimension (global, department-only…) are checked for
//! every request, so their number, not the number of tenants, is what `decide()` costs.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use costpipe_schemas::BudgetLevel;

use crate::core::decision::{Action, Decision};
use crate::core::state::{ControlState, RequestContext};

/// How many recent `control_id`s are remembered per budget to skip re-published ones.
const SEEN_IDS: usize = 8;

#[derive(Debug, Clone)]
struct Entry {
    state: ControlState,
    /// Recent transitions of this budget, newest last.
    seen: Vec<Arc<str>>,
}

/// What applying a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The budget's state is the record now.
    Updated,
    /// The record's `control_id` was already applied: nothing changed.
    Duplicate,
}

/// The budgets a gateway knows, and the decision they imply.
#[derive(Debug, Clone, Default)]
pub struct BudgetTable {
    /// Each budget's scope tenant (`None`: untenanted), to find its entry.
    tenant_of: HashMap<Arc<str>, Option<Box<str>>, RandomState>,
    /// Entries per scope tenant, stored inline so that `decide()` is one hash lookup and a
    /// contiguous scan.
    by_tenant: HashMap<Box<str>, Vec<Entry>, RandomState>,
    /// Entries whose scope has no tenant.
    untenanted: Vec<Entry>,
}

impl BudgetTable {
    fn list_mut(&mut self, tenant: Option<&str>) -> Option<&mut Vec<Entry>> {
        match tenant {
            Some(t) => self.by_tenant.get_mut(t),
            None => Some(&mut self.untenanted),
        }
    }

    fn entry_mut(&mut self, budget_id: &str) -> Option<&mut Entry> {
        let tenant = self.tenant_of.get(budget_id)?.clone();
        self.list_mut(tenant.as_deref())?
            .iter_mut()
            .find(|e| &*e.state.budget_id == budget_id)
    }

    /// Applies one STATE record.
    pub fn apply(&mut self, state: ControlState) -> Applied {
        let mut seen = Vec::new();
        if let Some(entry) = self.entry_mut(&state.budget_id) {
            if entry.seen.contains(&state.control_id) {
                return Applied::Duplicate;
            }
            if entry.state.scope.tenant() == state.scope.tenant() {
                if entry.seen.len() == SEEN_IDS {
                    entry.seen.remove(0);
                }
                entry.seen.push(state.control_id.clone());
                entry.state = state;
                return Applied::Updated;
            }
            // The budget moved to another tenant: re-index it, keeping its history.
            seen = std::mem::take(&mut entry.seen);
            self.remove(&state.budget_id.clone());
        }
        if seen.len() == SEEN_IDS {
            seen.remove(0);
        }
        seen.push(state.control_id.clone());
        let tenant: Option<Box<str>> = state.scope.tenant().map(Into::into);
        self.tenant_of
            .insert(state.budget_id.clone(), tenant.clone());
        let entry = Entry { state, seen };
        match tenant {
            Some(t) => self.by_tenant.entry(t).or_default().push(entry),
            None => self.untenanted.push(entry),
        }
        Applied::Updated
    }

    /// Forgets a budget (a tombstone on the control topic: the budget was deleted).
    pub fn remove(&mut self, budget_id: &str) -> Option<ControlState> {
        let tenant = self.tenant_of.remove(budget_id)?;
        let list = self.list_mut(tenant.as_deref())?;
        let i = list.iter().position(|e| &*e.state.budget_id == budget_id)?;
        let entry = list.swap_remove(i);
        if let Some(t) = tenant.as_deref() {
            if self.by_tenant.get(t).is_some_and(Vec::is_empty) {
                self.by_tenant.remove(t);
            }
        }
        Some(entry.state)
    }

    /// The state of `budget_id`.
    pub fn get(&self, budget_id: &str) -> Option<&ControlState> {
        let tenant = self.tenant_of.get(budget_id)?;
        let list = match tenant.as_deref() {
            Some(t) => self.by_tenant.get(t)?,
            None => &self.untenanted,
        };
        list.iter()
            .find(|e| &*e.state.budget_id == budget_id)
            .map(|e| &e.state)
    }

    /// Number of budgets known.
    pub fn len(&self) -> usize {
        self.tenant_of.len()
    }

    /// Whether no budget is known.
    pub fn is_empty(&self) -> bool {
        self.tenant_of.is_empty()
    }

    /// Every budget's state, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ControlState> {
        self.by_tenant
            .values()
            .flatten()
            .chain(&self.untenanted)
            .map(|e| &e.state)
    }

    /// The budgets that could match a request of `tenant`: its own and the untenanted ones.
    pub fn candidates<'a>(&'a self, tenant: &str) -> impl Iterator<Item = &'a ControlState> + 'a {
        let own = self.by_tenant.get(tenant).map(Vec::as_slice).unwrap_or(&[]);
        own.iter().chain(&self.untenanted).map(|e| &e.state)
    }

    /// The budgets that constrain `ctx` at `now_ms` (see [`ControlState::applies`]).
    pub fn applicable<'a>(
        &'a self,
        ctx: &'a RequestContext<'a>,
        now_ms: i64,
    ) -> impl Iterator<Item = &'a ControlState> + 'a {
        self.candidates(ctx.tenant)
            .filter(move |s| s.applies(ctx, now_ms))
    }

    /// The budgets that constrain `ctx` whether or not their period ended (see
    /// [`ControlState::constrains`]).
    pub fn constraining<'a>(
        &'a self,
        ctx: &'a RequestContext<'a>,
    ) -> impl Iterator<Item = &'a ControlState> + 'a {
        self.candidates(ctx.tenant)
            .filter(move |s| s.constrains(ctx))
    }

    /// The most restrictive action of the matching, non-shadow, non-expired budgets whose
    /// whitelist does not name the request's feature; `Allow` when none is above OK.
    pub fn decide(&self, ctx: &RequestContext<'_>, now_ms: i64) -> Decision {
        let mut best: Option<&ControlState> = None;
        for s in self.applicable(ctx, now_ms) {
            if s.level == BudgetLevel::Ok {
                continue;
            }
            if best.is_none_or(|b| more_restrictive(s, b, now_ms)) {
                best = Some(s);
            }
        }
        let Some(s) = best else {
            return Decision::ALLOW;
        };
        let action = match s.level {
            BudgetLevel::Ok | BudgetLevel::Warning => Action::Allow,
            BudgetLevel::Downgrade => match &s.downgrade_to {
                Some(model) => Action::Downgrade {
                    model: model.clone(),
                },
                // Conversion refuses this; kept total rather than panicking.
                None => Action::Allow,
            },
            BudgetLevel::Throttle => Action::Throttle {
                requests_per_minute: s.throttle_requests_per_minute.unwrap_or(0),
            },
            BudgetLevel::Block => Action::Block {
                retry_after_ms: s.retry_after_ms(now_ms),
            },
        };
        Decision {
            action,
            budget_id: Some(s.budget_id.clone()),
            reason: Some(s.reason.clone()),
        }
    }
}

/// Whether `a` restricts more than `b`: higher level; within THROTTLE the lower rate;
/// within BLOCK the longer wait; then the higher spend ratio; then the smaller budget id, so
/// that the answer does not depend on iteration order.
fn more_restrictive(a: &ControlState, b: &ControlState, now_ms: i64) -> bool {
    use std::cmp::Ordering;
    let by_level = a.level.cmp(&b.level);
    let within = match a.level {
        BudgetLevel::Throttle => b
            .throttle_requests_per_minute
            .cmp(&a.throttle_requests_per_minute),
        BudgetLevel::Block => a.retry_after_ms(now_ms).cmp(&b.retry_after_ms(now_ms)),
        _ => Ordering::Equal,
    };
    let ratio = |s: &ControlState| {
        if s.limit.is_zero() {
            None
        } else {
            s.spend.checked_div(s.limit)
        }
    };
    by_level
        .then(within)
        .then_with(|| ratio(a).cmp(&ratio(b)))
        .then_with(|| b.budget_id.cmp(&a.budget_id))
        == Ordering::Greater
}
