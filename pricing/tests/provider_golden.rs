//! Golden cases written by hand from the providers' price documents
//! (`testdata/provider_cases.toml`): each states its figures, source and arithmetic, and none
//! is derived from `default.toml`. They check the catalog's prices, not only its arithmetic
//! (which `golden.rs` does). Every provider in the catalog has at least one case.

use std::collections::BTreeSet;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;
use uuid::Uuid;

use costpipe_pricing::{price_event, Catalog};
use costpipe_schemas::UsageEvent;

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    provider: String,
    what: String,
    model: String,
    at: String,
    #[serde(default)]
    input: i64,
    #[serde(default)]
    cached_input: i64,
    #[serde(default)]
    cache_write_5m: i64,
    #[serde(default)]
    cache_write_1h: i64,
    #[serde(default)]
    output: i64,
    #[serde(default)]
    reasoning: i64,
    cost: String,
    currency: String,
    window: Option<String>,
    tier_above: Option<u64>,
    source: String,
    arithmetic: String,
}

#[test]
fn the_catalog_prices_each_provider_document_example_exactly() {
    let cases: Cases = toml::from_str(include_str!("../testdata/provider_cases.toml")).unwrap();
    let catalog = Catalog::builtin();
    for c in &cases.case {
        assert!(!c.source.is_empty() && !c.arithmetic.is_empty());
        let at = chrono::DateTime::parse_from_rfc3339(&c.at)
            .unwrap()
            .timestamp_millis();
        let mut e = UsageEvent::new(Uuid::nil(), at, "golden", "p", &c.model);
        e.input_tokens = c.input;
        e.cached_input_tokens = c.cached_input;
        e.cache_write_tokens = c.cache_write_5m;
        e.cache_write_1h_tokens = Some(c.cache_write_1h);
        e.output_tokens = c.output;
        e.reasoning_tokens = c.reasoning;
        let p = price_event(&catalog, &e);
        let label = format!("{} {} ({}): {}", c.provider, c.model, c.what, c.arithmetic);
        assert_eq!(p.unpriced, None, "{label}");
        assert_eq!(p.cost, Decimal::from_str(&c.cost).unwrap(), "{label}");
        assert_eq!(&*p.currency, c.currency, "{label}");
        assert_eq!(p.price_window.as_deref(), c.window.as_deref(), "{label}");
        assert_eq!(p.tier_above, c.tier_above, "{label}");
    }
    let covered: BTreeSet<&str> = cases.case.iter().map(|c| c.provider.as_str()).collect();
    let providers: BTreeSet<&str> = catalog
        .models()
        .iter()
        .map(|m| m.provider.as_str())
        .collect();
    assert_eq!(
        covered, providers,
        "one hand-written case per provider at least"
    );
}
