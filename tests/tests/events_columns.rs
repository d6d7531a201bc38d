//! Every column of every stored event equals what the test expects from the event it sent:
//! the aggregator encodes its inserts itself (`aggregator/src/events_block.rs`, ClickHouse's
//! Native format), so a value in the wrong row, a wrong width or a mangled string would show
//! here, not only in totals.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::Value;

use costpipe_e2e::*;
use costpipe_pricing::{price_event, Catalog};
use costpipe_schemas::UsageEvent;

/// Columns as JSON, money as text so that it parses back exactly.
const SELECT: &str = "SELECT toString(event_id) AS id, toUnixTimestamp64Milli(event_time) AS t,
    tenant_id, department, user_id, project_id, feature, environment, provider, model,
    price_model, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
    reasoning_tokens, cache_write_1h_tokens, toString(cost) AS cost, currency,
    toString(billing_cost) AS billing_cost, billing_currency,
    toString(exchange_rate) AS exchange_rate, tier_above, contract_price,
    toString(adjustment_percent) AS adjustment_percent, unpriced, unpriced_reason,
    request_id, trace_id, span_name, labels, source_partition, price_window,
    generation, epoch_start <= source_offset AND source_offset < epoch_end AS in_epoch,
    toString(unit_price_input) AS unit_price_input, toString(unit_price_cached_input) AS unit_price_cached_input,
    toString(unit_price_cache_write_5m) AS unit_price_cache_write_5m, toString(unit_price_cache_write_1h) AS unit_price_cache_write_1h,
    toString(unit_price_output) AS unit_price_output, toString(unit_price_reasoning) AS unit_price_reasoning, toString(unit_price_request) AS unit_price_request,
    toString(cache_savings) AS cache_savings, toString(billing_cache_savings) AS billing_cache_savings";

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .expect("decimal as text")
        .parse()
        .expect("decimal")
}

fn expected_row(e: &UsageEvent, catalog: &Catalog) -> BTreeMap<&'static str, Value> {
    let p = price_event(catalog, e);
    let s = |o: &Option<String>| Value::from(o.clone().unwrap_or_default());
    BTreeMap::from([
        ("t", Value::from(e.event_time)),
        ("tenant_id", Value::from(e.tenant_id.clone())),
        ("department", s(&e.department)),
        ("user_id", s(&e.user_id)),
        ("project_id", s(&e.project_id)),
        ("feature", s(&e.feature)),
        ("environment", s(&e.environment)),
        ("provider", Value::from(e.provider.clone())),
        ("model", Value::from(e.model.clone())),
        (
            "price_model",
            Value::from(p.price_model.as_deref().unwrap_or("")),
        ),
        ("input_tokens", Value::from(e.input_tokens)),
        ("output_tokens", Value::from(e.output_tokens)),
        ("cached_input_tokens", Value::from(e.cached_input_tokens)),
        ("cache_write_tokens", Value::from(e.cache_write_tokens)),
        ("reasoning_tokens", Value::from(e.reasoning_tokens)),
        (
            "cache_write_1h_tokens",
            Value::from(e.cache_write_1h_tokens.unwrap_or(0)),
        ),
        ("cost", Value::from(p.cost.normalize().to_string())),
        ("currency", Value::from(&*p.currency)),
        (
            "billing_cost",
            Value::from(p.billing_cost.normalize().to_string()),
        ),
        ("billing_currency", Value::from(&*p.billing_currency)),
        (
            "exchange_rate",
            Value::from(p.exchange_rate.normalize().to_string()),
        ),
        ("tier_above", p.tier_above.map_or(Value::Null, Value::from)),
        ("contract_price", Value::from(p.contract)),
        (
            "adjustment_percent",
            Value::from(p.adjustment_percent.normalize().to_string()),
        ),
        ("unpriced", Value::from(p.unpriced.is_some())),
        (
            "unpriced_reason",
            Value::from(p.unpriced.map_or("", |r| r.as_str())),
        ),
        ("request_id", s(&e.request_id)),
        ("trace_id", s(&e.trace_id)),
        ("span_name", s(&e.span_name)),
        (
            "labels",
            Value::Object(
                e.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                    .collect(),
            ),
        ),
        (
            "price_window",
            Value::from(p.price_window.as_deref().unwrap_or("")),
        ),
        ("in_epoch", Value::from(1)),
        (
            "unit_price_input",
            Value::from(p.unit_prices.input.normalize().to_string()),
        ),
        (
            "unit_price_cached_input",
            Value::from(p.unit_prices.cached_input.normalize().to_string()),
        ),
        (
            "unit_price_cache_write_5m",
            Value::from(p.unit_prices.cache_write_5m.normalize().to_string()),
        ),
        (
            "unit_price_cache_write_1h",
            Value::from(p.unit_prices.cache_write_1h.normalize().to_string()),
        ),
        (
            "unit_price_output",
            Value::from(p.unit_prices.output.normalize().to_string()),
        ),
        (
            "unit_price_reasoning",
            Value::from(p.unit_prices.reasoning.normalize().to_string()),
        ),
        (
            "unit_price_request",
            Value::from(p.unit_prices.per_request.normalize().to_string()),
        ),
        (
            "cache_savings",
            Value::from(p.cache_savings.normalize().to_string()),
        ),
        (
            "billing_cache_savings",
            Value::from(p.billing_cache_savings.normalize().to_string()),
        ),
    ])
}

/// The columns `keys` of ClickHouse's JSON row, with decimals normalised the way the
/// expectation writes them.
fn stored_row<'k>(
    row: &Value,
    keys: impl Iterator<Item = &'k &'static str>,
) -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    for key in keys {
        let v = row[*key].clone();
        let v = match *key {
            "cost" | "billing_cost" | "exchange_rate" | "adjustment_percent" => {
                Value::from(dec(&v).normalize().to_string())
            }
            k if k.starts_with("unit_price_") || k.ends_with("cache_savings") => {
                Value::from(dec(&v).normalize().to_string())
            }
            // 64-bit integers are quoted in ClickHouse's JSON output by default.
            "t"
            | "input_tokens"
            | "output_tokens"
            | "cached_input_tokens"
            | "cache_write_tokens"
            | "reasoning_tokens"
            | "cache_write_1h_tokens"
            | "tier_above" => match &v {
                Value::String(s) => Value::from(s.parse::<i64>().expect("integer")),
                other => other.clone(),
            },
            _ => v,
        };
        out.insert(*key, v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn every_column_of_every_event_is_stored_as_sent() {
    let seed = test_seed("every_column_of_every_event_is_stored_as_sent");
    let stack = Stack::from_env();
    let names = Names::new("e2e_columns");
    let db = names.database.clone();
    let mut events = synthetic_events(seed, 5, 3_600_000, 3_000);
    // Values the synthetic stream does not produce: unusual strings, every optional field
    // set or unset, and a long-context tier.
    for (i, e) in events.iter_mut().enumerate().take(40) {
        match i % 4 {
            0 => {
                e.labels
                    .insert("ünïcödé".into(), "{\"q\": 'x\\y'}\t\n".into());
                e.labels.insert("empty".into(), String::new());
                e.span_name = Some("s".repeat(200));
            }
            1 => {
                e.department = None;
                e.user_id = None;
                e.project_id = None;
                e.feature = None;
                e.environment = None;
                e.request_id = None;
                e.trace_id = None;
                e.span_name = None;
                e.labels.clear();
            }
            2 => {
                e.provider = "openai".into();
                e.model = "gpt-5.4".into();
                e.input_tokens = 300_000;
                e.cache_write_1h_tokens = Some(7);
            }
            _ => e.cache_write_1h_tokens = Some(0),
        }
    }
    names.create_usage_topic(&stack).await;
    let aggregator = Service::aggregator(&stack, &names, "", &[]);
    wait_taken_up(&aggregator).await;
    let producer = spawn_producer(
        &stack.brokers,
        &names.usage,
        events.clone(),
        500,
        std::time::Duration::ZERO,
    );
    producer.await.expect("producer");
    wait_event_count(&stack, &db, events.len() as u64).await;

    let text = stack
        .query(&format!(
            "{SELECT} FROM {db}.usage_events_priced FORMAT JSONEachRow"
        ))
        .await;
    let stored: BTreeMap<String, Value> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON row");
            (v["id"].as_str().expect("id").to_owned(), v)
        })
        .collect();
    assert_eq!(stored.len(), events.len(), "each event once (seed {seed})");
    let catalog = Catalog::builtin();
    assert!(
        events
            .iter()
            .any(|e| price_event(&catalog, e).tier_above.is_some()),
        "a tiered price is among the events"
    );
    let mut generations = std::collections::BTreeSet::new();
    for e in &events {
        let row = &stored[&e.event_id.to_string()];
        generations.insert(row["generation"].to_string());
        let expected = expected_row(e, &catalog);
        assert_eq!(
            stored_row(row, expected.keys()),
            expected,
            "event {} (seed {seed})",
            e.event_id
        );
    }
    assert!(
        !generations.contains("0"),
        "rows carry the writer's generation"
    );
}
