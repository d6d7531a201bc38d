//! The aggregator's `/metrics` after a known stream: every usage metric equals what this file
//! computes on its own from the events and a hand-written price table (the same numbers as
//! `tests/data/metrics_catalog.toml`, written again here, never read from it).
//!
//! The stream (seeded; the seed is printed): three large tenants, one billed in EUR, over a
//! USD, a CNY and a EUR price and a model the catalog does not know; then four small tenants.
//! With `COSTPIPE_METRICS_MAX_TENANTS=3`, the large tenants keep their labels and the small
//! ones are `tenant="other"` (the large ones come first and each costs more than all the small
//! ones together, so the top-N rule has one outcome whatever the epochs). Copies of events,
//! an event id reused with other content, invalid events, garbage and a tombstone are mixed in.
//!
//! Checked: `llm_tokens_total`, `llm_requests_total`, `llm_cost_usd_total` (CNY converted at
//! the catalog's 0.14, rounded once per event like pricing; the EUR amounts, with no EUR->USD
//! rate in force, in `costpipe_aggregator_cost_unconverted*` instead), `request_cost_usd`
//! (buckets, count, sum), unpriced events by reason, dead letters by reason, duplicates,
//! `llm_budget_usage_ratio`, and the pipeline gauges' presence. Money is compared exactly: the
//! service sums in ticks and converts once, and so does this test.
//!
//! Also checked: every aggregator metric that `deploy/prometheus` (rules and their tests) and
//! `deploy/grafana/dashboards` name is one the running aggregator exports.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use rust_decimal_macros::dec;
use uuid::Uuid;

use costpipe_e2e::*;
use costpipe_schemas::{UsageCodec, UsageEvent};

const CATALOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/metrics_catalog.toml");
const MAX_TENANTS: usize = 3;
const BIG: [&str; 3] = ["acme", "euro", "globex"];
const SMALL: [&str; 4] = ["s1", "s2", "s3", "s4"];
const ACME_LIMIT: Decimal = dec!(1000);

/// What an event costs, by hand: per-million prices (input, cached input, 5-minute write,
/// 1-hour write, output) and their currency.
fn prices(model: &str) -> Option<([Decimal; 5], &'static str)> {
    match model {
        "gpt-4o" => Some((
            [dec!(2.50), dec!(1.25), dec!(3.125), dec!(5.00), dec!(10.00)],
            "USD",
        )),
        // Unset cache-write prices default to the input price.
        "qwen-max" => Some((
            [dec!(2.4), dec!(0.48), dec!(2.4), dec!(2.4), dec!(9.6)],
            "CNY",
        )),
        "mistral-large" => Some(([dec!(2), dec!(2), dec!(2), dec!(2), dec!(6)], "EUR")),
        _ => None,
    }
}

/// The catalog's CNY->USD rate; EUR has none in force.
const CNY_USD: Decimal = dec!(0.14);

/// The `request_cost_usd` bounds, as documented.
const BOUNDS: [Decimal; 16] = [
    dec!(0.00001),
    dec!(0.0001),
    dec!(0.0005),
    dec!(0.001),
    dec!(0.0025),
    dec!(0.005),
    dec!(0.01),
    dec!(0.025),
    dec!(0.05),
    dec!(0.1),
    dec!(0.25),
    dec!(0.5),
    dec!(1),
    dec!(2.5),
    dec!(5),
    dec!(10),
];

enum Cost {
    Usd(Decimal),
    /// Known in EUR only.
    Eur(Decimal),
    Unknown,
}

fn cost_of(e: &UsageEvent) -> Cost {
    let Some(([input, cached, write, write_1h, output], currency)) = prices(&e.model) else {
        return Cost::Unknown;
    };
    let amount = (Decimal::from(e.input_tokens) * input
        + Decimal::from(e.cached_input_tokens) * cached
        + Decimal::from(e.cache_write_tokens) * write
        + Decimal::from(e.cache_write_1h_tokens.unwrap_or(0)) * write_1h
        + Decimal::from(e.output_tokens) * output)
        / dec!(1000000);
    match currency {
        "USD" => Cost::Usd(amount),
        // Rounded once, half to even, to 12 places, as the catalog converts.
        "CNY" => Cost::Usd(
            (amount * CNY_USD).round_dp_with_strategy(12, RoundingStrategy::MidpointNearestEven),
        ),
        _ => Cost::Eur(amount),
    }
}

fn event(rng: &mut StdRng, tenant: &str, model: &str, small: bool) -> UsageEvent {
    let now = chrono::Utc::now().timestamp_millis();
    let mut e = UsageEvent::new(
        Uuid::from_u128(rng.random()),
        now - rng.random_range(0..30_000),
        tenant,
        "test",
        model,
    );
    let departments: &[Option<&str>] = match tenant {
        "acme" => &[Some("eng"), Some("research"), None],
        "euro" => &[Some("ops"), None],
        "globex" => &[Some("eng")],
        _ => &[Some("misc")],
    };
    e.department = departments[rng.random_range(0..departments.len())].map(str::to_string);
    if small {
        // At most 0.0001 USD each: all 20 together cost less than any large tenant's first
        // call (at least 0.0035 USD).
        e.input_tokens = rng.random_range(1..=20);
        e.output_tokens = rng.random_range(1..=5);
    } else {
        e.input_tokens = rng.random_range(1_000..100_000);
        e.output_tokens = rng.random_range(100..5_000);
        e.cached_input_tokens = rng.random_range(0..1_000);
        e.cache_write_tokens = rng.random_range(0..500);
        e.cache_write_1h_tokens = Some(rng.random_range(0..200));
        e.reasoning_tokens = rng.random_range(0..e.output_tokens);
    }
    e
}

/// One sample per (name, labels).
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses the text exposition (label values here hold no quotes or commas).
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("label=value");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().expect("a number"),
        };
        out.insert((name.to_string(), labels), value);
    }
    out
}

/// The series of `name`, by labels.
fn family(samples: &Samples, name: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
    samples
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|((_, l), v)| (l.clone(), *v))
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `f64` of an exact amount, as the service converts its exact totals.
fn f(d: Decimal) -> f64 {
    d.normalize().to_f64().expect("fits an f64")
}

fn sample(samples: &Samples, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    samples.get(&(name.to_string(), labels(pairs))).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn metrics_equal_the_known_stream() {
    let seed = test_seed("metrics");
    let mut rng = StdRng::seed_from_u64(seed);
    let stack = Stack::from_env();
    let names = Names::new("e2e_metrics");
    names.create_usage_topic(&stack).await;
    let max_tenants = MAX_TENANTS.to_string();
    let mut aggregator = Service::aggregator(
        &stack,
        &names,
        &format!("acme={ACME_LIMIT}"),
        &[
            ("COSTPIPE_CATALOG", CATALOG),
            ("COSTPIPE_METRICS_MAX_TENANTS", &max_tenants),
        ],
    );

    // The accepted events: each large tenant's first event is a priced gpt-4o call, so that
    // each has a cost of its own from its first epoch.
    let mut accepted: Vec<UsageEvent> = BIG
        .iter()
        .map(|t| event(&mut rng, t, "gpt-4o", false))
        .collect();
    let models = ["gpt-4o", "qwen-max", "mistral-large", "mystery-model"];
    for _ in 0..240 {
        let tenant = BIG[rng.random_range(0..BIG.len())];
        let model = models[rng.random_range(0..models.len())];
        accepted.push(event(&mut rng, tenant, model, false));
    }
    let big_count = accepted.len();
    for _ in 0..20 {
        let tenant = SMALL[rng.random_range(0..SMALL.len())];
        accepted.push(event(&mut rng, tenant, "gpt-4o", true));
    }

    // Records in order: the large tenants' events with copies, conflicts and bad records
    // among them, then the small tenants'.
    let codec = UsageCodec::current();
    let encode = |e: &UsageEvent| codec.encode(e).expect("encode");
    let mut records: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let mut dead_letters: BTreeMap<&str, u64> = BTreeMap::new();
    let mut duplicates = 0;
    for (i, e) in accepted.iter().enumerate() {
        records.push((e.tenant_id.clone(), Some(encode(e))));
        if i >= big_count {
            continue;
        }
        match i % 40 {
            7 => {
                // An exact copy: dropped.
                records.push((e.tenant_id.clone(), Some(encode(e))));
                duplicates += 1;
            }
            13 => {
                // The same id with other content: a dead letter.
                let mut other = e.clone();
                other.input_tokens += 1;
                records.push((e.tenant_id.clone(), Some(encode(&other))));
                *dead_letters
                    .entry("duplicate_event_id_conflict")
                    .or_default() += 1;
            }
            21 => {
                let mut bad = event(&mut rng, &e.tenant_id, "gpt-4o", false);
                bad.output_tokens = -5;
                records.push((e.tenant_id.clone(), Some(encode(&bad))));
                *dead_letters.entry("negative_tokens").or_default() += 1;
            }
            29 => {
                records.push((e.tenant_id.clone(), Some(b"\xde\xad garbage".to_vec())));
                *dead_letters.entry("bad_magic_byte").or_default() += 1;
            }
            33 => {
                records.push((e.tenant_id.clone(), None));
                *dead_letters.entry("empty_payload").or_default() += 1;
            }
            _ => {}
        }
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .expect("producer");
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    // One at a time: the order is part of the expectation (copies after their original, the
    // small tenants last).
    for (key, payload) in &records {
        let mut rec = FutureRecord::<str, [u8]>::to(&names.usage).key(key);
        if let Some(p) = payload {
            rec = rec.payload(&p[..]);
        }
        let d = producer
            .send(rec, Duration::from_secs(10))
            .await
            .expect("delivered");
        let end = ends.entry(d.partition).or_default();
        *end = (*end).max(d.offset + 1);
    }

    // --- What the metrics must say, computed here. ---
    let named: BTreeSet<&str> = BIG.into_iter().collect();
    let mut cost: BTreeMap<BTreeMap<String, String>, Decimal> = BTreeMap::new();
    let mut tokens: BTreeMap<BTreeMap<String, String>, u64> = BTreeMap::new();
    let mut requests: BTreeMap<BTreeMap<String, String>, u64> = BTreeMap::new();
    let mut unpriced: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut eur_events, mut eur_amount) = (0u64, Decimal::ZERO);
    let mut usd_costs: Vec<Decimal> = Vec::new();
    let month_start = {
        use chrono::{Datelike, TimeZone};
        let now = chrono::Utc::now();
        chrono::Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .expect("month start")
            .timestamp_millis()
    };
    let mut acme_month = Decimal::ZERO;
    for e in &accepted {
        let model = if prices(&e.model).is_some() {
            e.model.as_str()
        } else {
            "unknown"
        };
        *requests.entry(labels(&[("model", model)])).or_default() += 1;
        let by_type = [
            ("input", e.input_tokens),
            ("output", e.output_tokens),
            ("cached_input", e.cached_input_tokens),
            ("cache_write_5m", e.cache_write_tokens),
            ("cache_write_1h", e.cache_write_1h_tokens.unwrap_or(0)),
            ("reasoning", e.reasoning_tokens),
        ];
        for (token_type, n) in by_type {
            if n > 0 {
                *tokens
                    .entry(labels(&[("model", model), ("token_type", token_type)]))
                    .or_default() += n as u64;
            }
        }
        match cost_of(e) {
            Cost::Usd(usd) => {
                let (tenant, department) = if named.contains(e.tenant_id.as_str()) {
                    (
                        e.tenant_id.as_str(),
                        e.department.as_deref().unwrap_or("none"),
                    )
                } else {
                    ("other", "other")
                };
                *cost
                    .entry(labels(&[
                        ("model", model),
                        ("department", department),
                        ("tenant", tenant),
                    ]))
                    .or_default() += usd;
                usd_costs.push(usd);
                if e.tenant_id == "acme" && e.event_time >= month_start {
                    acme_month += usd;
                }
            }
            Cost::Eur(eur) => {
                eur_events += 1;
                eur_amount += eur;
                // Billed in USD without a EUR->USD rate: unpriced as well. The EUR tenant
                // is billed in EUR, so its EUR calls are priced.
                if e.tenant_id != "euro" {
                    *unpriced.entry("no_exchange_rate").or_default() += 1;
                }
            }
            Cost::Unknown => *unpriced.entry("unknown_model").or_default() += 1,
        }
    }
    cost.retain(|_, c| !c.is_zero());
    assert!(
        eur_events > 0 && unpriced.contains_key("unknown_model"),
        "seed {seed}"
    );

    // --- Wait until everything is stored and counted. ---
    wait_complete(
        &stack,
        &names.database,
        &names.usage,
        &ends,
        Duration::from_secs(120),
    )
    .await;
    let port = aggregator.port;
    let n = accepted.len() as f64;
    let expected_ratio = f(acme_month / ACME_LIMIT);
    let ratio_of = |s: &Samples| {
        sample(
            s,
            "llm_budget_usage_ratio",
            &[("budget_id", "tenant:acme:month")],
        )
    };
    // Polled until every condition holds; past the soft deadline the last scrape is taken
    // as it is, so that the assertions below name what is missing.
    let soft_deadline = std::time::Instant::now() + Duration::from_secs(60);
    let samples = wait_for(
        "a scrape of the aggregator's metrics",
        Duration::from_secs(90),
        || async move {
            let s = parse(&metrics_text(port).await);
            let ready = sample(&s, "costpipe_aggregator_events_priced_total", &[]) == Some(n)
                && ratio_of(&s) == Some(expected_ratio)
                && sample(&s, "costpipe_aggregator_recent_ids", &[]) == Some(n)
                && sample(
                    &s,
                    "costpipe_aggregator_consumer_lag",
                    &[("partition", "0")],
                ) == Some(0.0);
            (ready || std::time::Instant::now() > soft_deadline).then_some(s)
        },
    )
    .await;
    aggregator.assert_running();
    assert_eq!(
        sample(&samples, "costpipe_aggregator_events_priced_total", &[]),
        Some(n),
        "every accepted event stored and counted once (seed {seed})"
    );
    assert_eq!(
        ratio_of(&samples),
        Some(expected_ratio),
        "acme's month spend {acme_month} USD over its limit {ACME_LIMIT} (seed {seed})"
    );
    assert_eq!(
        sample(&samples, "costpipe_aggregator_recent_ids", &[]),
        Some(n),
        "one remembered id per accepted event"
    );
    assert_eq!(
        sample(
            &samples,
            "costpipe_aggregator_consumer_lag",
            &[("partition", "0")]
        ),
        Some(0.0),
        "nothing left to consume on partition 0"
    );

    // --- Compare. ---
    let want_cost: BTreeMap<_, f64> = cost.iter().map(|(l, c)| (l.clone(), f(*c))).collect();
    assert_eq!(
        family(&samples, "llm_cost_usd_total"),
        want_cost,
        "USD cost per model, department and tenant (seed {seed}); exact: {cost:?}"
    );
    let to_f = |m: BTreeMap<BTreeMap<String, String>, u64>| -> BTreeMap<_, f64> {
        m.into_iter().map(|(l, v)| (l, v as f64)).collect()
    };
    assert_eq!(
        family(&samples, "llm_tokens_total"),
        to_f(tokens),
        "tokens per model and type (seed {seed})"
    );
    assert_eq!(
        family(&samples, "llm_requests_total"),
        to_f(requests),
        "requests per model (seed {seed})"
    );

    let sum: Decimal = usd_costs.iter().sum();
    assert_eq!(
        sample(&samples, "request_cost_usd_count", &[]),
        Some(usd_costs.len() as f64)
    );
    assert_eq!(
        sample(&samples, "request_cost_usd_sum", &[]),
        Some(f(sum)),
        "histogram sum = {sum} (seed {seed})"
    );
    for bound in BOUNDS {
        let le = f(bound);
        let below = usd_costs.iter().filter(|c| **c <= bound).count() as f64;
        let got = family(&samples, "request_cost_usd_bucket")
            .into_iter()
            .find(|(l, _)| l.get("le").and_then(|v| v.parse::<f64>().ok()) == Some(le))
            .map(|(_, v)| v);
        assert_eq!(got, Some(below), "bucket le={bound} (seed {seed})");
    }
    assert_eq!(
        sample(&samples, "request_cost_usd_bucket", &[("le", "+Inf")]),
        Some(usd_costs.len() as f64)
    );

    let eur = [("currency", "EUR"), ("reason", "no_exchange_rate")];
    assert_eq!(
        family(&samples, "costpipe_aggregator_cost_unconverted_total"),
        BTreeMap::from([(labels(&eur), eur_events as f64)]),
        "(seed {seed})"
    );
    assert_eq!(
        sample(
            &samples,
            "costpipe_aggregator_cost_unconverted_amount_total",
            &eur
        ),
        Some(f(eur_amount)),
        "EUR not put into USD: {eur_amount} (seed {seed})"
    );
    let want_unpriced: BTreeMap<_, f64> = unpriced
        .iter()
        .map(|(r, n)| (labels(&[("reason", r)]), *n as f64))
        .collect();
    assert_eq!(
        family(&samples, "costpipe_aggregator_events_unpriced_total"),
        want_unpriced,
        "(seed {seed})"
    );
    let want_dead: BTreeMap<_, f64> = dead_letters
        .iter()
        .map(|(r, n)| (labels(&[("reason", r)]), *n as f64))
        .collect();
    assert_eq!(
        family(&samples, "costpipe_aggregator_dead_letters_total"),
        want_dead,
        "(seed {seed})"
    );
    assert_eq!(
        sample(&samples, "costpipe_aggregator_events_duplicate_total", &[]),
        Some(duplicates as f64)
    );
    assert!(
        sample(&samples, "costpipe_aggregator_records_consumed_total", &[])
            .is_some_and(|c| c >= records.len() as f64),
        "every record consumed"
    );
    let epochs = sample(&samples, "costpipe_aggregator_epochs_written_total", &[]);
    assert!(epochs.is_some_and(|e| e >= 1.0));
    assert_eq!(
        sample(
            &samples,
            "costpipe_aggregator_flush_latency_seconds_count",
            &[]
        ),
        epochs,
        "one flush latency per stored epoch"
    );
    for gauge in [
        "costpipe_aggregator_window_keys",
        "costpipe_aggregator_window_bytes",
        "costpipe_aggregator_sink_pending_records",
        "costpipe_aggregator_restore_seconds_count",
        "costpipe_aggregator_events_late_total",
    ] {
        assert!(
            sample(&samples, gauge, &[]).is_some(),
            "{gauge} is exported"
        );
    }

    let exported = exported_names(&metrics_text(port).await);
    let named = deploy_metric_names();
    let missing: Vec<_> = named.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "deploy/ names aggregator metrics it does not export: {missing:?}"
    );

    eprintln!(
        "metrics: {} events ({} in USD, sum {sum}; {eur_events} in EUR only), {} cost series, \
         {} dead letters, {duplicates} copies; acme at {expected_ratio} of its budget",
        accepted.len(),
        usd_costs.len(),
        want_cost.len(),
        dead_letters.values().sum::<u64>(),
    );
    drop(aggregator);
    stack
        .query(&format!("DROP DATABASE {}", names.database))
        .await;
}

/// The sample names a text exposition declares (`# TYPE`), whether or not a series exists
/// yet: a counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`, a gauge's name.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if (words.next(), words.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// The aggregator's metric names (`costpipe_aggregator_*`, `llm_*`, `request_cost_usd*`)
/// that the Prometheus rules, their tests and the Grafana dashboards use.
fn deploy_metric_names() -> BTreeSet<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut files: Vec<std::path::PathBuf> = ["rules.yml", "rules_test.yml", "prometheus.yml"]
        .iter()
        .map(|f| format!("{root}/deploy/prometheus/{f}").into())
        .collect();
    let dashboards = format!("{root}/deploy/grafana/dashboards");
    for entry in std::fs::read_dir(&dashboards).expect("deploy/grafana/dashboards") {
        files.push(entry.expect("a directory entry").path());
    }
    let mut out = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a deploy file");
        out.extend(
            text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| {
                    w.starts_with("costpipe_aggregator_")
                        || w.starts_with("llm_")
                        || w.starts_with("request_cost_usd")
                })
                .map(str::to_string),
        );
    }
    out
}

#[test]
fn deploy_names_and_declared_names_are_read() {
    let named = deploy_metric_names();
    for name in [
        "costpipe_aggregator_consumer_lag",
        "costpipe_aggregator_flush_latency_seconds_bucket",
        "llm_budget_usage_ratio",
        "request_cost_usd_bucket",
        "llm_cost_usd_total",
    ] {
        assert!(
            named.contains(name),
            "{name} is named in deploy/: {named:?}"
        );
    }
    let exported = exported_names(
        "# HELP a_b x\n# TYPE a_b counter\n# TYPE h histogram\n# TYPE g gauge\ng 1\n",
    );
    let want: BTreeSet<String> = ["a_b_total", "h_bucket", "h_sum", "h_count", "g"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(exported, want);
}

#[test]
fn the_parser_reads_labels_and_values() {
    let s =
        parse("# TYPE x counter\nx_total{a=\"1\",b=\"two\"} 0.5\ny 3\nh_bucket{le=\"+Inf\"} 2\n");
    assert_eq!(
        sample(&s, "x_total", &[("a", "1"), ("b", "two")]),
        Some(0.5)
    );
    assert_eq!(sample(&s, "y", &[]), Some(3.0));
    assert_eq!(sample(&s, "h_bucket", &[("le", "+Inf")]), Some(2.0));
    assert_eq!(Decimal::from_str("0.30").ok().map(f), Some(0.3));
}
