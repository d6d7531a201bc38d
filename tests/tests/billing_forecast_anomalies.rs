//! The billing forecast and anomaly endpoints against real ClickHouse with known data:
//! the test writes raw events (and a repricing correction) in a fixed month (2026-03),
//! computes the expected forecast and anomalies itself with Decimal arithmetic from the
//! rows it wrote, and compares; another tenant's key is refused. The random seed is printed (`SEED=n`
//! replays it); nothing depends on today's date (`as_of` is always given).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration as Dur, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};

use costpipe_e2e::billing_client::{decimal, insert_rows, start_billing};
use costpipe_e2e::{test_seed, Names, Stack};

const ADMIN: &str = "admin-key-fa-0123456789";
const ACME: &str = "acme-key-fa-0123456789";
const GLOBEX: &str = "globex-key-fa-0123456789";

#[derive(Clone)]
struct Ev {
    id: String,
    t: DateTime<Utc>,
    tenant: &'static str,
    /// input, cached input, cache write 5m, cache write 1h, output, reasoning.
    tokens: [u64; 6],
    billing_cost: Decimal,
}

impl Ev {
    fn row(&self) -> Value {
        json!({
            "event_id": self.id, "event_time": self.t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            "tenant_id": self.tenant, "department": "eng", "user_id": "u1",
            "project_id": "p1", "feature": "chat", "environment": "prod", "provider": "openai",
            "model": "gpt-4o", "price_model": "gpt-4o",
            "input_tokens": self.tokens[0], "cached_input_tokens": self.tokens[1],
            "cache_write_tokens": self.tokens[2], "cache_write_1h_tokens": self.tokens[3],
            "output_tokens": self.tokens[4], "reasoning_tokens": self.tokens[5],
            "cost": self.billing_cost.to_string(), "currency": "EUR",
            "billing_cost": self.billing_cost.to_string(), "billing_currency": "EUR",
            "exchange_rate": "1", "unpriced": false, "request_id": format!("r-{}", self.id),
            "trace_id": "", "span_name": "llm", "labels": {},
            "ingested_at": "2026-04-01 00:00:00.000"
        })
    }
}

fn at(d: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, d, h, m, s).unwrap()
}

/// The known data: every hour of 2026-03-01 .. 03-20 two acme requests of 1–2 EUR with
/// 300–800 tokens; one 50 EUR request at 03-10 14:xx; on 03-12 every request has ~8,000
/// input tokens; an acme event in February and one on 03-25 (outside as_of); globex
/// events every day (another tenant's spend must not count).
fn gen_events(seed: u64) -> Vec<Ev> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut push = |t: DateTime<Utc>, tenant: &'static str, tokens: [u64; 6], cost: Decimal| {
        out.push(Ev {
            id: uuid::Uuid::new_v4().to_string(),
            t,
            tenant,
            tokens,
            billing_cost: cost,
        })
    };
    for d in 1..=20u32 {
        for h in 0..24u32 {
            for _ in 0..2 {
                let input = if d == 12 {
                    rng.random_range(7_500..8_500)
                } else {
                    rng.random_range(200..500)
                };
                let tokens = [
                    input,
                    rng.random_range(0..100),
                    rng.random_range(0..50),
                    rng.random_range(0..50),
                    rng.random_range(100..200),
                    rng.random_range(0..50),
                ];
                let cost = Decimal::new(rng.random_range(1_000_000_000..2_000_000_000), 9);
                let t = at(d, h, rng.random_range(0..60), rng.random_range(0..60))
                    + Dur::milliseconds(rng.random_range(0..1000));
                push(t, "acme", tokens, cost);
            }
        }
        push(
            at(d, 12, 0, 0),
            "globex",
            [10, 0, 0, 0, 10, 0],
            Decimal::new(777, 0),
        );
    }
    push(
        at(10, 14, 30, 0),
        "acme",
        [400, 0, 0, 0, 150, 0],
        Decimal::new(50_123_456_789_012, 12),
    );
    push(
        Utc.with_ymd_and_hms(2026, 2, 27, 10, 0, 0).unwrap(),
        "acme",
        [400, 0, 0, 0, 150, 0],
        Decimal::new(999, 0),
    );
    push(
        at(25, 10, 0, 0),
        "acme",
        [400, 0, 0, 0, 150, 0],
        Decimal::new(888, 0),
    );
    out
}

fn round(d: Decimal, dp: u32) -> Decimal {
    d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

/// The forecast of the README's method, from acme's billing costs (events and corrections)
/// in March, computed here: (spent, recent, correction, projected).
fn expected_forecast(
    costs: &[(DateTime<Utc>, Decimal)],
    as_of: DateTime<Utc>,
) -> (Decimal, Decimal, Decimal, Decimal) {
    let start = at(1, 0, 0, 0);
    let end = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
    let as_of = as_of.min(end);
    let window = (as_of - Dur::days(7)).max(start);
    let in_range = |a: DateTime<Utc>| {
        costs
            .iter()
            .filter(|(t, _)| *t >= a && *t < as_of)
            .map(|(_, c)| *c)
            .sum::<Decimal>()
    };
    let spent = in_range(start);
    let recent = in_range(window);
    let elapsed = Decimal::from((as_of - start).num_milliseconds());
    let window_len = Decimal::from((as_of - window).num_milliseconds());
    let period = Decimal::from((end - start).num_milliseconds());
    if as_of >= end {
        return (spent, recent, Decimal::ONE, spent);
    }
    // Daily rates: recent / window days against spent / elapsed days.
    let correction = round((recent * elapsed) / (spent * window_len), 6)
        .clamp(Decimal::new(5, 1), Decimal::new(2, 0));
    let projected = round(spent * period / elapsed * correction, 12).max(spent);
    (spent, recent, correction, projected)
}

/// The element at 0-based index ⌊0.95·n⌋ of the sorted values (ClickHouse's
/// `quantileExact(0.95)`, as the README states it).
fn p95<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    let i = (0.95_f64 * v.len() as f64) as usize;
    v[i.min(v.len() - 1)]
}

/// Expected flagged hours in `[from, to)`: (hour start RFC 3339, cost, rules).
fn expected_hours(
    costs: &[(DateTime<Utc>, Decimal)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeSet<(String, Decimal, Vec<String>)> {
    let mut hourly: BTreeMap<i64, Decimal> = BTreeMap::new();
    for (t, c) in costs {
        *hourly
            .entry(t.timestamp() - t.timestamp().rem_euclid(3600))
            .or_default() += c;
    }
    let mut out = BTreeSet::new();
    for (&h, &x) in hourly.range(from.timestamp()..to.timestamp()) {
        let window: Vec<Decimal> = (1..=24)
            .map(|k| hourly.get(&(h - k * 3600)).copied().unwrap_or_default())
            .collect();
        let sum: Decimal = window.iter().sum();
        if x.is_zero() || sum.is_zero() {
            continue;
        }
        let n = Decimal::from(24);
        let mean = sum / n;
        let variance: Decimal = window
            .iter()
            .map(|w| (w - mean) * (w - mean))
            .sum::<Decimal>()
            / n;
        let mut rules = Vec::new();
        if x > Decimal::from(3) * mean {
            rules.push("above_3x_trailing_mean".to_string());
        }
        // x > mean + 3σ, squared (both sides are ≥ 0 when x > mean).
        if x > mean && (x - mean) * (x - mean) > Decimal::from(9) * variance {
            rules.push("above_mean_plus_3_sigma".to_string());
        }
        if !rules.is_empty() {
            let start = Utc.timestamp_opt(h, 0).unwrap().to_rfc3339();
            out.insert((start, x, rules));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn forecast_and_anomalies_equal_independent_computations() {
    let seed = test_seed("billing_forecast_anomalies");
    let stack = Stack::from_env();
    let names = Names::new("billing_fa");
    let db = names.database.clone();
    let (_billing, api) = start_billing(
        &stack,
        &names,
        ADMIN,
        &[("acme", ACME), ("globex", GLOBEX)],
        &[],
    )
    .await;

    let evs = gen_events(seed);
    insert_rows(
        &stack,
        &db,
        "usage_events_priced",
        &evs.iter().map(Ev::row).collect::<Vec<_>>(),
    )
    .await;
    // Reprice one acme event of 03-14 by +0.5 EUR (a correction row, not a new event).
    let repriced = evs
        .iter()
        .find(|e| e.tenant == "acme" && e.t >= at(14, 0, 0, 0))
        .unwrap()
        .clone();
    let delta = Decimal::new(5, 1);
    insert_rows(
        &stack,
        &db,
        "usage_cost_corrections",
        &[json!({
            "run_id": "run1", "event_id": repriced.id,
            "event_time": repriced.t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            "tenant_id": "acme", "department": "eng", "model": "gpt-4o", "price_model": "gpt-4o",
            "currency": "EUR", "billing_currency": "EUR", "cost_delta": delta.to_string(),
            "billing_cost_delta": delta.to_string(), "unpriced_delta": 0, "catalog_version": "v2",
            "reason": "test", "corrected_at": "2026-04-01 00:00:00.000"
        })],
    )
    .await;
    let mut acme_costs: Vec<(DateTime<Utc>, Decimal)> = evs
        .iter()
        .filter(|e| e.tenant == "acme")
        .map(|e| (e.t, e.billing_cost))
        .collect();
    acme_costs.push((repriced.t, delta));

    // Forecast at three instants: mid-month with a trend window (the correction applies),
    // on day 3 (the window is the whole elapsed time: correction 1), after the month
    // (capped: projected = spent).
    let as_ofs = [
        at(15, 12, 0, 0) + Dur::milliseconds(i64::try_from(seed % 1000).unwrap()),
        at(3, 6, 0, 0),
        Utc.with_ymd_and_hms(2026, 4, 20, 0, 0, 0).unwrap(),
    ];
    for as_of in as_ofs {
        let q = format!(
            "/v1/tenants/acme/forecast?period=2026-03&as_of={}",
            as_of.to_rfc3339().replace('+', "%2B")
        );
        let v = api.json(&q, ACME).await;
        let (spent, recent, correction, projected) = expected_forecast(&acme_costs, as_of);
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{v}");
        let r = &rows[0];
        assert_eq!(r["billing_currency"], "EUR");
        assert_eq!(decimal(&r["spent"]), spent, "{q}");
        assert_eq!(decimal(&r["trend_window_spent"]), recent, "{q}");
        assert_eq!(decimal(&r["trend_correction"]), correction, "{q}");
        assert_eq!(decimal(&r["projected"]), projected, "{q}");
        assert!(
            v["method"].as_str().unwrap().contains("as_of - 7 days"),
            "{v}"
        );
        println!("forecast as of {as_of}: spent {spent}, window {recent}, correction {correction}, projected {projected}");
    }
    let mid = expected_forecast(&acme_costs, as_ofs[0]);
    assert!(
        mid.2 != Decimal::ONE,
        "the mid-month case exercises the correction"
    );

    // Errors keep the one JSON shape; another tenant's key is refused.
    for (q, key, status) in [
        (
            "/v1/tenants/acme/forecast?period=2026-03&as_of=2026-02-01T00:00:00Z",
            ACME,
            400,
        ),
        (
            "/v1/tenants/acme/forecast?as_of=2026-03-02T00:00:00Z",
            ACME,
            400,
        ),
        (
            "/v1/tenants/acme/forecast?period=2026-03&as_of=yesterday",
            ACME,
            400,
        ),
        (
            "/v1/tenants/acme/forecast?period=2026-03&as_of=2026-03-10T00:00:00Z",
            GLOBEX,
            403,
        ),
    ] {
        let (s, body) = api.get(q, Some(key)).await;
        assert_eq!(s, status, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].is_string() && v["message"].is_string(), "{body}");
    }
    // globex's own forecast sees only its 777 a day.
    let v = api
        .json(
            "/v1/tenants/globex/forecast?period=2026-03&as_of=2026-03-11T00:00:00Z",
            GLOBEX,
        )
        .await;
    assert_eq!(decimal(&v["rows"][0]["spent"]), Decimal::new(777 * 10, 0));

    // Anomalies over 03-02 .. 03-21 (March 1 is the first hours' and day's history).
    let (from, to) = (at(2, 0, 0, 0), at(21, 0, 0, 0));
    let v = api
        .json(
            "/v1/tenants/acme/anomalies?from=2026-03-02&to=2026-03-21",
            ACME,
        )
        .await;
    // (a) Hours.
    let got: BTreeSet<(String, Decimal, Vec<String>)> = v["hours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            assert_eq!(h["billing_currency"], "EUR");
            let rules = h["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            (
                h["hour_start"].as_str().unwrap().to_string(),
                decimal(&h["billing_cost"]),
                rules,
            )
        })
        .collect();
    let want = expected_hours(&acme_costs, from, to);
    assert_eq!(got, want);
    assert!(
        want.iter()
            .any(|(h, _, _)| h == "2026-03-10T14:00:00+00:00"),
        "{want:?}"
    );
    println!("hour anomalies: {}", want.len());
    // (b) Requests above 2 × p95 (each request's cost includes its correction).
    let request_costs: Vec<(String, Decimal)> = evs
        .iter()
        .filter(|e| e.tenant == "acme" && e.t >= from && e.t < to)
        .map(|e| {
            let fix = if e.id == repriced.id {
                delta
            } else {
                Decimal::ZERO
            };
            (e.id.clone(), e.billing_cost + fix)
        })
        .collect();
    let p = p95(request_costs.iter().map(|(_, c)| *c).collect());
    let want: BTreeSet<(String, Decimal, Decimal)> = request_costs
        .iter()
        .filter(|(_, c)| *c > Decimal::from(2) * p)
        .map(|(id, c)| (id.clone(), *c, p))
        .collect();
    let got: BTreeSet<(String, Decimal, Decimal)> = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap().to_string(),
                decimal(&r["billing_cost"]),
                decimal(&r["p95"]),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(want.len(), 1, "only the 50 EUR request: {want:?}");
    println!("request anomalies: {want:?} (p95 {p})");
    // (c) Days whose p95 tokens per request is ≥ 4 × the day before's.
    let mut per_day: BTreeMap<chrono::NaiveDate, Vec<u64>> = BTreeMap::new();
    for e in evs.iter().filter(|e| e.tenant == "acme") {
        per_day
            .entry(e.t.date_naive())
            .or_default()
            .push(e.tokens[..5].iter().sum());
    }
    let day_p95: BTreeMap<_, _> = per_day.into_iter().map(|(d, v)| (d, p95(v))).collect();
    let want: Vec<(String, u64, u64)> = day_p95
        .iter()
        .filter(|(d, _)| **d >= from.date_naive() && **d < to.date_naive())
        .filter_map(|(d, p)| {
            let prev = *day_p95.get(&d.pred_opt()?)?;
            (prev > 0 && *p >= 4 * prev).then(|| (d.to_string(), *p, prev))
        })
        .collect();
    let got: Vec<(String, u64, u64)> = v["token_jumps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["day"].as_str().unwrap().to_string(),
                j["p95_tokens_per_request"].as_u64().unwrap(),
                j["previous_day_p95"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(want.len(), 1, "only 2026-03-12: {want:?}");
    assert_eq!(want[0].0, "2026-03-12");
    println!("token jumps: {want:?}");
    let (s, body) = api
        .get(
            "/v1/tenants/acme/anomalies?from=2026-03-02&to=2026-03-21",
            Some(GLOBEX),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert!(e["error"].is_string() && e["message"].is_string(), "{body}");

    stack.query(&format!("DROP DATABASE IF EXISTS {db}")).await;
}
