//! `price_event`: the exact cost of one usage event under a catalog.

use rust_decimal::Decimal;

use costpipe_schemas::UsageEvent;

use crate::catalog::Catalog;

/// The outcome of pricing one event. Unknown models are never dropped: they cost zero and
/// carry `unpriced = true` so that an operator can add the price and reprice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedCost {
    /// The catalog key the model matched, or `None` when unpriced.
    pub price_model: Option<String>,
    /// Exact cost in `currency`.
    pub cost: Decimal,
    /// ISO 4217 currency of `cost`.
    pub currency: String,
    /// The model is not in the catalog.
    pub unpriced: bool,
}

const PER_MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
/// Currency reported for an unpriced event.
pub const UNPRICED_CURRENCY: &str = "USD";

/// Prices `event`. Tokens are validated non-negative upstream; `reasoning_tokens` is part of
/// `output_tokens` and priced at the reasoning price where the catalog has one.
pub fn price_event(catalog: &Catalog, event: &UsageEvent) -> PricedCost {
    let Some(model) = catalog.lookup(&event.model) else {
        return PricedCost {
            price_model: None,
            cost: Decimal::ZERO,
            currency: UNPRICED_CURRENCY.to_string(),
            unpriced: true,
        };
    };
    let p = &model.price;
    let (plain_output, reasoning_price) = match p.reasoning {
        Some(r) => (event.output_tokens - event.reasoning_tokens, r),
        None => (event.output_tokens, Decimal::ZERO),
    };
    let reasoning_tokens = if p.reasoning.is_some() {
        event.reasoning_tokens
    } else {
        0
    };
    let micro_total = Decimal::from(event.input_tokens) * p.input
        + Decimal::from(event.cached_input_tokens) * p.cached_input.unwrap_or(p.input)
        + Decimal::from(event.cache_write_tokens) * p.cache_write.unwrap_or(p.input)
        + Decimal::from(plain_output) * p.output
        + Decimal::from(reasoning_tokens) * reasoning_price;
    PricedCost {
        price_model: Some(model.key.clone()),
        cost: (micro_total / PER_MILLION).normalize(),
        currency: model.currency.clone(),
        unpriced: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;
    use uuid::Uuid;

    fn event(model: &str, input: i64, cached: i64, write: i64, output: i64) -> UsageEvent {
        let mut e = UsageEvent::new(Uuid::new_v4(), 0, "t", "p", model);
        e.input_tokens = input;
        e.cached_input_tokens = cached;
        e.cache_write_tokens = write;
        e.output_tokens = output;
        e
    }

    #[test]
    fn hand_computed_costs() {
        let c = Catalog::builtin();
        // 1000 * 2.50/M + 500 * 1.25/M + 200 * 10/M = 0.0025 + 0.000625 + 0.002
        assert_eq!(
            price_event(&c, &event("gpt-4o", 1000, 500, 0, 200)).cost,
            dec!(0.005125)
        );
        // 1M cache writes on sonnet = 3.75; 1 cached read = 0.0000003
        assert_eq!(
            price_event(&c, &event("claude-sonnet-4-5", 0, 1, 1_000_000, 0)).cost,
            dec!(3.7500003)
        );
        // gpt-4o-mini: 7 * 0.075/M = 0.000000525
        assert_eq!(
            price_event(&c, &event("gpt-4o-mini", 0, 7, 0, 0)).cost,
            dec!(0.000000525)
        );
    }

    #[test]
    fn unknown_model_is_flagged_not_dropped() {
        let p = price_event(&Catalog::builtin(), &event("mystery-1", 10, 0, 0, 10));
        assert!(p.unpriced);
        assert_eq!(p.cost, Decimal::ZERO);
        assert_eq!(p.price_model, None);
    }

    proptest! {
        #[test]
        fn cost_is_linear_in_tokens(a in 0i64..10_000_000, b in 0i64..10_000_000, k in 1i64..1000) {
            let c = Catalog::builtin();
            let one = price_event(&c, &event("claude-sonnet-4-5", a, b, a, b)).cost;
            let scaled = price_event(&c, &event("claude-sonnet-4-5", a * k, b * k, a * k, b * k)).cost;
            prop_assert_eq!(one * Decimal::from(k), scaled);
        }

        #[test]
        fn cost_scale_fits_clickhouse(a in 0i64..i32::MAX as i64, b in 0i64..i32::MAX as i64) {
            let c = Catalog::builtin();
            for m in ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"] {
                prop_assert!(price_event(&c, &event(m, a, b, b, a)).cost.scale() <= 12);
            }
        }
    }
}
