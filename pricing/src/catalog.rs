//! `Catalog`: a validated price catalog with its indexes. Built once per load; immutable
//! afterwards (a reload builds a new one and swaps it in whole).

use std::collections::HashMap;

/// Maps on the pricing hot path hash short strings; foldhash is several times faster than
/// SipHash there, and catalog keys are not attacker-chosen.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::path::Path;
use std::sync::Arc;

use chrono::DateTime;
use regex::Regex;
use rust_decimal::Decimal;

use crate::error::CatalogError;
use crate::file::{CatalogFile, ModelKind, PriceFields, PricePeriodFile};
use crate::window::{schedule, WeekSchedule, WindowSpec};

/// Largest number of decimal places of a price or rate (see the crate docs on exactness).
pub const MAX_PRICE_SCALE: u32 = 6;
/// Currencies prices and bills may be in.
pub const CURRENCIES: &[&str] = &["USD", "CNY", "EUR"];

/// Prices per 1,000,000 tokens (and `per_request` per call), with defaults resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    pub input: Decimal,
    pub output: Decimal,
    pub cached_input: Decimal,
    pub cache_write_5m: Decimal,
    pub cache_write_1h: Decimal,
    /// `None`: reasoning is output and priced as output.
    pub reasoning: Option<Decimal>,
    pub per_request: Decimal,
    /// The same prices as integers, for the hot path.
    pub ticks: PriceTicks,
}

/// Prices in integer units: per-million prices times 10^6 (exact: at most 6 decimal
/// places), so that `tokens * ticks` is a cost in 10^-12 units; `per_request` in 10^-12 units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceTicks {
    pub input: i128,
    pub output: i128,
    pub cached_input: i128,
    pub cache_write_5m: i128,
    pub cache_write_1h: i128,
    pub reasoning: Option<i128>,
    pub per_request: i128,
    /// The model's thinking-mode rule: a call with any reasoning bills its whole output at
    /// `reasoning` (set on every price of a model declaring `reasoning_bills_whole_output`).
    pub whole_output_at_reasoning: bool,
}

/// `d * 10^places` as an integer; exact for the validated scales.
fn ticks(d: Decimal, places: u32) -> i128 {
    let mut scaled = d;
    scaled.rescale(places);
    scaled.mantissa()
}

impl PriceTicks {
    fn of(
        input: Decimal,
        output: Decimal,
        cached: Decimal,
        w5: Decimal,
        w1: Decimal,
        r: Option<Decimal>,
        pr: Decimal,
    ) -> Self {
        PriceTicks {
            input: ticks(input, 6),
            output: ticks(output, 6),
            cached_input: ticks(cached, 6),
            cache_write_5m: ticks(w5, 6),
            cache_write_1h: ticks(w1, 6),
            reasoning: r.map(|r| ticks(r, 6)),
            per_request: ticks(pr, 12),
            whole_output_at_reasoning: false,
        }
    }
}

/// A long-context tier: above this many prompt tokens, `prices` replace the base prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub above_prompt_tokens: u64,
    pub prices: Prices,
}

/// Prices in force over `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricePeriod {
    pub from_ms: i64,
    pub to_ms: i64,
    pub source: String,
    /// The prices of a period without windows. A period with windows has no prices of its
    /// own; this then holds its first window's prices and is not used for pricing.
    pub base: Prices,
    /// Ascending thresholds.
    pub tiers: Vec<Tier>,
    /// Time-of-day windows (`None`: one price all week).
    pub windows: Option<WeekSchedule>,
}

/// The prices that apply to one call, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied<'a> {
    pub prices: &'a Prices,
    /// Threshold of the long-context tier, if one applies.
    pub tier_above: Option<u64>,
    /// The time-of-day window, if the period has windows.
    pub window: Option<&'a Arc<str>>,
}

impl PricePeriod {
    /// The prices for a call at `at_ms` with `prompt_tokens`: its window's, if the period
    /// has windows, else the highest tier the prompt exceeds, else the base.
    pub fn prices_at(&self, at_ms: i64, prompt_tokens: u64) -> Applied<'_> {
        if let Some(schedule) = &self.windows {
            let w = schedule.window_at(at_ms);
            return Applied {
                prices: &w.prices,
                tier_above: None,
                window: Some(&w.name),
            };
        }
        let (prices, tier_above) = self.prices_for(prompt_tokens);
        Applied {
            prices,
            tier_above,
            window: None,
        }
    }

    /// Every set of prices of the period: base, tiers and windows.
    pub fn all_prices(&self) -> impl Iterator<Item = &Prices> + '_ {
        let windows = self
            .windows
            .iter()
            .flat_map(|s| s.windows.iter().map(|w| &w.prices));
        std::iter::once(&self.base)
            .chain(self.tiers.iter().map(|t| &t.prices))
            .chain(windows)
    }

    /// The prices for a call with `prompt_tokens`: the highest tier it exceeds, else the base.
    pub fn prices_for(&self, prompt_tokens: u64) -> (&Prices, Option<u64>) {
        match self
            .tiers
            .iter()
            .rev()
            .find(|t| prompt_tokens > t.above_prompt_tokens)
        {
            Some(t) => (&t.prices, Some(t.above_prompt_tokens)),
            None => (&self.base, None),
        }
    }
}

/// One model.
#[derive(Debug, Clone)]
pub struct Model {
    pub key: Arc<str>,
    pub provider: String,
    pub kind: ModelKind,
    pub currency: Arc<str>,
    pub aliases: Vec<String>,
    /// A call with reasoning bills its whole output at the reasoning price (Qwen's
    /// thinking mode).
    pub reasoning_bills_whole_output: bool,
    /// Ascending, non-overlapping.
    pub periods: Vec<PricePeriod>,
}

/// The period of `periods` (ascending, non-overlapping) containing `at_ms`.
pub(crate) fn in_force<T>(items: &[T], at_ms: i64, range: impl Fn(&T) -> (i64, i64)) -> Option<&T> {
    let idx = items.partition_point(|i| range(i).0 <= at_ms);
    let candidate = items.get(idx.checked_sub(1)?)?;
    (at_ms < range(candidate).1).then_some(candidate)
}

impl Model {
    /// The price period in force at `at_ms`.
    pub fn period_at(&self, at_ms: i64) -> Option<&PricePeriod> {
        in_force(&self.periods, at_ms, |p| (p.from_ms, p.to_ms))
    }
}

#[derive(Debug, Clone)]
struct Pattern {
    regex: Regex,
    priority: i32,
    model: usize,
}

/// `1 from = rate to`, in force over `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRate {
    pub rate: Decimal,
    pub from_ms: i64,
    pub to_ms: i64,
    pub source: String,
}

/// A tenant's (or one department's) discount or markup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub department: Option<String>,
    pub percent: Decimal,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A tenant's own prices for a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractPrice {
    pub model: Arc<str>,
    pub currency: Arc<str>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub prices: Prices,
}

/// `(from, to)` currencies of an exchange rate.
type CurrencyPair = (Arc<str>, Arc<str>);

/// A validated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    version: String,
    default_billing_currency: Arc<str>,
    models: Vec<Model>,
    names: FastMap<String, usize>,
    patterns: Vec<Pattern>,
    /// Per currency pair; a handful of pairs, searched linearly (no key to build or hash on
    /// the hot path; currencies are interned, so the comparison is usually a pointer's).
    rates: Vec<(CurrencyPair, Vec<ExchangeRate>)>,
    tenants: FastMap<String, TenantTerms>,
}

/// Everything the catalog says about one tenant, found with one lookup per event.
#[derive(Debug, Clone, Default)]
pub struct TenantTerms {
    pub billing_currency: Option<Arc<str>>,
    pub adjustments: Vec<Adjustment>,
    pub contracts: Vec<ContractPrice>,
}

impl TenantTerms {
    /// The adjustment percent for `department` at `at_ms`: a department's own wins over the
    /// tenant-wide one.
    pub fn adjustment(&self, department: Option<&str>, at_ms: i64) -> Option<Decimal> {
        let live = |a: &&Adjustment| a.from_ms <= at_ms && at_ms < a.to_ms;
        let own = department.and_then(|d| {
            self.adjustments
                .iter()
                .filter(live)
                .find(|a| a.department.as_deref() == Some(d))
        });
        own.or_else(|| {
            self.adjustments
                .iter()
                .filter(live)
                .find(|a| a.department.is_none())
        })
        .map(|a| a.percent)
    }

    /// The contract price for `model` at `at_ms`.
    pub fn contract(&self, model: &str, at_ms: i64) -> Option<&ContractPrice> {
        self.contracts
            .iter()
            .find(|c| &*c.model == model && c.from_ms <= at_ms && at_ms < c.to_ms)
    }
}

fn currency(
    context: &str,
    code: &str,
    interned: &mut Vec<Arc<str>>,
) -> Result<Arc<str>, CatalogError> {
    if !CURRENCIES.contains(&code) {
        return Err(CatalogError::UnknownCurrency {
            context: context.to_string(),
            currency: code.to_string(),
            known: CURRENCIES.join(", "),
        });
    }
    if let Some(c) = interned.iter().find(|c| &***c == code) {
        return Ok(c.clone());
    }
    let c: Arc<str> = Arc::from(code);
    interned.push(c.clone());
    Ok(c)
}

fn millis(context: &str, value: &str) -> Result<i64, CatalogError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| CatalogError::BadTimestamp {
            context: context.to_string(),
            value: value.to_string(),
            error: e.to_string(),
        })
}

fn range(context: &str, from: &str, to: Option<&str>) -> Result<(i64, i64), CatalogError> {
    let from_ms = millis(context, from)?;
    let to_ms = match to {
        Some(t) => millis(context, t)?,
        None => i64::MAX,
    };
    if to_ms <= from_ms {
        return Err(CatalogError::EmptyRange {
            context: context.to_string(),
            from: from.to_string(),
            to: to.unwrap_or_default().to_string(),
        });
    }
    Ok((from_ms, to_ms))
}

fn show_range(r: (i64, i64)) -> String {
    let show = |ms: i64| {
        if ms == i64::MAX {
            "open".to_string()
        } else {
            DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| t.to_rfc3339())
        }
    };
    format!("{}, {}", show(r.0), show(r.1))
}

/// Sorts by start and rejects overlaps.
fn sort_disjoint<T>(
    context: &str,
    items: &mut [T],
    range: impl Fn(&T) -> (i64, i64),
) -> Result<(), CatalogError> {
    items.sort_by_key(|i| range(i).0);
    for pair in items.windows(2) {
        let (a, b) = (range(&pair[0]), range(&pair[1]));
        if b.0 < a.1 {
            return Err(CatalogError::OverlappingRanges {
                context: context.to_string(),
                first: show_range(a),
                second: show_range(b),
            });
        }
    }
    Ok(())
}

fn check_price(
    context: &str,
    field: &'static str,
    value: Decimal,
) -> Result<Decimal, CatalogError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(CatalogError::NegativePrice {
            context: context.to_string(),
            field,
            value: value.to_string(),
        });
    }
    if value.normalize().scale() > MAX_PRICE_SCALE {
        return Err(CatalogError::TooPrecise {
            context: context.to_string(),
            field,
            value: value.to_string(),
            max: MAX_PRICE_SCALE,
        });
    }
    Ok(value.normalize())
}

/// Resolves defaults: cached input and 5-minute cache writes cost `input` unless priced;
/// 1-hour cache writes cost the 5-minute price unless priced; `per_request` is `inherit`'s
/// (zero for list prices) unless priced.
fn prices(
    context: &str,
    f: &PriceFields,
    per_request_default: Decimal,
) -> Result<Prices, CatalogError> {
    let required = |field: &'static str, v: Option<Decimal>| {
        v.ok_or_else(|| CatalogError::MissingPrice {
            context: context.to_string(),
            field,
        })
        .and_then(|v| check_price(context, field, v))
    };
    let optional = |field: &'static str, v: Option<Decimal>| {
        v.map(|v| check_price(context, field, v)).transpose()
    };
    let input = required("input", f.input)?;
    let output = required("output", f.output)?;
    let cached_input = optional("cached_input", f.cached_input)?.unwrap_or(input);
    let cache_write_5m = optional("cache_write_5m", f.cache_write_5m)?.unwrap_or(input);
    let cache_write_1h = optional("cache_write_1h", f.cache_write_1h)?.unwrap_or(cache_write_5m);
    let reasoning = optional("reasoning", f.reasoning)?;
    let per_request = optional("per_request", f.per_request)?.unwrap_or(per_request_default);
    Ok(Prices {
        input,
        output,
        cached_input,
        cache_write_5m,
        cache_write_1h,
        reasoning,
        per_request,
        ticks: PriceTicks::of(
            input,
            output,
            cached_input,
            cache_write_5m,
            cache_write_1h,
            reasoning,
            per_request,
        ),
    })
}

/// Applies a model's thinking rule to `p`: with the rule, a `reasoning` price is required.
fn thinking_rule(context: &str, mut p: Prices, rule: bool) -> Result<Prices, CatalogError> {
    if rule && p.reasoning.is_none() {
        return Err(CatalogError::MissingPrice {
            context: format!("{context} (reasoning_bills_whole_output is set)"),
            field: "reasoning",
        });
    }
    p.ticks.whole_output_at_reasoning = rule;
    Ok(p)
}

/// A period's windows, validated: no token prices or tiers beside them, and together they
/// cover the week exactly once.
fn windows(
    context: &str,
    p: &PricePeriodFile,
    rule: bool,
) -> Result<Option<WeekSchedule>, CatalogError> {
    if p.windows.is_empty() {
        return Ok(None);
    }
    if !p.tiers.is_empty() {
        return Err(CatalogError::WindowsWithTiers {
            context: context.to_string(),
        });
    }
    let f = p.price_fields();
    let own = [
        ("input", f.input),
        ("output", f.output),
        ("cached_input", f.cached_input),
        ("cache_write_5m", f.cache_write_5m),
        ("cache_write_1h", f.cache_write_1h),
        ("reasoning", f.reasoning),
        ("per_request", f.per_request),
    ];
    if let Some((field, _)) = own.iter().find(|(_, v)| v.is_some()) {
        return Err(CatalogError::WindowsWithPrices {
            context: context.to_string(),
            field,
        });
    }
    let mut specs = Vec::with_capacity(p.windows.len());
    for w in &p.windows {
        let wctx = format!("{context} window {:?}", w.name);
        specs.push(WindowSpec {
            name: &w.name,
            prices: thinking_rule(
                &wctx,
                prices(&wctx, &w.price_fields(), Decimal::ZERO)?,
                rule,
            )?,
            times: w
                .times
                .iter()
                .map(|t| (t.days.as_slice(), t.from.as_str(), t.to.as_str()))
                .collect(),
        });
    }
    schedule(context, specs).map(Some)
}

impl Catalog {
    /// The catalog shipped with costpipe.
    pub const DEFAULT_TOML: &'static str = include_str!("../catalog/default.toml");

    /// Parses and validates a catalog.
    pub fn from_toml(text: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        let mut interned = Vec::new();
        let default_billing_currency = currency(
            "default_billing_currency",
            &file.default_billing_currency,
            &mut interned,
        )?;

        let mut models = Vec::with_capacity(file.models.len());
        let mut names: FastMap<String, usize> = FastMap::default();
        for (i, m) in file.models.iter().enumerate() {
            let ctx = format!("model {}", m.key);
            let model_currency = currency(&ctx, &m.currency, &mut interned)?;
            let mut periods = Vec::with_capacity(m.prices.len());
            let rule = m.reasoning_bills_whole_output;
            for p in &m.prices {
                let (from_ms, to_ms) = range(&ctx, &p.effective_from, p.effective_to.as_deref())?;
                let pctx = format!("{ctx} period from {}", p.effective_from);
                let windows = windows(&pctx, p, rule)?;
                let base = match &windows {
                    Some(s) => s.windows[0].prices.clone(),
                    None => {
                        thinking_rule(&ctx, prices(&ctx, &p.price_fields(), Decimal::ZERO)?, rule)?
                    }
                };
                let mut tiers = Vec::with_capacity(p.tiers.len());
                for t in &p.tiers {
                    let tctx = format!("{ctx} tier above {}", t.above_prompt_tokens);
                    tiers.push(Tier {
                        above_prompt_tokens: t.above_prompt_tokens,
                        prices: thinking_rule(
                            &tctx,
                            prices(&tctx, &t.price_fields(), base.per_request)?,
                            rule,
                        )?,
                    });
                }
                tiers.sort_by_key(|t| t.above_prompt_tokens);
                if let Some(w) = tiers
                    .windows(2)
                    .find(|w| w[0].above_prompt_tokens == w[1].above_prompt_tokens)
                {
                    return Err(CatalogError::DuplicateTier {
                        model: m.key.clone(),
                        threshold: w[0].above_prompt_tokens,
                    });
                }
                periods.push(PricePeriod {
                    from_ms,
                    to_ms,
                    source: p.source.clone(),
                    base,
                    tiers,
                    windows,
                });
            }
            if periods.is_empty() {
                return Err(CatalogError::NoPrices {
                    model: m.key.clone(),
                });
            }
            sort_disjoint(&ctx, &mut periods, |p| (p.from_ms, p.to_ms))?;
            for name in std::iter::once(&m.key).chain(&m.aliases) {
                if let Some(&j) = names.get(name) {
                    return Err(CatalogError::DuplicateName {
                        name: name.clone(),
                        first: file.models[j].key.clone(),
                        second: m.key.clone(),
                    });
                }
                names.insert(name.clone(), i);
            }
            models.push(Model {
                key: Arc::from(m.key.as_str()),
                provider: m.provider.clone(),
                kind: m.kind,
                currency: model_currency,
                aliases: m.aliases.clone(),
                reasoning_bills_whole_output: rule,
                periods,
            });
        }

        let mut patterns = Vec::new();
        for (i, m) in file.models.iter().enumerate() {
            for p in &m.patterns {
                let regex = Regex::new(&p.regex).map_err(|e| CatalogError::InvalidRegex {
                    model: m.key.clone(),
                    regex: p.regex.clone(),
                    error: e.to_string(),
                })?;
                if let Some(example) = p.examples.iter().find(|e| !regex.is_match(e)) {
                    return Err(CatalogError::ExampleDoesNotMatch {
                        model: m.key.clone(),
                        regex: p.regex.clone(),
                        example: example.clone(),
                    });
                }
                patterns.push(Pattern {
                    regex,
                    priority: p.priority,
                    model: i,
                });
            }
        }
        patterns.sort_by_key(|p| std::cmp::Reverse(p.priority));
        check_patterns_unambiguous(&file, &patterns)?;

        let mut rates: HashMap<(Arc<str>, Arc<str>), Vec<ExchangeRate>> = HashMap::new();
        for r in &file.exchange_rates {
            let ctx = format!("exchange rate {}->{}", r.from, r.to);
            let from = currency(&ctx, &r.from, &mut interned)?;
            let to = currency(&ctx, &r.to, &mut interned)?;
            if r.rate <= Decimal::ZERO {
                return Err(CatalogError::InvalidRate {
                    from: r.from.clone(),
                    to: r.to.clone(),
                    rate: r.rate.to_string(),
                });
            }
            let rate = check_price(&ctx, "rate", r.rate)?;
            let (from_ms, to_ms) = range(&ctx, &r.effective_from, r.effective_to.as_deref())?;
            rates.entry((from, to)).or_default().push(ExchangeRate {
                rate,
                from_ms,
                to_ms,
                source: r.source.clone(),
            });
        }
        for (pair, list) in rates.iter_mut() {
            sort_disjoint(
                &format!("exchange rate {}->{}", pair.0, pair.1),
                list,
                |r| (r.from_ms, r.to_ms),
            )?;
        }

        let mut tenant_currency = HashMap::new();
        for t in &file.tenants {
            tenant_currency.insert(
                t.id.clone(),
                currency(
                    &format!("tenant {}", t.id),
                    &t.billing_currency,
                    &mut interned,
                )?,
            );
        }

        let mut adjustments: HashMap<String, Vec<Adjustment>> = HashMap::new();
        for a in &file.adjustments {
            if a.percent <= Decimal::from(-100) {
                return Err(CatalogError::InvalidAdjustment {
                    tenant: a.tenant.clone(),
                    percent: a.percent.to_string(),
                });
            }
            let ctx = format!("adjustment of tenant {}", a.tenant);
            let (from_ms, to_ms) = range(&ctx, &a.effective_from, a.effective_to.as_deref())?;
            let percent =
                check_price(&ctx, "percent", a.percent.abs()).map(|_| a.percent.normalize())?;
            adjustments
                .entry(a.tenant.clone())
                .or_default()
                .push(Adjustment {
                    department: a.department.clone(),
                    percent,
                    from_ms,
                    to_ms,
                });
        }
        for (tenant, list) in adjustments.iter_mut() {
            // Overlaps are checked per scope: tenant-wide and each department separately.
            let mut scopes: Vec<Option<String>> =
                list.iter().map(|a| a.department.clone()).collect();
            scopes.sort();
            scopes.dedup();
            for scope in scopes {
                let mut same: Vec<&Adjustment> =
                    list.iter().filter(|a| a.department == scope).collect();
                let ctx = format!(
                    "adjustment of tenant {tenant} department {}",
                    scope.as_deref().unwrap_or("(all)")
                );
                sort_disjoint(&ctx, &mut same, |a| (a.from_ms, a.to_ms))?;
            }
            list.sort_by_key(|a| a.from_ms);
        }

        let mut contracts: HashMap<String, Vec<ContractPrice>> = HashMap::new();
        for c in &file.contract_prices {
            let Some(&model_idx) = names.get(&c.model) else {
                return Err(CatalogError::UnknownContractModel {
                    tenant: c.tenant.clone(),
                    model: c.model.clone(),
                });
            };
            let ctx = format!("contract price of tenant {} for {}", c.tenant, c.model);
            let (from_ms, to_ms) = range(&ctx, &c.effective_from, c.effective_to.as_deref())?;
            // The thinking rule is how the model's calls are billed, so a contract price for
            // the model follows it too.
            let rule = models[model_idx].reasoning_bills_whole_output;
            contracts
                .entry(c.tenant.clone())
                .or_default()
                .push(ContractPrice {
                    model: models[model_idx].key.clone(),
                    currency: currency(&ctx, &c.currency, &mut interned)?,
                    from_ms,
                    to_ms,
                    prices: thinking_rule(
                        &ctx,
                        prices(&ctx, &c.price_fields(), Decimal::ZERO)?,
                        rule,
                    )?,
                });
        }
        for (tenant, list) in contracts.iter_mut() {
            list.sort_by(|a, b| a.model.cmp(&b.model).then(a.from_ms.cmp(&b.from_ms)));
            for w in list.windows(2) {
                if w[0].model == w[1].model && w[1].from_ms < w[0].to_ms {
                    return Err(CatalogError::OverlappingRanges {
                        context: format!("contract price of tenant {tenant} for {}", w[0].model),
                        first: show_range((w[0].from_ms, w[0].to_ms)),
                        second: show_range((w[1].from_ms, w[1].to_ms)),
                    });
                }
            }
        }

        let catalog = Catalog {
            version: file.catalog_version,
            default_billing_currency,
            models,
            names,
            patterns,
            rates: rates.into_iter().collect(),
            tenants: FastMap::default(),
        };
        let mut catalog = catalog;
        for (tenant, c) in tenant_currency {
            catalog.tenants.entry(tenant).or_default().billing_currency = Some(c);
        }
        for (tenant, list) in adjustments {
            catalog.tenants.entry(tenant).or_default().adjustments = list;
        }
        for (tenant, list) in contracts {
            catalog.tenants.entry(tenant).or_default().contracts = list;
        }
        catalog.check_conversions_exist()?;
        Ok(catalog)
    }

    /// Every price currency must be convertible into every billing currency in use.
    fn check_conversions_exist(&self) -> Result<(), CatalogError> {
        let mut billing: Vec<(&Arc<str>, String)> = vec![(
            &self.default_billing_currency,
            "tenants without their own billing currency".to_string(),
        )];
        billing.extend(self.tenants.iter().filter_map(|(t, terms)| {
            terms
                .billing_currency
                .as_ref()
                .map(|c| (c, format!("tenant {t}")))
        }));
        let priced = self.models.iter().map(|m| &m.currency).chain(
            self.tenants
                .values()
                .flat_map(|t| &t.contracts)
                .map(|c| &c.currency),
        );
        for from in priced {
            for (to, who) in &billing {
                if from != *to && self.rate_list(from, to).is_none() {
                    return Err(CatalogError::MissingExchangeRate {
                        from: from.to_string(),
                        to: to.to_string(),
                        context: who.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads and validates a catalog file.
    pub fn from_path(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Catalog::from_toml(&text)
    }

    /// The shipped catalog.
    pub fn builtin() -> Catalog {
        Catalog::from_toml(Self::DEFAULT_TOML).expect("the shipped catalog is valid (tested)")
    }

    /// The catalog's version label, stored with each priced event.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every model.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// Currency tenants are billed in unless the catalog names theirs.
    pub fn default_billing_currency(&self) -> &Arc<str> {
        &self.default_billing_currency
    }

    /// The model a reported name refers to (rules in `CATALOG.md`): exact name or alias,
    /// then the same without a `provider/` prefix, then the highest-priority pattern.
    pub fn lookup(&self, name: &str) -> Option<&Model> {
        if let Some(&i) = self.names.get(name) {
            return Some(&self.models[i]);
        }
        let bare = name.split_once('/').map(|(_, rest)| rest);
        if let Some(&i) = bare.and_then(|b| self.names.get(b)) {
            return Some(&self.models[i]);
        }
        let candidate = bare.unwrap_or(name);
        self.patterns
            .iter()
            .find(|p| p.regex.is_match(candidate))
            .map(|p| &self.models[p.model])
    }

    /// The currency `tenant` is billed in.
    pub fn billing_currency(&self, tenant: &str) -> &Arc<str> {
        self.terms(tenant)
            .and_then(|t| t.billing_currency.as_ref())
            .unwrap_or(&self.default_billing_currency)
    }

    /// What the catalog says about `tenant`, if anything.
    pub fn terms(&self, tenant: &str) -> Option<&TenantTerms> {
        self.tenants.get(tenant)
    }

    fn rate_list(&self, from: &Arc<str>, to: &Arc<str>) -> Option<&[ExchangeRate]> {
        let same = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b) || a == b;
        self.rates
            .iter()
            .find(|((f, t), _)| same(f, from) && same(t, to))
            .map(|(_, list)| list.as_slice())
    }

    /// Whether `currency` is one the catalog uses: the default billing currency, a tenant's,
    /// a model's price currency, or one side of an exchange rate.
    pub fn knows_currency(&self, currency: &str) -> bool {
        &*self.default_billing_currency == currency
            || self.models.iter().any(|m| &*m.currency == currency)
            || self
                .tenants
                .values()
                .any(|t| t.billing_currency.as_deref() == Some(currency))
            || self
                .rates
                .iter()
                .any(|((f, t), _)| &**f == currency || &**t == currency)
    }

    /// The rate converting `from` into `to` at `at_ms`.
    pub fn rate(&self, from: &Arc<str>, to: &Arc<str>, at_ms: i64) -> Option<&ExchangeRate> {
        let list = self.rate_list(from, to)?;
        in_force(list, at_ms, |r| (r.from_ms, r.to_ms))
    }
}

/// Every known name (keys, aliases, examples) must be matched, at its best priority, by
/// patterns of one model only.
fn check_patterns_unambiguous(
    file: &CatalogFile,
    patterns: &[Pattern],
) -> Result<(), CatalogError> {
    let names = file.models.iter().flat_map(|m| {
        std::iter::once(&m.key)
            .chain(&m.aliases)
            .chain(m.patterns.iter().flat_map(|p| &p.examples))
    });
    for name in names {
        let mut matching = patterns.iter().filter(|p| p.regex.is_match(name));
        let Some(best) = matching.next() else {
            continue;
        };
        if let Some(other) = matching
            .take_while(|p| p.priority == best.priority)
            .find(|p| p.model != best.model)
        {
            return Err(CatalogError::AmbiguousPattern {
                name: name.clone(),
                priority: best.priority,
                first: file.models[best.model].key.clone(),
                second: file.models[other.model].key.clone(),
            });
        }
    }
    Ok(())
}
