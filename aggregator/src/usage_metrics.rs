//! `UsageMetrics`: the run loop's side of the seeds' usage metrics. Each stored epoch's
//! [`EpochTally`] (computed by the epoch sink, off the consuming task) is applied here once:
//! a few map updates per (tenant, department, model) key, never per event.
//!
//! # What a count means
//! An event is counted when the epoch holding it is stored (its completion mark written), by
//! the process that stored it. Duplicates and dead letters are not usage events, and an
//! epoch rebuilt after a restart is counted only by the process that completes it, because
//! the one that crashed never completed it. Summed over instances, each stored event is
//! counted once, except the epochs completed by a process in the instant before it died
//! (never reported to its run loop); and like every Prometheus counter, these restart at
//! zero with the process (`rate()`/`increase()` handle the reset).
//!
//! # Labels
//! - `model`: the catalog key the event's model matched, or `unknown`; bounded by the
//!   catalog.
//! - `tenant`: the top `COSTPIPE_METRICS_MAX_TENANTS` tenants by USD cost counted by this
//!   process, the rest `other` ([`LabelCap`] states the rule).
//! - `department`: per named tenant, the top `COSTPIPE_METRICS_MAX_DEPARTMENTS` departments
//!   by the same rule, the rest `other`; `none` for events without one; always `other` under
//!   `tenant="other"`.
//!
//! So `llm_cost_usd_total` has at most (tenants + 1) x (departments + 1) x (models + 1)
//! series per instance. A demoted tenant's (or department's) series are removed, and its later
//! cost goes to `other`: the sum over labels of `rate()` stays right, a single series' history
//! starts when its name got a label.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use costpipe_aggregator_core::metrics::{
    ticks_to_f64, EpochTally, KeyTally, LabelCap, OTHER, TOKEN_TYPES,
};

use crate::telemetry::{
    CostLabels, Metrics, ModelLabel, ReasonLabel, TokenLabels, UnconvertedLabels,
};

/// The `department` label of events without a department.
pub const NO_DEPARTMENT: &str = "none";
/// The `model` label of events whose model is not in the catalog.
pub const UNKNOWN_MODEL: &str = "unknown";

/// Label caps (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub tenants: usize,
    pub departments: usize,
}

/// The exact totals behind the usage metrics, and the label caps.
pub struct UsageMetrics {
    metrics: Metrics,
    caps: Caps,
    tenants: LabelCap,
    /// Per named tenant.
    departments: HashMap<String, LabelCap>,
    /// Exact USD ticks of each `llm_cost_usd_total` series.
    cost: HashMap<CostLabels, i128>,
    /// Exact USD ticks of `request_cost_usd_sum`.
    cost_sum: i128,
    /// Exact amounts of `cost_unconverted_amount_total`, in their currency.
    unconverted: HashMap<UnconvertedLabels, Decimal>,
}

fn department_name(d: &str) -> &str {
    if d.is_empty() {
        NO_DEPARTMENT
    } else {
        d
    }
}

impl UsageMetrics {
    /// Empty totals feeding `metrics`.
    pub fn new(metrics: Metrics, caps: Caps) -> Self {
        UsageMetrics {
            metrics,
            caps,
            tenants: LabelCap::new(caps.tenants),
            departments: HashMap::new(),
            cost: HashMap::new(),
            cost_sum: 0,
            unconverted: HashMap::new(),
        }
    }

    /// Applies one stored epoch.
    pub fn record(&mut self, tally: &EpochTally) {
        self.settle_labels(tally);
        self.record_cost(tally);
        self.record_requests_and_tokens(tally);
        if tally.cost_count > 0 {
            self.cost_sum = self.cost_sum.saturating_add(tally.cost_ticks);
            self.metrics
                .request_cost_usd
                .add(&tally.cost_buckets, ticks_to_f64(self.cost_sum));
        }
        for (reason, n) in &tally.unpriced {
            self.metrics
                .events_unpriced
                .get_or_create(&ReasonLabel {
                    reason: (*reason).to_string(),
                })
                .inc_by(*n);
        }
        for u in &tally.unconverted {
            let labels = UnconvertedLabels {
                currency: u.currency.to_string(),
                reason: u.reason.to_string(),
            };
            self.metrics
                .cost_unconverted
                .get_or_create(&labels)
                .inc_by(u.events);
            let total = self.unconverted.entry(labels.clone()).or_default();
            // Beyond `Decimal` the amount stops growing; the event count goes on.
            *total = total.checked_add(u.amount).unwrap_or(*total);
            self.metrics
                .cost_unconverted_amount
                .get_or_create(&labels)
                .set(total.normalize().to_f64().unwrap_or(f64::MAX));
        }
        self.metrics.events_late.inc_by(tally.late);
    }

    /// Adds the epoch's weights to the caps, and removes the series of demoted names.
    fn settle_labels(&mut self, tally: &EpochTally) {
        for k in &tally.keys {
            self.tenants.add(&k.tenant, k.usd_ticks);
        }
        for demoted in self.tenants.settle() {
            self.departments.remove(&demoted);
            self.forget(|l| l.tenant == demoted);
        }
        let mut touched = BTreeSet::new();
        for k in &tally.keys {
            if !self.tenants.is_named(&k.tenant) {
                continue;
            }
            if !self.departments.contains_key(&k.tenant) {
                self.departments
                    .insert(k.tenant.clone(), LabelCap::new(self.caps.departments));
            }
            if let Some(cap) = self.departments.get_mut(&k.tenant) {
                cap.add(department_name(&k.department), k.usd_ticks);
            }
            touched.insert(k.tenant.as_str());
        }
        for tenant in touched {
            let demoted = match self.departments.get_mut(tenant) {
                Some(cap) => cap.settle(),
                None => continue,
            };
            for d in demoted {
                self.forget(|l| l.tenant == tenant && l.department == d);
            }
        }
    }

    fn forget(&mut self, drop: impl Fn(&CostLabels) -> bool) {
        let metrics = &self.metrics;
        self.cost.retain(|labels, _| {
            let keep = !drop(labels);
            if !keep {
                metrics.llm_cost_usd.remove(labels);
            }
            keep
        });
    }

    /// The labels a key's cost goes under.
    fn cost_labels(&self, k: &KeyTally) -> CostLabels {
        let tenant = self.tenants.label(&k.tenant);
        let department = if tenant == OTHER {
            OTHER
        } else {
            let d = department_name(&k.department);
            self.departments
                .get(&k.tenant)
                .map_or(OTHER, |cap| cap.label(d))
        };
        CostLabels {
            model: k.model.as_deref().unwrap_or(UNKNOWN_MODEL).to_string(),
            department: department.to_string(),
            tenant: tenant.to_string(),
        }
    }

    fn record_cost(&mut self, tally: &EpochTally) {
        let mut changed = Vec::new();
        for k in tally.keys.iter().filter(|k| k.usd_ticks != 0) {
            let labels = self.cost_labels(k);
            let total = self.cost.entry(labels.clone()).or_insert(0);
            *total = total.saturating_add(k.usd_ticks);
            changed.push(labels);
        }
        for labels in changed {
            if let Some(&ticks) = self.cost.get(&labels) {
                self.metrics
                    .llm_cost_usd
                    .get_or_create(&labels)
                    .set(ticks_to_f64(ticks));
            }
        }
    }

    fn record_requests_and_tokens(&self, tally: &EpochTally) {
        let mut by_model: BTreeMap<&str, (u64, [u64; 6])> = BTreeMap::new();
        for k in &tally.keys {
            let m = by_model
                .entry(k.model.as_deref().unwrap_or(UNKNOWN_MODEL))
                .or_default();
            m.0 += k.requests;
            for (sum, t) in m.1.iter_mut().zip(k.tokens) {
                *sum = sum.saturating_add(t);
            }
        }
        for (model, (requests, tokens)) in by_model {
            self.metrics
                .llm_requests
                .get_or_create(&ModelLabel {
                    model: model.to_string(),
                })
                .inc_by(requests);
            for (token_type, n) in TOKEN_TYPES.iter().zip(tokens) {
                if n > 0 {
                    self.metrics
                        .llm_tokens
                        .get_or_create(&TokenLabels {
                            model: model.to_string(),
                            token_type: (*token_type).to_string(),
                        })
                        .inc_by(n);
                }
            }
        }
    }
}

/// A budget's spend over its limit as a sample: `+Inf` for spend over a zero limit, 0 when
/// nothing is spent.
pub fn usage_ratio(spend: Decimal, limit: Decimal) -> f64 {
    if limit <= Decimal::ZERO {
        return if spend > Decimal::ZERO {
            f64::INFINITY
        } else {
            0.0
        };
    }
    // Normalized first: the sample then depends on the ratio's value, not its scale.
    spend
        .checked_div(limit)
        .and_then(|r| r.normalize().to_f64())
        .unwrap_or(f64::INFINITY)
}

/// The budgets `llm_budget_usage_ratio` exports: all of them up to `max`, else the `max`
/// highest ratios (ties: the smaller id), the ones an operator looks for.
pub fn top_ratios(mut ratios: Vec<(String, f64)>, max: usize) -> Vec<(String, f64)> {
    if ratios.len() > max {
        ratios.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ratios.truncate(max);
    }
    ratios
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(tenant: &str, department: &str, model: Option<&str>, usd_ticks: i128) -> KeyTally {
        KeyTally {
            tenant: tenant.into(),
            department: department.into(),
            model: model.map(Arc::from),
            requests: 1,
            tokens: [10, 1, 0, 0, 0, 0],
            usd_ticks,
        }
    }

    fn tally(keys: Vec<KeyTally>) -> EpochTally {
        let mut t = EpochTally {
            events: keys.len() as u64,
            ..EpochTally::default()
        };
        for k in &keys {
            if k.usd_ticks > 0 {
                t.cost_count += 1;
                t.cost_ticks += k.usd_ticks;
                t.cost_buckets[0] += 1;
            }
        }
        t.keys = keys;
        t
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    const USD: i128 = 1_000_000_000_000;

    #[test]
    fn tenants_beyond_the_cap_are_other_and_demotion_removes_series() {
        let m = Metrics::new();
        let mut u = UsageMetrics::new(
            m.clone(),
            Caps {
                tenants: 2,
                departments: 1,
            },
        );
        u.record(&tally(vec![
            key("a", "eng", Some("gpt-4o"), 5 * USD),
            key("a", "ops", Some("gpt-4o"), USD),
            key("a", "", None, 0),
            key("b", "", Some("gpt-4o"), 3 * USD),
            key("c", "x", Some("gpt-4o"), USD),
        ]));
        let text = m.encode();
        let cost = |labels: &str| sample(&text, &format!("llm_cost_usd_total{{{labels}}}"));
        assert_eq!(
            cost("model=\"gpt-4o\",department=\"eng\",tenant=\"a\""),
            Some(5.0)
        );
        // a's second department is beyond the department cap of 1.
        assert_eq!(
            cost("model=\"gpt-4o\",department=\"other\",tenant=\"a\""),
            Some(1.0)
        );
        assert_eq!(
            cost("model=\"gpt-4o\",department=\"none\",tenant=\"b\""),
            Some(3.0)
        );
        assert_eq!(
            cost("model=\"gpt-4o\",department=\"other\",tenant=\"other\""),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "llm_requests_total{model=\"gpt-4o\"}"),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, "llm_requests_total{model=\"unknown\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "llm_tokens_total{model=\"gpt-4o\",token_type=\"input\"}"
            ),
            Some(40.0)
        );
        assert_eq!(sample(&text, "request_cost_usd_sum"), Some(10.0));

        // c passes b (3 + 3 > 3 + 0): b's series go, c's cost is its own from now on.
        u.record(&tally(vec![key("c", "x", Some("gpt-4o"), 3 * USD)]));
        let text = m.encode();
        let cost = |labels: &str| sample(&text, &format!("llm_cost_usd_total{{{labels}}}"));
        assert_eq!(
            cost("model=\"gpt-4o\",department=\"none\",tenant=\"b\""),
            None
        );
        assert_eq!(
            cost("model=\"gpt-4o\",department=\"x\",tenant=\"c\""),
            Some(3.0)
        );
        assert_eq!(
            cost("model=\"gpt-4o\",department=\"other\",tenant=\"other\""),
            Some(1.0)
        );
        assert_eq!(sample(&text, "request_cost_usd_sum"), Some(13.0));
    }

    #[test]
    fn budget_ratios_are_capped_by_the_highest() {
        use rust_decimal_macros::dec;
        assert_eq!(usage_ratio(dec!(50), dec!(200)), 0.25);
        assert_eq!(usage_ratio(dec!(1), dec!(0)), f64::INFINITY);
        assert_eq!(usage_ratio(dec!(0), dec!(0)), 0.0);
        let all = vec![
            ("b".to_string(), 0.5),
            ("a".to_string(), 0.5),
            ("c".to_string(), 2.0),
            ("d".to_string(), 0.1),
        ];
        assert_eq!(top_ratios(all.clone(), 10), all);
        assert_eq!(
            top_ratios(all, 2),
            vec![("c".to_string(), 2.0), ("a".to_string(), 0.5)]
        );
    }

    #[test]
    fn money_totals_are_exact_decimals() {
        let m = Metrics::new();
        let mut u = UsageMetrics::new(
            m.clone(),
            Caps {
                tenants: 5,
                departments: 5,
            },
        );
        // 0.1 + 0.2 in ticks is exactly 0.3; in f64 increments it would not be.
        u.record(&tally(vec![key("a", "", Some("m"), USD / 10)]));
        u.record(&tally(vec![key("a", "", Some("m"), USD / 5)]));
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "llm_cost_usd_total{model=\"m\",department=\"none\",tenant=\"a\"}"
            ),
            Some(0.3)
        );
    }
}
