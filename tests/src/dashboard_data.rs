//! Known data for the dashboard tests (`dashboard_api.rs`, `dashboard_browser.rs`): a month
//! of usage for two tenants written straight into ClickHouse around the current time (so
//! "today", "month to date" and the forecast have something to show), budget control
//! records, and a stand-in for the aggregator's live view behind an `owner` redirect. The
//! tests compare billing's answers and the page with sums computed here, in `Decimal`.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::billing_client::insert_rows;
use crate::{expected_prices, Stack};

pub const ADMIN: &str = "dash-admin-key-0123456789";
pub const ACME: &str = "dash-acme-key-0123456789";
pub const GLOBEX: &str = "dash-globex-key-0123456789";
/// acme's zone: its day and month start at Paris midnight.
pub const ACME_ZONE: &str = "Europe/Paris";
/// A department only globex has: it must never appear in acme's pages.
pub const GLOBEX_SECRET: &str = "globex-secret-dept";

const MODELS: [&str; 3] = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"];
const ACME_DEPTS: [&str; 3] = ["research", "support", "marketing"];
const USERS: [&str; 8] = [
    "alice", "bruno", "chen", "dana", "emeka", "farah", "gus", "hana",
];
const FEATURES: [&str; 4] = ["chat", "summarize", "search", "classify"];

/// One usage event as written.
#[derive(Debug, Clone)]
pub struct Usage {
    pub id: String,
    pub tenant: &'static str,
    pub t: DateTime<Utc>,
    pub department: String,
    pub user: String,
    pub feature: String,
    pub model: &'static str,
    pub trace: String,
    pub input: u64,
    pub output: u64,
    /// USD, billed in USD (rate 1).
    pub cost: Decimal,
}

impl Usage {
    fn row(&self) -> Value {
        let (p_in, p_cached, p_w5, p_w1h, p_out) = expected_prices(self.model).unwrap_or_default();
        json!({
            "event_id": self.id, "event_time": self.t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            "tenant_id": self.tenant, "department": self.department, "user_id": self.user,
            "project_id": format!("{}-app", self.department), "feature": self.feature,
            "environment": "prod", "provider": if self.model.starts_with("claude") { "anthropic" } else { "openai" },
            "model": self.model, "price_model": self.model,
            "input_tokens": self.input, "cached_input_tokens": 0, "cache_write_tokens": 0,
            "cache_write_1h_tokens": 0, "output_tokens": self.output, "reasoning_tokens": 0,
            "cost": self.cost.to_string(), "currency": "USD",
            "billing_cost": self.cost.to_string(), "billing_currency": "USD", "exchange_rate": "1",
            "unpriced": false, "request_id": format!("req-{}", &self.id[..8]),
            "trace_id": self.trace, "span_name": "llm", "labels": {},
            "ingested_at": self.t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            "unit_price_input": p_in.to_string(), "unit_price_cached_input": p_cached.to_string(),
            "unit_price_cache_write_5m": p_w5.to_string(), "unit_price_cache_write_1h": p_w1h.to_string(),
            "unit_price_output": p_out.to_string(), "unit_price_reasoning": p_out.to_string(),
            "unit_price_request": "0",
        })
    }
}

/// Midnight of `t`'s local day in `tz`, and of the first of its month.
pub fn day_and_month_start(t: DateTime<Utc>, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = t.with_timezone(&tz).date_naive();
    let at = |d: chrono::NaiveDate| {
        tz.from_local_datetime(&d.and_time(NaiveTime::MIN))
            .earliest()
            .map(|x| x.with_timezone(&Utc))
            .expect("local midnight exists")
    };
    (at(local), at(local.with_day(1).expect("day 1")))
}

/// `YYYY-MM-DD` of `t` in `tz`.
pub fn local_day(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

fn tenant_events(
    rng: &mut rand::rngs::StdRng,
    tenant: &'static str,
    n: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tz: Tz,
) -> Vec<Usage> {
    let span = (to - from).num_milliseconds().max(1);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let t = from + Duration::milliseconds(rng.random_range(0..span));
        // Working hours are busier (a day/night shape in the charts); only half of the
        // night events are kept.
        let hour = t.with_timezone(&tz).hour();
        if !(8..20).contains(&hour) && rng.random_bool(0.5) {
            continue;
        }
        let model = MODELS[rng.random_range(0..MODELS.len())];
        let (p_in, _, _, _, p_out) = expected_prices(model).unwrap_or_default();
        // Long prompts (retrieved context) and answers: about $0.05-0.50 a call.
        let input: u64 = rng.random_range(2_000..60_000);
        let output: u64 = rng.random_range(200..4_000);
        let cost = ((Decimal::from(input) * p_in + Decimal::from(output) * p_out)
            / Decimal::from(1_000_000))
        .round_dp(12);
        let department = if tenant == "globex" {
            GLOBEX_SECRET.to_string()
        } else {
            ACME_DEPTS[rng.random_range(0..ACME_DEPTS.len())].to_string()
        };
        out.push(Usage {
            id: uuid::Uuid::new_v4().to_string(),
            tenant,
            t,
            user: format!("{}@{tenant}", USERS[rng.random_range(0..USERS.len())]),
            feature: FEATURES[rng.random_range(0..FEATURES.len())].to_string(),
            department,
            model,
            trace: format!("trace-{tenant}-{:03}", rng.random_range(0..60)),
            input,
            output,
            cost,
        });
    }
    out
}

/// acme: 1,500 events over the last ten days until a minute ago (the overview's week by
/// hour has a day/night shape), 20 in the last 20 minutes, and 30 in the five days before
/// its month (Paris), outside month to date; globex: 300 events over the last ten days in
/// UTC, all in [`GLOBEX_SECRET`].
pub fn generate(seed: u64, now: DateTime<Utc>) -> Vec<Usage> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let paris: Tz = ACME_ZONE.parse().expect("zone");
    let (_, month) = day_and_month_start(now, paris);
    let until = now - Duration::minutes(1);
    let since = now - Duration::days(10);
    let mut out = tenant_events(&mut rng, "acme", 1_500, since, until, paris);
    out.extend(tenant_events(
        &mut rng,
        "acme",
        20,
        now - Duration::minutes(20),
        until,
        paris,
    ));
    out.extend(tenant_events(
        &mut rng,
        "acme",
        30,
        month - Duration::days(5),
        month,
        paris,
    ));
    out.extend(tenant_events(
        &mut rng,
        "globex",
        300,
        since,
        until,
        chrono_tz::UTC,
    ));
    out
}

/// Σ cost of `tenant`'s events in `[from, to)`.
pub fn cost_between(
    evs: &[Usage],
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Decimal {
    evs.iter()
        .filter(|e| e.tenant == tenant && e.t >= from && e.t < to)
        .map(|e| e.cost)
        .sum()
}

/// Writes the events into `db`.
pub async fn write_usage(stack: &Stack, db: &str, evs: &[Usage]) {
    let rows: Vec<Value> = evs.iter().map(Usage::row).collect();
    for chunk in rows.chunks(500) {
        insert_rows(stack, db, "usage_events_priced", chunk).await;
    }
}

/// A control record row of `budget_control_history` (the record is what the aggregator
/// would publish).
#[allow(clippy::too_many_arguments)]
fn control_row(
    control_id: &str,
    budget_id: &str,
    kind: &str,
    tenant: &str,
    scope: Value,
    level: &str,
    previous: Option<&str>,
    spend: &str,
    limit: &str,
    period_kind: &str,
    period: &str,
    forecast_spend: Option<&str>,
    decided: DateTime<Utc>,
) -> Value {
    let ratio = (spend.parse::<Decimal>().unwrap_or_default()
        / limit.parse::<Decimal>().unwrap_or(Decimal::ONE))
    .round_dp(6);
    let record = json!({
        "control_id": control_id, "budget_id": budget_id, "kind": kind, "scope": scope,
        "tenant_id": tenant, "level": level, "previous_level": previous, "threshold": "0.8",
        "throttle_requests_per_minute": null, "downgrade_to": null, "retry_after_ms": null,
        "spend": spend, "limit": limit, "ratio": ratio.to_string(), "currency": "USD",
        "period_kind": period_kind, "period": period, "period_start": null, "period_end": null,
        "shadow": false, "whitelist_features": [], "reason": format!("{kind} {level} by the test"),
        "trigger_event_id": null, "fx_rates": [], "forecast_spend": forecast_spend,
        "method": null, "decided_at": decided.timestamp_millis(),
    });
    json!({
        "control_id": control_id, "budget_id": budget_id, "kind": kind, "tenant_id": tenant,
        "scope": scope.to_string(), "level": level, "previous_level": previous.unwrap_or(""),
        "threshold": "0.8", "spend": spend, "limit": limit, "currency": "USD",
        "period_kind": period_kind, "period": period, "shadow": false,
        "reason": format!("{kind} {level} by the test"), "trigger_event_id": "",
        "record": record.to_string(),
        "decided_at": decided.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
    })
}

/// What [`write_controls`] wrote: acme's budgets with their latest level, and acme's
/// control ids newest first.
pub struct Controls {
    pub latest_levels: BTreeMap<String, String>,
    pub acme_newest_first: Vec<String>,
}

/// acme:month went OK → WARNING → THROTTLE this month (the THROTTLE row written twice, as
/// a re-publication after a crash would), with a FORECAST of an overrun; acme:research:day
/// has one WARNING; acme:support:month never left OK but forecasts an overrun (no STATE
/// record); globex:month is at BLOCK (never visible to acme).
pub async fn write_controls(stack: &Stack, db: &str, now: DateTime<Utc>) -> Controls {
    let paris: Tz = ACME_ZONE.parse().expect("zone");
    let (day, month) = day_and_month_start(now, paris);
    let month_period = format!("month@{}", month.to_rfc3339());
    let day_period = format!("day@{}", day.to_rfc3339());
    let acme = json!({"tenant": "acme"});
    let research = json!({"tenant": "acme", "department": "research"});
    let t = |mins: i64| now - Duration::minutes(mins);
    let rows = vec![
        control_row(
            "c-acme-m-1",
            "acme:month",
            "STATE",
            "acme",
            acme.clone(),
            "WARNING",
            Some("OK"),
            "520",
            "1000",
            "month",
            &month_period,
            None,
            t(300),
        ),
        control_row(
            "c-acme-m-2",
            "acme:month",
            "STATE",
            "acme",
            acme.clone(),
            "THROTTLE",
            Some("WARNING"),
            "812.5",
            "1000",
            "month",
            &month_period,
            None,
            t(120),
        ),
        control_row(
            "c-acme-m-2",
            "acme:month",
            "STATE",
            "acme",
            acme.clone(),
            "THROTTLE",
            Some("WARNING"),
            "812.5",
            "1000",
            "month",
            &month_period,
            None,
            t(120),
        ),
        control_row(
            "c-acme-m-f",
            "acme:month",
            "FORECAST",
            "acme",
            acme,
            "THROTTLE",
            None,
            "812.5",
            "1000",
            "month",
            &month_period,
            Some("1187.4"),
            t(90),
        ),
        control_row(
            "c-acme-s-f",
            "acme:support:month",
            "FORECAST",
            "acme",
            json!({"tenant": "acme", "department": "support"}),
            "OK",
            None,
            "95",
            "300",
            "month",
            &month_period,
            Some("342.7"),
            t(60),
        ),
        control_row(
            "c-acme-r-1",
            "acme:research:day",
            "STATE",
            "acme",
            research,
            "WARNING",
            Some("OK"),
            "6.3",
            "12",
            "day",
            &day_period,
            None,
            t(30),
        ),
        control_row(
            "c-globex-1",
            "globex:month",
            "STATE",
            "globex",
            json!({"tenant": "globex"}),
            "BLOCK",
            Some("THROTTLE"),
            "95",
            "90",
            "month",
            &month_period,
            None,
            t(10),
        ),
    ];
    insert_rows(stack, db, "budget_control_history", &rows).await;
    Controls {
        latest_levels: [
            ("acme:month".to_string(), "THROTTLE".to_string()),
            ("acme:research:day".to_string(), "WARNING".to_string()),
            ("acme:support:month".to_string(), "OK".to_string()),
        ]
        .into(),
        acme_newest_first: [
            "c-acme-r-1",
            "c-acme-s-f",
            "c-acme-m-f",
            "c-acme-m-2",
            "c-acme-m-1",
        ]
        .map(String::from)
        .into(),
    }
}

/// The live view the stand-in aggregator answers for acme: (body, Σ cost per window).
pub fn live_body(instance: &str, now: DateTime<Utc>) -> (Value, BTreeMap<&'static str, Decimal>) {
    let keys = [
        (
            "research",
            "gpt-4o",
            ["0.0125", "0.061", "0.734", "9.21", "3.4", "41.5"],
        ),
        (
            "support",
            "gpt-4o-mini",
            ["0.0004", "0.0019", "0.0223", "0.3301", "0.1", "1.2"],
        ),
        (
            "marketing",
            "claude-sonnet-4-5",
            ["0", "0.0415", "0.51", "6.12", "2.2", "28.75"],
        ),
    ];
    let windows = ["1m", "5m", "1h", "24h", "day", "month"];
    let mut sums: BTreeMap<&'static str, Decimal> = BTreeMap::new();
    let keys: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, (dept, model, costs))| {
            let mut w = serde_json::Map::new();
            for (j, name) in windows.iter().enumerate() {
                let c: Decimal = costs[j].parse().expect("decimal");
                *sums.entry(*name).or_default() += c;
                let events = (i as u64 + 1) * (j as u64 + 1);
                w.insert(
                    name.to_string(),
                    json!({"cost": costs[j], "events": events, "tokens": {"input": events * 900,
                        "output": events * 250, "cached_input": 0, "cache_write": 0,
                        "reasoning": 0, "cache_write_1h": 0}}),
                );
            }
            json!({"department": dept, "model": model, "windows": w})
        })
        .collect();
    (
        json!({"tenant": "acme", "instance": instance, "watermark_ms": now.timestamp_millis() - 5_000,
               "keys": keys}),
        sums,
    )
}

/// Two stand-in aggregator instances: the first holds no tenant and names the second as
/// acme's owner (as a real instance does for a partition it does not hold); the second
/// answers acme's live view. Returns the first one's URL.
pub async fn spawn_live_aggregators(
    now: DateTime<Utc>,
) -> (String, BTreeMap<&'static str, Decimal>) {
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::routing::get;

    let bind = || async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        (l, url)
    };
    let (owner_listener, owner_url) = bind().await;
    let (first_listener, first_url) = bind().await;
    let (body, sums) = live_body(&owner_url, now);
    let owner = axum::Router::new().route(
        "/v1/live/tenants/{tenant}",
        get(move |Path(t): Path<String>| {
            let body = body.clone();
            async move {
                if t == "acme" {
                    (StatusCode::OK, axum::Json(body))
                } else {
                    (
                        StatusCode::NOT_FOUND,
                        axum::Json(json!({"tenant": t, "held": false, "owner": null})),
                    )
                }
            }
        }),
    );
    let redirect_to = owner_url.clone();
    let first = axum::Router::new().route(
        "/v1/live/tenants/{tenant}",
        get(move |Path(t): Path<String>| {
            let owner = redirect_to.clone();
            async move {
                (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"tenant": t, "held": false,
                    "instance": "first", "owner": owner})),
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(owner_listener, owner).await });
    tokio::spawn(async move { axum::serve(first_listener, first).await });
    (first_url, sums)
}
