//! Golden file: one fixed event per model of the shipped catalog, priced, against expected
//! costs computed outside the code under test (`testdata/golden.toml`, written by
//! `testdata/make_golden.py` and reviewed by hand). Every catalog model must have a case.

use std::collections::BTreeSet;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;
use uuid::Uuid;

use costpipe_pricing::{price_event, Catalog, ModelKind};
use costpipe_schemas::UsageEvent;

#[derive(Deserialize)]
struct Golden {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    model: String,
    at: String,
    kind: String,
    cost: String,
    currency: String,
    billing_cost_usd: String,
}

fn event(case: &Case) -> UsageEvent {
    let at = chrono::DateTime::parse_from_rfc3339(&case.at)
        .unwrap()
        .timestamp_millis();
    let mut e = UsageEvent::new(Uuid::new_v4(), at, "golden", "p", &case.model);
    if case.kind == "embedding" {
        e.input_tokens = 100_000;
    } else {
        e.input_tokens = 123_456;
        e.cached_input_tokens = 23_456;
        e.cache_write_tokens = 3_456;
        e.cache_write_1h_tokens = Some(1_000);
        e.output_tokens = 7_890;
        e.reasoning_tokens = 1_234;
    }
    e
}

#[test]
fn shipped_catalog_prices_every_model_as_the_golden_file_says() {
    let catalog = Catalog::builtin();
    let golden: Golden = toml::from_str(include_str!("../testdata/golden.toml")).unwrap();
    let mut covered = BTreeSet::new();
    for case in &golden.case {
        let p = price_event(&catalog, &event(case));
        assert_eq!(p.unpriced, None, "{} is priced", case.model);
        assert_eq!(
            p.cost,
            Decimal::from_str(&case.cost).unwrap(),
            "cost of {}",
            case.model
        );
        assert_eq!(&*p.currency, case.currency, "currency of {}", case.model);
        assert_eq!(
            p.billing_cost,
            Decimal::from_str(&case.billing_cost_usd).unwrap(),
            "USD bill of {}",
            case.model
        );
        covered.insert(case.model.clone());
    }
    let models: BTreeSet<String> = catalog.models().iter().map(|m| m.key.to_string()).collect();
    assert_eq!(covered, models, "every catalog model has a golden case");
    assert!(catalog
        .models()
        .iter()
        .any(|m| m.kind == ModelKind::Embedding));
}

#[test]
fn shipped_catalog_names_resolve() {
    let c = Catalog::builtin();
    assert_eq!(&*c.lookup("openai/gpt-4o-mini").unwrap().key, "gpt-4o-mini");
    assert_eq!(
        &*c.lookup("claude-sonnet-4-5-20250929").unwrap().key,
        "claude-sonnet-4-5"
    );
    assert!(
        c.lookup("mistral-large-latest").is_none(),
        "the demo's unpriced model stays unpriced"
    );
}

#[test]
fn in_the_shipped_catalog_a_cached_token_never_costs_more_than_an_uncached_one() {
    let c = Catalog::builtin();
    for m in c.models() {
        for period in &m.periods {
            let all = period.all_prices();
            for p in all {
                assert!(
                    p.cached_input <= p.input,
                    "{}: cached {} > input {}",
                    m.key,
                    p.cached_input,
                    p.input
                );
            }
            // And priced through the engine, one token each way, at the period's start.
            let mut cached = UsageEvent::new(Uuid::new_v4(), period.from_ms, "t", "p", &*m.key);
            cached.cached_input_tokens = 1_000;
            let mut plain = cached.clone();
            plain.cached_input_tokens = 0;
            plain.input_tokens = 1_000;
            assert!(
                price_event(&c, &cached).cost <= price_event(&c, &plain).cost,
                "{}",
                m.key
            );
        }
    }
}
