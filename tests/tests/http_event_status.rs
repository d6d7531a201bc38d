//! `GET /v1/events/{event_id}` of HTTP ingest, with the real service, the real aggregator,
//! broker and ClickHouse: a priced event answers `priced` with its cost, a copy sent again
//! `duplicate`, the same id with other content `conflict` with the reason; another tenant's
//! key, an unknown id: 404 `not_seen`.

use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use costpipe_e2e::*;
use costpipe_schemas::UsageEvent;

async fn post(port: u16, tenant: &str, events: &[&UsageEvent]) {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .header("authorization", format!("Bearer {}", key_of(tenant)))
        .json(events)
        .send()
        .await
        .expect("HTTP ingest answers");
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"], events.len(), "{body}");
}

async fn get(port: u16, tenant: &str, id: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/events/{id}"))
        .header("authorization", format!("Bearer {}", key_of(tenant)))
        .send()
        .await
        .expect("HTTP ingest answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn fates(v: &Value) -> Vec<String> {
    v["copies"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["fate"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn billing_cost(v: &Value) -> Decimal {
    Decimal::from_str(v["cost"]["billing_cost"].as_str().expect("a cost")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn each_event_answers_its_fate_to_its_own_tenant_only() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_http_status");
    let http = Service::ingest_http(
        &stack,
        &names.usage,
        &names.dead_letters,
        &["acme", "globex"],
        1,
        &[
            ("COSTPIPE_CLICKHOUSE_URL", &stack.clickhouse_url),
            ("COSTPIPE_CLICKHOUSE_DATABASE", &names.database),
        ],
    )
    .await;
    let _aggregator = Service::aggregator(&stack, &names, "", &[]);
    let now = chrono::Utc::now().timestamp_millis();
    let event = |input: i64| {
        let mut e = UsageEvent::new(Uuid::new_v4(), now - 1000, "acme", "openai", "gpt-4o");
        e.input_tokens = input;
        e.output_tokens = 7;
        e
    };
    let priced = event(1000);
    let duplicated = event(2000);
    let conflicting = event(3000);
    let mut other_content = conflicting.clone();
    other_content.input_tokens = 3001;
    post(http.port, "acme", &[&priced, &duplicated, &conflicting]).await;
    post(http.port, "acme", &[&duplicated, &other_content]).await;

    let port = http.port;
    let id = |e: &UsageEvent| e.event_id.hyphenated().to_string();
    let conflict_id = id(&conflicting);
    let conflict = wait_for("the conflict's fate", Duration::from_secs(90), || {
        let conflict_id = conflict_id.clone();
        async move {
            let (status, v) = get(port, "acme", &conflict_id).await;
            (status == 200 && fates(&v).len() == 2).then_some(v)
        }
    })
    .await;
    assert_eq!(conflict["status"], "conflict", "{conflict}");
    assert_eq!(fates(&conflict), ["priced", "conflict"], "{conflict}");
    assert_eq!(
        conflict["copies"][1]["reason_code"], "duplicate_event_id_conflict",
        "{conflict}"
    );
    assert!(conflict["copies"][1]["reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    // The priced copy is the first one, at its first price.
    assert_eq!(billing_cost(&conflict), expected_cost(&conflicting));

    // Epochs are written in order: the duplicate (read before the conflict) is stored too.
    let (status, dup) = get(port, "acme", &id(&duplicated)).await;
    assert_eq!(status, 200, "{dup}");
    assert_eq!(dup["status"], "duplicate", "{dup}");
    assert_eq!(fates(&dup), ["priced", "duplicate"], "{dup}");
    assert_eq!(billing_cost(&dup), expected_cost(&duplicated));

    let (status, one) = get(port, "acme", &id(&priced)).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["status"], "priced", "{one}");
    assert_eq!(fates(&one), ["priced"], "{one}");
    assert_eq!(billing_cost(&one), expected_cost(&priced));
    assert_eq!(one["cost"]["billing_currency"], "USD", "{one}");

    // Another tenant's key learns nothing: the same answer as an id never sent.
    for (tenant, id) in [
        ("globex", id(&priced)),
        ("acme", Uuid::new_v4().to_string()),
    ] {
        let (status, v) = get(port, tenant, &id).await;
        assert_eq!(status, 404, "{tenant} {id}: {v}");
        assert_eq!(v["status"], "not_seen", "{v}");
        assert!(v.get("cost").is_none(), "{v}");
    }
    let (status, v) = get(port, "acme", "not-a-uuid").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_event_id"))
    );
}
