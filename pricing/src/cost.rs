//! `price_event`: the exact cost of one usage event under a catalog.
//!
//! Rounding, documented once: the list cost is exact (prices have at most 6 decimal places
//! per million tokens, so a cost has at most 12). A percentage adjustment and a currency
//! conversion each round once, to 12 decimal places, half to even. Nothing else rounds;
//! invoices are sums of these stored amounts.
//!
//! Overflow, documented once: no operation here can wrap or panic. Token counts are bounded
//! by [`MAX_TOKENS_PER_FIELD`] (10^12 < 2^40), which validation enforces and pricing checks
//! again, so the sums of token counts fit an `i64` many times over. Prices are not bounded
//! by the catalog, so each product and sum of the cost in `i128`, and each `Decimal` product
//! after it, is checked: a cost that does not fit is unpriced as
//! [`UnpricedReason::CostOverflow`], never a wrong amount or a wrong tier.

use std::sync::Arc;

use rust_decimal::{Decimal, RoundingStrategy};

use costpipe_schemas::{UsageEvent, MAX_TOKENS_PER_FIELD};

use crate::catalog::{Catalog, Prices};

/// Decimal places of every stored amount.
pub const COST_SCALE: u32 = 12;

/// Why an event could not be priced (it is kept, at zero, and flagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpricedReason {
    /// The model is not in the catalog.
    UnknownModel,
    /// The model is known but no price was in force at the event's time.
    NoPriceAtTime,
    /// The cost is known but no exchange rate into the billing currency was in force.
    NoExchangeRate,
    /// A token count is negative or above [`MAX_TOKENS_PER_FIELD`], or reasoning exceeds
    /// output. Validation rejects such events first; this guards callers that skip it.
    InvalidTokens,
    /// The cost does not fit the arithmetic (`i128` in 10^-12 units, or `Decimal`'s 96-bit
    /// mantissa): only with absurd catalog prices, rates or adjustments.
    CostOverflow,
}

impl UnpricedReason {
    /// Stable code for storage and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            UnpricedReason::UnknownModel => "unknown_model",
            UnpricedReason::NoPriceAtTime => "no_price_at_time",
            UnpricedReason::NoExchangeRate => "no_exchange_rate",
            UnpricedReason::InvalidTokens => "invalid_tokens",
            UnpricedReason::CostOverflow => "cost_overflow",
        }
    }
}

/// The outcome of pricing one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedCost {
    /// The catalog key the model matched, if any.
    pub price_model: Option<Arc<str>>,
    /// Cost in `currency` (the price's currency), after contract prices and adjustments.
    pub cost: Decimal,
    pub currency: Arc<str>,
    /// Cost in the tenant's billing currency.
    pub billing_cost: Decimal,
    pub billing_currency: Arc<str>,
    /// `billing_cost = round(cost * exchange_rate)`; one when no conversion was needed.
    pub exchange_rate: Decimal,
    /// Threshold of the long-context tier applied, if any.
    pub tier_above: Option<u64>,
    /// Name of the time-of-day price window applied (e.g. `peak`), if the price has windows.
    pub price_window: Option<Arc<str>>,
    /// A tenant contract price was used instead of the list price.
    pub contract: bool,
    /// Discount (negative) or markup applied, in percent.
    pub adjustment_percent: Decimal,
    /// Why the event is unpriced, if it is.
    pub unpriced: Option<UnpricedReason>,
    /// The price applied to each token kind (contract, tier or window resolved, before the
    /// adjustment), in `currency`; zero when unpriced. Invoices bill quantity × these.
    pub unit_prices: UnitPrices,
    /// What the cached reads saved: cached-input tokens × (input price − cached-input
    /// price), adjusted like `cost`, in `currency`. Zero when unpriced (or, only with absurd
    /// catalog numbers, when it does not fit).
    pub cache_savings: Decimal,
    /// `cache_savings` in `billing_currency`, converted like `billing_cost`.
    pub billing_cache_savings: Decimal,
}

/// Prices applied to one event's token kinds, per 1,000,000 tokens (`per_request` per call).
/// `output` is the price of output tokens that are not reasoning (Qwen's thinking rule bills
/// them at the reasoning price), `reasoning` that of reasoning tokens (the output price when
/// the model has none). Σ kind quantity × price / 10^6 + `per_request` is the list cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnitPrices {
    pub input: Decimal,
    pub cached_input: Decimal,
    pub cache_write_5m: Decimal,
    pub cache_write_1h: Decimal,
    pub output: Decimal,
    pub reasoning: Decimal,
    pub per_request: Decimal,
}

impl UnitPrices {
    /// The prices `cost_at(p, t)` applies to `t`.
    pub fn applied(p: &Prices, t: &Tokens) -> UnitPrices {
        let reasoning = p.reasoning.unwrap_or(p.output);
        let whole = p.ticks.whole_output_at_reasoning && p.reasoning.is_some() && t.reasoning > 0;
        UnitPrices {
            input: p.input,
            cached_input: p.cached_input,
            cache_write_5m: p.cache_write_5m,
            cache_write_1h: p.cache_write_1h,
            output: if whole { reasoning } else { p.output },
            reasoning,
            per_request: p.per_request,
        }
    }
}

/// The list saving of cached reads at `p` in 10^-12 units: cached × (input − cached) ticks;
/// `None` when it does not fit.
fn cache_savings_at(p: &Prices, t: &Tokens) -> Option<Decimal> {
    let per_token = p.ticks.input.checked_sub(p.ticks.cached_input)?;
    let ticks = i128::from(t.cached_input).checked_mul(per_token)?;
    Decimal::try_from_i128_with_scale(ticks, COST_SCALE).ok()
}

/// `amount` with an adjustment of `percent` (rounded once); `None` when it does not fit.
fn adjust(amount: Decimal, percent: Decimal) -> Option<Decimal> {
    if percent.is_zero() {
        return Some(amount.normalize());
    }
    Decimal::ONE_HUNDRED
        .checked_add(percent)
        .and_then(|factor| amount.checked_mul(factor))
        .map(|adjusted| round(shift_scale(adjusted, 2)))
}

impl PricedCost {
    /// Whether the event is unpriced.
    pub fn is_unpriced(&self) -> bool {
        self.unpriced.is_some()
    }
}

fn shift_scale(d: Decimal, places: u32) -> Decimal {
    let mut out = d;
    if out.set_scale(d.scale() + places).is_ok() {
        out
    } else {
        d / Decimal::from(10u64.pow(places))
    }
}

fn round(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(COST_SCALE, RoundingStrategy::MidpointNearestEven)
        .normalize()
}

/// `amount` in another currency at `rate`, rounded once (half to even, 12 places); `None`
/// when the product does not fit a `Decimal`.
pub fn convert(amount: Decimal, rate: Decimal) -> Option<Decimal> {
    amount.checked_mul(rate).map(round)
}

/// Token counts of an event by bucket; validated to lie in `0..=MAX_TOKENS_PER_FIELD`
/// upstream, and checked again here before any arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    pub input: i64,
    pub cached_input: i64,
    pub cache_write_5m: i64,
    pub cache_write_1h: i64,
    pub output: i64,
    pub reasoning: i64,
}

impl Tokens {
    /// The buckets of `e`.
    pub fn of(e: &UsageEvent) -> Tokens {
        Tokens {
            input: e.input_tokens,
            cached_input: e.cached_input_tokens,
            cache_write_5m: e.cache_write_tokens,
            cache_write_1h: e.cache_write_1h_tokens.unwrap_or(0),
            output: e.output_tokens,
            reasoning: e.reasoning_tokens,
        }
    }

    /// Whether every bucket lies in `0..=MAX_TOKENS_PER_FIELD` and reasoning is part of
    /// output, as validation guarantees.
    pub fn is_valid(&self) -> bool {
        let in_range = |n: i64| (0..=MAX_TOKENS_PER_FIELD).contains(&n);
        [
            self.input,
            self.cached_input,
            self.cache_write_5m,
            self.cache_write_1h,
            self.output,
            self.reasoning,
        ]
        .into_iter()
        .all(in_range)
            && self.reasoning <= self.output
    }

    /// Tokens of the prompt, which long-context tiers are decided on; `InvalidTokens` unless
    /// [`Tokens::is_valid`]. A sum that wrapped would pick the wrong tier, so none may.
    pub fn prompt(&self) -> Result<u64, UnpricedReason> {
        if !self.is_valid() {
            return Err(UnpricedReason::InvalidTokens);
        }
        // Four counts of at most 10^12 each sum below 2^42: the checks cannot fail, and are
        // kept so that a change to the bound cannot make this wrap silently.
        [self.cached_input, self.cache_write_5m, self.cache_write_1h]
            .into_iter()
            .try_fold(self.input, i64::checked_add)
            .and_then(|sum| u64::try_from(sum).ok())
            .ok_or(UnpricedReason::InvalidTokens)
    }
}

/// The exact list cost of `t` at `p`: integer arithmetic in 10^-12 units (see
/// [`crate::catalog::PriceTicks`]), one `Decimal` at the end. `InvalidTokens` unless
/// [`Tokens::is_valid`]; `CostOverflow` when the cost does not fit.
pub fn cost_at(p: &Prices, t: &Tokens) -> Result<Decimal, UnpricedReason> {
    if !t.is_valid() {
        return Err(UnpricedReason::InvalidTokens);
    }
    let k = &p.ticks;
    // Valid, so reasoning <= output: the difference is in 0..=output.
    let (plain_output, reasoning) = match k.reasoning {
        // Thinking mode billed whole: the answer costs the reasoning price too (Qwen).
        Some(r) if k.whole_output_at_reasoning && t.reasoning > 0 => (0, (t.output, r)),
        Some(r) => (t.output - t.reasoning, (t.reasoning, r)),
        None => (t.output, (0, 0)),
    };
    // Each count is below 2^40; for any price under 2^84 ticks (about 1.9 * 10^19 per million
    // tokens) each product is below 2^124 and the sum of the seven terms below 2^127, so
    // none of these checks fails for a real catalog. They exist because the catalog does not
    // bound prices, and a wrapped cost would be a wrong bill.
    let total = [
        (t.input, k.input),
        (t.cached_input, k.cached_input),
        (t.cache_write_5m, k.cache_write_5m),
        (t.cache_write_1h, k.cache_write_1h),
        (plain_output, k.output),
        reasoning,
    ]
    .into_iter()
    .try_fold(k.per_request, |sum, (count, ticks)| {
        sum.checked_add(i128::from(count).checked_mul(ticks)?)
    })
    .ok_or(UnpricedReason::CostOverflow)?;
    // A `Decimal` holds 96 bits: up to about 7.9 * 10^16 in 10^-12 units.
    Decimal::try_from_i128_with_scale(total, COST_SCALE).map_err(|_| UnpricedReason::CostOverflow)
}

/// Prices `event`.
pub fn price_event(catalog: &Catalog, event: &UsageEvent) -> PricedCost {
    let at = event.event_time;
    let terms = catalog.terms(&event.tenant_id);
    let billing_currency = terms
        .and_then(|t| t.billing_currency.as_ref())
        .unwrap_or(catalog.default_billing_currency())
        .clone();
    let unpriced = |reason, model: Option<Arc<str>>, currency: Arc<str>| PricedCost {
        price_model: model,
        cost: Decimal::ZERO,
        currency,
        billing_cost: Decimal::ZERO,
        billing_currency: billing_currency.clone(),
        exchange_rate: Decimal::ONE,
        tier_above: None,
        price_window: None,
        contract: false,
        adjustment_percent: Decimal::ZERO,
        unpriced: Some(reason),
        unit_prices: UnitPrices::default(),
        cache_savings: Decimal::ZERO,
        billing_cache_savings: Decimal::ZERO,
    };
    let Some(model) = catalog.lookup(&event.model) else {
        return unpriced(UnpricedReason::UnknownModel, None, billing_currency.clone());
    };
    let tokens = Tokens::of(event);
    let (list_cost, prices, currency, tier_above, price_window, contract) =
        match terms.and_then(|t| t.contract(&model.key, at)) {
            Some(c) => (
                cost_at(&c.prices, &tokens),
                &c.prices,
                c.currency.clone(),
                None,
                None,
                true,
            ),
            None => {
                let Some(period) = model.period_at(at) else {
                    return unpriced(
                        UnpricedReason::NoPriceAtTime,
                        Some(model.key.clone()),
                        model.currency.clone(),
                    );
                };
                let prompt = match tokens.prompt() {
                    Ok(prompt) => prompt,
                    Err(reason) => {
                        return unpriced(reason, Some(model.key.clone()), model.currency.clone())
                    }
                };
                let applied = period.prices_at(at, prompt);
                (
                    cost_at(applied.prices, &tokens),
                    applied.prices,
                    model.currency.clone(),
                    applied.tier_above,
                    applied.window.cloned(),
                    false,
                )
            }
        };
    let list_cost = match list_cost {
        Ok(cost) => cost,
        Err(reason) => return unpriced(reason, Some(model.key.clone()), currency),
    };
    let adjustment_percent = terms
        .and_then(|t| t.adjustment(event.department.as_deref(), at))
        .unwrap_or_default();
    // Checked: an adjustment is a catalog number, as unbounded as a price.
    let Some(cost) = adjust(list_cost, adjustment_percent) else {
        return unpriced(
            UnpricedReason::CostOverflow,
            Some(model.key.clone()),
            currency,
        );
    };
    let unit_prices = UnitPrices::applied(prices, &tokens);
    let cache_savings = cache_savings_at(prices, &tokens)
        .and_then(|s| adjust(s, adjustment_percent))
        .unwrap_or_default();
    let (billing_cost, exchange_rate) = if currency == billing_currency {
        (cost, Decimal::ONE)
    } else {
        match catalog.rate(&currency, &billing_currency, at) {
            Some(r) => match convert(cost, r.rate) {
                Some(converted) => (converted, r.rate),
                None => {
                    return unpriced(
                        UnpricedReason::CostOverflow,
                        Some(model.key.clone()),
                        currency,
                    )
                }
            },
            None => {
                return PricedCost {
                    cost,
                    unit_prices,
                    cache_savings,
                    currency,
                    tier_above,
                    price_window,
                    contract,
                    adjustment_percent,
                    ..unpriced(
                        UnpricedReason::NoExchangeRate,
                        Some(model.key.clone()),
                        billing_currency.clone(),
                    )
                }
            }
        }
    };
    PricedCost {
        price_model: Some(model.key.clone()),
        cost,
        currency,
        billing_cost,
        billing_currency,
        exchange_rate,
        tier_above,
        price_window,
        contract,
        adjustment_percent,
        unpriced: None,
        unit_prices,
        cache_savings,
        billing_cache_savings: if exchange_rate == Decimal::ONE {
            cache_savings
        } else {
            convert(cache_savings, exchange_rate).unwrap_or_default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::PriceTicks;

    /// Per-million prices as 10^-6 units, per-request in 10^-12 units.
    fn prices(input: i128, output: i128, reasoning: Option<i128>) -> Prices {
        // `cost_at` reads only the ticks; the Decimals are for show, and saturate.
        let d = |ticks: i128| Decimal::try_from_i128_with_scale(ticks, 6).unwrap_or(Decimal::MAX);
        Prices {
            input: d(input),
            output: d(output),
            cached_input: d(input / 10),
            cache_write_5m: d(input),
            cache_write_1h: d(input * 2),
            reasoning: reasoning.map(d),
            per_request: Decimal::ZERO,
            ticks: PriceTicks {
                input,
                output,
                cached_input: input / 10,
                cache_write_5m: input,
                cache_write_1h: input * 2,
                reasoning,
                per_request: 0,
                whole_output_at_reasoning: false,
            },
        }
    }

    fn tokens(input: i64, cached_input: i64, output: i64) -> Tokens {
        Tokens {
            input,
            cached_input,
            output,
            ..Tokens::default()
        }
    }

    #[test]
    fn prompt_sums_never_wrap() {
        assert_eq!(tokens(1_000, 200, 5).prompt(), Ok(1_200));
        let all = Tokens {
            input: MAX_TOKENS_PER_FIELD,
            cached_input: MAX_TOKENS_PER_FIELD,
            cache_write_5m: MAX_TOKENS_PER_FIELD,
            cache_write_1h: MAX_TOKENS_PER_FIELD,
            output: MAX_TOKENS_PER_FIELD,
            reasoning: MAX_TOKENS_PER_FIELD,
        };
        assert_eq!(all.prompt(), Ok(4 * MAX_TOKENS_PER_FIELD as u64));
        for t in [
            tokens(1 << 62, 1 << 62, 0),
            tokens(i64::MAX, 0, 0),
            tokens(i64::MAX, i64::MAX, 0),
            tokens(-1, 0, 0),
            tokens(i64::MIN, i64::MAX, 0),
            tokens(MAX_TOKENS_PER_FIELD + 1, 0, 0),
        ] {
            assert_eq!(t.prompt(), Err(UnpricedReason::InvalidTokens), "{t:?}");
        }
    }

    #[test]
    fn cost_at_checks_every_operation() {
        // $2.50 / $10 per M.
        let p = prices(2_500_000, 10_000_000, None);
        assert_eq!(
            cost_at(&p, &tokens(1_000_000, 0, 1_000_000)),
            Ok(Decimal::new(125, 1))
        );
        for t in [
            tokens(1 << 62, 1 << 62, 0),
            tokens(i64::MAX, 0, 0),
            tokens(0, 0, i64::MAX),
            tokens(0, -5, 0),
        ] {
            assert_eq!(cost_at(&p, &t), Err(UnpricedReason::InvalidTokens), "{t:?}");
        }
        let mut reasoning_over_output = tokens(0, 0, 10);
        reasoning_over_output.reasoning = 11;
        assert_eq!(
            cost_at(&prices(1, 1, Some(1)), &reasoning_over_output),
            Err(UnpricedReason::InvalidTokens)
        );
        // Every count at the bound, at a realistic price: exact.
        // 10^12 tokens at $2.50/M = 2.5M; cached at 0.25, 5m at 2.5, 1h at 5, output at 10.
        let max = MAX_TOKENS_PER_FIELD;
        let all = Tokens {
            input: max,
            cached_input: max,
            cache_write_5m: max,
            cache_write_1h: max,
            output: max,
            reasoning: max,
        };
        assert_eq!(
            cost_at(&p, &all),
            Ok(Decimal::from(
                2_500_000 + 250_000 + 2_500_000 + 5_000_000 + 10_000_000
            ))
        );
        // Absurd prices: the i128 product, then the i128 sum, then the Decimal overflow.
        for ticks in [i128::MAX / 2, i128::MAX / 3_000_000_000_000, 1 << 60] {
            assert_eq!(
                cost_at(&prices(ticks, ticks, Some(ticks)), &all),
                Err(UnpricedReason::CostOverflow),
                "{ticks}"
            );
        }
    }

    #[test]
    fn conversion_overflow_is_none() {
        assert_eq!(
            convert(Decimal::new(125, 2), Decimal::new(8, 1)),
            Some(Decimal::ONE)
        );
        assert_eq!(convert(Decimal::MAX, Decimal::TWO), None);
    }

    #[test]
    fn new_reasons_have_stable_codes() {
        assert_eq!(UnpricedReason::InvalidTokens.as_str(), "invalid_tokens");
        assert_eq!(UnpricedReason::CostOverflow.as_str(), "cost_overflow");
    }
}
