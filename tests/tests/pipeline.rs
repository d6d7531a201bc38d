//! End to end: 10,000 events through the real broker into ClickHouse, totals checked to the
//! last decimal place against an independent computation, bills checked through the billing
//! API, and budget breaches read back from the control topic.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use costpipe_e2e::*;
use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::{ensure_topics, TopicSpec};
use costpipe_schemas::{BudgetLevel, ControlCodec, ControlKind, UsageEvent};
use rdkafka::message::Message;

const EVENTS: usize = 10_000;

fn this_month_events(seed: u64, n: usize) -> Vec<UsageEvent> {
    let now = chrono::Utc::now().timestamp_millis();
    let month_start = costpipe_e2e_month_start(now);
    SyntheticStream::new(
        seed,
        SyntheticConfig {
            tenants: 6,
            start_ms: month_start,
            end_ms: now,
            include_unpriced: true,
        },
    )
    .take(n)
    .collect()
}

fn costpipe_e2e_month_start(now_ms: i64) -> i64 {
    use chrono::{Datelike, TimeZone, Utc};
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .expect("valid now");
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .expect("month start")
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn ten_thousand_events_land_exactly_and_breaches_are_published() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_pipeline");
    let events = this_month_events(1, EVENTS);
    let expected = expected_by_tenant(&events);
    assert!(
        events.iter().any(|e| expected_prices(&e.model).is_none()),
        "the stream includes unpriced models"
    );

    // acme spends far more than its limit (BLOCK); globex lands at ~91 % of its limit (WARNING).
    let acme_limit = (expected["acme"] / dec!(2)).round_dp(2);
    let globex_limit = (expected["globex"] * dec!(1.1)).round_dp(2);
    let limits = format!("acme={acme_limit},globex={globex_limit}");

    ensure_topics(
        &stack.brokers,
        &[TopicSpec {
            name: names.usage.clone(),
            partitions: 4,
            compacted: false,
        }],
    )
    .await
    .expect("topics");
    let mut aggregator = Service::aggregator(&stack, &names, &limits, &[]);

    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");
    let mut pending = Vec::with_capacity(EVENTS);
    for e in &events {
        pending.push(emitter.enqueue(e).await.expect("enqueue").wait());
    }
    let reports = join_all(pending).await;
    assert_eq!(
        reports.iter().filter(|r| r.is_ok()).count(),
        EVENTS,
        "every event has a delivery report"
    );

    let db = names.database.clone();
    wait_for("all events in the rollup", Duration::from_secs(120), || {
        let (stack, db) = (&stack, &db);
        async move {
            let n = scalar(
                stack,
                &format!("SELECT sum(events) FROM {db}.usage_cost_minute"),
            )
            .await?;
            (n == EVENTS as u64).then_some(())
        }
    })
    .await;
    aggregator.assert_running();

    assert_eq!(
        rollup_by_tenant(&stack, &db).await,
        expected,
        "rollup totals equal the independent sums exactly"
    );
    assert_eq!(
        stack
            .query(&format!(
                "SELECT count(), uniqExact(event_id) FROM {db}.usage_events_priced"
            ))
            .await,
        format!("{EVENTS}\t{EVENTS}")
    );
    let unpriced = events
        .iter()
        .filter(|e| expected_prices(&e.model).is_none())
        .count();
    assert_eq!(
        stack
            .query(&format!(
                "SELECT countIf(unpriced) FROM {db}.usage_events_priced"
            ))
            .await,
        unpriced.to_string()
    );

    // Each event's unit prices (060) are the hand-written table's, and its cache savings
    // are cached tokens × (input − cached price), summed per tenant exactly.
    let prices = stack
        .query(&format!(
            "SELECT model, groupUniqArray(toString((unit_price_input, unit_price_cached_input, \
             unit_price_cache_write_5m, unit_price_cache_write_1h, unit_price_output))) \
             FROM {db}.usage_events_priced WHERE NOT unpriced GROUP BY model ORDER BY model FORMAT TSV"
        ))
        .await;
    assert!(prices.lines().count() >= 2, "priced models: {prices}");
    for line in prices.lines() {
        let (model, stored) = line.split_once('\t').expect("two columns");
        let (i, c, w, w1, o) = expected_prices(model).expect("a priced model");
        // ClickHouse prints decimals without trailing zeros, as `normalize` does.
        let n = |d: Decimal| d.normalize().to_string();
        let want = format!("['({},{},{},{},{})']", n(i), n(c), n(w), n(w1), n(o));
        assert_eq!(stored, want, "{model}: one set of unit prices, the table's");
    }
    let mut savings: BTreeMap<String, Decimal> = BTreeMap::new();
    for e in &events {
        if let Some((input, cached, ..)) = expected_prices(&e.model) {
            *savings.entry(e.tenant_id.clone()).or_default() +=
                Decimal::from(e.cached_input_tokens) * (input - cached) / Decimal::from(1_000_000);
        }
    }
    let stored: BTreeMap<String, Decimal> = stack
        .query(&format!(
            "SELECT tenant_id, toString(sum(cache_savings)) FROM {db}.usage_events_priced \
             GROUP BY tenant_id FORMAT TSV"
        ))
        .await
        .lines()
        .map(|l| {
            let (t, s) = l.split_once('\t').expect("two columns");
            (t.to_string(), s.parse::<Decimal>().expect("decimal"))
        })
        .filter(|(_, s)| !s.is_zero())
        .collect();
    savings.retain(|_, s| !s.is_zero());
    assert_eq!(stored, savings, "cache savings equal the independent sums");

    // The bill, through the billing API.
    let billing = Service::billing(&stack, &names);
    let url = format!("http://127.0.0.1:{}/v1/costs/month-to-date", billing.port);
    let bills: Vec<serde_json::Value> = wait_for("billing API", Duration::from_secs(30), || {
        let url = url.clone();
        async move { reqwest::get(&url).await.ok()?.json().await.ok() }
    })
    .await;
    let billed: BTreeMap<String, Decimal> = bills
        .iter()
        .map(|b| {
            let totals = b["totals"].as_array().expect("totals");
            assert_eq!(totals.len(), 1, "one currency");
            let cost: Decimal = totals[0]["cost"]
                .as_str()
                .expect("cost is a decimal string")
                .parse()
                .expect("decimal");
            (b["tenant_id"].as_str().expect("tenant").to_string(), cost)
        })
        .collect();
    assert_eq!(
        billed, expected,
        "billing API totals equal the independent sums exactly"
    );

    // Breaches, read back from the control topic.
    let codec = ControlCodec::current();
    let latest = wait_for(
        "BLOCK for acme and WARNING for globex",
        Duration::from_secs(60),
        || {
            let (stack, names, codec) = (&stack, &names, &codec);
            async move {
                let mut latest = BTreeMap::new();
                for m in read_topic(&stack.brokers, &names.control, 1) {
                    let c = codec.decode(m.payload()?).expect("control records decode");
                    if c.kind != ControlKind::State {
                        // Forecasts and spikes have keys of their own, so that compaction
                        // keeps states.
                        let key = format!("{}#{}", c.budget_id, c.kind.as_str());
                        assert_eq!(m.key(), Some(key.as_bytes()), "forecast or spike key");
                        continue;
                    }
                    assert_eq!(m.key(), Some(c.budget_id.as_bytes()), "keyed by budget");
                    latest.insert(c.tenant_id.clone().unwrap_or_default(), c);
                }
                let done = latest
                    .get("acme")
                    .is_some_and(|c| c.level == BudgetLevel::Block)
                    && latest
                        .get("globex")
                        .is_some_and(|c| c.level == BudgetLevel::Warning);
                done.then_some(latest)
            }
        },
    )
    .await;
    let acme = &latest["acme"];
    assert!(acme.spend.parse::<Decimal>().unwrap() >= acme_limit);
    assert_eq!(acme.limit.parse::<Decimal>().unwrap(), acme_limit);
    assert!(
        !latest.contains_key("initech"),
        "tenants without a limit get no control records"
    );

    drop(aggregator);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
