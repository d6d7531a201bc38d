//! Costs before and after a call: the worst case a reservation holds (prompt tokens plus
//! `max_tokens`, priced with the shared catalog at the tier the prompt falls in) and the
//! actual cost a settlement records, each convertible into a budget's currency at the
//! catalog's dated rate. Pure: the catalog and the time are passed in.

use std::sync::Arc;

use rust_decimal::Decimal;
use uuid::Uuid;

use costpipe_pricing::{convert, price_event, Catalog};
use costpipe_schemas::UsageEvent;

/// Why a cost could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EstimateError {
    /// The catalog has no price for the model at that time (or the tokens are invalid); the
    /// reason is the pricing code.
    #[error("cannot price model {model:?}: {reason}")]
    Unpriced { model: String, reason: &'static str },
    /// No exchange rate from the price currency into a budget's currency at that time.
    #[error("no exchange rate from {from} to {to} at {at_ms}")]
    NoRate {
        from: Arc<str>,
        to: Arc<str>,
        at_ms: i64,
    },
    /// The converted amount does not fit a `Decimal`.
    #[error("cost overflow converting into {to}")]
    Overflow { to: Arc<str> },
}

/// An amount in the currency the catalog priced it in, at a time (for the dated rate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    pub amount: Decimal,
    pub currency: Arc<str>,
    pub at_ms: i64,
}

/// An amount converted into a budget's currency, with the rate used (1 when none was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub amount: Decimal,
    pub rate: Decimal,
    /// Start of the rate's validity, UTC ms (recorded with the reservation).
    pub rate_from_ms: Option<i64>,
}

impl Cost {
    /// This cost in `currency` at the catalog's rate in force at `at_ms`.
    pub fn in_currency(
        &self,
        catalog: &Catalog,
        currency: &Arc<str>,
    ) -> Result<Converted, EstimateError> {
        if self.currency == *currency || self.amount.is_zero() {
            return Ok(Converted {
                amount: self.amount,
                rate: Decimal::ONE,
                rate_from_ms: None,
            });
        }
        let rate = catalog
            .rate(&self.currency, currency, self.at_ms)
            .ok_or_else(|| EstimateError::NoRate {
                from: self.currency.clone(),
                to: currency.clone(),
                at_ms: self.at_ms,
            })?;
        let amount = convert(self.amount, rate.rate).ok_or_else(|| EstimateError::Overflow {
            to: currency.clone(),
        })?;
        Ok(Converted {
            amount,
            rate: rate.rate,
            rate_from_ms: Some(rate.from_ms),
        })
    }
}

/// The catalog model `name` refers to (aliases, `provider/` prefixes, patterns), which is
/// what a budget's `model` scope names.
pub fn catalog_model<'c>(catalog: &'c Catalog, name: &str) -> Option<&'c Arc<str>> {
    catalog.lookup(name).map(|m| &m.key)
}

/// Namespace of [`usage_event_id`].
const USAGE_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x7a41_0c2e_5b1d_4f0a_9e36_d2c4_8b17_e5f9);

/// The usage event id of a call: UUIDv5 over tenant and request id. Whoever reports the same
/// call again (a retried emission, a later real count of an estimated call) uses the same id,
/// so the pipeline counts the call once: an exact copy is a duplicate, and a copy with other
/// counts is a conflict, never a second call.
pub fn usage_event_id(tenant: &str, request_id: &str) -> Uuid {
    Uuid::new_v5(
        &USAGE_EVENT_NAMESPACE,
        format!("{tenant}\u{1f}{request_id}").as_bytes(),
    )
}

/// Who is calling: the parts of a request pricing depends on (tenant terms, department
/// adjustments).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub tenant: &'a str,
    pub department: Option<&'a str>,
}

fn event(caller: Caller<'_>, model: &str, at_ms: i64) -> UsageEvent {
    let mut e = UsageEvent::new(Uuid::nil(), at_ms, caller.tenant, "", model);
    e.department = caller.department.map(str::to_owned);
    e
}

fn priced(catalog: &Catalog, e: &UsageEvent) -> Result<Cost, EstimateError> {
    let p = price_event(catalog, e);
    if let Some(reason) = p.unpriced {
        return Err(EstimateError::Unpriced {
            model: e.model.clone(),
            reason: reason.as_str(),
        });
    }
    Ok(Cost {
        amount: p.cost,
        currency: p.currency,
        at_ms: e.event_time,
    })
}

/// The most a call can cost: `prompt_tokens` of input and `max_tokens` of output, priced at
/// the tier the prompt falls in. Output is priced both as plain output and as reasoning and
/// the larger taken, since either may bill higher.
pub fn worst_case(
    catalog: &Catalog,
    caller: Caller<'_>,
    model: &str,
    prompt_tokens: u64,
    max_tokens: u64,
    at_ms: i64,
) -> Result<Cost, EstimateError> {
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut e = event(caller, model, at_ms);
    e.input_tokens = to_i64(prompt_tokens);
    e.output_tokens = to_i64(max_tokens);
    let plain = priced(catalog, &e)?;
    e.reasoning_tokens = e.output_tokens;
    let reasoning = priced(catalog, &e)?;
    Ok(if reasoning.amount > plain.amount {
        reasoning
    } else {
        plain
    })
}

/// Token counts a call actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_prompt_tokens: u64,
    pub reasoning_tokens: u64,
}

/// The actual cost of a call with `usage` (cached tokens are part of `prompt_tokens`, as
/// OpenAI reports them; reasoning is part of `completion_tokens`).
pub fn actual(
    catalog: &Catalog,
    caller: Caller<'_>,
    model: &str,
    usage: Usage,
    at_ms: i64,
) -> Result<Cost, EstimateError> {
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut e = event(caller, model, at_ms);
    let cached = usage.cached_prompt_tokens.min(usage.prompt_tokens);
    e.input_tokens = to_i64(usage.prompt_tokens - cached);
    e.cached_input_tokens = to_i64(cached);
    e.output_tokens = to_i64(usage.completion_tokens);
    e.reasoning_tokens = to_i64(usage.reasoning_tokens.min(usage.completion_tokens));
    priced(catalog, &e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const AT: i64 = 1_780_000_000_000; // 2026-05-28

    #[test]
    fn worst_case_prices_prompt_plus_max_tokens_from_list_prices() {
        let c = Catalog::builtin();
        let caller = Caller {
            tenant: "acme",
            department: None,
        };
        // gpt-4o-mini: 0.15 input, 0.60 output per million tokens (catalog, written by hand).
        let w = worst_case(&c, caller, "gpt-4o-mini", 1_000, 500, AT).unwrap();
        assert_eq!(w.amount, dec!(0.00045));
        assert_eq!(&*w.currency, "USD");
        let a = actual(
            &c,
            caller,
            "openai/gpt-4o-mini",
            Usage {
                prompt_tokens: 1_000,
                completion_tokens: 100,
                ..Default::default()
            },
            AT,
        )
        .unwrap();
        assert_eq!(a.amount, dec!(0.00021));
        assert!(worst_case(&c, caller, "no-such-model", 1, 1, AT).is_err());
    }

    #[test]
    fn usage_event_ids_depend_on_tenant_and_request_only() {
        let a = usage_event_id("acme", "chatcmpl-1");
        assert_eq!(a, usage_event_id("acme", "chatcmpl-1"));
        assert_ne!(a, usage_event_id("acme", "chatcmpl-2"));
        assert_ne!(a, usage_event_id("globex", "chatcmpl-1"));
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn conversion_uses_the_dated_rate_and_records_it() {
        let c = Catalog::builtin();
        let usd: Arc<str> = "USD".into();
        let eur: Arc<str> = "EUR".into();
        let cost = Cost {
            amount: dec!(10),
            currency: usd.clone(),
            at_ms: AT,
        };
        let rate = c.rate(&usd, &eur, AT).unwrap().clone();
        let conv = cost.in_currency(&c, &eur).unwrap();
        assert_eq!(conv.rate, rate.rate);
        assert_eq!(conv.amount, (dec!(10) * rate.rate).round_dp(12));
        assert_eq!(conv.rate_from_ms, Some(rate.from_ms));
        assert_eq!(cost.in_currency(&c, &usd).unwrap().amount, dec!(10));
        let xyz: Arc<str> = "XYZ".into();
        assert!(matches!(
            cost.in_currency(&c, &xyz),
            Err(EstimateError::NoRate { .. })
        ));
    }
}
