//! Helpers of the gateway end-to-end tests: a compacted control topic the test writes STATE
//! records to (as the aggregator would), the stub provider and the example gateway as child
//! processes, and their HTTP answers.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use costpipe_schemas::{BudgetControl, BudgetLevel, ControlCodec, ControlKind};

use crate::{binary, free_port, wait_for, Names, Service, Stack};

/// Creates the usage topic and a compacted one-partition control topic.
pub async fn create_topics(stack: &Stack, names: &Names) {
    names.create_usage_topic(stack).await;
    costpipe_kafka::ensure_topics(
        &stack.brokers,
        &[costpipe_kafka::TopicSpec {
            name: names.control.clone(),
            partitions: 1,
            compacted: true,
        }],
    )
    .await
    .expect("control topic");
}

/// A STATE record of `budget_id` over `scope` at `level`, with the fields a test varies
/// left at neutral values.
pub fn state(
    budget_id: &str,
    scope: &[(&str, &str)],
    level: BudgetLevel,
    now_ms: i64,
) -> BudgetControl {
    let scope: BTreeMap<String, String> = scope
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    BudgetControl {
        control_id: format!("{budget_id}-{level}"),
        budget_id: budget_id.into(),
        kind: ControlKind::State,
        tenant_id: scope.get("tenant").cloned(),
        scope,
        level,
        previous_level: None,
        threshold: "0".into(),
        throttle_requests_per_minute: None,
        downgrade_to: None,
        retry_after_ms: None,
        spend: "0".into(),
        limit: "100".into(),
        ratio: "0".into(),
        currency: "USD".into(),
        period_kind: "day".into(),
        period: "test".into(),
        period_start: Some(now_ms - 3_600_000),
        // A period relative to the run, so that no calendar date matters.
        period_end: Some(now_ms + 86_400_000),
        shadow: false,
        whitelist_features: Vec::new(),
        reason: format!("{budget_id} at {level}"),
        trigger_event_id: None,
        fx_rates: Vec::new(),
        forecast_spend: None,
        method: None,
        decided_at: now_ms,
    }
}

/// Produces control records (keyed by budget id; `None` is a tombstone) and waits for each
/// acknowledgement.
pub async fn publish(stack: &Stack, topic: &str, records: &[(String, Option<BudgetControl>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let codec = ControlCodec::current();
    for (key, record) in records {
        let payload = record
            .as_ref()
            .map(|r| codec.encode(r).expect("encode control"));
        let mut rec: FutureRecord<'_, str, Vec<u8>> = FutureRecord::to(topic).key(key.as_str());
        if let Some(p) = &payload {
            rec = rec.payload(p);
        }
        producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("control record delivered");
    }
}

/// Starts the stub provider with `args` (e.g. `--delay-ms 100`).
pub fn stub(names: &Names, args: &[&str]) -> Service {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("{}-stub-{port}.log", names.database));
    let mut cmd = Command::new(binary("costpipe-stub-provider"));
    cmd.env("COSTPIPE_STUB_ADDR", format!("127.0.0.1:{port}"))
        .args(args);
    Service::spawn(cmd, log, port)
}

/// Starts the example gateway for `names` in front of `stub`, with extra env settings.
pub fn gateway(stack: &Stack, names: &Names, stub: &Service, extra: &[(&str, &str)]) -> Service {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("{}-gateway-{port}.log", names.database));
    let mut cmd = Command::new(binary("costpipe-gateway-example"));
    cmd.env("COSTPIPE_KAFKA_BROKERS", &stack.brokers)
        .env("COSTPIPE_CONTROL_TOPIC", &names.control)
        .env("COSTPIPE_USAGE_TOPIC", &names.usage)
        .env("COSTPIPE_GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "COSTPIPE_GATEWAY_UPSTREAM_URL",
            format!("http://127.0.0.1:{}", stub.port),
        )
        .env("RUST_LOG", "info,rdkafka=warn");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Service::spawn(cmd, log, port)
}

/// Waits until the gateway's view is loaded (`/readyz` 200) with `budgets` budgets.
pub async fn wait_ready(gw: &Service, budgets: u64) {
    let url = format!("http://127.0.0.1:{}/readyz", gw.port);
    wait_for(
        &format!("gateway ready with {budgets} budgets"),
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                let r = reqwest::get(&url).await.ok()?;
                let ok = r.status().is_success();
                let v: Value = r.json().await.ok()?;
                (ok && v["budgets"].as_u64() == Some(budgets)).then_some(())
            }
        },
    )
    .await
}

/// The gateway's decision for a context given as query pairs.
pub async fn decision(gw: &Service, query: &[(&str, &str)]) -> Value {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v1/decision", gw.port))
        .query(query)
        .send()
        .await
        .expect("decision")
        .json()
        .await
        .expect("decision json")
}
