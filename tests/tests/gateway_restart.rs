//! The example gateway against a control topic written by the test as the aggregator would:
//! decisions for every kind of record (block, downgrade by model scope, throttle, latest
//! record wins, a re-published transition, shadow, whitelist, expired period, FORECAST
//! ignored, tombstone), the same decisions after a restart that rebuilds the view from the
//! compacted topic, and the HTTP effects: 429 with Retry-After and a JSON reason, the model
//! rewritten on downgrade, throttling past the rate, and a stream without usage counted by
//! the gateway and emitted flagged estimated. Expected answers are written by hand.

use std::time::Duration;

use rdkafka::message::Message;
use serde_json::{json, Value};

use costpipe_e2e::gateway_client::{
    create_topics, decision, gateway, publish, state, stub, wait_ready,
};
use costpipe_e2e::{wait_records, Names, Service, Stack};
use costpipe_schemas::{BudgetLevel, ControlKind, UsageCodec};

/// (query, expected action, expected deciding budget).
type Case = (
    Vec<(&'static str, String)>,
    &'static str,
    Option<&'static str>,
);

fn cases(t: &str) -> Vec<Case> {
    let who = |tenant: &str, extra: &[(&'static str, &str)]| {
        let mut q = vec![("tenant", format!("{t}_{tenant}"))];
        q.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        q
    };
    vec![
        (who("blocked", &[]), "block", Some("b-blocked")),
        // The model scope names the catalog model; the caller's alias resolves to it.
        (
            who("down", &[("model", "openai/gpt-4o")]),
            "downgrade",
            Some("b-down"),
        ),
        (who("down", &[("model", "gpt-4o-mini")]), "allow", None),
        (who("throttled", &[]), "throttle", Some("b-throttled")),
        // BLOCK then OK: the latest wins; the BLOCK re-published after it changes nothing.
        (who("recovered", &[]), "allow", None),
        (who("shadow", &[]), "allow", None),
        (
            who("whitelist", &[("feature", "healthcheck")]),
            "allow",
            None,
        ),
        (
            who("whitelist", &[("feature", "chat")]),
            "block",
            Some("b-whitelist"),
        ),
        // A BLOCK whose period ended is OK until the aggregator's rollover record.
        (who("expired", &[]), "allow", None),
        (who("deleted", &[]), "allow", None),
        // A department budget above a tenant warning: most restrictive wins.
        (
            who("dept", &[("department", "research")]),
            "block",
            Some("b-dept-research"),
        ),
        (
            who("dept", &[("department", "sales")]),
            "allow",
            Some("b-dept-tenant"),
        ),
    ]
}

async fn check(gw: &Service, t: &str) {
    for (query, action, budget) in cases(t) {
        let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let d = decision(gw, &q).await;
        assert_eq!(d["action"], action, "{q:?}: {d}");
        assert_eq!(d["budget_id"].as_str(), budget, "{q:?}: {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, cargo build --workspace --bins"]
async fn a_restarted_gateway_rebuilds_the_same_decisions_from_the_compacted_topic() {
    let stack = Stack::from_env();
    let names = Names::new("gw_restart");
    create_topics(&stack, &names).await;
    let t = names.database[names.database.len() - 6..].to_string();
    let tenant = |s: &str| format!("{t}_{s}");
    let now = chrono::Utc::now().timestamp_millis();
    let rec = |id: &str, scope: &[(&str, &str)], level| state(id, scope, level, now);

    let mut down = rec(
        "b-down",
        &[("tenant", &tenant("down")), ("model", "gpt-4o")],
        BudgetLevel::Downgrade,
    );
    down.downgrade_to = Some("gpt-4o-mini".into());
    let mut throttled = rec(
        "b-throttled",
        &[("tenant", &tenant("throttled"))],
        BudgetLevel::Throttle,
    );
    throttled.throttle_requests_per_minute = Some(2);
    let blocked_then = rec(
        "b-recovered",
        &[("tenant", &tenant("recovered"))],
        BudgetLevel::Block,
    );
    let mut ok_now = rec(
        "b-recovered",
        &[("tenant", &tenant("recovered"))],
        BudgetLevel::Ok,
    );
    ok_now.decided_at += 1;
    let mut shadow = rec(
        "b-shadow",
        &[("tenant", &tenant("shadow"))],
        BudgetLevel::Block,
    );
    shadow.shadow = true;
    let mut whitelist = rec(
        "b-whitelist",
        &[("tenant", &tenant("whitelist"))],
        BudgetLevel::Block,
    );
    whitelist.whitelist_features = vec!["healthcheck".into()];
    let mut expired = rec(
        "b-expired",
        &[("tenant", &tenant("expired"))],
        BudgetLevel::Block,
    );
    expired.period_end = Some(now - 1_000);
    let mut forecast = rec(
        "b-forecast",
        &[("tenant", &tenant("blocked"))],
        BudgetLevel::Block,
    );
    forecast.kind = ControlKind::Forecast;
    let records = vec![
        (
            "b-blocked".to_string(),
            Some(rec(
                "b-blocked",
                &[("tenant", &tenant("blocked"))],
                BudgetLevel::Block,
            )),
        ),
        ("b-down".into(), Some(down)),
        ("b-throttled".into(), Some(throttled)),
        ("b-recovered".into(), Some(blocked_then.clone())),
        ("b-recovered".into(), Some(ok_now)),
        ("b-recovered".into(), Some(blocked_then)),
        ("b-shadow".into(), Some(shadow)),
        ("b-whitelist".into(), Some(whitelist)),
        ("b-expired".into(), Some(expired)),
        ("b-forecast".into(), Some(forecast)),
        (
            "b-deleted".into(),
            Some(rec(
                "b-deleted",
                &[("tenant", &tenant("deleted"))],
                BudgetLevel::Block,
            )),
        ),
        ("b-deleted".into(), None),
        (
            "b-dept-tenant".into(),
            Some(rec(
                "b-dept-tenant",
                &[("tenant", &tenant("dept"))],
                BudgetLevel::Warning,
            )),
        ),
        (
            "b-dept-research".into(),
            Some(rec(
                "b-dept-research",
                &[("tenant", &tenant("dept")), ("department", "research")],
                BudgetLevel::Block,
            )),
        ),
    ];
    publish(&stack, &names.control, &records).await;
    // Budgets known: blocked, down, throttled, recovered, shadow, whitelist, expired,
    // dept-tenant, dept-research (forecast ignored, deleted removed).
    let budgets = 9;

    let provider = stub(&names, &["--stream-usage", "never"]);
    let mut gw = gateway(&stack, &names, &provider, &[]);
    wait_ready(&gw, budgets).await;
    check(&gw, &t).await;
    gw.kill();
    let gw = gateway(&stack, &names, &provider, &[]);
    wait_ready(&gw, budgets).await;
    check(&gw, &t).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", gw.port);
    let call = |tenant: String, model: &'static str, stream: bool| {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .post(url)
                .header("x-costpipe-tenant", tenant)
                .json(&json!({"model": model, "max_tokens": 5, "stream": stream,
                              "messages": [{"role": "user", "content": "hello world"}]}))
                .send()
                .await
                .expect("gateway answered")
        }
    };

    // BLOCK: 429, Retry-After in whole seconds up to the period's end, JSON reason.
    let r = call(tenant("blocked"), "gpt-4o", false).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((86_000..=86_400).contains(&retry), "retry-after {retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "budget_exceeded");
    assert_eq!(body["budget_id"], "b-blocked");
    assert_eq!(body["reason"], "b-blocked at BLOCK");

    // DOWNGRADE: the provider is called with the target model.
    let r = call(tenant("down"), "gpt-4o-2024-08-06", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-costpipe-model"], "gpt-4o-mini");
    assert!(r.headers().contains_key("x-costpipe-response-cost"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["model"], "gpt-4o-mini");

    // THROTTLE at 2 per minute: at most 2 of 4 pass (3 if a minute boundary falls between).
    let mut passed = 0;
    for _ in 0..4 {
        if call(tenant("throttled"), "gpt-4o", false).await.status() == 200 {
            passed += 1;
        }
    }
    assert!(
        (2..=3).contains(&passed),
        "throttle let {passed} of 4 through"
    );

    // A stream without usage: passed through, cost appended as an SSE comment, and the
    // usage event counted by the gateway ("hello world" framed: 3 + 3 + 1 + 2 = 9 prompt
    // tokens in o200k; 5 pieces of " tok" = 5 tokens) and flagged estimated.
    let r = call(tenant("shadow"), "gpt-4o-mini", true).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(text.contains(": x-costpipe-response-cost "), "{text}");
    // Events so far: downgrade 1, throttle `passed`, stream 1.
    let events = wait_records(&stack, &names.usage, 2 + passed).await;
    let codec = UsageCodec::current();
    let streamed: Vec<_> = events
        .iter()
        .filter_map(|m| codec.decode(m.payload()?).ok())
        .filter(|e| e.tenant_id == tenant("shadow"))
        .collect();
    assert_eq!(streamed.len(), 1);
    let e = &streamed[0];
    assert_eq!(
        e.labels.get("costpipe_usage").map(String::as_str),
        Some("estimated")
    );
    assert_eq!((e.input_tokens, e.output_tokens), (9, 5));
    assert_eq!(e.model, "gpt-4o-mini");
    // The call's id is the provider's, and the event id is derived from it (UUIDv5), so a
    // later report of the same call cannot count as a second one.
    assert!(
        e.request_id
            .as_deref()
            .is_some_and(|id| id.starts_with("chatcmpl-")),
        "{e:?}"
    );
    assert_eq!(e.event_id.get_version_num(), 5);
}

/// With no reachable broker the view never loads: `closed` refuses with 503, `open` forwards;
/// `/readyz` says not ready either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries: cargo build --workspace --bins"]
async fn a_stale_view_fails_open_or_closed_as_configured() {
    let stack = Stack {
        // Nothing listens there: the follower never catches up.
        brokers: format!("127.0.0.1:{}", costpipe_e2e::free_port()),
        clickhouse_url: String::new(),
    };
    let names = Names::new("gw_stale");
    let provider = stub(&names, &[]);
    let settings = |policy| {
        vec![
            ("COSTPIPE_GATEWAY_STALE_POLICY", policy),
            ("COSTPIPE_GATEWAY_MAX_STALE_MS", "1000"),
        ]
    };
    let closed = gateway(&stack, &names, &provider, &settings("closed"));
    let open = gateway(&stack, &names, &provider, &settings("open"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let call = |port: u16| {
        let client = client.clone();
        async move {
            client
                .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
                .header("x-costpipe-tenant", "acme")
                .json(&json!({"model": "gpt-4o-mini", "max_tokens": 3,
                              "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .ok()
        }
    };
    let closed_answer =
        costpipe_e2e::wait_for("closed gateway up", Duration::from_secs(30), || {
            call(closed.port)
        })
        .await;
    assert_eq!(closed_answer.status(), 503);
    let body: Value = closed_answer.json().await.unwrap();
    assert_eq!(body["error"], "control_view_stale");
    let open_answer = costpipe_e2e::wait_for("open gateway up", Duration::from_secs(30), || {
        call(open.port)
    })
    .await;
    assert_eq!(open_answer.status(), 200);
    for gw in [&closed, &open] {
        let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", gw.port))
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", closed.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("costpipe_gateway_refusals_total{reason=\"control_view_stale\"} 1"),
        "{metrics}"
    );
}

/// A client that hangs up mid-stream: the gateway still emits the call's usage event, with
/// the tokens it streamed so far counted by itself and flagged estimated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, cargo build --workspace --bins"]
async fn a_cancelled_stream_is_counted_and_flagged_estimated() {
    let stack = Stack::from_env();
    let names = Names::new("gw_cancel");
    create_topics(&stack, &names).await;
    let provider = stub(
        &names,
        &[
            "--stream-usage",
            "never",
            "--chunk-delay-ms",
            "100",
            "--reply-tokens",
            "50",
        ],
    );
    let gw = gateway(&stack, &names, &provider, &[]);
    wait_ready(&gw, 0).await;
    let mut r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/chat/completions", gw.port))
        .header("x-costpipe-tenant", "acme")
        .json(
            &json!({"model": "gpt-4o-mini", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "hello world"}]}),
        )
        .send()
        .await
        .expect("gateway answered");
    assert_eq!(r.status(), 200);
    // Read until three pieces of the reply arrived, then hang up (of 50, 100 ms apart).
    let mut seen = String::new();
    while seen.matches("tok").count() < 3 {
        let chunk = r.chunk().await.expect("chunk").expect("stream still open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(r);
    let events = wait_records(&stack, &names.usage, 1).await;
    let e = UsageCodec::current()
        .decode(events[0].payload().expect("payload"))
        .expect("usage event");
    assert_eq!(
        e.labels.get("costpipe_usage").map(String::as_str),
        Some("estimated")
    );
    assert_eq!(e.input_tokens, 9, "3 + 3 + user 1 + \"hello world\" 2");
    assert!(
        // Pieces arrive 100 ms apart: a few more may have been in flight at the hang-up.
        (3..=10).contains(&e.output_tokens),
        "counted {} tokens: the pieces streamed before the hang-up, not the 50 of a whole reply",
        e.output_tokens
    );
}
