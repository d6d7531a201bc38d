//! Billing's cache savings, invoice items, discounts and markups against real ClickHouse:
//! the test writes priced events with their unit prices (migration 060) and computes every
//! expected number itself from those rows (quantity × unit price, the tenant's catalog
//! adjustment rounded per event, conversion rounded per event, savings), then compares
//! with the API, from the rollups and from the raw table. Fixed month (2026-03), seed
//! printed (`SEED=n` replays it).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as Dur, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rust_decimal::{Decimal, RoundingStrategy};
use rust_decimal_macros::dec;
use serde_json::{json, Value};

use costpipe_e2e::billing_client::{decimal, insert_rows, start_billing};
use costpipe_e2e::{test_seed, Names, Stack};

const ADMIN: &str = "admin-key-lines-0123456789";
const ACME: &str = "acme-key-lines-0123456789";
const GLOBEX: &str = "globex-key-lines-0123456789";

/// Unit prices per 1M tokens: input, cached input, 5-minute write, 1-hour write, output,
/// reasoning, and per request.
struct Model {
    name: &'static str,
    prices: [Decimal; 7],
}

fn models() -> Vec<Model> {
    vec![
        Model {
            name: "gpt-4o",
            prices: [
                dec!(2.5),
                dec!(1.25),
                dec!(0),
                dec!(0),
                dec!(10),
                dec!(10),
                dec!(0),
            ],
        },
        Model {
            name: "claude-sonnet-4-5",
            prices: [
                dec!(3),
                dec!(0.3),
                dec!(3.75),
                dec!(6),
                dec!(15),
                dec!(15),
                dec!(0),
            ],
        },
        Model {
            name: "search-model",
            prices: [
                dec!(0.15),
                dec!(0.075),
                dec!(0),
                dec!(0),
                dec!(0.6),
                dec!(2.4),
                dec!(0.025),
            ],
        },
    ]
}

const KINDS: [&str; 7] = [
    "input",
    "cached_input",
    "cache_write_5m",
    "cache_write_1h",
    "output",
    "reasoning",
    "request",
];

fn round12(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(12, RoundingStrategy::MidpointNearestEven)
        .normalize()
}

#[derive(Clone)]
struct Ev {
    id: String,
    t: DateTime<Utc>,
    tenant: &'static str,
    dept: String,
    project: String,
    model: usize,
    /// input, cached, write 5m, write 1h, output (reasoning included), reasoning.
    tokens: [u64; 6],
    /// Catalog adjustment in percent (the tenant's discount in the catalog).
    adjustment: Decimal,
    list: Decimal,
    cost: Decimal,
    billing_cost: Decimal,
    savings: Decimal,
    billing_savings: Decimal,
    trace: String,
    span: String,
}

const RATE: Decimal = dec!(0.9);

impl Ev {
    /// Quantity of each kind as billed: output without reasoning, one request.
    fn quantities(&self) -> [u64; 7] {
        let t = self.tokens;
        [t[0], t[1], t[2], t[3], t[4] - t[5], t[5], 1]
    }

    fn row(&self, models: &[Model]) -> Value {
        let m = &models[self.model];
        let p = m.prices;
        json!({
            "event_id": self.id, "event_time": self.t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            "tenant_id": self.tenant, "department": self.dept, "user_id": "u1",
            "project_id": self.project, "feature": "chat", "environment": "prod", "provider": "p",
            "model": format!("{}-2026", m.name), "price_model": m.name,
            "input_tokens": self.tokens[0], "cached_input_tokens": self.tokens[1],
            "cache_write_tokens": self.tokens[2], "cache_write_1h_tokens": self.tokens[3],
            "output_tokens": self.tokens[4], "reasoning_tokens": self.tokens[5],
            "cost": self.cost.to_string(), "currency": "USD",
            "billing_cost": self.billing_cost.to_string(), "billing_currency": "EUR",
            "exchange_rate": RATE.to_string(), "adjustment_percent": self.adjustment.to_string(),
            "unpriced": false, "request_id": format!("r-{}", self.id),
            "trace_id": self.trace, "span_name": self.span, "labels": {},
            "ingested_at": "2026-04-01 00:00:00.000",
            "unit_price_input": p[0].to_string(), "unit_price_cached_input": p[1].to_string(),
            "unit_price_cache_write_5m": p[2].to_string(), "unit_price_cache_write_1h": p[3].to_string(),
            "unit_price_output": p[4].to_string(), "unit_price_reasoning": p[5].to_string(),
            "unit_price_request": p[6].to_string(),
            "cache_savings": self.savings.to_string(),
            "billing_cache_savings": self.billing_savings.to_string(),
        })
    }
}

/// What `gen_events` generates.
struct Shape {
    start: DateTime<Utc>,
    days: i64,
    n: u32,
    max_output: u64,
    max_cached: u64,
}

fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

fn gen_events(seed: u64, models: &[Model]) -> Vec<Ev> {
    let march = Shape {
        start: utc(2026, 3, 1),
        days: 31,
        n: 800,
        max_output: 3000,
        max_cached: 50_000,
    };
    gen_shaped(seed, models, &march)
}

fn gen_shaped(seed: u64, models: &[Model], shape: &Shape) -> Vec<Ev> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = shape.start;
    let end = start + Dur::days(shape.days);
    (0..shape.n)
        .map(|i| {
            let tenant = if i % 4 == 0 { "globex" } else { "acme" };
            let model = rng.random_range(0..models.len());
            let output = rng.random_range(1..shape.max_output);
            let tokens = [
                rng.random_range(0..20_000),
                rng.random_range(0..shape.max_cached),
                rng.random_range(0..3000),
                rng.random_range(0..3000),
                output,
                rng.random_range(0..=output / 2),
            ];
            let dept = ["eng", "research", "ops"][rng.random_range(0..3)].to_string();
            // Month ends included: one event at the last millisecond of the range.
            let t = if i == 1 {
                end - Dur::milliseconds(1)
            } else {
                start + Dur::milliseconds(rng.random_range(0..shape.days * 86_400_000))
            };
            let adjustment = if tenant == "acme" && dept == "research" {
                dec!(-10)
            } else {
                Decimal::ZERO
            };
            let mut e = Ev {
                id: uuid::Uuid::new_v4().to_string(),
                t,
                tenant,
                dept,
                project: format!("p{}", rng.random_range(0..3)),
                model,
                tokens,
                adjustment,
                list: Decimal::ZERO,
                cost: Decimal::ZERO,
                billing_cost: Decimal::ZERO,
                savings: Decimal::ZERO,
                billing_savings: Decimal::ZERO,
                trace: String::new(),
                span: String::new(),
            };
            let p = models[model].prices;
            let q = e.quantities();
            e.list = (0..6)
                .map(|k| Decimal::from(q[k]) * p[k] / dec!(1000000))
                .sum::<Decimal>()
                + p[6];
            let factor = (dec!(100) + adjustment) / dec!(100);
            e.cost = round12(e.list * factor);
            e.billing_cost = round12(e.cost * RATE);
            let saved = Decimal::from(tokens[1]) * (p[0] - p[1]) / dec!(1000000);
            e.savings = round12(saved * factor);
            e.billing_savings = round12(e.savings * RATE);
            e
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn savings_items_and_terms_equal_independent_sums() {
    let seed = test_seed("billing_lines");
    let stack = Stack::from_env();
    let names = Names::new("billing_lines");
    let db = names.database.clone();
    let terms = std::env::temp_dir().join(format!("{db}-terms.toml"));
    std::fs::write(
        &terms,
        "[acme]\ndiscount_percent = \"7.5\"\n[globex]\nmarkup_percent = \"3\"\n",
    )
    .unwrap();
    let (_billing, api) = start_billing(
        &stack,
        &names,
        ADMIN,
        &[("acme", ACME), ("globex", GLOBEX)],
        &[("COSTPIPE_BILLING_TENANT_TERMS", terms.to_str().unwrap())],
    )
    .await;
    let models = models();
    let evs = gen_events(seed, &models);
    let rows: Vec<Value> = evs.iter().map(|e| e.row(&models)).collect();
    insert_rows(&stack, &db, "usage_events_priced", &rows).await;
    let acme: Vec<&Ev> = evs.iter().filter(|e| e.tenant == "acme").collect();

    // Cache savings by model: daily and hourly rollups and raw all equal the test's sums.
    let mut savings: BTreeMap<String, (Decimal, Decimal, u64)> = BTreeMap::new();
    for e in &acme {
        let s = savings.entry(models[e.model].name.to_string()).or_default();
        s.0 += e.savings;
        s.1 += e.billing_savings;
        s.2 += e.tokens[3];
    }
    for source in ["auto", "hour", "raw"] {
        let v = api
            .json(
                &format!("/v1/tenants/acme/costs?period=2026-03&grain=total&group_by=model&source={source}"),
                ACME,
            )
            .await;
        if source == "auto" {
            assert_eq!(v["source"], "day");
        }
        let got: BTreeMap<String, (Decimal, Decimal, u64)> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["group"]["model"].as_str().unwrap().to_string(),
                    (
                        decimal(&r["cache_savings"]),
                        decimal(&r["billing_cache_savings"]),
                        r["tokens"]["cache_write_1h"].as_u64().unwrap(),
                    ),
                )
            })
            .collect();
        assert_eq!(got, savings, "cache savings from {source}");
    }
    // The minute rollup (reported model) carries them too.
    let v = api
        .json(
            "/v1/tenants/acme/costs?period=2026-03&grain=total&group_by=reported_model",
            ACME,
        )
        .await;
    assert_eq!(v["source"], "minute");
    let total: Decimal = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| decimal(&r["billing_cache_savings"]))
        .sum();
    assert_eq!(total, savings.values().map(|s| s.1).sum::<Decimal>());
    println!("cache savings by model equal from hour, minute and raw: {savings:?}");

    // The March invoice: items = quantity × unit price from the rows; lines split exactly;
    // the discount is an explicit line; total = Σ lines + terms = Σ raw billing costs − discount.
    let inv = api.json("/v1/tenants/acme/invoices/2026-03", ACME).await;
    let mut want_items: BTreeMap<(String, String, Decimal), (u64, Decimal)> = BTreeMap::new();
    let mut want_lines: BTreeMap<String, (Decimal, Decimal, Decimal)> = BTreeMap::new();
    for e in &acme {
        let m = &models[e.model];
        for (k, q) in e.quantities().into_iter().enumerate() {
            if q > 0 && !m.prices[k].is_zero() {
                let it = want_items
                    .entry((m.name.to_string(), KINDS[k].to_string(), m.prices[k]))
                    .or_default();
                it.0 += q;
            }
        }
        let l = want_lines.entry(m.name.to_string()).or_default();
        l.0 += e.list;
        l.1 += e.cost;
        l.2 += e.billing_cost;
    }
    for ((_, kind, price), it) in want_items.iter_mut() {
        it.1 = Decimal::from(it.0) * *price
            / if kind == "request" {
                Decimal::ONE
            } else {
                dec!(1000000)
            };
    }
    let mut got_items = BTreeMap::new();
    let mut got_lines = BTreeMap::new();
    let mut lines_billing = Decimal::ZERO;
    for l in inv["lines"].as_array().unwrap() {
        let model = l["model"].as_str().unwrap().to_string();
        let mut items = Decimal::ZERO;
        for it in l["items"].as_array().unwrap() {
            let amount = decimal(&it["amount"]);
            items += amount;
            got_items.insert(
                (
                    model.clone(),
                    it["kind"].as_str().unwrap().to_string(),
                    decimal(&it["unit_price"]),
                ),
                (it["quantity"].as_u64().unwrap(), amount),
            );
            assert!(it["item_id"]
                .as_str()
                .unwrap()
                .starts_with(l["line_id"].as_str().unwrap()));
        }
        assert_eq!(items, decimal(&l["list_amount"]));
        assert_eq!(
            decimal(&l["list_amount"])
                + decimal(&l["catalog_adjustment"])
                + decimal(&l["repricing"]),
            decimal(&l["amount"])
        );
        got_lines.insert(
            model,
            (
                decimal(&l["list_amount"]),
                decimal(&l["amount"]),
                decimal(&l["billing_amount"]),
            ),
        );
        lines_billing += decimal(&l["billing_amount"]);
    }
    assert_eq!(got_items, want_items);
    assert_eq!(got_lines, want_lines);
    let billed: Decimal = acme.iter().map(|e| e.billing_cost).sum();
    assert_eq!(lines_billing, billed);
    let discount = round12(billed * dec!(7.5) / dec!(100));
    assert_eq!(inv["terms"][0]["line_id"], "terms/discount/EUR");
    assert_eq!(decimal(&inv["terms"][0]["billing_amount"]), -discount);
    assert_eq!(decimal(&inv["totals"][0]["total"]), billed - discount);
    // Subtotals by department and by project.
    for (field, key) in [
        ("subtotals_by_department", 0usize),
        ("subtotals_by_project", 1),
    ] {
        let mut want: BTreeMap<String, Decimal> = BTreeMap::new();
        for e in &acme {
            let k = if key == 0 { &e.dept } else { &e.project };
            *want.entry(k.clone()).or_default() += e.billing_cost;
        }
        let got: BTreeMap<String, Decimal> = inv[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    decimal(&s["billing_amount"]),
                )
            })
            .collect();
        assert_eq!(got, want, "{field}");
    }
    println!(
        "acme March: {} items, Σ billing {billed} EUR, discount {discount}",
        got_items.len()
    );

    // Globex: a markup line.
    let g = api
        .json("/v1/tenants/globex/invoices/2026-03", GLOBEX)
        .await;
    let gb: Decimal = evs
        .iter()
        .filter(|e| e.tenant == "globex")
        .map(|e| e.billing_cost)
        .sum();
    let markup = round12(gb * dec!(3) / dec!(100));
    assert_eq!(g["terms"][0]["kind"], "markup");
    assert_eq!(decimal(&g["totals"][0]["total"]), gb + markup);

    // CSV: the same ids, one row per item and terms line; the same document twice.
    let (s, csv) = api
        .get("/v1/tenants/acme/invoices/2026-03?format=csv", Some(ACME))
        .await;
    assert_eq!(s, 200);
    let items_in_csv = csv.lines().filter(|l| l.contains(",item,")).count();
    assert!(items_in_csv >= got_items.len());
    assert!(csv.contains(",terms,terms/discount/EUR,"));
    let (_, again) = api
        .get("/v1/tenants/acme/invoices/2026-03?format=csv", Some(ACME))
        .await;
    assert_eq!(csv, again, "stable ids and order");
    assert_eq!(
        api.get("/v1/tenants/globex/invoices/2026-03", Some(ACME))
            .await
            .0,
        403
    );
    stack.query(&format!("DROP DATABASE IF EXISTS {db}")).await;
    let _ = std::fs::remove_file(&terms);
}

/// The catalog billing names cheaper models from: one provider, prices in USD.
const CATALOG: &str = r#"
catalog_version = "billing-lines-test"
default_billing_currency = "USD"

[[exchange_rates]]
from = "USD"
to = "EUR"
rate = "0.9"
effective_from = "2020-01-01T00:00:00Z"
source = "test"

[[models]]
key = "gpt-4o"
provider = "p"
kind = "chat"
currency = "USD"
  [[models.prices]]
  effective_from = "2020-01-01T00:00:00Z"
  source = "test"
  input = "2.5"
  output = "10"
  cached_input = "1.25"

[[models]]
key = "claude-sonnet-4-5"
provider = "p"
kind = "chat"
currency = "USD"
  [[models.prices]]
  effective_from = "2020-01-01T00:00:00Z"
  source = "test"
  input = "3"
  output = "15"
  cached_input = "0.3"

[[models]]
key = "search-model"
provider = "p"
kind = "chat"
currency = "USD"
  [[models.prices]]
  effective_from = "2020-01-01T00:00:00Z"
  source = "test"
  input = "0.15"
  output = "0.6"
  cached_input = "0.075"

[[models]]
key = "tiny-model"
provider = "p"
kind = "chat"
currency = "USD"
  [[models.prices]]
  effective_from = "2020-01-01T00:00:00Z"
  source = "test"
  input = "0.1"
  output = "0.4"
  cached_input = "0.05"
  cache_write_5m = "0.125"
  cache_write_1h = "0.2"
  reasoning = "0.4"
  per_request = "0"
"#;

/// tiny-model's prices, the cheapest of the test catalog: input, cached, 5m, 1h, output,
/// reasoning, per request.
const TINY: [Decimal; 7] = [
    dec!(0.1),
    dec!(0.05),
    dec!(0.125),
    dec!(0.2),
    dec!(0.4),
    dec!(0.4),
    dec!(0),
];

fn pct2(part: Decimal, whole: Decimal) -> Decimal {
    (part * dec!(100) / whole).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn reports_trace_allocation_and_the_cli() {
    let seed = test_seed("billing_reports");
    let stack = Stack::from_env();
    let names = Names::new("billing_reports");
    let db = names.database.clone();
    let catalog = std::env::temp_dir().join(format!("{db}-catalog.toml"));
    std::fs::write(&catalog, CATALOG).unwrap();
    let (_billing, api) = start_billing(
        &stack,
        &names,
        ADMIN,
        &[("acme", ACME), ("globex", GLOBEX)],
        &[
            ("COSTPIPE_CATALOG", catalog.to_str().unwrap()),
            (
                "COSTPIPE_BILLING_TRACE_AUXILIARY_SPANS",
                "retrieval,embedding",
            ),
            ("COSTPIPE_BILLING_TRACE_WEIGHTS", "chat=3,summarize=1"),
        ],
    )
    .await;
    let models = models();
    // February (the previous period) and March: short outputs, little caching.
    let shape = |start, days, n| Shape {
        start,
        days,
        n,
        max_output: 400,
        max_cached: 2_000,
    };
    let feb = gen_shaped(seed, &models, &shape(utc(2026, 2, 1), 28, 300));
    let mut mar = gen_shaped(seed ^ 1, &models, &shape(utc(2026, 3, 1), 31, 600));
    // One trace of acme: spans chat ×2, summarize, retrieval ×2, embedding.
    let spans = [
        "chat",
        "chat",
        "summarize",
        "retrieval",
        "retrieval",
        "embedding",
    ];
    for (e, span) in mar
        .iter_mut()
        .filter(|e| e.tenant == "acme")
        .zip(spans.iter())
    {
        e.trace = "trace-'1\\{x}".into();
        e.span = span.to_string();
    }
    let rows: Vec<Value> = feb
        .iter()
        .chain(mar.iter())
        .map(|e| e.row(&models))
        .collect();
    insert_rows(&stack, &db, "usage_events_priced", &rows).await;
    let cur: Vec<&Ev> = mar.iter().filter(|e| e.tenant == "acme").collect();
    let prev: Vec<&Ev> = feb.iter().filter(|e| e.tenant == "acme").collect();

    // Budget history. acme's day budget went WARN then BLOCK in March; its month budget went
    // WARN in March and BLOCK in April, after the report's period; globex's is not acme's.
    let state = |budget: &str, tenant: &str, level: &str, at: &str| {
        json!({"control_id": format!("{budget}/{level}"), "budget_id": budget, "kind": "STATE",
            "tenant_id": tenant, "scope": "{}", "level": level, "previous_level": "OK",
            "threshold": "0", "spend": "1", "limit": "2", "currency": "USD",
            "period_kind": "calendar", "period": "2026-03", "shadow": false, "reason": "",
            "trigger_event_id": "", "decided_at": at,
            "record": json!({"budget_id": budget, "level": level}).to_string()})
    };
    insert_rows(
        &stack,
        &db,
        "budget_control_history",
        &[
            state("acme-day", "acme", "WARN", "2026-03-10 08:00:00.000"),
            state("acme-day", "acme", "BLOCK", "2026-03-20 08:00:00.000"),
            state("acme-month", "acme", "WARN", "2026-03-15 08:00:00.000"),
            state("acme-month", "acme", "BLOCK", "2026-04-02 08:00:00.000"),
            state("globex-month", "globex", "BLOCK", "2026-03-05 08:00:00.000"),
        ],
    )
    .await;

    // The monthly report for March.
    let r = api
        .json(
            "/v1/tenants/acme/reports?period=monthly&date=2026-03-31",
            ACME,
        )
        .await;
    let billed: Decimal = cur.iter().map(|e| e.billing_cost).sum();
    let before: Decimal = prev.iter().map(|e| e.billing_cost).sum();
    let s = &r["summary"][0];
    assert_eq!(s["billing_currency"], "EUR");
    assert_eq!(decimal(&s["billing_cost"]), billed);
    assert_eq!(decimal(&s["previous_billing_cost"]), before);
    assert_eq!(decimal(&s["change"]), billed - before);
    assert_eq!(decimal(&s["change_percent"]), pct2(billed - before, before));
    assert_eq!(s["requests"].as_u64().unwrap(), cur.len() as u64);
    assert_eq!(
        decimal(&s["billing_cache_savings"]),
        cur.iter().map(|e| e.billing_savings).sum::<Decimal>()
    );
    assert_eq!(
        r["budget_status"],
        json!([{"budget_id": "acme-day", "level": "BLOCK"},
               {"budget_id": "acme-month", "level": "WARN"}]),
        "each acme budget's last state before April"
    );
    // Breakdowns by model and department, both periods.
    for (field, name) in [("by_model", 0usize), ("by_department", 1)] {
        let key = |e: &Ev| {
            if name == 0 {
                models[e.model].name.to_string()
            } else {
                e.dept.clone()
            }
        };
        let mut want: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
        for e in &cur {
            want.entry(key(e)).or_default().0 += e.billing_cost;
        }
        for e in &prev {
            want.entry(key(e)).or_default().1 += e.billing_cost;
        }
        let got: BTreeMap<String, (Decimal, Decimal)> = r[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_string(),
                    (
                        decimal(&b["billing_cost"]),
                        decimal(&b["previous_billing_cost"]),
                    ),
                )
            })
            .collect();
        assert_eq!(got, want, "{field}");
    }
    // Suggestions, each saving from the rows.
    let sugg = |kind: &str| -> Vec<Value> {
        r["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["kind"] == kind)
            .cloned()
            .collect()
    };
    // cache_more: per model, max(0, 0.2·(I+C) − C) × S / I.
    // Summed in model-name order, as the API does (Decimal sums keep 28 digits).
    let mut per_model: BTreeMap<&str, (u64, u64, Decimal)> = BTreeMap::new();
    for e in &cur {
        let p = models[e.model].prices;
        let m = per_model.entry(models[e.model].name).or_default();
        m.0 += e.tokens[0];
        m.1 += e.tokens[1];
        m.2 += Decimal::from(e.tokens[0]) * (p[0] - p[1]) / dec!(1000000);
    }
    let (i_all, c_all): (u64, u64) = per_model
        .values()
        .fold((0, 0), |a, m| (a.0 + m.0, a.1 + m.1));
    assert!(c_all * 100 < (i_all + c_all) * 20, "the data caches little");
    let mut want_cache = Decimal::ZERO;
    for (i, c, s) in per_model.values() {
        let prompt = Decimal::from(*i) + Decimal::from(*c);
        let missing = (prompt * dec!(20) / dec!(100) - Decimal::from(*c)).max(Decimal::ZERO);
        want_cache += missing * *s / Decimal::from(*i);
    }
    let cache = sugg("cache_more");
    assert_eq!(cache.len(), 1, "{r}");
    assert_eq!(decimal(&cache[0]["estimated_saving"]), round12(want_cache));
    // downgrade_model: every model has short outputs; tiny-model is the cheapest.
    let down = sugg("downgrade_model");
    for (m, model) in models.iter().enumerate() {
        let evs: Vec<&&Ev> = cur.iter().filter(|e| e.model == m).collect();
        let cost: Decimal = evs.iter().map(|e| e.cost).sum();
        let at_tiny: Decimal = evs
            .iter()
            .map(|e| {
                let q = e.quantities();
                (0..6)
                    .map(|k| Decimal::from(q[k]) * TINY[k] / dec!(1000000))
                    .sum::<Decimal>()
                    + TINY[6]
            })
            .sum();
        let got = down
            .iter()
            .find(|s| s["subject"] == model.name)
            .unwrap_or_else(|| panic!("no downgrade for {}: {r}", model.name));
        assert_eq!(got["alternative"], "tiny-model");
        assert_eq!(
            decimal(&got["estimated_saving"]),
            round12(cost - at_tiny),
            "{}",
            model.name
        );
    }
    // fastest_growing: the largest growth of a model or department.
    let mut growth: Vec<(Decimal, String)> = Vec::new();
    for (dim, key) in [("model", 0usize), ("department", 1)] {
        let mut by: BTreeMap<String, Decimal> = BTreeMap::new();
        for (e, sign) in cur
            .iter()
            .map(|e| (e, Decimal::ONE))
            .chain(prev.iter().map(|e| (e, -Decimal::ONE)))
        {
            let k = if key == 0 {
                models[e.model].name.to_string()
            } else {
                e.dept.clone()
            };
            *by.entry(format!("{dim}:{k}")).or_default() += sign * e.billing_cost;
        }
        growth.extend(by.into_iter().map(|(k, g)| (g, k)));
    }
    growth.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let fast = sugg("fastest_growing");
    assert_eq!(fast[0]["subject"].as_str().unwrap(), growth[0].1);
    assert_eq!(decimal(&fast[0]["estimated_saving"]), growth[0].0);
    println!(
        "report: {} EUR vs {} EUR, suggestions {}",
        billed,
        before,
        r["suggestions"].as_array().unwrap().len()
    );
    // A daily report on the month's last day and a weekly one: the same sums over their
    // own ranges.
    for (q, from, to) in [
        (
            "period=daily&date=2026-03-31",
            utc(2026, 3, 31),
            utc(2026, 4, 1),
        ),
        (
            "period=weekly&date=2026-03-04",
            utc(2026, 3, 2),
            utc(2026, 3, 9),
        ),
    ] {
        let v = api
            .json(&format!("/v1/tenants/acme/reports?{q}"), ACME)
            .await;
        let want: Decimal = cur
            .iter()
            .filter(|e| e.t >= from && e.t < to)
            .map(|e| e.billing_cost)
            .sum();
        assert_eq!(decimal(&v["summary"][0]["billing_cost"]), want, "{q}");
    }

    // Trace allocation: Σ allocations = trace cost exactly under every strategy.
    let trace: Vec<&&Ev> = cur.iter().filter(|e| !e.trace.is_empty()).collect();
    assert_eq!(trace.len(), 6);
    let mut own: BTreeMap<String, Decimal> = BTreeMap::new();
    for e in &trace {
        *own.entry(e.span.clone()).or_default() += e.billing_cost;
    }
    let total: Decimal = own.values().sum();
    let shared = own["retrieval"] + own["embedding"];
    let trace_path = format!(
        "/v1/tenants/acme/traces/{}/allocation?period=2026-03",
        "trace-%271%5C%7Bx%7D"
    );
    for (strategy, weights) in [
        ("direct", None),
        ("proportional", Some((own["chat"], own["summarize"]))),
        ("hybrid", Some((dec!(3), dec!(1)))),
    ] {
        let v = api
            .json(&format!("{trace_path}&strategy={strategy}"), ACME)
            .await;
        let c = &v["currencies"][0];
        assert_eq!(decimal(&c["trace_cost"]), total);
        let got: BTreeMap<String, Decimal> = c["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["span_name"].as_str().unwrap().to_string(),
                    decimal(&s["allocated_cost"]),
                )
            })
            .collect();
        assert_eq!(got.values().sum::<Decimal>(), total, "{strategy}");
        match weights {
            None => assert_eq!(got, own),
            Some((wc, ws)) => {
                assert_eq!(got["retrieval"], Decimal::ZERO);
                assert_eq!(got["embedding"], Decimal::ZERO);
                // Each primary share within 10^-12 of its exact share.
                let exact_chat = own["chat"] + shared * wc / (wc + ws);
                let exact_sum = own["summarize"] + shared * ws / (wc + ws);
                for (got, exact) in [(got["chat"], exact_chat), (got["summarize"], exact_sum)] {
                    assert!(
                        (got - exact).abs() <= dec!(0.000000000001),
                        "{strategy}: {got} vs {exact}"
                    );
                }
            }
        }
    }
    let (s, _) = api
        .get(
            "/v1/tenants/globex/traces/x/allocation?period=2026-03",
            Some(ACME),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .get(
            "/v1/tenants/acme/traces/nope/allocation?period=2026-03",
            Some(ACME),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        api.get(
            "/v1/tenants/globex/reports?period=daily&date=2026-03-01",
            Some(ACME)
        )
        .await
        .0,
        403
    );
    for bad in [
        "period=yearly&date=2026-03-01",
        "period=daily&date=%27",
        "period=daily",
    ] {
        let (s, body) = api
            .get(&format!("/v1/tenants/acme/reports?{bad}"), Some(ACME))
            .await;
        assert_eq!(s, 400, "{bad}: {body}");
    }

    // Hostile strings on every new string parameter: refused or answered, never a storage
    // error or database internals.
    let long = "x".repeat(5000);
    for h in [
        "'",
        "\\",
        "{p0:String}",
        "日本語\u{0}",
        "') OR 1=1 --",
        long.as_str(),
        "%",
        "\"",
    ] {
        let e: String = h
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        for p in [
            format!("/v1/tenants/acme/reports?period={e}&date=2026-03-01"),
            format!("/v1/tenants/acme/reports?period=daily&date={e}"),
            format!("/v1/tenants/{e}/reports?period=daily&date=2026-03-01"),
            format!("/v1/tenants/acme/traces/{e}/allocation?period=2026-03"),
            format!("/v1/tenants/acme/traces/x/allocation?period=2026-03&strategy={e}"),
            format!("/v1/tenants/acme/traces/x/allocation?period={e}"),
            format!("/v1/tenants/{e}/traces/x/allocation?period=2026-03"),
        ] {
            let (s, body) = api.get(&p, Some(ACME)).await;
            assert!(matches!(s, 200 | 400 | 403 | 404), "{p} -> {s}: {body}");
            assert!(
                !body.contains("Exception") && !body.contains("Code:"),
                "{p}: {body}"
            );
            let v: Value = serde_json::from_str(&body).unwrap();
            if s != 200 {
                assert!(v["error"].is_string() && v["message"].is_string(), "{body}");
            }
        }
    }

    // The CLI over the same API: the same answers, a refused key is an error, and a
    // server that does not answer times out.
    let cli = |args: &[&str], key: &str| {
        std::process::Command::new(costpipe_e2e::binary("costpipe-billing"))
            .args(args)
            .env("COSTPIPE_BILLING_URL", &api.base)
            .env("COSTPIPE_BILLING_KEY", key)
            .output()
            .expect("costpipe-billing runs")
    };
    let out = cli(
        &[
            "invoice", "--tenant", "acme", "--period", "2026-03", "--format", "csv",
        ],
        ACME,
    );
    assert!(out.status.success(), "{out:?}");
    let (_, csv) = api
        .get("/v1/tenants/acme/invoices/2026-03?format=csv", Some(ACME))
        .await;
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{csv}\n"));
    let out = cli(
        &[
            "report",
            "--tenant",
            "acme",
            "--period",
            "monthly",
            "--date",
            "2026-03-31",
        ],
        ACME,
    );
    assert!(out.status.success(), "{out:?}");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, r);
    for args in [
        vec![
            "costs",
            "--tenant",
            "acme",
            "--period",
            "2026-03",
            "--group-by",
            "model",
        ],
        vec![
            "top",
            "--tenant",
            "acme",
            "--dimension",
            "traces",
            "--period",
            "2026-03",
        ],
        vec![
            "forecast",
            "--tenant",
            "acme",
            "--period",
            "2026-03",
            "--as-of",
            "2026-03-20T00:00:00Z",
        ],
        vec!["anomalies", "--tenant", "acme", "--period", "2026-03"],
        vec![
            "traces",
            "--tenant",
            "acme",
            "--trace-id",
            "trace-'1\\{x}",
            "--period",
            "2026-03",
            "--strategy",
            "hybrid",
        ],
    ] {
        let out = cli(&args, ACME);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let _: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    }
    let out = cli(
        &["costs", "--tenant", "globex", "--period", "2026-03"],
        ACME,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    // A listener that never answers: the client gives up after its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(costpipe_e2e::binary("costpipe-billing"))
        .args([
            "report",
            "--tenant",
            "acme",
            "--period",
            "daily",
            "--date",
            "2026-03-01",
        ])
        .env(
            "COSTPIPE_BILLING_URL",
            format!("http://{}", silent.local_addr().unwrap()),
        )
        .env("COSTPIPE_BILLING_CLIENT_TIMEOUT_MS", "500")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    println!("CLI: same CSV and report as the API; 403 and a 500 ms timeout are errors");
    drop(silent);
    stack.query(&format!("DROP DATABASE IF EXISTS {db}")).await;
    let _ = std::fs::remove_file(&catalog);
}
