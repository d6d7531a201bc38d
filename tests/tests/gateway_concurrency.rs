//! 1,000 concurrent calls through the example gateway against a budget with room for 10:
//! with reservations the calls admitted stay within the documented bound (their worst cases
//! fit this instance's share of the headroom: here exactly 10); without reservations, in the
//! same test, a second gateway admits what decide() alone lets through. Both numbers are
//! printed. Two instances with a share of 0.5 each, 500 calls each at once, against the same
//! room: 5 + 5. The budgets' STATE records are published by the test, as the aggregator would.
//!
//! Expected cost per call is computed here: prompt tokens with tiktoken's o200k encoding
//! and OpenAI's chat framing (3 per message + 3 for the reply), priced from the test's own
//! price table (gpt-4o-mini 0.15 / 0.60 USD per million tokens).

use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;

use costpipe_e2e::gateway_client::{create_topics, gateway, publish, state, stub, wait_ready};
use costpipe_e2e::{expected_prices, wait_records, Names, Stack};
use costpipe_schemas::BudgetLevel;

const CALLS: usize = 1_000;
const MAX_TOKENS: u64 = 200;
const PROMPT: &str = "Summarise the quarterly cost report in one line.";

async fn fire(port: u16, tenant: &str, calls: usize) -> (usize, usize, Vec<String>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let calls = (0..calls).map(|_| {
        let client = client.clone();
        async move {
            let r = client
                .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
                .header("x-costpipe-tenant", tenant)
                .json(&json!({
                    "model": "gpt-4o-mini",
                    "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": PROMPT}],
                }))
                .send()
                .await
                .expect("gateway answered");
            let status = r.status().as_u16();
            let cost = r
                .headers()
                .get("x-costpipe-response-cost")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (status, cost)
        }
    });
    let answers = futures::future::join_all(calls).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers.iter().filter(|(s, _)| *s == 429).count();
    let costs = answers.into_iter().filter_map(|(_, c)| c).collect();
    (ok, refused, costs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local stack: scripts/stack up, cargo build --workspace --bins"]
async fn concurrency_cannot_outrun_a_budget_with_reservations() {
    let stack = Stack::from_env();
    let names = Names::new("gw_conc");
    create_topics(&stack, &names).await;
    let tenant = format!("acme_{}", &names.database[names.database.len() - 6..]);

    // The test's own cost of one call.
    let bpe = tiktoken_rs::o200k_base().expect("o200k");
    let count = |s: &str| bpe.encode_ordinary(s).len() as u64;
    let prompt_tokens = 3 + 3 + count("user") + count(PROMPT);
    let (input, _, _, _, output) = expected_prices("gpt-4o-mini").expect("price");
    let per_call =
        (Decimal::from(prompt_tokens) * input + Decimal::from(MAX_TOKENS) * output) / dec!(1000000);
    // Room for 10.5 calls: spend 1, limit 1 + 10.5 calls.
    let spend = dec!(1);
    let limit = spend + per_call * dec!(10.5);
    let now = chrono::Utc::now().timestamp_millis();
    let mut budget = state(
        "conc-budget",
        &[("tenant", &tenant)],
        BudgetLevel::Warning,
        now,
    );
    budget.spend = spend.to_string();
    budget.limit = limit.normalize().to_string();
    // The same room for a second tenant, shared by two instances.
    let tenant2 = format!("{tenant}_shared");
    let mut budget2 = budget.clone();
    budget2.budget_id = "conc-budget-2".into();
    budget2.control_id = "conc-budget-2-WARNING".into();
    budget2.scope = [("tenant".to_string(), tenant2.clone())].into();
    budget2.tenant_id = Some(tenant2.clone());
    publish(
        &stack,
        &names.control,
        &[
            ("conc-budget".into(), Some(budget)),
            ("conc-budget-2".into(), Some(budget2)),
        ],
    )
    .await;

    // The stub answers every call with exactly max_tokens after 200 ms, so that calls overlap
    // and each actual cost equals its worst case.
    let provider = stub(&names, &["--delay-ms", "200", "--reply-tokens", "100000"]);
    let with = gateway(&stack, &names, &provider, &[]);
    let without = gateway(
        &stack,
        &names,
        &provider,
        &[("COSTPIPE_GATEWAY_RESERVATIONS", "false")],
    );
    let half: Vec<_> = (0..2)
        .map(|_| {
            gateway(
                &stack,
                &names,
                &provider,
                &[("COSTPIPE_GATEWAY_SHARE", "0.5")],
            )
        })
        .collect();
    for gw in [&with, &without, &half[0], &half[1]] {
        wait_ready(gw, 2).await;
    }

    let (admitted, refused, costs) = fire(with.port, &tenant, CALLS).await;
    let (admitted_without, _, _) = fire(without.port, &tenant, CALLS).await;
    // Two instances with half the headroom each, 500 concurrent calls each at once.
    let ((a, _, _), (b, _, _)) = futures::join!(
        fire(half[0].port, &tenant2, CALLS / 2),
        fire(half[1].port, &tenant2, CALLS / 2)
    );
    let bound = ((limit - spend) / per_call).floor();
    eprintln!(
        "gateway_concurrency: {CALLS} concurrent calls, room for {} (headroom {} USD, {} USD per call): \
         admitted with reservations {admitted} (bound {bound}), without reservations {admitted_without}; \
         two instances with share 0.5: {a} + {b}",
        (limit - spend) / per_call,
        limit - spend,
        per_call
    );
    assert_eq!(admitted + refused, CALLS, "every call answered 200 or 429");
    assert!(
        Decimal::from(admitted as u64) <= bound,
        "admitted {admitted} > bound {bound}"
    );
    // Every call costs exactly its worst case here, so the bound is also reached.
    assert_eq!(Decimal::from(admitted as u64), bound);
    for c in &costs {
        assert_eq!(c.parse::<Decimal>().expect("cost header"), per_call);
    }
    assert!(
        admitted_without > admitted,
        "without reservations {admitted_without} admitted"
    );
    // One usage event per admitted call, from every gateway.
    let n = admitted + admitted_without + a + b;
    let events = wait_records(&stack, &names.usage, n).await;
    assert_eq!(events.len(), n);
}
