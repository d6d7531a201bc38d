//! A cost report (daily, weekly, monthly) assembled from cost groups of the period and of
//! the one before it: summary, breakdowns by model and department, the trend, and
//! optimisation suggestions, each with an estimated saving computed from the groups.
//! Pure: no I/O, no clock; the catalog is asked through [`Cheaper`].
//!
//! Suggestions (amounts in the price currency `currency`, exact `Decimal`s rounded once to
//! 12 places, half to even):
//! - `cache_more`: the prompt's cached share `C / (I + C)` (cached-input over all input
//!   tokens) is below 20 %. Saving: for each model, the input tokens that would have to be
//!   cached to reach 20 %, `max(0, 0.2·(I + C) − C)`, times the model's average saving per
//!   uncached input token, `S / I`, where `S` = Σ input tokens × (input − cached-input unit
//!   price) / 10^6 is what caching all of them would have saved.
//! - `downgrade_model`: a model whose outputs are short (on average fewer than
//!   [`SHORT_OUTPUT_TOKENS`] output tokens per request) and for which the catalog names a
//!   cheaper chat model of the same provider and currency (lower input and output price).
//!   Saving: its cost − the same tokens (every kind) and requests at the cheaper model's
//!   prices.
//! - `fastest_growing`: the model or department whose cost grew most against the previous
//!   period. Saving: the growth (what holding it at the previous level would save).

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use utoipa::ToSchema;

use crate::costs_store::TokenCounts;

/// Below this many output tokens per request on average, a model's outputs are short.
pub const SHORT_OUTPUT_TOKENS: u64 = 300;
/// The cached share of input below which caching more is suggested, in percent.
pub const CACHE_RATIO_PERCENT: u32 = 20;

/// Costs of one group (model × department × currencies) in one of the two periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `true`: the report's period; `false`: the one before.
    pub current: bool,
    pub model: String,
    pub department: String,
    pub currency: String,
    pub billing_currency: String,
    pub requests: u64,
    pub tokens: TokenCounts,
    pub cost: Decimal,
    pub billing_cost: Decimal,
    pub cache_savings: Decimal,
    pub billing_cache_savings: Decimal,
    /// Σ input tokens × (input − cached-input unit price) / 10^6, in `currency`.
    pub uncached_saving_potential: Decimal,
}

/// Unit prices of a cheaper model (per 1M tokens; per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheaperModel {
    pub name: String,
    pub input: Decimal,
    pub cached_input: Decimal,
    pub cache_write_5m: Decimal,
    pub cache_write_1h: Decimal,
    pub output: Decimal,
    pub reasoning: Decimal,
    pub per_request: Decimal,
}

/// The catalog's answer: the cheapest chat model of `model`'s provider and `currency`
/// priced below it, if any.
pub trait Cheaper {
    fn cheaper(&self, model: &str, currency: &str) -> Option<CheaperModel>;
}

/// Cost of one value of a breakdown, in one billing currency.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Breakdown {
    pub name: String,
    pub billing_currency: String,
    pub requests: u64,
    #[schema(value_type = String)]
    pub billing_cost: Decimal,
    /// In the previous period.
    #[schema(value_type = String)]
    pub previous_billing_cost: Decimal,
}

/// Totals in one billing currency.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    pub billing_currency: String,
    pub requests: u64,
    pub tokens: TokenCounts,
    #[schema(value_type = String)]
    pub billing_cost: Decimal,
    #[schema(value_type = String)]
    pub billing_cache_savings: Decimal,
    /// Cached-input over all input tokens, percent (2 places).
    #[schema(value_type = String)]
    pub cached_input_percent: Decimal,
    #[schema(value_type = String)]
    pub previous_billing_cost: Decimal,
    /// `billing_cost − previous_billing_cost`.
    #[schema(value_type = String)]
    pub change: Decimal,
    /// Change in percent of the previous period (2 places); `null` when it had no cost.
    #[schema(value_type = Option<String>)]
    pub change_percent: Option<Decimal>,
}

/// An optimisation suggestion.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Suggestion {
    /// `cache_more`, `downgrade_model` or `fastest_growing`.
    pub kind: String,
    /// What it is about: a model, or `model:<name>` / `department:<name>`.
    pub subject: String,
    /// The cheaper model (`downgrade_model`).
    pub alternative: Option<String>,
    pub message: String,
    /// Currency of `estimated_saving`.
    pub currency: String,
    #[schema(value_type = String)]
    pub estimated_saving: Decimal,
}

fn round12(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(12, RoundingStrategy::MidpointNearestEven)
        .normalize()
}

fn percent(part: Decimal, whole: Decimal) -> Option<Decimal> {
    if whole.is_zero() {
        return None;
    }
    part.checked_mul(Decimal::ONE_HUNDRED)
        .and_then(|p| p.checked_div(whole))
        .map(|p| p.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero))
}

fn summaries(groups: &[Group]) -> Vec<Summary> {
    let mut by: BTreeMap<String, Summary> = BTreeMap::new();
    for g in groups {
        let s = by
            .entry(g.billing_currency.clone())
            .or_insert_with(|| Summary {
                billing_currency: g.billing_currency.clone(),
                requests: 0,
                tokens: TokenCounts::default(),
                billing_cost: Decimal::ZERO,
                billing_cache_savings: Decimal::ZERO,
                cached_input_percent: Decimal::ZERO,
                previous_billing_cost: Decimal::ZERO,
                change: Decimal::ZERO,
                change_percent: None,
            });
        if g.current {
            s.requests += g.requests;
            s.tokens.add(&g.tokens);
            s.billing_cost += g.billing_cost;
            s.billing_cache_savings += g.billing_cache_savings;
        } else {
            s.previous_billing_cost += g.billing_cost;
        }
    }
    by.into_values()
        .map(|mut s| {
            s.change = s.billing_cost - s.previous_billing_cost;
            s.change_percent = percent(s.change, s.previous_billing_cost);
            let prompt = Decimal::from(s.tokens.input) + Decimal::from(s.tokens.cached_input);
            s.cached_input_percent =
                percent(Decimal::from(s.tokens.cached_input), prompt).unwrap_or_default();
            s
        })
        .collect()
}

fn breakdown(groups: &[Group], name: impl Fn(&Group) -> &str) -> Vec<Breakdown> {
    let mut by: BTreeMap<(String, String), Breakdown> = BTreeMap::new();
    for g in groups {
        let b = by
            .entry((name(g).to_string(), g.billing_currency.clone()))
            .or_insert_with(|| Breakdown {
                name: name(g).to_string(),
                billing_currency: g.billing_currency.clone(),
                requests: 0,
                billing_cost: Decimal::ZERO,
                previous_billing_cost: Decimal::ZERO,
            });
        if g.current {
            b.requests += g.requests;
            b.billing_cost += g.billing_cost;
        } else {
            b.previous_billing_cost += g.billing_cost;
        }
    }
    let mut out: Vec<Breakdown> = by.into_values().collect();
    out.sort_by(|a, b| {
        (
            &a.billing_currency,
            std::cmp::Reverse(a.billing_cost),
            &a.name,
        )
            .cmp(&(
                &b.billing_currency,
                std::cmp::Reverse(b.billing_cost),
                &b.name,
            ))
    });
    out
}

/// Current-period totals of one model in one price currency.
#[derive(Default)]
struct ModelUse {
    requests: u64,
    tokens: TokenCounts,
    cost: Decimal,
    potential: Decimal,
}

fn by_model(groups: &[Group]) -> BTreeMap<(String, String), ModelUse> {
    let mut by: BTreeMap<(String, String), ModelUse> = BTreeMap::new();
    for g in groups.iter().filter(|g| g.current) {
        let m = by.entry((g.model.clone(), g.currency.clone())).or_default();
        m.requests += g.requests;
        m.tokens.add(&g.tokens);
        m.cost += g.cost;
        m.potential += g.uncached_saving_potential;
    }
    by
}

fn cache_suggestions(models: &BTreeMap<(String, String), ModelUse>) -> Vec<Suggestion> {
    // Per price currency: the cached share and the saving of reaching 20 %.
    let mut by_currency: BTreeMap<&str, (u64, u64, Decimal)> = BTreeMap::new();
    for ((_, currency), m) in models {
        let c = by_currency.entry(currency).or_default();
        c.0 += m.tokens.input;
        c.1 += m.tokens.cached_input;
        if m.tokens.input > 0 {
            let prompt = Decimal::from(m.tokens.input) + Decimal::from(m.tokens.cached_input);
            let target = prompt * Decimal::from(CACHE_RATIO_PERCENT) / Decimal::ONE_HUNDRED;
            let missing = (target - Decimal::from(m.tokens.cached_input)).max(Decimal::ZERO);
            if let Some(s) = missing
                .checked_mul(m.potential)
                .and_then(|x| x.checked_div(Decimal::from(m.tokens.input)))
            {
                c.2 += s;
            }
        }
    }
    by_currency
        .into_iter()
        .filter_map(|(currency, (input, cached, saving))| {
            let prompt = input + cached;
            // cached / prompt < 20 %, compared without division.
            let low = prompt > 0 && cached * 100 < prompt * u64::from(CACHE_RATIO_PERCENT);
            let saving = round12(saving);
            (low && saving > Decimal::ZERO).then(|| Suggestion {
                kind: "cache_more".into(),
                subject: "prompt caching".into(),
                alternative: None,
                message: format!(
                    "{}% of input tokens were cached reads (under {CACHE_RATIO_PERCENT}%); caching repeated prompt prefixes up to {CACHE_RATIO_PERCENT}% would save about this much",
                    percent(Decimal::from(cached), Decimal::from(prompt)).unwrap_or_default()
                ),
                currency: currency.to_string(),
                estimated_saving: saving,
            })
        })
        .collect()
}

fn downgrade_suggestions(
    models: &BTreeMap<(String, String), ModelUse>,
    catalog: &dyn Cheaper,
) -> Vec<Suggestion> {
    let mut out = Vec::new();
    for ((model, currency), m) in models {
        if m.requests == 0 || m.tokens.output >= SHORT_OUTPUT_TOKENS * m.requests {
            continue;
        }
        let Some(c) = catalog.cheaper(model, currency) else {
            continue;
        };
        let t = &m.tokens;
        let per_m = |n: u64, p: Decimal| Decimal::from(n) * p / Decimal::from(1_000_000);
        let at_cheaper = per_m(t.input, c.input)
            + per_m(t.cached_input, c.cached_input)
            + per_m(t.cache_write_5m, c.cache_write_5m)
            + per_m(t.cache_write_1h, c.cache_write_1h)
            + per_m(t.output - t.reasoning.min(t.output), c.output)
            + per_m(t.reasoning.min(t.output), c.reasoning)
            + Decimal::from(m.requests) * c.per_request;
        let saving = round12(m.cost - at_cheaper);
        if saving > Decimal::ZERO {
            out.push(Suggestion {
                kind: "downgrade_model".into(),
                subject: model.clone(),
                alternative: Some(c.name.clone()),
                message: format!(
                    "{model} answered with {} output tokens per request on average (short); the same tokens at {} would cost this much less",
                    t.output / m.requests,
                    c.name
                ),
                currency: currency.clone(),
                estimated_saving: saving,
            });
        }
    }
    out
}

fn fastest_growing(models: &[Breakdown], departments: &[Breakdown]) -> Option<Suggestion> {
    models
        .iter()
        .map(|b| ("model", b))
        .chain(departments.iter().map(|b| ("department", b)))
        .map(|(dim, b)| (b.billing_cost - b.previous_billing_cost, dim, b))
        .filter(|(growth, _, _)| *growth > Decimal::ZERO)
        // Largest growth; ties to the first in name order.
        .max_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| (b.1, &b.2.name).cmp(&(a.1, &a.2.name)))
        })
        .map(|(growth, dim, b)| Suggestion {
            kind: "fastest_growing".into(),
            subject: format!("{dim}:{}", b.name),
            alternative: None,
            message: format!(
                "{dim} {} grew from {} to {} {}; holding it at the previous level would save the growth",
                b.name, b.previous_billing_cost, b.billing_cost, b.billing_currency
            ),
            currency: b.billing_currency.clone(),
            estimated_saving: growth,
        })
}

/// The assembled parts of a report.
pub struct Parts {
    pub summary: Vec<Summary>,
    pub by_model: Vec<Breakdown>,
    pub by_department: Vec<Breakdown>,
    pub suggestions: Vec<Suggestion>,
}

/// Assembles the report's parts from both periods' groups.
pub fn assemble(groups: &[Group], catalog: &dyn Cheaper) -> Parts {
    let by_model_b = breakdown(groups, |g| &g.model);
    let by_department = breakdown(groups, |g| &g.department);
    let models = by_model(groups);
    let mut suggestions = cache_suggestions(&models);
    suggestions.extend(downgrade_suggestions(&models, catalog));
    suggestions.extend(fastest_growing(&by_model_b, &by_department));
    Parts {
        summary: summaries(groups),
        by_model: by_model_b,
        by_department,
        suggestions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    struct Mini;
    impl Cheaper for Mini {
        fn cheaper(&self, model: &str, _currency: &str) -> Option<CheaperModel> {
            (model == "big").then(|| CheaperModel {
                name: "small".into(),
                input: dec!(0.1),
                cached_input: dec!(0.05),
                cache_write_5m: dec!(0),
                cache_write_1h: dec!(0),
                output: dec!(0.4),
                reasoning: dec!(0.4),
                per_request: dec!(0),
            })
        }
    }

    fn g(current: bool, model: &str, dept: &str, cost: Decimal) -> Group {
        Group {
            current,
            model: model.into(),
            department: dept.into(),
            currency: "USD".into(),
            billing_currency: "USD".into(),
            requests: 10,
            tokens: TokenCounts {
                input: 1_000_000,
                cached_input: 100_000,
                output: 1_000,
                ..TokenCounts::default()
            },
            cost,
            billing_cost: cost,
            cache_savings: Decimal::ZERO,
            billing_cache_savings: Decimal::ZERO,
            uncached_saving_potential: dec!(1.25),
        }
    }

    #[test]
    fn suggestions_carry_savings_computed_from_the_groups() {
        let groups = vec![
            g(true, "big", "eng", dec!(5)),
            g(false, "big", "eng", dec!(2)),
            g(true, "other", "ops", dec!(1)),
        ];
        let p = assemble(&groups, &Mini);
        assert_eq!(p.summary[0].billing_cost, dec!(6));
        assert_eq!(p.summary[0].change, dec!(4));
        assert_eq!(p.summary[0].change_percent, Some(dec!(200)));
        let kinds: Vec<&str> = p.suggestions.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["cache_more", "downgrade_model", "fastest_growing"]);
        // Per model: 0.2 × 1.1M − 0.1M = 120,000 tokens × 1.25 / 1M = 0.15; two models.
        assert_eq!(p.suggestions[0].estimated_saving, dec!(0.3));
        // big: 5 − (1M × 0.1 + 0.1M × 0.05 + 1,000 × 0.4) / 1M = 5 − 0.1054.
        assert_eq!(p.suggestions[1].estimated_saving, dec!(4.8946));
        assert_eq!(p.suggestions[1].alternative.as_deref(), Some("small"));
        // big grew 2 → 5 (3), department eng by as much: ties go to the first in
        // (dimension, name) order.
        assert_eq!(p.suggestions[2].subject, "department:eng");
        assert_eq!(p.suggestions[2].estimated_saving, dec!(3));
    }
}
