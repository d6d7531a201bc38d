//! `EpochTally`: one pass over a stored epoch's events, summed per (tenant, department,
//! catalog model) key, with each event's cost in USD.
//!
//! The aggregator prices ~200 k events/s, so nothing here allocates per event: keys are
//! looked up by the events' own `&str`s, and only a key new to the epoch is allocated (at the
//! end, once). Money stays exact: USD amounts are summed as integer ticks of 10^-12 (the
//! pricing scale), and only the shell turns a total into the `f64` a Prometheus sample needs.
//!
//! # Cost in USD
//! `llm_cost_usd_total` is in USD whatever the tenant's billing currency or the price's
//! currency. [`usd_of`] takes, in this order:
//! 1. the billed cost, when the event is priced and its tenant is billed in USD;
//! 2. the cost in the price's currency, when that is USD;
//! 3. the price-currency cost converted at the catalog's rate into USD in force at the event
//!    time (`costpipe_pricing::convert`: rounded once, half to even, 12 places);
//! 4. for a priced event, the billed cost converted likewise from the billing currency.
//!
//! Otherwise the amount is [`UsdAmount::Unconverted`] (`no_exchange_rate`, or `overflow` when
//! the product does not fit), tallied in [`EpochTally::unconverted`] with its currency, never
//! dropped silently. An unpriced event whose cost is unknown in every currency (unknown
//! model, no price at its time, ...) has no amount: it is counted as a request with its
//! tokens, and by its unpriced reason.

use std::collections::HashMap;
use std::sync::Arc;

use rust_decimal::Decimal;

use costpipe_pricing::{convert, Catalog, PricedCost, UnpricedReason, COST_SCALE};

use crate::epoch::PricedEvent;

/// The currency of the cost metrics.
pub const USD: &str = "USD";

/// `token_type` label values of `llm_tokens_total`, in the order of [`KeyTally::tokens`]:
/// the event's token fields as reported (`cache_write_5m` is `cache_write_tokens`).
pub const TOKEN_TYPES: [&str; 6] = [
    "input",
    "output",
    "cached_input",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
];

const TICKS_PER_USD: i128 = 1_000_000_000_000;

/// Upper bounds (`le`) of the `request_cost_usd` histogram in ticks of 10^-12 USD: 0.00001,
/// 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 and 10
/// USD, then `+Inf`. A chat call costs from a few millionths of a dollar (a small model, a
/// short prompt) to a few dollars (a long-context call to a large model); the bounds are about
/// 2-2.5x apart through the common range, so a percentile read from them is off by at most
/// that factor. Compared exactly, in ticks.
pub const REQUEST_COST_BOUNDS_TICKS: [i128; 16] = [
    TICKS_PER_USD / 100_000,
    TICKS_PER_USD / 10_000,
    TICKS_PER_USD / 2_000,
    TICKS_PER_USD / 1_000,
    TICKS_PER_USD / 400,
    TICKS_PER_USD / 200,
    TICKS_PER_USD / 100,
    TICKS_PER_USD / 40,
    TICKS_PER_USD / 20,
    TICKS_PER_USD / 10,
    TICKS_PER_USD / 4,
    TICKS_PER_USD / 2,
    TICKS_PER_USD,
    TICKS_PER_USD * 5 / 2,
    TICKS_PER_USD * 5,
    TICKS_PER_USD * 10,
];

/// An event's cost in USD, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsdAmount {
    /// The cost in USD.
    Usd(Decimal),
    /// Unpriced, and its cost is unknown in any currency.
    Unpriced,
    /// The cost is known in `currency` but cannot be put into USD.
    Unconverted {
        currency: Arc<str>,
        amount: Decimal,
        /// `no_exchange_rate` (no rate into USD in force at the event time) or `overflow`.
        reason: &'static str,
    },
}

/// The cost of a priced event in USD under `catalog` (rules in the module docs); `usd` is
/// [`USD`], shared so that the catalog's rate lookup compares pointers first.
pub fn usd_of(priced: &PricedCost, at_ms: i64, catalog: &Catalog, usd: &Arc<str>) -> UsdAmount {
    match priced.unpriced {
        None => {}
        // The price-currency cost is known; only the billing conversion was missing.
        Some(UnpricedReason::NoExchangeRate) => {}
        Some(_) => return UsdAmount::Unpriced,
    }
    let priced_ok = priced.unpriced.is_none();
    if priced_ok && &*priced.billing_currency == USD {
        return UsdAmount::Usd(priced.billing_cost);
    }
    if &*priced.currency == USD {
        return UsdAmount::Usd(priced.cost);
    }
    let converted = |amount: Decimal, currency: &Arc<str>| {
        catalog.rate(currency, usd, at_ms).map(|r| {
            convert(amount, r.rate).map_or_else(
                || UsdAmount::Unconverted {
                    currency: currency.clone(),
                    amount,
                    reason: "overflow",
                },
                UsdAmount::Usd,
            )
        })
    };
    if let Some(out) = converted(priced.cost, &priced.currency) {
        return out;
    }
    if priced_ok {
        if let Some(out) = converted(priced.billing_cost, &priced.billing_currency) {
            return out;
        }
    }
    UsdAmount::Unconverted {
        currency: priced.currency.clone(),
        amount: priced.cost,
        reason: "no_exchange_rate",
    }
}

/// 10^k for k = 0..=12: a table, because `checked_pow` on `i128` was a visible share of the
/// tally's time per event.
const POW10: [i128; COST_SCALE as usize + 1] = {
    let mut t = [1i128; COST_SCALE as usize + 1];
    let mut k = 1;
    while k < t.len() {
        t[k] = t[k - 1] * 10;
        k += 1;
    }
    t
};

/// `d` in ticks of 10^-12, exactly; `None` if it has more places or does not fit.
fn ticks(d: Decimal) -> Option<i128> {
    // Amounts from pricing have at most 12 places already; normalizing is the rare path.
    let d = if d.scale() > COST_SCALE {
        d.normalize()
    } else {
        d
    };
    let factor = POW10.get(COST_SCALE.checked_sub(d.scale())? as usize)?;
    d.mantissa().checked_mul(*factor)
}

/// One (tenant, department, catalog model) key's share of an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTally {
    pub tenant: String,
    /// Empty when the events had no department.
    pub department: String,
    /// The catalog key the events' model matched; `None` when it is not in the catalog.
    pub model: Option<Arc<str>>,
    /// Events.
    pub requests: u64,
    /// Tokens by [`TOKEN_TYPES`].
    pub tokens: [u64; 6],
    /// Cost in USD of the events whose cost could be put into USD, in 10^-12 USD.
    pub usd_ticks: i128,
}

/// Amounts that could not be put into USD, by currency and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconverted {
    pub currency: Arc<str>,
    pub reason: &'static str,
    pub events: u64,
    /// Sum of the amounts, in `currency`.
    pub amount: Decimal,
}

/// What an epoch's events add to the usage metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EpochTally {
    /// Events in the epoch.
    pub events: u64,
    /// Events that arrived behind their partition's watermark.
    pub late: u64,
    /// Per key, sorted by (tenant, department, model).
    pub keys: Vec<KeyTally>,
    /// Unpriced events by reason code, sorted.
    pub unpriced: Vec<(&'static str, u64)>,
    pub unconverted: Vec<Unconverted>,
    /// Events per `request_cost_usd` bucket (not cumulative): index `i` counts costs in
    /// `(bound[i-1], bound[i]]` of [`REQUEST_COST_BOUNDS_TICKS`], the last `+Inf`.
    pub cost_buckets: [u64; REQUEST_COST_BOUNDS_TICKS.len() + 1],
    /// Events with a cost in USD (the histogram's count).
    pub cost_count: u64,
    /// Their summed cost in 10^-12 USD (the histogram's sum).
    pub cost_ticks: i128,
}

struct KeyAcc<'a> {
    tenant: &'a str,
    department: &'a str,
    model: &'a Option<Arc<str>>,
    requests: u64,
    tokens: [u64; 6],
    usd_ticks: i128,
}

type KeyRef<'a> = (&'a str, &'a str, Option<&'a str>);

impl EpochTally {
    /// Tallies `events`, priced under `catalog` (whose rates convert into USD).
    pub fn of(events: &[PricedEvent], catalog: &Catalog) -> EpochTally {
        let usd: Arc<str> = Arc::from(USD);
        let mut out = EpochTally {
            events: events.len() as u64,
            ..EpochTally::default()
        };
        let mut index: HashMap<KeyRef<'_>, usize, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(64, Default::default());
        let mut keys: Vec<KeyAcc<'_>> = Vec::new();
        for pe in events {
            let e = &pe.event;
            let model = &pe.priced.price_model;
            let key = (
                e.tenant_id.as_str(),
                e.department.as_deref().unwrap_or(""),
                model.as_deref(),
            );
            let i = *index.entry(key).or_insert_with(|| {
                keys.push(KeyAcc {
                    tenant: key.0,
                    department: key.1,
                    model,
                    requests: 0,
                    tokens: [0; 6],
                    usd_ticks: 0,
                });
                keys.len() - 1
            });
            let acc = &mut keys[i];
            acc.requests += 1;
            let tokens = [
                e.input_tokens,
                e.output_tokens,
                e.cached_input_tokens,
                e.cache_write_tokens,
                e.cache_write_1h_tokens.unwrap_or(0),
                e.reasoning_tokens,
            ];
            for (sum, t) in acc.tokens.iter_mut().zip(tokens) {
                // Validated non-negative; `max(0)` keeps the cast total anyway.
                *sum = sum.saturating_add(t.max(0) as u64);
            }
            out.late += u64::from(pe.late);
            if let Some(reason) = pe.priced.unpriced {
                bump(&mut out.unpriced, reason.as_str());
            }
            let amount = match usd_of(&pe.priced, e.event_time, catalog, &usd) {
                UsdAmount::Usd(d) => match ticks(d) {
                    Some(t) => {
                        let sums = (acc.usd_ticks.checked_add(t), out.cost_ticks.checked_add(t));
                        if let (Some(key_sum), Some(all)) = sums {
                            acc.usd_ticks = key_sum;
                            out.cost_ticks = all;
                            out.cost_count += 1;
                            let bucket = REQUEST_COST_BOUNDS_TICKS.partition_point(|&b| b < t);
                            out.cost_buckets[bucket] += 1;
                            continue;
                        }
                        (usd.clone(), d, "overflow")
                    }
                    None => (usd.clone(), d, "overflow"),
                },
                UsdAmount::Unpriced => continue,
                UsdAmount::Unconverted {
                    currency,
                    amount,
                    reason,
                } => (currency, amount, reason),
            };
            add_unconverted(&mut out.unconverted, amount);
        }
        out.unpriced.sort_unstable();
        out.keys = keys
            .into_iter()
            .map(|k| KeyTally {
                tenant: k.tenant.to_string(),
                department: k.department.to_string(),
                model: k.model.clone(),
                requests: k.requests,
                tokens: k.tokens,
                usd_ticks: k.usd_ticks,
            })
            .collect();
        out.keys.sort_unstable_by(|a, b| {
            (&a.tenant, &a.department, a.model.as_deref()).cmp(&(
                &b.tenant,
                &b.department,
                b.model.as_deref(),
            ))
        });
        out
    }
}

fn bump(counts: &mut Vec<(&'static str, u64)>, code: &'static str) {
    match counts.iter_mut().find(|(c, _)| *c == code) {
        Some((_, n)) => *n += 1,
        None => counts.push((code, 1)),
    }
}

fn add_unconverted(
    list: &mut Vec<Unconverted>,
    (currency, amount, reason): (Arc<str>, Decimal, &'static str),
) {
    let found = list
        .iter_mut()
        .find(|u| u.reason == reason && u.currency == currency);
    match found {
        Some(u) => {
            u.events += 1;
            // Beyond `Decimal` (about 7.9 * 10^28) the amount stops growing; the count goes on.
            u.amount = u.amount.checked_add(amount).unwrap_or(u.amount);
        }
        None => list.push(Unconverted {
            currency,
            reason,
            events: 1,
            amount,
        }),
    }
}

/// A tick count as the `f64` of a Prometheus sample (USD): the exact decimal, converted once.
pub fn ticks_to_f64(ticks: i128) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    Decimal::try_from_i128_with_scale(ticks, COST_SCALE)
        .map(|d| d.normalize())
        .ok()
        .and_then(|d| d.to_f64())
        .unwrap_or(ticks as f64 / TICKS_PER_USD as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use costpipe_schemas::UsageEvent;
    use rust_decimal_macros::dec;
    use uuid::Uuid;

    const CATALOG: &str = r#"
catalog_version = "tally-test"
default_billing_currency = "USD"

[[exchange_rates]]
from = "CNY"
to = "USD"
rate = "0.14"
effective_from = "2020-01-01T00:00:00Z"
source = "test"

[[exchange_rates]]
from = "USD"
to = "EUR"
rate = "0.8"
effective_from = "2020-01-01T00:00:00Z"
source = "test"

[[exchange_rates]]
from = "CNY"
to = "EUR"
rate = "0.12"
effective_from = "2020-01-01T00:00:00Z"
source = "test"

[[exchange_rates]]
from = "EUR"
to = "USD"
rate = "1.25"
effective_from = "2020-01-01T00:00:00Z"
effective_to = "2021-01-01T00:00:00Z"
source = "test: expired, so EUR amounts of today cannot be put into USD"

[[models]]
key = "gpt-4o"
provider = "openai"
kind = "chat"
currency = "USD"
  [[models.prices]]
  effective_from = "2020-01-01T00:00:00Z"
  source = "test"
  input = "2.50"
  output = "10.00"
  cached_input = "1.25"

[[models]]
key = "qwen-max"
provider = "alibaba"
kind = "chat"
currency = "CNY"
  [[models.prices]]
  effective_from = "2020-01-01T00:00:00Z"
  source = "test"
  input = "2.4"
  output = "9.6"

[[models]]
key = "mistral-large"
provider = "mistral"
kind = "chat"
currency = "EUR"
  [[models.prices]]
  effective_from = "2020-01-01T00:00:00Z"
  source = "test"
  input = "2"
  output = "6"

[[tenants]]
id = "euro"
billing_currency = "EUR"
"#;

    const NOW: i64 = 1_764_000_000_000;

    fn catalog() -> Catalog {
        Catalog::from_toml(CATALOG).unwrap()
    }

    fn priced(
        c: &Catalog,
        tenant: &str,
        dept: Option<&str>,
        model: &str,
        input: i64,
        output: i64,
    ) -> PricedEvent {
        let mut e = UsageEvent::new(Uuid::new_v4(), NOW, tenant, "p", model);
        e.department = dept.map(str::to_string);
        e.input_tokens = input;
        e.output_tokens = output;
        e.cached_input_tokens = 3;
        e.cache_write_tokens = 4;
        e.cache_write_1h_tokens = Some(5);
        // Reasoning is part of the output: never more of it than output.
        e.reasoning_tokens = output.min(1);
        let priced = costpipe_pricing::price_event(c, &e);
        PricedEvent {
            event: e,
            priced,
            partition: 0,
            offset: 0,
            late: false,
        }
    }

    fn usd(c: &Catalog, p: &PricedEvent) -> UsdAmount {
        usd_of(&p.priced, p.event.event_time, c, &Arc::from(USD))
    }

    #[test]
    fn usd_amounts_follow_the_documented_order() {
        let c = catalog();
        // USD price, USD billing: the billed cost.
        let e = priced(&c, "acme", None, "gpt-4o", 1_000_000, 0);
        // 3 cached at 1.25, 4 + 5 cache writes at the input price.
        let writes = dec!(0.00000375) + dec!(0.0000225);
        assert_eq!(usd(&c, &e), UsdAmount::Usd(dec!(2.5) + writes));
        // USD price, EUR billing: the price-currency cost, not the EUR amount.
        let e = priced(&c, "euro", None, "gpt-4o", 1_000_000, 0);
        assert_eq!(e.priced.billing_currency.as_ref(), "EUR");
        assert_eq!(usd(&c, &e), UsdAmount::Usd(dec!(2.5) + writes));
        // CNY price: converted at the CNY->USD rate, for USD and EUR tenants alike.
        for tenant in ["acme", "euro"] {
            let e = priced(&c, tenant, None, "qwen-max", 1_000_000, 1_000_000);
            let cny = dec!(2.4) + dec!(9.6) + dec!(0.0000288); // 3 cached + 4 + 5 writes at input
            assert_eq!(e.priced.cost, cny);
            assert_eq!(usd(&c, &e), UsdAmount::Usd(cny * dec!(0.14)), "{tenant}");
        }
        // EUR price, no EUR->USD rate in force: unconverted, with the amount in EUR; for a
        // USD tenant the event is also unpriced (no EUR->USD for its bill either).
        for tenant in ["acme", "euro"] {
            let e = priced(&c, tenant, None, "mistral-large", 1_000_000, 0);
            match usd(&c, &e) {
                UsdAmount::Unconverted {
                    currency,
                    amount,
                    reason,
                } => {
                    assert_eq!((&*currency, reason), ("EUR", "no_exchange_rate"));
                    assert_eq!(amount, dec!(2.000024));
                }
                other => panic!("{tenant}: {other:?}"),
            }
        }
        // Unknown model: no amount at all.
        let e = priced(&c, "acme", None, "mystery", 10, 10);
        assert_eq!(usd(&c, &e), UsdAmount::Unpriced);
    }

    #[test]
    fn tally_sums_keys_buckets_and_leftovers() {
        let c = catalog();
        let events = vec![
            priced(&c, "acme", Some("eng"), "gpt-4o", 1000, 100), // 0.0025+0.001+...
            priced(&c, "acme", Some("eng"), "gpt-4o-2024", 1000, 100), // unknown name: no pattern
            priced(&c, "acme", Some("eng"), "gpt-4o", 1000, 100),
            priced(&c, "acme", None, "qwen-max", 1_000_000, 0),
            priced(&c, "euro", None, "mistral-large", 1_000_000, 0),
            priced(&c, "acme", None, "mistral-large", 1_000_000, 0),
        ];
        let t = EpochTally::of(&events, &c);
        assert_eq!(t.events, 6);
        let shape: Vec<_> = t
            .keys
            .iter()
            .map(|k| {
                (
                    k.tenant.as_str(),
                    k.department.as_str(),
                    k.model.as_deref(),
                    k.requests,
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("acme", "", Some("mistral-large"), 1),
                ("acme", "", Some("qwen-max"), 1),
                ("acme", "eng", None, 1),
                ("acme", "eng", Some("gpt-4o"), 2),
                ("euro", "", Some("mistral-large"), 1),
            ]
        );
        let gpt = &t.keys[3];
        assert_eq!(gpt.tokens, [2000, 200, 6, 8, 10, 2]);
        // 1000 * 2.5 + 100 * 10 + 3 * 1.25 + 4 * 2.5 + 5 * 2.5 per million, twice.
        let one = dec!(0.0025) + dec!(0.001) + dec!(0.00000375) + dec!(0.00001) + dec!(0.0000125);
        assert_eq!(gpt.usd_ticks, ticks(one * dec!(2)).unwrap());
        let qwen = (dec!(2.4) + dec!(0.0000288)) * dec!(0.14);
        assert_eq!(t.keys[1].usd_ticks, ticks(qwen).unwrap());
        assert_eq!(t.cost_count, 3);
        assert_eq!(t.cost_ticks, ticks(one * dec!(2) + qwen).unwrap());
        // 0.00352625 USD is in (0.0025, 0.005]; 0.336004032 in (0.25, 0.5].
        assert_eq!(t.cost_buckets[5], 2);
        assert_eq!(t.cost_buckets[11], 1);
        assert_eq!(t.cost_buckets.iter().sum::<u64>(), 3);
        assert_eq!(
            t.unpriced,
            vec![("no_exchange_rate", 1), ("unknown_model", 1)]
        );
        assert_eq!(
            t.unconverted,
            vec![Unconverted {
                currency: Arc::from("EUR"),
                reason: "no_exchange_rate",
                events: 2,
                amount: dec!(4.000048),
            }]
        );
    }

    #[test]
    fn bounds_are_the_documented_dollars_and_ticks_convert_exactly() {
        let usd: Vec<f64> = REQUEST_COST_BOUNDS_TICKS
            .iter()
            .map(|&t| ticks_to_f64(t))
            .collect();
        assert_eq!(
            usd,
            vec![
                0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0
            ]
        );
        assert!(REQUEST_COST_BOUNDS_TICKS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ticks(dec!(1.5)), Some(1_500_000_000_000));
        assert_eq!(ticks(Decimal::MAX), None);
        assert_eq!(ticks_to_f64(ticks(dec!(0.336004032)).unwrap()), 0.336004032);
    }
}
