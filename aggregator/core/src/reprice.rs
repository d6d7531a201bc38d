//! `reprice`: the corrections that bring an event's stored amounts to its new price.
//!
//! Stored amounts are the event's original row plus every correction so far, per currency
//! pair; the corrections returned are the differences to the new price. Applying them
//! twice is impossible by construction: a second run sees the first run's corrections as
//! stored amounts and returns nothing.

use rust_decimal::Decimal;

use costpipe_pricing::PricedCost;

/// An amount an event carries in one (price currency, billing currency) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    pub currency: String,
    pub billing_currency: String,
    pub cost: Decimal,
    pub billing_cost: Decimal,
    /// 1 for an unpriced event row, -1 for a correction that priced it, summed.
    pub unpriced: i64,
}

/// The corrections taking `stored` to `new`, one per currency pair that changes.
pub fn corrections(stored: &[Amount], new: &PricedCost) -> Vec<Amount> {
    let mut net: Vec<Amount> = Vec::new();
    for a in stored {
        match net
            .iter_mut()
            .find(|n| n.currency == a.currency && n.billing_currency == a.billing_currency)
        {
            Some(n) => {
                n.cost += a.cost;
                n.billing_cost += a.billing_cost;
                n.unpriced += a.unpriced;
            }
            None => net.push(a.clone()),
        }
    }
    let target = Amount {
        currency: new.currency.to_string(),
        billing_currency: new.billing_currency.to_string(),
        cost: new.cost,
        billing_cost: new.billing_cost,
        unpriced: i64::from(new.is_unpriced()),
    };
    if !net
        .iter()
        .any(|n| n.currency == target.currency && n.billing_currency == target.billing_currency)
    {
        net.push(Amount {
            cost: Decimal::ZERO,
            billing_cost: Decimal::ZERO,
            unpriced: 0,
            ..target.clone()
        });
    }
    net.into_iter()
        .filter_map(|n| {
            let is_target =
                n.currency == target.currency && n.billing_currency == target.billing_currency;
            let (cost, billing_cost, unpriced) = if is_target {
                (target.cost, target.billing_cost, target.unpriced)
            } else {
                (Decimal::ZERO, Decimal::ZERO, 0)
            };
            let delta = Amount {
                currency: n.currency,
                billing_currency: n.billing_currency,
                cost: cost - n.cost,
                billing_cost: billing_cost - n.billing_cost,
                unpriced: unpriced - n.unpriced,
            };
            let changed =
                !delta.cost.is_zero() || !delta.billing_cost.is_zero() || delta.unpriced != 0;
            changed.then_some(delta)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use costpipe_pricing::UnpricedReason;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;
    use std::sync::Arc;

    fn priced(
        currency: &str,
        billing: &str,
        cost: Decimal,
        billing_cost: Decimal,
        unpriced: bool,
    ) -> PricedCost {
        PricedCost {
            price_model: None,
            cost,
            currency: Arc::from(currency),
            billing_cost,
            billing_currency: Arc::from(billing),
            exchange_rate: Decimal::ONE,
            tier_above: None,
            price_window: None,
            contract: false,
            adjustment_percent: Decimal::ZERO,
            unpriced: unpriced.then_some(UnpricedReason::UnknownModel),
            unit_prices: Default::default(),
            cache_savings: Decimal::ZERO,
            billing_cache_savings: Decimal::ZERO,
        }
    }

    fn amount(
        currency: &str,
        billing: &str,
        cost: Decimal,
        billing_cost: Decimal,
        unpriced: i64,
    ) -> Amount {
        Amount {
            currency: currency.into(),
            billing_currency: billing.into(),
            cost,
            billing_cost,
            unpriced,
        }
    }

    #[test]
    fn an_unpriced_event_gets_priced() {
        let stored = [amount("USD", "USD", dec!(0), dec!(0), 1)];
        let c = corrections(&stored, &priced("USD", "USD", dec!(1.5), dec!(1.5), false));
        assert_eq!(c, vec![amount("USD", "USD", dec!(1.5), dec!(1.5), -1)]);
    }

    #[test]
    fn a_currency_change_moves_the_amount_between_pairs() {
        let stored = [amount("USD", "USD", dec!(0), dec!(0), 1)];
        let c = corrections(&stored, &priced("CNY", "USD", dec!(7), dec!(0.98), false));
        assert_eq!(
            c,
            vec![
                amount("USD", "USD", dec!(0), dec!(0), -1),
                amount("CNY", "USD", dec!(7), dec!(0.98), 0)
            ]
        );
    }

    #[test]
    fn unchanged_prices_need_no_correction() {
        let stored = [
            amount("USD", "USD", dec!(2), dec!(2), 0),
            amount("USD", "USD", dec!(0.5), dec!(0.5), 0),
        ];
        assert!(
            corrections(&stored, &priced("USD", "USD", dec!(2.5), dec!(2.5), false)).is_empty()
        );
    }

    proptest! {
        #[test]
        fn applying_the_corrections_reaches_the_new_price(old in 0i64..1_000_000_000, new in 0i64..1_000_000_000, cny in any::<bool>()) {
            let stored = vec![amount("USD", "USD", Decimal::new(old, 9), Decimal::new(old, 9), 0)];
            let currency = if cny { "CNY" } else { "USD" };
            let target = priced(currency, "USD", Decimal::new(new, 9), Decimal::new(new, 10), false);
            let mut all = stored.clone();
            all.extend(corrections(&stored, &target));
            let total: Decimal = all.iter().filter(|a| a.currency == currency).map(|a| a.cost).sum();
            let billed: Decimal = all.iter().map(|a| a.billing_cost).sum();
            prop_assert_eq!(total, target.cost);
            prop_assert_eq!(billed, target.billing_cost);
            prop_assert!(corrections(&all, &target).is_empty(), "a second run changes nothing");
        }
    }
}
