//! The example gateway and the aggregator together, with the real broker and ClickHouse: a
//! tenant's calls through the gateway are its only spend (the gateway emits each call's usage
//! event; the aggregator prices it and publishes the department budget's levels; the gateway
//! follows them). As the spend crosses 50 %, 80 % and 100 % of the budget, the gateway turns
//! from allow, to downgrade (the provider is called with the target model), to 429 with
//! `Retry-After`; a whitelisted feature still passes; a restarted gateway, reloading the
//! compacted topic, agrees with the aggregator. Spends in the control records equal the
//! test's own sums.
//!
//! The gateway runs without reservations here, so that the aggregator's BLOCK, not the local
//! admission, is what refuses (reservations are `gateway_concurrency.rs`'s subject). Prices
//! are the test catalog's (`tests/data/budgets_catalog.toml`), written again below by hand;
//! calendar budgets use a fixed-offset zone in which it is mid-day, so no period ends during
//! the test whatever the date.

use std::time::Duration;

use chrono::Timelike;
use rdkafka::message::Message;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{json, Value};

use costpipe_e2e::gateway_client::{decision, gateway, stub};
use costpipe_e2e::{read_topic, wait_for, Names, Service, Stack};
use costpipe_schemas::{BudgetLevel, ControlCodec};

const CATALOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/budgets_catalog.toml");
const PROMPT: &str = "Draft the research summary.";

/// A fixed-offset zone in which it is now about noon.
fn midday_zone() -> String {
    let hour = chrono::Utc::now().hour() as i32;
    let mut k = 12 - hour;
    if k > 12 {
        k -= 24;
    }
    match k {
        0 => "Etc/UTC".to_string(),
        k if k > 0 => format!("Etc/GMT-{k}"),
        k => format!("Etc/GMT+{}", -k),
    }
}

async fn chat(
    gw: &Service,
    model: &str,
    max_tokens: u64,
    feature: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/chat/completions", gw.port))
        .timeout(Duration::from_secs(30))
        .header("x-costpipe-tenant", "acme")
        .header("x-costpipe-department", "research");
    if let Some(f) = feature {
        req = req.header("x-costpipe-feature", f);
    }
    req.json(&json!({"model": model, "max_tokens": max_tokens,
                     "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .expect("gateway answered")
}

async fn wait_action(gw: &Service, action: &'static str) -> Value {
    wait_for(
        &format!("gateway decides {action}"),
        Duration::from_secs(60),
        || async move {
            let d = decision(
                gw,
                &[
                    ("tenant", "acme"),
                    ("department", "research"),
                    ("model", "gpt-4o"),
                ],
            )
            .await;
            (d["action"] == action).then_some(d)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, cargo build --workspace --bins"]
async fn the_gateway_follows_a_department_budget_from_allow_to_downgrade_to_429() {
    let stack = Stack::from_env();
    let names = Names::new("gw_budget");
    names.create_usage_topic(&stack).await;
    let budgets = json!([{
        "budget_id": "acme:research:day",
        "scope": {"tenant": "acme", "department": "research"},
        "period": {"calendar": "day", "time_zone": midday_zone()},
        "limit": "1.00", "currency": "USD",
        "ladder": [
            {"at": "0.5", "action": "notify"},
            {"at": "0.8", "action": {"downgrade": {"to": "gpt-4o-mini"}}},
            {"at": "1", "action": "block"}
        ],
        "whitelist_features": ["healthcheck"]
    }]);
    let file = std::env::temp_dir().join(format!("{}-budgets.json", names.database));
    std::fs::write(&file, serde_json::to_vec(&budgets).expect("json")).expect("write");
    let mut aggregator = Service::aggregator(
        &stack,
        &names,
        "",
        &[
            ("COSTPIPE_CATALOG", CATALOG),
            ("COSTPIPE_BUDGETS_FILE", file.to_str().expect("path")),
            ("COSTPIPE_BUDGET_TICK_MS", "200"),
        ],
    );
    let provider = stub(&names, &["--reply-tokens", "1000000"]);
    let gw = gateway(
        &stack,
        &names,
        &provider,
        &[
            ("COSTPIPE_CATALOG", CATALOG),
            ("COSTPIPE_GATEWAY_RESERVATIONS", "false"),
        ],
    );
    // The aggregator creates the control topic; the gateway is ready once it has read it.
    wait_for("gateway ready", Duration::from_secs(90), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", gw.port))
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // The test's own cost per call: prompt tokens in o200k with OpenAI's chat framing.
    let bpe = tiktoken_rs::o200k_base().expect("o200k");
    let prompt = Decimal::from(
        3 + 3 + bpe.encode_ordinary("user").len() + bpe.encode_ordinary(PROMPT).len(),
    );
    let big = (prompt * dec!(2.50) + dec!(10000) * dec!(10.00)) / dec!(1000000); // gpt-4o, 10,000 out
    let mini = (prompt * dec!(0.15) + dec!(100000) * dec!(0.60)) / dec!(1000000); // gpt-4o-mini, 100,000 out

    // 4 calls: 40 % → allow, no budget above OK.
    for _ in 0..4 {
        assert_eq!(chat(&gw, "gpt-4o", 10_000, None).await.status(), 200);
    }
    // 5th: 50 % → WARNING: allowed, naming the budget.
    assert_eq!(chat(&gw, "gpt-4o", 10_000, None).await.status(), 200);
    let d = wait_for("WARNING published", Duration::from_secs(60), || async {
        let d = decision(
            &gw,
            &[
                ("tenant", "acme"),
                ("department", "research"),
                ("model", "gpt-4o"),
            ],
        )
        .await;
        (d["budget_id"] == "acme:research:day").then_some(d)
    })
    .await;
    assert_eq!(d["action"], "allow");
    // 8 calls: 80 % → DOWNGRADE to gpt-4o-mini; the provider sees the target model.
    for _ in 0..3 {
        assert_eq!(chat(&gw, "gpt-4o", 10_000, None).await.status(), 200);
    }
    let d = wait_action(&gw, "downgrade").await;
    assert_eq!(d["model"], "gpt-4o-mini");
    let r = chat(&gw, "gpt-4o", 100_000, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-costpipe-model"], "gpt-4o-mini");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["model"], "gpt-4o-mini");
    // 8 big + 4 mini calls pass 100 % → BLOCK: 429 with Retry-After and the reason.
    for _ in 0..3 {
        assert_eq!(chat(&gw, "gpt-4o", 100_000, None).await.status(), 200);
    }
    let spent = big * dec!(8) + mini * dec!(4);
    assert!(
        spent >= dec!(1),
        "the test's own sum {spent} must reach the limit"
    );
    wait_action(&gw, "block").await;
    let r = chat(&gw, "gpt-4o", 10, None).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "budget_exceeded");
    assert_eq!(body["budget_id"], "acme:research:day");
    // The whitelisted feature still passes.
    assert_eq!(
        chat(&gw, "gpt-4o", 10, Some("healthcheck")).await.status(),
        200
    );

    // The published spends equal the test's sums at each rung.
    let codec = ControlCodec::current();
    let records: Vec<_> = read_topic(&stack.brokers, &names.control, 1)
        .iter()
        .filter_map(|m| codec.decode(m.payload()?).ok())
        .filter(|c| c.budget_id == "acme:research:day")
        .collect();
    let first = |level| {
        records
            .iter()
            .find(|c| c.level == level)
            .unwrap_or_else(|| panic!("no {level} record in {records:?}"))
            .spend
            .parse::<Decimal>()
            .expect("spend")
    };
    assert_eq!(first(BudgetLevel::Warning), big * dec!(5));
    assert_eq!(first(BudgetLevel::Downgrade), big * dec!(8));
    assert_eq!(first(BudgetLevel::Block), spent);
    aggregator.assert_running();
}
