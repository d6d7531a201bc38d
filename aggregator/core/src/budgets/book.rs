//! `BudgetBook`: every budget this instance knows, their spend, and what was last published
//! for each; the state machine that turns spend and time into control records.
//!
//! - [`BudgetBook::handle_spend`]: a priced event (or a restored spend row) updates every
//!   budget whose scope matches it, converted into the budget's currency at the catalog's
//!   rate dated at the event's time; matching budgets are re-evaluated.
//! - [`BudgetBook::handle_tick`]: every owned budget is re-evaluated, spend or not: period
//!   rollover, override expiry and rolling windows sliding recover here.
//! - Each change of level is one control record with a deterministic id
//!   ([`costpipe_schemas::control_id`]): after a crash the same transition gets the same id.
//! - FORECAST records (ticks, once per month) and SPIKE records (spend and ticks, once per
//!   budget and UTC hour, id from the budget and the hour) come from the hourly spend.
//!
//! Within one calendar period and one limit, spend never falls, so a lower level computed
//! there means spend not yet replayed (after a restart): it is held, never published as a
//! recovery. `set_hold_downward` holds rolling windows' recoveries the same way while the
//! shell replays, and spike detection too: a trailing window still being replayed would
//! look quieter than it was.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;

use costpipe_pricing::{convert, Catalog, PricedCost};
use costpipe_schemas::{
    control_id, control_id_at_rung, BudgetControl, BudgetDefinition, BudgetDefinitionError,
    BudgetLevel, ControlKind, Direction, FxRate, UsageEvent,
};

use super::budget::{Budget, Dimension};
use super::calendar::PeriodSpec;
use super::forecast;
use super::hourly::{hour_of, HourlySpend, HOUR_MS};
use super::ownership::tenant_partition;
use super::spend::Spend;
use super::spike;

/// What one event (or one restored row of summed events) spent, and on what.
#[derive(Debug, Clone, Copy)]
pub struct SpendFacts<'a> {
    pub tenant: &'a str,
    pub department: Option<&'a str>,
    pub user: Option<&'a str>,
    pub project: Option<&'a str>,
    pub feature: Option<&'a str>,
    /// The catalog model key (not the caller's string); `None` if unpriced.
    pub model: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub at_ms: i64,
    /// In `currency` (the tenant's billing currency).
    pub amount: Decimal,
    pub currency: &'a str,
    pub event_id: Option<&'a str>,
}

impl<'a> SpendFacts<'a> {
    /// The facts of a priced event: its billing cost, in its billing currency.
    pub fn of_event(event: &'a UsageEvent, priced: &'a PricedCost) -> Self {
        SpendFacts {
            tenant: &event.tenant_id,
            department: event.department.as_deref(),
            user: event.user_id.as_deref(),
            project: event.project_id.as_deref(),
            feature: event.feature.as_deref(),
            model: priced.price_model.as_deref(),
            api_key: event.labels.get("api_key").map(String::as_str),
            at_ms: event.event_time,
            amount: priced.billing_cost,
            currency: &priced.billing_currency,
            event_id: None,
        }
    }

    /// Whether `other` is spent on the same scope values, currency and instant (only the
    /// amount may differ): then the two count in exactly the same budgets and periods.
    pub fn same_place(&self, other: &SpendFacts<'_>) -> bool {
        self.tenant == other.tenant
            && self.department == other.department
            && self.user == other.user
            && self.project == other.project
            && self.feature == other.feature
            && self.model == other.model
            && self.api_key == other.api_key
            && self.at_ms == other.at_ms
            && self.currency == other.currency
    }

    fn value(&self, dim: Dimension) -> Option<&str> {
        match dim {
            Dimension::Tenant => Some(self.tenant),
            Dimension::Department => self.department,
            Dimension::User => self.user,
            Dimension::Project => self.project,
            Dimension::Model => self.model,
            Dimension::Feature => self.feature,
            Dimension::ApiKey => self.api_key,
        }
    }
}

/// How spend is counted.
#[derive(Clone, Copy)]
pub enum SpendMode<'p> {
    /// A live event: every matching budget counts it and is re-evaluated.
    Live,
    /// A row restored from the store: counted only by budgets waiting for their backfill
    /// that `for_budget` selects, and nothing is evaluated (that waits for
    /// [`BudgetBook::mark_backfilled`]).
    Restore(&'p dyn Fn(&Budget) -> bool),
}

impl std::fmt::Debug for SpendMode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpendMode::Live => f.write_str("Live"),
            SpendMode::Restore(_) => f.write_str("Restore"),
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookStats {
    /// (event, budget) pairs counted.
    pub matched: u64,
    /// Spend not counted for a budget: no exchange rate into its currency at the event time.
    pub unconverted: u64,
    /// Spend not counted: a sum beyond `Decimal`.
    pub overflowed: u64,
    /// Control records produced.
    pub controls: u64,
}

/// What was last published for a budget, as read back from a control record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Published {
    level: BudgetLevel,
    threshold: Decimal,
    /// Calendar: the period's start; rolling: the episode's start (when it left OK).
    period_key: i64,
    limit: Decimal,
}

impl Published {
    /// The rung of `ladder` this level is at: the rung with the same level and ratio, else
    /// the highest rung of the same level (the ladder was redefined).
    fn rung(&self, budget: &Budget) -> Option<usize> {
        if self.level == BudgetLevel::Ok {
            return None;
        }
        let rungs = &budget.ladder.rungs;
        rungs
            .iter()
            .position(|r| r.level == self.level && r.at == self.threshold)
            .or_else(|| rungs.iter().rposition(|r| r.level == self.level))
            .or_else(|| rungs.iter().rposition(|r| r.at <= self.threshold))
    }
}

#[derive(Debug)]
struct Entry {
    budget: Budget,
    spend: Spend,
    /// Rates used, by (from, to): the latest of each pair.
    fx: BTreeMap<(String, String), FxRate>,
    /// Spend before this instance took the budget has been restored (a budget created or
    /// taken over mid-period starts from what was already recorded).
    backfilled: bool,
    /// Hourly spend, for the forecast's trend (calendar months: the last 7 days) and spike
    /// detection (its trailing window); `None` when the budget needs neither.
    hours: Option<HourlySpend>,
}

/// Whether `budget` is forecast: calendar months only.
fn forecasts_month(budget: &Budget) -> bool {
    matches!(
        budget.period,
        PeriodSpec::Calendar {
            unit: costpipe_schemas::CalendarUnit::Month,
            ..
        }
    )
}

/// Hours of hourly spend `budget` needs kept before the current one.
fn hours_needed(budget: &Budget) -> Option<u32> {
    let month = forecasts_month(budget).then_some(forecast::TREND_HOURS);
    let spike = budget.spike.as_ref().map(|r| r.trailing_hours);
    month.max(spike)
}

/// The budgets of one tenant, indexed so that an event only meets budgets that can match
/// it: those naming the tenant alone, and those naming another dimension (the first of their
/// scope) whose value is the event's. With 10,000 budgets over a few tenants an event checks
/// a handful, not thousands.
#[derive(Debug, Default)]
struct TenantIndex {
    only: Vec<Arc<str>>,
    by_dim: HashMap<Dimension, HashMap<String, Vec<Arc<str>>>>,
}

/// Dimensions an event is looked up by, besides its tenant.
const INDEXED: [Dimension; 6] = [
    Dimension::Department,
    Dimension::User,
    Dimension::Project,
    Dimension::Model,
    Dimension::Feature,
    Dimension::ApiKey,
];

impl TenantIndex {
    fn slot(budget: &Budget) -> Option<(Dimension, &str)> {
        budget
            .scope
            .iter()
            .find(|(d, _)| *d != Dimension::Tenant)
            .map(|(d, v)| (*d, v.as_str()))
    }

    fn insert(&mut self, budget: &Budget) {
        let id = budget.id.clone();
        match Self::slot(budget) {
            None => self.only.push(id),
            Some((d, v)) => self
                .by_dim
                .entry(d)
                .or_default()
                .entry(v.to_string())
                .or_default()
                .push(id),
        }
    }

    fn remove(&mut self, budget: &Budget) {
        let id = &budget.id;
        match Self::slot(budget) {
            None => self.only.retain(|x| x != id),
            Some((d, v)) => {
                if let Some(values) = self.by_dim.get_mut(&d) {
                    if let Some(list) = values.get_mut(v) {
                        list.retain(|x| x != id);
                        if list.is_empty() {
                            values.remove(v);
                        }
                    }
                    if values.is_empty() {
                        self.by_dim.remove(&d);
                    }
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.only.is_empty() && self.by_dim.is_empty()
    }

    /// Budgets that may match `facts` (their whole scope is checked by the caller).
    fn candidates<'s>(&'s self, facts: &'s SpendFacts<'_>) -> impl Iterator<Item = &'s Arc<str>> {
        let by_dim = INDEXED.iter().filter_map(move |d| {
            let value = facts.value(*d)?;
            self.by_dim.get(d)?.get(value)
        });
        self.only.iter().chain(by_dim.flatten())
    }
}

/// The budgets state machine.
#[derive(Debug, Default)]
pub struct BudgetBook {
    entries: HashMap<Arc<str>, Entry>,
    by_tenant: HashMap<String, TenantIndex>,
    untenanted: BTreeSet<Arc<str>>,
    published: HashMap<Arc<str>, Published>,
    out: VecDeque<BudgetControl>,
    hold_downward: bool,
    /// (budget, period start) of forecasts already published.
    forecasts: BTreeSet<(Arc<str>, i64)>,
    /// Budget → the latest UTC hour a spike was published for.
    spikes: HashMap<Arc<str>, i64>,
    partitions: i32,
    assigned: BTreeSet<i32>,
    stats: BookStats,
}

/// Whether an instance holding `assigned` of `partitions` evaluates budgets of `tenant`
/// (a function of the fields, so that it can be asked while an entry is borrowed).
fn owns_in(partitions: i32, assigned: &BTreeSet<i32>, tenant: Option<&str>) -> bool {
    match tenant {
        Some(t) => assigned.contains(&tenant_partition(t, partitions)),
        None => partitions > 0 && (0..partitions).all(|p| assigned.contains(&p)),
    }
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn fmt(d: Decimal) -> String {
    d.normalize().to_string()
}

/// The episode a rolling record names: `rolling_1h@2026-11-30T10:00:00Z`.
fn parse_episode(label: &str) -> Option<i64> {
    let (_, at) = label.split_once('@')?;
    Some(DateTime::parse_from_rfc3339(at).ok()?.timestamp_millis())
}

impl BudgetBook {
    /// An empty book owning nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of budgets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no budgets.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counters since start.
    pub fn stats(&self) -> &BookStats {
        &self.stats
    }

    /// The budget `id`.
    pub fn get(&self, id: &str) -> Option<&Budget> {
        self.entries.get(id).map(|e| &e.budget)
    }

    /// Every budget id.
    pub fn ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.keys()
    }

    /// The level last published for `id`.
    pub fn published_level(&self, id: &str) -> Option<BudgetLevel> {
        self.published.get(id).map(|p| p.level)
    }

    /// Holds (or releases) downward transitions of rolling windows, and spike detection,
    /// while spend is being replayed after an assignment.
    pub fn set_hold_downward(&mut self, hold: bool) {
        self.hold_downward = hold;
    }

    /// The usage topic's partition count and the partitions this instance holds: a tenant's
    /// budgets are owned by the holder of the tenant's partition; budgets naming no tenant
    /// only by an instance holding every partition.
    pub fn set_assignment(&mut self, partitions: i32, assigned: BTreeSet<i32>) {
        self.partitions = partitions;
        self.assigned = assigned;
    }

    /// Whether this instance evaluates budgets of `tenant` (`None`: no tenant in scope).
    pub fn owns(&self, tenant: Option<&str>) -> bool {
        owns_in(self.partitions, &self.assigned, tenant)
    }

    /// Adds or replaces a budget (validated against `catalog`). A new budget, or one whose
    /// scope, period or currency changed, starts without spend and is not evaluated until
    /// [`Self::mark_backfilled`]: the shell restores what was already spent first. A budget
    /// whose only changes are limits, ladder, flags or overrides keeps its spend and is
    /// re-evaluated at once (a raised limit recovers now). Returns whether it needs a
    /// backfill.
    pub fn upsert(
        &mut self,
        def: BudgetDefinition,
        catalog: &Catalog,
        now_ms: i64,
    ) -> Result<bool, BudgetDefinitionError> {
        let budget = Budget::from_definition(def, catalog)?;
        let id = budget.id.clone();
        let keeps_spend = self.entries.get(&id).is_some_and(|e| {
            e.budget.scope == budget.scope
                && e.budget.period == budget.period
                && e.budget.currency == budget.currency
        });
        if keeps_spend {
            if let Some(e) = self.entries.get_mut(&id) {
                match (e.hours.as_mut(), hours_needed(&budget)) {
                    (Some(h), Some(keep)) => h.set_keep(keep, now_ms),
                    (None, Some(keep)) => {
                        // Spike detection turned on: no hourly history before now.
                        let mut h = HourlySpend::new(keep);
                        h.unknown_before(now_ms);
                        e.hours = Some(h);
                    }
                    (_, None) => e.hours = None,
                }
                e.budget = budget;
            }
            self.evaluate(&id, now_ms, None);
            return Ok(false);
        }
        self.unindex(&id);
        match &budget.tenant {
            Some(t) => self.by_tenant.entry(t.clone()).or_default().insert(&budget),
            None => {
                self.untenanted.insert(id.clone());
            }
        }
        let spend = Spend::new(&budget.period);
        let hours = hours_needed(&budget).map(HourlySpend::new);
        self.entries.insert(
            id,
            Entry {
                budget,
                spend,
                fx: BTreeMap::new(),
                backfilled: false,
                hours,
            },
        );
        Ok(true)
    }

    fn unindex(&mut self, id: &Arc<str>) {
        if let Some(old) = self.entries.remove(id) {
            match &old.budget.tenant {
                Some(t) => {
                    if let Some(index) = self.by_tenant.get_mut(t) {
                        index.remove(&old.budget);
                        if index.is_empty() {
                            self.by_tenant.remove(t);
                        }
                    }
                }
                None => {
                    self.untenanted.remove(id);
                }
            }
        }
    }

    /// Deletes a budget. If its last published level was not OK, a recovery to OK is
    /// published (gateways stop enforcing it).
    pub fn remove(&mut self, id: &str, now_ms: i64) {
        let id: Arc<str> = Arc::from(id);
        let owned = self
            .entries
            .get(&id)
            .is_some_and(|e| self.owns(e.budget.tenant.as_deref()));
        let entry = self.entries.get(&id).map(|e| e.budget.clone());
        self.unindex(&id);
        let Some(prev) = self.published.remove(&id) else {
            return;
        };
        let (Some(budget), true) = (entry, owned) else {
            return;
        };
        if prev.level == BudgetLevel::Ok {
            return;
        }
        let record = self.record(
            &budget,
            None,
            RecordFacts {
                previous: Some(prev.level),
                direction: Direction::Down,
                period_key: prev.period_key,
                limit: prev.limit,
                spend: Decimal::ZERO,
                now_ms,
                reason: format!("recovered: budget {id} deleted"),
                trigger: None,
                retry_after_ms: None,
                fx: Vec::new(),
            },
        );
        self.stats.controls += 1;
        self.out.push_back(record);
    }

    /// The shell has restored the budget's spend; it is evaluated from now on.
    pub fn mark_backfilled(&mut self, id: &str, now_ms: i64) {
        if let Some(e) = self.entries.get_mut(id) {
            e.backfilled = true;
        }
        self.evaluate(id, now_ms, None);
    }

    /// Marks every owned budget waiting for a backfill that `select` selects as restored,
    /// and evaluates them.
    pub fn mark_backfilled_where(&mut self, select: &dyn Fn(&Budget) -> bool, now_ms: i64) {
        for id in self.pending_backfill() {
            if self.entries.get(&id).is_some_and(|e| select(&e.budget)) {
                self.mark_backfilled(&id, now_ms);
            }
        }
    }

    /// Ids of budgets waiting for a backfill that this instance owns.
    pub fn pending_backfill(&self) -> Vec<Arc<str>> {
        let mut ids: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.backfilled && self.owns(e.budget.tenant.as_deref()))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Forgets the spend of budgets this instance no longer owns (after a revocation): their
    /// new owner restores it.
    pub fn drop_unowned(&mut self) {
        for e in self.entries.values_mut() {
            if !owns_in(self.partitions, &self.assigned, e.budget.tenant.as_deref()) {
                e.spend = Spend::new(&e.budget.period);
                // The restore on a later assignment brings the hours back too: kept, they
                // would count twice.
                e.hours = hours_needed(&e.budget).map(HourlySpend::new);
                e.backfilled = false;
            }
        }
    }

    /// Applies a record read back from the control topic (the latest per budget wins), so
    /// that this instance knows what was published, by itself before a crash or by the
    /// previous owner.
    pub fn restore_published(&mut self, control: &BudgetControl) {
        if control.kind == ControlKind::Forecast {
            if let Some(start) = control.period_start {
                self.forecasts
                    .insert((Arc::from(control.budget_id.as_str()), start));
            }
            return;
        }
        if control.kind == ControlKind::Spike {
            // A spike is decided in the hour it is about.
            let hour = hour_of(control.decided_at);
            let latest = self
                .spikes
                .entry(Arc::from(control.budget_id.as_str()))
                .or_insert(hour);
            *latest = (*latest).max(hour);
            return;
        }
        if control.kind != ControlKind::State {
            return;
        }
        let period_key = match control.period_start {
            Some(start) => start,
            None => parse_episode(&control.period).unwrap_or(0),
        };
        self.published.insert(
            Arc::from(control.budget_id.as_str()),
            Published {
                level: control.level,
                threshold: control.threshold.parse().unwrap_or(Decimal::ZERO),
                period_key,
                limit: control.limit.parse().unwrap_or(Decimal::ZERO),
            },
        );
    }

    /// Counts a priced event or a restored row (see [`SpendMode`]).
    pub fn handle_spend(
        &mut self,
        facts: &SpendFacts<'_>,
        catalog: &Catalog,
        now_ms: i64,
        mode: SpendMode<'_>,
    ) {
        let evaluate = matches!(mode, SpendMode::Live);
        let owns_untenanted = self.owns(None);
        let mut matched: Vec<Arc<str>> = Vec::new();
        let tenant_budgets = self
            .by_tenant
            .get(facts.tenant)
            .into_iter()
            .flat_map(|index| index.candidates(facts));
        let global = self.untenanted.iter().filter(|_| owns_untenanted);
        for id in tenant_budgets.chain(global) {
            let Some(entry) = self.entries.get_mut(id) else {
                continue;
            };
            if let SpendMode::Restore(select) = mode {
                if entry.backfilled || !select(&entry.budget) {
                    continue;
                }
            }
            if !entry
                .budget
                .scope
                .iter()
                .all(|(dim, value)| facts.value(*dim) == Some(value.as_str()))
            {
                continue;
            }
            let amount = if *entry.budget.currency == *facts.currency {
                Some(facts.amount)
            } else {
                let from: Arc<str> = Arc::from(facts.currency);
                catalog
                    .rate(&from, &entry.budget.currency, facts.at_ms)
                    .and_then(|rate| {
                        let converted = convert(facts.amount, rate.rate)?;
                        let date = DateTime::<Utc>::from_timestamp_millis(rate.from_ms)
                            .unwrap_or_default()
                            .format("%Y-%m-%d")
                            .to_string();
                        entry.fx.insert(
                            (
                                facts.currency.to_string(),
                                entry.budget.currency.to_string(),
                            ),
                            FxRate {
                                from: facts.currency.to_string(),
                                to: entry.budget.currency.to_string(),
                                rate: fmt(rate.rate),
                                date,
                            },
                        );
                        Some(converted)
                    })
            };
            let Some(amount) = amount else {
                self.stats.unconverted += 1;
                continue;
            };
            // Hours are the scope's, whatever the period: a spike's trailing window reaches
            // into periods that ended.
            if let Some(h) = entry.hours.as_mut() {
                h.add(facts.at_ms, amount, now_ms);
            }
            match entry
                .spend
                .add(&entry.budget.period, facts.at_ms, amount, now_ms)
            {
                Ok(true) => {
                    self.stats.matched += 1;
                    if evaluate {
                        matched.push(id.clone());
                    }
                }
                Ok(false) => {}
                Err(_) => self.stats.overflowed += 1,
            }
        }
        for id in matched {
            self.evaluate(&id, now_ms, facts.event_id);
            self.spike(&id, now_ms, facts.event_id);
        }
    }

    /// Re-evaluates every owned budget at `now_ms`, with or without new spend: period
    /// rollovers, expired overrides and rolling windows sliding become recoveries here;
    /// forecasts and spikes are checked.
    pub fn handle_tick(&mut self, now_ms: i64) {
        let mut ids: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.backfilled && self.owns(e.budget.tenant.as_deref()))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        for id in ids {
            if let Some(e) = self.entries.get_mut(&id) {
                e.spend.evict(now_ms);
                if let Some(h) = e.hours.as_mut() {
                    h.evict(now_ms);
                }
            }
            self.evaluate(&id, now_ms, None);
            self.forecast(&id, now_ms);
            self.spike(&id, now_ms, None);
        }
    }

    /// A FORECAST record, once per period, when a month's projected spend exceeds the limit
    /// it has not reached yet.
    fn forecast(&mut self, id: &Arc<str>, now_ms: i64) {
        let Some(entry) = self.entries.get(id) else {
            return;
        };
        let Some(hours) = &entry.hours else {
            return;
        };
        let budget = &entry.budget;
        if !forecasts_month(budget) {
            return;
        }
        let Some(window) = budget.period.calendar_at(now_ms) else {
            return;
        };
        if self.forecasts.contains(&(id.clone(), window.start_ms)) {
            return;
        }
        let Ok(spent) = entry.spend.total(&budget.period, now_ms) else {
            return;
        };
        let limit = budget.limit_at(now_ms);
        if spent >= limit {
            // Already over: the state says more than a forecast would.
            return;
        }
        let Some(projected) =
            forecast::project(spent, hours, window.start_ms, window.end_ms, now_ms)
        else {
            return;
        };
        if projected <= limit {
            return;
        }
        let level = self.published_level(id).unwrap_or(BudgetLevel::Ok);
        let fx = entry.fx.values().cloned().collect();
        let budget = budget.clone();
        let rung = self.published.get(id).and_then(|p| p.rung(&budget));
        let mut record = self.record(
            &budget,
            rung,
            RecordFacts {
                previous: Some(level),
                direction: Direction::Up,
                period_key: window.start_ms,
                limit,
                spend: spent,
                now_ms,
                reason: format!(
                    "projected {} {} by the end of {} is over the limit {}",
                    fmt(projected),
                    budget.currency,
                    window.label,
                    fmt(limit)
                ),
                trigger: None,
                retry_after_ms: None,
                fx,
            },
        );
        record.kind = ControlKind::Forecast;
        // One forecast per period: the id ignores the level.
        record.control_id = control_id(
            &budget.id,
            ControlKind::Forecast,
            window.start_ms,
            &fmt(limit),
            Direction::Up,
            BudgetLevel::Ok,
        );
        record.forecast_spend = Some(fmt(projected));
        record.method = Some(forecast::METHOD.to_string());
        self.forecasts.insert((id.clone(), window.start_ms));
        self.stats.controls += 1;
        self.out.push_back(record);
    }

    /// A SPIKE record, once per UTC hour, when the hour's spend so far is a spike against
    /// the trailing hours (`spike::check`). Not while replaying (the trailing hours may be
    /// short of spend still to come), nor before the trailing window is known: spend must
    /// have been seen at least `trailing_hours` before the hour.
    fn spike(&mut self, id: &Arc<str>, now_ms: i64, trigger: Option<&str>) {
        if self.hold_downward {
            return;
        }
        let hour = hour_of(now_ms);
        if self.spikes.get(id).is_some_and(|h| *h >= hour) {
            return;
        }
        // On every matching event: cheapest checks first, one lookup of the entry.
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let (Some(rule), Some(hours)) = (&entry.budget.spike, entry.hours.as_mut()) else {
            return;
        };
        let last = hours.at(hour);
        if last < rule.min_spend
            || !entry.backfilled
            || !owns_in(
                self.partitions,
                &self.assigned,
                entry.budget.tenant.as_deref(),
            )
            || !hours.covers(hour, rule.trailing_hours)
        {
            return;
        }
        let Some(trailing) = hours.trailing(hour, rule.trailing_hours) else {
            return;
        };
        let Some(fired) = spike::check(rule, last, &trailing) else {
            return;
        };
        let hour_start = hour * HOUR_MS;
        let reason = spike::reason(
            rule,
            fired,
            last,
            &trailing,
            &entry.budget.currency,
            &rfc3339(hour_start),
        );
        let method = rule.method();
        let budget = &entry.budget;
        let period_key = budget
            .period
            .calendar_at(now_ms)
            .map_or(hour_start, |w| w.start_ms);
        let spent = entry
            .spend
            .total(&budget.period, now_ms)
            .unwrap_or(Decimal::MAX);
        let limit = budget.limit_at(now_ms);
        let fx = entry.fx.values().cloned().collect();
        let budget = budget.clone();
        let level = self.published_level(id).unwrap_or(BudgetLevel::Ok);
        let rung = self.published.get(id).and_then(|p| p.rung(&budget));
        let mut record = self.record(
            &budget,
            rung,
            RecordFacts {
                previous: Some(level),
                direction: Direction::Up,
                period_key,
                limit,
                spend: spent,
                now_ms,
                reason,
                trigger: trigger.map(str::to_string),
                retry_after_ms: None,
                fx,
            },
        );
        record.kind = ControlKind::Spike;
        // One spike per budget and hour: the id names nothing else (not the limit, not the
        // level), so a re-decision after a crash gets the same one.
        record.control_id = control_id(
            &budget.id,
            ControlKind::Spike,
            hour_start,
            "",
            Direction::Up,
            BudgetLevel::Ok,
        );
        record.method = Some(method);
        self.spikes.insert(id.clone(), hour);
        self.stats.controls += 1;
        self.out.push_back(record);
    }

    /// The next control record to publish.
    pub fn poll_output(&mut self) -> Option<BudgetControl> {
        self.out.pop_front()
    }

    /// Current spend of budget `id` in its period or window at `now_ms`.
    pub fn spend_of(&self, id: &str, now_ms: i64) -> Option<Decimal> {
        let e = self.entries.get(id)?;
        e.spend.total(&e.budget.period, now_ms).ok()
    }

    fn evaluate(&mut self, id: &str, now_ms: i64, trigger: Option<&str>) {
        let Some(entry) = self.entries.get(id) else {
            return;
        };
        if !entry.backfilled || !self.owns(entry.budget.tenant.as_deref()) {
            return;
        }
        let budget = &entry.budget;
        let ladder = &budget.ladder;
        let limit = budget.limit_at(now_ms);
        // Beyond `Decimal` is beyond every rung.
        let spend = entry
            .spend
            .total(&budget.period, now_ms)
            .unwrap_or(Decimal::MAX);
        let ratio = spend.checked_div(limit).unwrap_or(Decimal::MAX);
        let window = budget.period.calendar_at(now_ms);
        let prev = self.published.get(id);
        let prev_rung = prev.and_then(|p| p.rung(budget));
        let same_period = match (&window, prev) {
            (_, None) => false,
            (Some(w), Some(p)) => p.period_key == w.start_ms,
            (None, Some(_)) => true,
        };
        let mut rung = if same_period {
            ladder.next(prev_rung, ratio)
        } else {
            ladder.fresh(ratio)
        };
        if same_period && rung < prev_rung {
            let same_limit = prev.is_some_and(|p| p.limit == limit);
            if (window.is_some() && same_limit) || self.hold_downward {
                rung = prev_rung;
            }
        }
        let level = ladder.level(rung);
        let emit = match prev {
            None => level != BudgetLevel::Ok,
            Some(_) if same_period => rung != prev_rung,
            Some(p) => level != BudgetLevel::Ok || p.level != BudgetLevel::Ok,
        };
        if !emit {
            if let Some(p) = self.published.get_mut(id) {
                if same_period {
                    // The rung stands under a new limit: compare later levels with it.
                    p.limit = limit;
                }
            }
            return;
        }
        let direction = if same_period {
            if rung > prev_rung {
                Direction::Up
            } else {
                Direction::Down
            }
        } else if level == BudgetLevel::Ok {
            Direction::Down
        } else {
            Direction::Up
        };
        let period_key = match (&window, prev) {
            (Some(w), _) => w.start_ms,
            (None, Some(p)) if p.level != BudgetLevel::Ok => p.period_key,
            (None, _) => {
                let bin = match budget.period {
                    PeriodSpec::Rolling(w) => w.millis() / super::spend::BINS_PER_WINDOW,
                    PeriodSpec::Calendar { .. } => 1,
                };
                now_ms.div_euclid(bin) * bin
            }
        };
        let retry_after_ms = match (rung, &window) {
            (None, _) => None,
            (Some(_), Some(w)) => Some((w.end_ms - now_ms).max(0)),
            (Some(r), None) => {
                let drop_below = (ladder.rungs[r].at - ladder.hysteresis)
                    .checked_mul(limit)
                    .unwrap_or(Decimal::MAX);
                entry.spend.rolling_retry_after(now_ms, drop_below)
            }
        };
        let period_name = match &window {
            Some(w) => format!("{} {}", budget.period.kind_label(), w.label),
            None => budget.period.kind_label(),
        };
        let reason = if direction == Direction::Up {
            format!(
                "spend {} {} is {}% of the {period_name} limit {}",
                fmt(spend),
                budget.currency,
                fmt((ratio * Decimal::ONE_HUNDRED).round_dp(2)),
                fmt(limit)
            )
        } else if !same_period {
            format!("recovered: {period_name} started")
        } else if prev.is_some_and(|p| p.limit != limit) {
            format!(
                "recovered: limit now {} {}, spend {} is {}%",
                fmt(limit),
                budget.currency,
                fmt(spend),
                fmt((ratio * Decimal::ONE_HUNDRED).round_dp(2))
            )
        } else {
            format!(
                "recovered: the {period_name} window slid, spend {} {} is {}%",
                fmt(spend),
                budget.currency,
                fmt((ratio * Decimal::ONE_HUNDRED).round_dp(2))
            )
        };
        let fx = entry.fx.values().cloned().collect();
        let budget = budget.clone();
        let previous = prev.map(|p| p.level);
        let record = self.record(
            &budget,
            rung,
            RecordFacts {
                previous,
                direction,
                period_key,
                limit,
                spend,
                now_ms,
                reason,
                trigger: trigger.map(str::to_string),
                retry_after_ms,
                fx,
            },
        );
        self.published.insert(
            budget.id.clone(),
            Published {
                level,
                threshold: rung.map_or(Decimal::ZERO, |r| budget.ladder.rungs[r].at),
                period_key,
                limit,
            },
        );
        self.stats.controls += 1;
        self.out.push_back(record);
    }

    fn record(&self, budget: &Budget, rung: Option<usize>, f: RecordFacts) -> BudgetControl {
        let r = rung.and_then(|i| budget.ladder.rungs.get(i));
        let level = r.map_or(BudgetLevel::Ok, |r| r.level);
        let window = match budget.period {
            PeriodSpec::Calendar { .. } => budget.period.calendar_at(f.period_key),
            PeriodSpec::Rolling(_) => None,
        };
        let period = match &window {
            Some(w) => w.label.clone(),
            None => format!("{}@{}", budget.period.kind_label(), rfc3339(f.period_key)),
        };
        let limit = fmt(f.limit);
        let def = &budget.definition;
        // A level with several rungs (two `notify` thresholds) names the rung in the id, so
        // that each crossing is its own transition; other ids stay as they were.
        let threshold = r.map(|r| fmt(r.at));
        let shared_level = r.is_some_and(|r| {
            budget
                .ladder
                .rungs
                .iter()
                .filter(|other| other.level == r.level)
                .count()
                > 1
        });
        BudgetControl {
            control_id: control_id_at_rung(
                &budget.id,
                ControlKind::State,
                f.period_key,
                &limit,
                f.direction,
                level,
                threshold.as_deref().filter(|_| shared_level),
            ),
            budget_id: budget.id.to_string(),
            kind: ControlKind::State,
            scope: def.scope.clone(),
            tenant_id: budget.tenant.clone(),
            level,
            previous_level: f.previous,
            threshold: threshold.unwrap_or_else(|| "0".to_string()),
            throttle_requests_per_minute: r.and_then(|r| r.throttle_requests_per_minute),
            downgrade_to: r.and_then(|r| r.downgrade_to.clone()),
            retry_after_ms: f.retry_after_ms,
            spend: fmt(f.spend),
            limit,
            ratio: fmt(f.spend.checked_div(f.limit).unwrap_or(Decimal::MAX)),
            currency: budget.currency.to_string(),
            period_kind: budget.period.kind_label(),
            period,
            period_start: window.as_ref().map(|w| w.start_ms),
            period_end: window.as_ref().map(|w| w.end_ms),
            shadow: def.shadow,
            whitelist_features: def.whitelist_features.clone(),
            reason: f.reason,
            trigger_event_id: f.trigger,
            fx_rates: f.fx,
            forecast_spend: None,
            method: None,
            decided_at: f.now_ms,
        }
    }
}

struct RecordFacts {
    previous: Option<BudgetLevel>,
    direction: Direction,
    period_key: i64,
    limit: Decimal,
    spend: Decimal,
    now_ms: i64,
    reason: String,
    trigger: Option<String>,
    retry_after_ms: Option<i64>,
    fx: Vec<FxRate>,
}
