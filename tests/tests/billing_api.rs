//! The billing API against real ClickHouse with known data: raw events (and repricing
//! corrections) written by the test, every endpoint's numbers checked against sums the test
//! computes itself from the rows it wrote (Decimal), rollup answers against raw answers,
//! invoices (total = Σ lines = Σ raw costs; a late event after issue becomes next month's
//! adjustment), tenant isolation on every endpoint and hostile strings on every string
//! parameter. Data lies in fixed months (2026-03/04); the random seed is printed
//! (`SEED=n` replays it).

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Duration as Dur, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use costpipe_e2e::billing_client::{decimal, insert_rows, start_billing};
use costpipe_e2e::{test_seed, Names, Stack};

const ADMIN: &str = "admin-key-0123456789";
const ACME: &str = "acme-key-0123456789";
const GLOBEX: &str = "globex-key-0123456789";
const ODD_DEPT: &str = "o'brien \\ {x:String} 日本 \"q\"";

#[derive(Clone)]
struct Ev {
    id: String,
    t: DateTime<Utc>,
    tenant: &'static str,
    dept: String,
    user: String,
    project: String,
    model: String,
    price_model: String,
    team: String,
    request: String,
    trace: String,
    tokens: [u64; 6],
    cost: Decimal,
    billing_cost: Decimal,
}

impl Ev {
    fn catalog_model(&self) -> String {
        if self.price_model.is_empty() {
            self.model.clone()
        } else {
            self.price_model.clone()
        }
    }

    fn row(&self) -> Value {
        json!({
            "event_id": self.id, "event_time": self.t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            "tenant_id": self.tenant, "department": self.dept, "user_id": self.user,
            "project_id": self.project, "feature": "chat", "environment": "prod", "provider": "openai",
            "model": self.model, "price_model": self.price_model,
            "input_tokens": self.tokens[0], "cached_input_tokens": self.tokens[1],
            "cache_write_tokens": self.tokens[2], "cache_write_1h_tokens": self.tokens[3],
            "output_tokens": self.tokens[4], "reasoning_tokens": self.tokens[5],
            "cost": self.cost.to_string(), "currency": "USD",
            "billing_cost": self.billing_cost.to_string(), "billing_currency": "EUR",
            "exchange_rate": "0.9", "unpriced": false, "request_id": self.request,
            "trace_id": self.trace, "span_name": "llm", "labels": {"team": self.team},
            "ingested_at": "2026-04-01 00:00:00.000"
        })
    }
}

fn gen_events(seed: u64) -> Vec<Ev> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let mut out = Vec::new();
    for i in 0..1500u32 {
        let tenant = if i % 5 == 0 { "globex" } else { "acme" };
        // March in Tokyo (acme's zone) is 2026-02-28T15:00Z .. 2026-03-31T15:00Z.
        let secs = rng.random_range(-9 * 3600..(31 * 86_400 - 9 * 3600));
        let cents: i64 = rng.random_range(1..100_000);
        let tokens = [
            rng.random_range(0..5000),
            rng.random_range(0..2000),
            rng.random_range(0..500),
            rng.random_range(0..500),
            rng.random_range(100..900),
            rng.random_range(0..100),
        ];
        let cost = Decimal::new(cents, 9) + Decimal::new(i64::from(i % 7), 12);
        let (model, price_model) = match rng.random_range(0..4) {
            0 => ("gpt-4o-2024-08-06".to_string(), "gpt-4o".to_string()),
            1 => ("gpt-4o".to_string(), "gpt-4o".to_string()),
            2 => ("claude-x".to_string(), "claude".to_string()),
            _ => ("mystery".to_string(), String::new()),
        };
        out.push(Ev {
            id: uuid::Uuid::new_v4().to_string(),
            t: start + Dur::seconds(secs) + Dur::milliseconds(rng.random_range(0..1000)),
            tenant,
            dept: if i == 7 {
                ODD_DEPT.to_string()
            } else {
                ["eng", "ops", "sales"][rng.random_range(0..3)].to_string()
            },
            user: format!("u{}", rng.random_range(0..12)),
            project: format!("p{}", rng.random_range(0..3)),
            model: if tenant == "globex" {
                format!("gx-{model}")
            } else {
                model
            },
            price_model: if tenant == "globex" && !price_model.is_empty() {
                format!("gx-{price_model}")
            } else {
                price_model
            },
            team: format!("t{}", rng.random_range(0..2)),
            request: format!("r{i}"),
            trace: format!("tr{}", rng.random_range(0..40)),
            tokens,
            billing_cost: (cost * Decimal::from_str("0.9").unwrap()).round_dp(12),
            cost,
        });
    }
    out
}

/// Independent sums: key → (requests, tokens, cost, billing cost).
type Sums = BTreeMap<Vec<String>, (u64, [u64; 6], Decimal, Decimal)>;

fn sums(evs: &[Ev], corr: &[(Ev, Decimal, Decimal)], key: impl Fn(&Ev) -> Vec<String>) -> Sums {
    let mut m: Sums = BTreeMap::new();
    for e in evs {
        let s = m.entry(key(e)).or_default();
        s.0 += 1;
        for k in 0..6 {
            s.1[k] += e.tokens[k];
        }
        s.2 += e.cost;
        s.3 += e.billing_cost;
    }
    for (e, dc, db) in corr {
        let s = m.entry(key(e)).or_default();
        s.2 += dc;
        s.3 += db;
    }
    m
}

fn answer_sums(v: &Value, dims: &[&str], with_bucket: bool) -> Sums {
    let mut m: Sums = BTreeMap::new();
    for r in v["rows"].as_array().unwrap() {
        let mut k: Vec<String> = dims
            .iter()
            .map(|d| r["group"][*d].as_str().unwrap().to_string())
            .collect();
        if with_bucket {
            k.push(r["bucket_start"].as_str().unwrap()[..10].to_string());
        }
        let t = &r["tokens"];
        let s = m.entry(k).or_default();
        s.0 += r["requests"].as_u64().unwrap();
        for (i, name) in [
            "input",
            "cached_input",
            "cache_write_5m",
            "cache_write_1h",
            "output",
            "reasoning",
        ]
        .iter()
        .enumerate()
        {
            s.1[i] += t[*name].as_u64().unwrap();
        }
        s.2 += decimal(&r["cost"]);
        s.3 += decimal(&r["billing_cost"]);
    }
    m
}

fn tokyo_day(t: DateTime<Utc>) -> String {
    (t + Dur::hours(9)).format("%Y-%m-%d").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn billing_answers_equal_independent_sums() {
    let seed = test_seed("billing_api");
    let stack = Stack::from_env();
    let names = Names::new("billing_api");
    let db = names.database.clone();
    let (_billing, api) = start_billing(
        &stack,
        &names,
        ADMIN,
        &[("acme", ACME), ("globex", GLOBEX)],
        &[("COSTPIPE_BILLING_TENANT_TIME_ZONES", "acme=Asia/Tokyo")],
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
    // Reprice two acme events: the old amount out, the new one in.
    let mut corr = Vec::new();
    let mut corr_rows = Vec::new();
    for e in evs.iter().filter(|e| e.tenant == "acme").take(2) {
        let new_cost = e.cost + Decimal::new(123_456_789, 12);
        let new_billing = (new_cost * Decimal::from_str("0.9").unwrap()).round_dp(12);
        for (dc, db_) in [(-e.cost, -e.billing_cost), (new_cost, new_billing)] {
            corr_rows.push(json!({
                "run_id": "run1", "event_id": e.id, "event_time": e.t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                "tenant_id": e.tenant, "department": e.dept, "model": e.model, "price_model": e.price_model,
                "currency": "USD", "billing_currency": "EUR", "cost_delta": dc.to_string(),
                "billing_cost_delta": db_.to_string(), "unpriced_delta": 0, "catalog_version": "v2",
                "reason": "test", "corrected_at": "2026-04-01 00:00:00.000"
            }));
        }
        corr.push((e.clone(), new_cost - e.cost, new_billing - e.billing_cost));
    }
    insert_rows(&stack, &db, "usage_cost_corrections", &corr_rows).await;
    let acme: Vec<Ev> = evs.iter().filter(|e| e.tenant == "acme").cloned().collect();

    // Costs: model × day (Tokyo) from the hourly rollup, equal to the raw answer and to
    // the independent sums.
    let q = "/v1/tenants/acme/costs?period=2026-03&grain=day&group_by=model";
    let rolled = api.json(q, ACME).await;
    assert_eq!(rolled["source"], "hour");
    let raw = api.json(&format!("{q}&source=raw"), ACME).await;
    assert_eq!(raw["source"], "raw");
    let expected = sums(&acme, &corr, |e| vec![e.catalog_model(), tokyo_day(e.t)]);
    assert_eq!(answer_sums(&rolled, &["model"], true), expected);
    assert_eq!(answer_sums(&raw, &["model"], true), expected);
    println!(
        "model x day: {} groups, rollup == raw == independent",
        expected.len()
    );

    // The Tokyo month's total by model: the daily rollup for the whole UTC days, the hourly
    // one for the 15 hours at each end; equal to raw and to the independent sums.
    let q = "/v1/tenants/acme/costs?period=2026-03&grain=total&group_by=model";
    let rolled = api.json(q, ACME).await;
    assert_eq!(rolled["source"], "day");
    let raw = api.json(&format!("{q}&source=raw"), ACME).await;
    let expected = sums(&acme, &corr, |e| vec![e.catalog_model()]);
    assert_eq!(answer_sums(&rolled, &["model"], false), expected);
    assert_eq!(answer_sums(&raw, &["model"], false), expected);

    // Reported model × department by minute: the minute rollup, equal to raw.
    let q = "/v1/tenants/acme/costs?period=2026-03&grain=minute&group_by=reported_model,department";
    let rolled = api.json(q, ACME).await;
    assert_eq!(rolled["source"], "minute");
    let raw = api.json(&format!("{q}&source=raw"), ACME).await;
    let expected = sums(&acme, &corr, |e| vec![e.model.clone(), e.dept.clone()]);
    assert_eq!(
        answer_sums(&rolled, &["reported_model", "department"], false),
        expected
    );
    assert_eq!(
        answer_sums(&raw, &["reported_model", "department"], false),
        expected
    );

    // User × label with a filter, raw (with corrections joined to their events).
    let q = "/v1/tenants/acme/costs?period=2026-03&grain=month&group_by=user,label:team&project=p0&project=p1";
    let v = api.json(q, ACME).await;
    assert_eq!(v["source"], "raw");
    let filtered: Vec<Ev> = acme.iter().filter(|e| e.project != "p2").cloned().collect();
    let fcorr: Vec<_> = corr
        .iter()
        .filter(|c| c.0.project != "p2")
        .cloned()
        .collect();
    assert_eq!(
        answer_sums(&v, &["user", "label:team"], false),
        sums(&filtered, &fcorr, |e| vec![e.user.clone(), e.team.clone()])
    );

    // Cost by user over the Tokyo month: the daily user rollup for the whole UTC days
    // inside it, raw events for the hours of the first and last UTC day that fall in it,
    // corrections joined to their events; equal to raw and to the independent sums.
    let q = "/v1/tenants/acme/costs?period=2026-03&grain=total&group_by=user";
    let rolled = api.json(q, ACME).await;
    assert_eq!(rolled["source"], "day_user");
    let raw = api.json(&format!("{q}&source=raw"), ACME).await;
    let expected = sums(&acme, &corr, |e| vec![e.user.clone()]);
    assert_eq!(answer_sums(&rolled, &["user"], false), expected);
    assert_eq!(answer_sums(&raw, &["user"], false), expected);
    // Tokyo days are not UTC days: by day, only raw events answer.
    let v = api
        .json(
            "/v1/tenants/acme/costs?period=2026-03&grain=day&group_by=user",
            ACME,
        )
        .await;
    assert_eq!(v["source"], "raw");

    // All tenants (admin): by tenant.
    let v = api
        .json(
            "/v1/costs?from=2026-02-28&to=2026-04-02&grain=total&group_by=tenant",
            ADMIN,
        )
        .await;
    assert_eq!(
        answer_sums(&v, &["tenant"], false),
        sums(&evs, &corr, |e| vec![e.tenant.to_string()])
    );

    // Top-3 users by billing cost.
    let v = api
        .json(
            "/v1/tenants/acme/top?period=2026-03&dimension=user&n=3",
            ACME,
        )
        .await;
    let mut by_user: Vec<(Decimal, String)> = sums(&acme, &corr, |e| vec![e.user.clone()])
        .into_iter()
        .map(|(k, s)| (s.3, k[0].clone()))
        .collect();
    by_user.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let got: Vec<(Decimal, String)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                decimal(&r["billing_cost"]),
                r["group"]["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, by_user[..3].to_vec());

    // Most expensive requests and traces.
    let in_march = |e: &&Ev| tokyo_day(e.t).starts_with("2026-03");
    let cost_now = |e: &Ev| {
        e.billing_cost
            + corr
                .iter()
                .filter(|c| c.0.id == e.id)
                .map(|c| c.2)
                .sum::<Decimal>()
    };
    let mut reqs: Vec<(Decimal, String)> = acme
        .iter()
        .filter(in_march)
        .map(|e| (cost_now(e), e.request.clone()))
        .collect();
    reqs.sort_by_key(|r| std::cmp::Reverse(r.0));
    let v = api
        .json("/v1/tenants/acme/top/requests?period=2026-03&n=5", ACME)
        .await;
    let got: Vec<(Decimal, String)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                decimal(&r["billing_cost"]),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, reqs[..5].to_vec());
    let mut traces: BTreeMap<String, Decimal> = BTreeMap::new();
    for e in acme.iter().filter(in_march) {
        *traces.entry(e.trace.clone()).or_default() += cost_now(e);
    }
    let mut traces: Vec<(Decimal, String)> = traces.into_iter().map(|(k, v)| (v, k)).collect();
    traces.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let v = api
        .json("/v1/tenants/acme/top/traces?period=2026-03&n=3", ACME)
        .await;
    let got: Vec<(Decimal, String)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                decimal(&r["billing_cost"]),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, traces[..3].to_vec());

    // The March invoice: total = Σ lines = Σ raw billing costs (with corrections).
    let march_total: Decimal = acme.iter().filter(in_march).map(cost_now).sum();
    let inv = api.json("/v1/tenants/acme/invoices/2026-03", ACME).await;
    assert_eq!(inv["status"], "draft");
    let lines: Decimal = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| decimal(&l["billing_amount"]))
        .sum();
    let total = decimal(&inv["totals"][0]["total"]);
    assert_eq!(lines, march_total);
    assert_eq!(total, march_total);
    let depts: Decimal = inv["subtotals_by_department"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| decimal(&s["billing_amount"]))
        .sum();
    assert_eq!(depts, march_total);
    let cache_1h: u64 = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["tokens"]["cache_write_1h"].as_u64().unwrap())
        .sum();
    assert_eq!(
        cache_1h,
        acme.iter()
            .filter(in_march)
            .map(|e| e.tokens[3])
            .sum::<u64>()
    );
    println!(
        "March invoice: {} lines, total {total} EUR = Σ raw",
        inv["lines"].as_array().unwrap().len()
    );

    // Issue it (admin only), then a late March event arrives.
    assert_eq!(
        api.post("/v1/tenants/acme/invoices/2026-03/issue", ACME)
            .await
            .0,
        403
    );
    let (s, body) = api
        .post("/v1/tenants/acme/invoices/2026-03/issue", ADMIN)
        .await;
    assert_eq!(s, 200, "{body}");
    let issued: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(issued["status"], "issued");
    let mut late = acme[0].clone();
    late.id = uuid::Uuid::new_v4().to_string();
    late.t = Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap();
    late.request = "late".into();
    late.billing_cost = Decimal::from_str("4.200000000007").unwrap();
    insert_rows(&stack, &db, "usage_events_priced", &[late.row()]).await;
    let again = api.json("/v1/tenants/acme/invoices/2026-03", ACME).await;
    assert_eq!(again, issued, "an issued invoice never changes");
    let (s, _) = api
        .post("/v1/tenants/acme/invoices/2026-03/issue", ADMIN)
        .await;
    assert_eq!(s, 200);
    let april = api.json("/v1/tenants/acme/invoices/2026-04", ACME).await;
    let adj: Decimal = april["adjustments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| decimal(&l["billing_amount"]))
        .sum();
    assert_eq!(
        adj, late.billing_cost,
        "the late event is April's adjustment"
    );
    let april_lines: Decimal = april["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| decimal(&l["billing_amount"]))
        .sum();
    assert_eq!(decimal(&april["totals"][0]["total"]), april_lines + adj);
    let (s, csv) = api
        .get("/v1/tenants/acme/invoices/2026-04?format=csv", Some(ACME))
        .await;
    assert_eq!(s, 200);
    assert!(csv.contains(april["invoice_id"].as_str().unwrap()) && csv.contains(",adjustment,"));
    println!(
        "late event {} EUR after issue -> April adjustment {adj}",
        late.billing_cost
    );

    // The odd department value matches exactly its event, bound as a parameter.
    let odd: Decimal = acme
        .iter()
        .filter(|e| e.dept == ODD_DEPT)
        .map(cost_now)
        .sum();
    let path = format!(
        "/v1/tenants/acme/costs?period=2026-03&grain=total&source=raw&department={}",
        urlencode(ODD_DEPT)
    );
    let v = api.json(&path, ACME).await;
    let got: Decimal = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| decimal(&r["billing_cost"]))
        .sum();
    assert_eq!(got, odd);

    // Tenant isolation on every endpoint.
    let tenant_paths = [
        "/v1/tenants/globex/costs?period=2026-03",
        "/v1/tenants/globex/top?period=2026-03&dimension=user",
        "/v1/tenants/globex/top/requests?period=2026-03",
        "/v1/tenants/globex/top/traces?period=2026-03",
        "/v1/tenants/globex/invoices/2026-03",
        "/v1/tenants/globex/costs/month-to-date?period=2026-03",
    ];
    for p in tenant_paths {
        assert_eq!(api.get(p, Some(ACME)).await.0, 403, "{p} with acme's key");
        assert_eq!(api.get(p, None).await.0, 401, "{p} without a key");
        assert_eq!(
            api.get(p, Some("wrong")).await.0,
            401,
            "{p} with a wrong key"
        );
        assert_eq!(
            api.get(p, Some(GLOBEX)).await.0,
            200,
            "{p} with globex's key"
        );
    }
    for p in [
        "/v1/costs?period=2026-03",
        "/v1/top?period=2026-03&dimension=user",
        "/v1/costs/month-to-date?period=2026-03",
        "/v1/unpriced?period=2026-03",
    ] {
        assert_eq!(
            api.get(p, Some(ACME)).await.0,
            403,
            "{p} needs an admin key"
        );
        assert_eq!(api.get(p, Some(ADMIN)).await.0, 200, "{p}");
    }
    assert_eq!(
        api.post("/v1/tenants/globex/invoices/2026-03/issue", GLOBEX)
            .await
            .0,
        403
    );
    // A tenant filter cannot widen a tenant key's view: acme's answer has no globex model.
    let v = api
        .json(
            "/v1/tenants/acme/costs?period=2026-03&group_by=model,tenant&tenant=globex&source=raw",
            ACME,
        )
        .await;
    assert!(v["rows"].as_array().unwrap().is_empty(), "{v}");
    let v = api
        .json("/v1/tenants/acme/costs?period=2026-03&group_by=model", ACME)
        .await;
    assert!(!v.to_string().contains("gx-"));

    // Hostile strings on every string parameter: refused or answered, never a storage
    // error, never database internals.
    let long = "x".repeat(5000);
    let hostile = [
        "'",
        "\\",
        "{p0:String}",
        "日本語\u{0}",
        "') OR 1=1 --",
        long.as_str(),
        "%",
        "\"",
    ];
    for h in hostile {
        let e = urlencode(h);
        let paths = [
            format!("/v1/tenants/{e}/costs?period=2026-03"),
            format!("/v1/tenants/acme/costs?period={e}"),
            format!("/v1/tenants/acme/costs?from={e}&to=2026-04-01"),
            format!("/v1/tenants/acme/costs?period=2026-03&tz={e}"),
            format!("/v1/tenants/acme/costs?period=2026-03&grain={e}"),
            format!("/v1/tenants/acme/costs?period=2026-03&group_by={e}"),
            format!("/v1/tenants/acme/costs?period=2026-03&group_by=label:{e}"),
            format!("/v1/tenants/acme/costs?period=2026-03&source={e}"),
            format!("/v1/tenants/acme/costs?period=2026-03&department={e}&user={e}&model={e}&label:{e}={e}"),
            format!("/v1/tenants/acme/top?period=2026-03&dimension={e}"),
            format!("/v1/tenants/acme/top?period=2026-03&dimension=user&n={e}"),
            format!("/v1/tenants/acme/top/requests?period=2026-03&n={e}"),
            format!("/v1/tenants/acme/top/traces?period={e}"),
            format!("/v1/tenants/acme/invoices/{e}"),
            format!("/v1/tenants/acme/invoices/2026-03?format={e}"),
            format!("/v1/costs?period=2026-03&tenant={e}&group_by=tenant"),
        ];
        for p in paths {
            let key = if p.starts_with("/v1/costs") {
                ADMIN
            } else {
                ACME
            };
            let (s, body) = api.get(&p, Some(key)).await;
            assert!(matches!(s, 200 | 400 | 403 | 404), "{p} -> {s}: {body}");
            assert!(
                !body.contains("Exception") && !body.contains("Code:"),
                "{p}: {body}"
            );
            if s != 200 && s != 404 {
                let v: Value = serde_json::from_str(&body).unwrap();
                assert!(v["error"].is_string() && v["message"].is_string(), "{body}");
            }
        }
    }
    stack.query(&format!("DROP DATABASE IF EXISTS {db}")).await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
