//! `price_event`: the exact cost of one usage event under a catalog.
//!
//! Rounding, documented once: the list cost is exact (prices have at most 6 decimal places
//! per million tokens, so a cost has at most 12). A percentage adjustment and a currency
//! conversion each round once, to 12 decimal places, half to even. Nothing else rounds;
//! invoices are sums of these stored amounts.

use std::sync::Arc;

use rust_decimal::{Decimal, RoundingStrategy};

use costpipe_schemas::UsageEvent;

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
}

impl UnpricedReason {
    /// Stable code for storage and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            UnpricedReason::UnknownModel => "unknown_model",
            UnpricedReason::NoPriceAtTime => "no_price_at_time",
            UnpricedReason::NoExchangeRate => "no_exchange_rate",
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
    /// A tenant contract price was used instead of the list price.
    pub contract: bool,
    /// Discount (negative) or markup applied, in percent.
    pub adjustment_percent: Decimal,
    /// Why the event is unpriced, if it is.
    pub unpriced: Option<UnpricedReason>,
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

/// `amount` in another currency at `rate`, rounded once (half to even, 12 places).
pub fn convert(amount: Decimal, rate: Decimal) -> Decimal {
    round(amount * rate)
}

/// Token counts of an event by bucket; validated non-negative upstream.
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

    /// Tokens of the prompt, which long-context tiers are decided on.
    pub fn prompt(&self) -> u64 {
        (self.input + self.cached_input + self.cache_write_5m + self.cache_write_1h).max(0) as u64
    }
}

/// The exact list cost of `t` at `p`: integer arithmetic in 10^-12 units (see
/// [`crate::catalog::PriceTicks`]), one `Decimal` at the end.
pub fn cost_at(p: &Prices, t: &Tokens) -> Decimal {
    let k = &p.ticks;
    let (plain_output, reasoning) = match k.reasoning {
        Some(r) => (t.output - t.reasoning, t.reasoning as i128 * r),
        None => (t.output, 0),
    };
    let total = t.input as i128 * k.input
        + t.cached_input as i128 * k.cached_input
        + t.cache_write_5m as i128 * k.cache_write_5m
        + t.cache_write_1h as i128 * k.cache_write_1h
        + plain_output as i128 * k.output
        + reasoning
        + k.per_request;
    // Beyond 96 bits only for absurd token counts; the Decimal path then says so by saturating.
    Decimal::try_from_i128_with_scale(total, COST_SCALE).unwrap_or(Decimal::MAX)
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
        contract: false,
        adjustment_percent: Decimal::ZERO,
        unpriced: Some(reason),
    };
    let Some(model) = catalog.lookup(&event.model) else {
        return unpriced(UnpricedReason::UnknownModel, None, billing_currency.clone());
    };
    let tokens = Tokens::of(event);
    let (list_cost, currency, tier_above, contract) =
        match terms.and_then(|t| t.contract(&model.key, at)) {
            Some(c) => (cost_at(&c.prices, &tokens), c.currency.clone(), None, true),
            None => {
                let Some(period) = model.period_at(at) else {
                    return unpriced(
                        UnpricedReason::NoPriceAtTime,
                        Some(model.key.clone()),
                        model.currency.clone(),
                    );
                };
                let (prices, tier) = period.prices_for(tokens.prompt());
                (
                    cost_at(prices, &tokens),
                    model.currency.clone(),
                    tier,
                    false,
                )
            }
        };
    let adjustment_percent = terms
        .and_then(|t| t.adjustment(event.department.as_deref(), at))
        .unwrap_or_default();
    let cost = if adjustment_percent.is_zero() {
        list_cost.normalize()
    } else {
        round(shift_scale(
            list_cost * (Decimal::ONE_HUNDRED + adjustment_percent),
            2,
        ))
    };
    let (billing_cost, exchange_rate) = if currency == billing_currency {
        (cost, Decimal::ONE)
    } else {
        match catalog.rate(&currency, &billing_currency, at) {
            Some(r) => (convert(cost, r.rate), r.rate),
            None => {
                return PricedCost {
                    cost,
                    currency,
                    tier_above,
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
        contract,
        adjustment_percent,
        unpriced: None,
    }
}
