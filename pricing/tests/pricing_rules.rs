//! Every pricing rule against a small hand-written catalog (`testdata/small.toml`), with
//! expected amounts computed by hand in the comments.

use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use costpipe_pricing::{convert, price_event, Catalog, CatalogError, UnpricedReason};
use costpipe_schemas::{UsageEvent, MAX_TOKENS_PER_FIELD};

const SMALL: &str = include_str!("../testdata/small.toml");

fn catalog() -> Catalog {
    Catalog::from_toml(SMALL).expect("small catalog is valid")
}

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn event(tenant: &str, model: &str, at: &str) -> UsageEvent {
    UsageEvent::new(Uuid::new_v4(), ms(at), tenant, "p", model)
}

fn with(
    mut e: UsageEvent,
    input: i64,
    cached: i64,
    write5: i64,
    write1h: i64,
    output: i64,
) -> UsageEvent {
    e.input_tokens = input;
    e.cached_input_tokens = cached;
    e.cache_write_tokens = write5;
    e.cache_write_1h_tokens = Some(write1h);
    e.output_tokens = output;
    e
}

#[test]
fn price_in_force_at_event_time_not_processing_time() {
    let c = catalog();
    // 1M input + 1M output: 5 + 15 before 2024-10-02, 2.5 + 10 from then on.
    let before = with(
        event("t", "gpt-4o", "2024-10-01T23:59:59.999Z"),
        1_000_000,
        0,
        0,
        0,
        1_000_000,
    );
    let at = with(
        event("t", "gpt-4o", "2024-10-02T00:00:00.000Z"),
        1_000_000,
        0,
        0,
        0,
        1_000_000,
    );
    assert_eq!(price_event(&c, &before).cost, dec!(20));
    assert_eq!(price_event(&c, &at).cost, dec!(12.5));
    let too_early = with(
        event("t", "gpt-4o", "2024-05-12T23:59:59.999Z"),
        1,
        0,
        0,
        0,
        1,
    );
    assert_eq!(
        price_event(&c, &too_early).unpriced,
        Some(UnpricedReason::NoPriceAtTime)
    );
}

#[test]
fn model_matching_rules() {
    let c = catalog();
    assert_eq!(&*c.lookup("gpt-4o").unwrap().key, "gpt-4o");
    assert_eq!(
        &*c.lookup("gpt-4o-2024-08-06").unwrap().key,
        "gpt-4o",
        "alias"
    );
    assert_eq!(
        &*c.lookup("openai/gpt-4o").unwrap().key,
        "gpt-4o",
        "provider prefix"
    );
    assert_eq!(
        &*c.lookup("zhipu/glm-4.6").unwrap().key,
        "glm-4.6",
        "alias with a slash wins over stripping"
    );
    assert_eq!(
        &*c.lookup("gpt-4o-2031-02-03").unwrap().key,
        "gpt-4o",
        "dated snapshot pattern"
    );
    assert_eq!(
        &*c.lookup("gpt-4o-mini-2031-02-03").unwrap().key,
        "gpt-4o-mini",
        "higher priority pattern"
    );
    assert_eq!(
        &*c.lookup("azure/gpt-4o-mini-2031-02-03").unwrap().key,
        "gpt-4o-mini"
    );
    assert!(c.lookup("gpt-4o-turbo").is_none());
    let p = price_event(&c, &event("t", "mystery-model", "2026-11-01T00:00:00Z"));
    assert_eq!(p.unpriced, Some(UnpricedReason::UnknownModel));
    assert_eq!(p.cost, Decimal::ZERO);
}

#[test]
fn every_token_bucket_has_its_price() {
    let c = catalog();
    // sonnet: 1000*3 + 2000*0.30 + 3000*3.75 + 4000*6 + 500*15 = 3000+600+11250+24000+7500 = 46350 per M
    let e = with(
        event("t", "claude-sonnet-4-5", "2026-11-01T00:00:00Z"),
        1000,
        2000,
        3000,
        4000,
        500,
    );
    let p = price_event(&c, &e);
    assert_eq!(p.cost, dec!(0.04635));
    assert_eq!(p.tier_above, None);
    // o3: reasoning priced apart: 100 input*2 + (300-200) output*8 + 200 reasoning*4 = 200+800+800 = 1800/M
    // plus 0.01 per request.
    let mut e = with(event("t", "o3", "2026-11-01T00:00:00Z"), 100, 0, 0, 0, 300);
    e.reasoning_tokens = 200;
    assert_eq!(price_event(&c, &e).cost, dec!(0.0118));
    // embeddings: 1M tokens at 0.02
    let e = with(
        event("t", "text-embedding-3-small", "2026-11-01T00:00:00Z"),
        1_000_000,
        0,
        0,
        0,
        0,
    );
    assert_eq!(price_event(&c, &e).cost, dec!(0.02));
}

#[test]
fn tier_boundaries_are_exact() {
    let c = catalog();
    let at = |prompt: i64| {
        let e = with(
            event("t", "claude-sonnet-4-5", "2026-11-01T00:00:00Z"),
            prompt,
            0,
            0,
            0,
            1_000,
        );
        price_event(&c, &e)
    };
    // 199,999 * 3 + 1000 * 15 = 599,997 + 15,000 per M
    assert_eq!(at(199_999).cost, dec!(0.614997));
    assert_eq!(
        at(200_000).cost,
        dec!(0.615),
        "threshold itself is not above it"
    );
    assert_eq!(at(200_000).tier_above, None);
    // 200,001 * 6 + 1000 * 22.5 = 1,200,006 + 22,500 per M
    assert_eq!(at(200_001).cost, dec!(1.222506));
    assert_eq!(at(200_001).tier_above, Some(200_000));
}

/// The outside client's event: `input_tokens = cached_input_tokens = 2^62`, each fine on its
/// own. Their sum overflowed `Tokens::prompt` (a panic in debug builds, the base tier
/// instead of the long-context one in release builds); now such events are unpriced.
#[test]
fn huge_token_counts_are_unpriced_never_wrapped() {
    let c = catalog();
    let at = |input: i64, cached: i64, output: i64| {
        let mut e = with(
            event("t", "claude-sonnet-4-5", "2026-11-01T00:00:00Z"),
            input,
            cached,
            0,
            0,
            output,
        );
        e.reasoning_tokens = 0;
        price_event(&c, &e)
    };
    for (input, cached, output) in [
        (1 << 62, 1 << 62, 0),
        (i64::MAX, 0, 0),
        (0, i64::MAX, 0),
        (0, 0, i64::MAX),
        (i64::MAX, i64::MAX, i64::MAX),
        (MAX_TOKENS_PER_FIELD + 1, 0, 0),
        (-1, 0, 0),
        (i64::MIN, i64::MAX, 0),
    ] {
        let p = at(input, cached, output);
        assert_eq!(
            p.unpriced,
            Some(UnpricedReason::InvalidTokens),
            "{input} {cached} {output}"
        );
        assert_eq!(
            (p.cost, p.billing_cost, p.tier_above),
            (Decimal::ZERO, Decimal::ZERO, None)
        );
        assert_eq!(p.price_model.as_deref(), Some("claude-sonnet-4-5"));
    }
    // At the bound everything is priced exactly, in the long-context tier:
    // 10^12 * 6 + 10^12 * 0.60 + 10^12 * 22.50 per M = 6,000,000 + 600,000 + 22,500,000.
    let p = at(
        MAX_TOKENS_PER_FIELD,
        MAX_TOKENS_PER_FIELD,
        MAX_TOKENS_PER_FIELD,
    );
    assert_eq!(p.unpriced, None);
    assert_eq!(p.tier_above, Some(200_000));
    assert_eq!(p.cost, dec!(29_100_000));
}

#[test]
fn reasoning_beyond_output_is_not_priced_negative() {
    let c = catalog();
    let mut e = with(event("t", "o3", "2026-11-01T00:00:00Z"), 100, 0, 0, 0, 10);
    e.reasoning_tokens = 1_000;
    assert_eq!(
        price_event(&c, &e).unpriced,
        Some(UnpricedReason::InvalidTokens)
    );
}

#[test]
fn tenant_terms_and_currencies() {
    let c = catalog();
    let e = |tenant: &str, dept: Option<&str>, model: &str, at: &str| {
        let mut e = with(event(tenant, model, at), 1_000_000, 0, 0, 0, 0);
        e.department = dept.map(String::from);
        price_event(&c, &e)
    };
    // gpt-4o 1M input = 2.50; acme -10 % tenant-wide, research -25 %.
    assert_eq!(
        e("acme", None, "gpt-4o", "2026-11-01T00:00:00Z").cost,
        dec!(2.25)
    );
    assert_eq!(
        e("acme", Some("research"), "gpt-4o", "2026-11-01T00:00:00Z").cost,
        dec!(1.875)
    );
    assert_eq!(
        e("acme", Some("support"), "gpt-4o", "2026-11-01T00:00:00Z").cost,
        dec!(2.25)
    );
    assert_eq!(
        e("resold", None, "gpt-4o", "2026-11-01T00:00:00Z").cost,
        dec!(2.8125),
        "12.5 % markup"
    );
    // contract: 2.00 instead of 2.50, only inside its dates.
    let contract = e("bigco", None, "gpt-4o", "2026-06-01T00:00:00Z");
    assert!(contract.contract);
    assert_eq!(contract.cost, dec!(2.00));
    assert_eq!(
        e("bigco", None, "gpt-4o", "2026-05-31T23:59:59.999Z").cost,
        dec!(2.50)
    );
    // CNY model billed in USD: 1M input at 2 CNY = 2 CNY = 0.28 USD; both amounts kept.
    let glm = e("t", None, "glm-4.6", "2026-11-01T00:00:00Z");
    assert_eq!((glm.cost, &*glm.currency), (dec!(2), "CNY"));
    assert_eq!(
        (glm.billing_cost, &*glm.billing_currency, glm.exchange_rate),
        (dec!(0.28), "USD", dec!(0.14))
    );
    // A EUR tenant; the USD->EUR rate changes on 2026-07-01 at midnight.
    let h1 = e("eurocorp", None, "gpt-4o", "2026-06-30T23:59:59.999Z");
    let h2 = e("eurocorp", None, "gpt-4o", "2026-07-01T00:00:00.000Z");
    assert_eq!((h1.billing_cost, h2.billing_cost), (dec!(2.0), dec!(2.25)));
    // No rate before 2026: flagged, cost kept, not converted.
    let old = e("eurocorp", None, "gpt-4o", "2025-12-31T23:59:59.999Z");
    assert_eq!(old.unpriced, Some(UnpricedReason::NoExchangeRate));
    assert_eq!(old.cost, dec!(2.5));
}

fn refused(toml: &str) -> String {
    Catalog::from_toml(toml)
        .expect_err("catalog must be refused")
        .to_string()
}

#[test]
fn invalid_catalogs_are_refused_with_clear_messages() {
    let overlap = SMALL.replacen(
        "effective_to = \"2024-10-02T00:00:00Z\"",
        "effective_to = \"2024-10-03T00:00:00Z\"",
        1,
    );
    assert_eq!(
        refused(&overlap),
        "model gpt-4o: effective ranges overlap: [2024-05-13T00:00:00+00:00, 2024-10-03T00:00:00+00:00) and [2024-10-02T00:00:00+00:00, open)"
    );
    let negative = SMALL.replacen("input = \"0.15\"", "input = \"-0.15\"", 1);
    assert_eq!(
        refused(&negative),
        "model gpt-4o-mini: price input is negative (-0.15)"
    );
    let currency = SMALL.replacen("currency = \"CNY\"", "currency = \"XBT\"", 1);
    assert_eq!(
        refused(&currency),
        "model glm-4.6: unknown currency \"XBT\" (known: USD, CNY, EUR)"
    );
    let ambiguous = SMALL
        .replacen("priority = 20", "priority = 10", 1)
        .replacen(
            "^gpt-4o-mini-\\\\d{4}-\\\\d{2}-\\\\d{2}$",
            "^gpt-4o-(mini-)?\\\\d{4}-\\\\d{2}-\\\\d{2}$",
            1,
        );
    assert!(
        refused(&ambiguous)
            .contains("is matched at priority 10 by patterns of both gpt-4o and gpt-4o-mini"),
        "{}",
        refused(&ambiguous)
    );
    let precise = SMALL.replacen("input = \"0.15\"", "input = \"0.1500001\"", 1);
    assert!(matches!(
        Catalog::from_toml(&precise),
        Err(CatalogError::TooPrecise { .. })
    ));
    let typo = SMALL.replacen("cached_input = \"0.075\"", "cache_input = \"0.075\"", 1);
    assert!(
        refused(&typo).contains("unknown field `cache_input`"),
        "{}",
        refused(&typo)
    );
    let no_rate = SMALL
        .replacen(
            "from = \"CNY\"\nto = \"USD\"",
            "from = \"CNY\"\nto = \"EUR\"",
            1,
        )
        .replacen(
            "from = \"CNY\"\nto = \"EUR\"\nrate = \"0.125\"",
            "from = \"EUR\"\nto = \"CNY\"\nrate = \"8\"",
            1,
        );
    assert!(
        refused(&no_rate).contains("no exchange rate CNY->USD"),
        "{}",
        refused(&no_rate)
    );
    let bad_time = SMALL.replacen("2024-07-18T00:00:00Z", "July 18th", 1);
    assert!(refused(&bad_time).contains("is not an RFC 3339 timestamp"));
}

proptest! {
    #[test]
    fn cost_is_linear_in_tokens(
        input in 0i64..5_000_000, cached in 0i64..5_000_000, write in 0i64..5_000_000,
        output in 0i64..5_000_000, k in 1i64..50,
    ) {
        let c = catalog();
        let big = with(event("t", "gpt-4o", "2026-11-01T00:00:00Z"), input * k, cached * k, write * k, 0, output * k);
        let one = with(event("t", "gpt-4o", "2026-11-01T00:00:00Z"), input, cached, write, 0, output);
        prop_assert_eq!(price_event(&c, &one).cost * Decimal::from(k), price_event(&c, &big).cost);
    }

    #[test]
    fn a_cached_token_never_costs_more_than_an_uncached_one(n in 0i64..10_000_000, model in 0usize..3) {
        let c = catalog();
        let name = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"][model];
        let cached = with(event("t", name, "2026-11-01T00:00:00Z"), 0, n, 0, 0, 0);
        let uncached = with(event("t", name, "2026-11-01T00:00:00Z"), n, 0, 0, 0, 0);
        prop_assert!(price_event(&c, &cached).cost <= price_event(&c, &uncached).cost);
    }

    #[test]
    fn currency_conversion_round_trips_within_the_rounding(mantissa in 0i64..i64::MAX / 4, scale in 0u32..=12) {
        // 1 EUR = 1.25 USD and 1 USD = 0.8 EUR are exact inverses; each conversion rounds
        // half-even to 12 places, so a round trip is off by at most 0.5e-12 * 1.25 + 0.5e-12.
        let x = Decimal::new(mantissa, scale);
        let back = convert(convert(x, dec!(0.8)).unwrap(), dec!(1.25)).unwrap();
        prop_assert!((back - x).abs() <= dec!(0.000000000001125));
    }

    #[test]
    fn every_cost_fits_the_stored_scale(input in 0i64..1_000_000_000, output in 0i64..1_000_000_000) {
        let c = catalog();
        for m in ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "o3", "glm-4.6"] {
            let e = with(event("resold", m, "2026-11-01T00:00:00Z"), input, input / 3, 0, 0, output);
            let p = price_event(&c, &e);
            prop_assert!(p.cost.scale() <= 12 && p.billing_cost.scale() <= 12);
        }
    }
}

#[test]
fn unit_prices_and_cache_savings() {
    let c = catalog();
    // gpt-4o from 2024-10-02: input 2.50, cached 1.25, output 10 per 1M.
    // 1,000 input, 400,000 cached, 200 output.
    let e = with(
        event("t", "gpt-4o", "2026-03-01T00:00:00Z"),
        1_000,
        400_000,
        0,
        0,
        200,
    );
    let p = price_event(&c, &e);
    assert_eq!(p.unit_prices.input, dec!(2.50));
    assert_eq!(p.unit_prices.cached_input, dec!(1.25));
    assert_eq!(p.unit_prices.output, dec!(10));
    assert_eq!(p.unit_prices.reasoning, dec!(10));
    // Σ quantity × unit price / 10^6 is the cost: 0.0025 + 0.5 + 0.002.
    assert_eq!(p.cost, dec!(0.5045));
    // 400,000 × (2.50 − 1.25) / 10^6 = 0.5.
    assert_eq!(p.cache_savings, dec!(0.5));
    assert_eq!(p.billing_cache_savings, dec!(0.5));
    // acme has −10 %: the savings are adjusted like the cost.
    let mut a = e.clone();
    a.tenant_id = "acme".into();
    let p = price_event(&c, &a);
    assert_eq!(p.cost, dec!(0.45405));
    assert_eq!(p.cache_savings, dec!(0.45));
    // eurocorp bills in EUR at 0.8 (before July 2026).
    let mut eu = e.clone();
    eu.tenant_id = "eurocorp".into();
    let p = price_event(&c, &eu);
    assert_eq!(p.billing_cache_savings, dec!(0.4));
    assert_eq!(p.billing_cost, dec!(0.4036));
    // bigco's contract price (from 2026-06) is the unit price, and the cost is still
    // Σ quantity × unit price.
    let mut big = e.clone();
    big.tenant_id = "bigco".into();
    big.event_time = ms("2026-06-02T00:00:00Z");
    let p = price_event(&c, &big);
    assert!(p.contract);
    assert_eq!(p.unit_prices.input, dec!(2.00));
    assert_eq!(p.unit_prices.output, dec!(8.00));
    let u = p.unit_prices;
    let list = (Decimal::from(1_000) * u.input
        + Decimal::from(400_000) * u.cached_input
        + Decimal::from(200) * u.output)
        / dec!(1000000)
        + u.per_request;
    assert_eq!(p.cost, list);
    // Unpriced: zeros.
    let p = price_event(&c, &event("t", "nope", "2026-03-01T00:00:00Z"));
    assert_eq!(p.unit_prices, Default::default());
    assert_eq!(p.cache_savings, Decimal::ZERO);
}
