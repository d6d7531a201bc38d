//! With a Confluent-compatible registry: the emitter registers the usage schema under
//! `<topic>-value` and writes the registry's id; the aggregator learns that id from the
//! registry and counts the events; an id the registry does not know is dead-lettered.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use costpipe_e2e::*;
use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_schemas::UsageEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn ids_from_an_external_registry_are_learnt() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_registry");
    let db = names.database.clone();
    let registry = format!("http://{}", registry_double::start(1001).await);
    names.create_usage_topic(&stack).await;
    let aggregator = Service::aggregator(
        &stack,
        &names,
        "",
        &[("COSTPIPE_SCHEMA_REGISTRY_URL", registry.as_str())],
    );

    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage))
        .expect("emitter")
        .use_schema_registry(&registry)
        .await
        .expect("schema registered");
    assert_eq!(
        emitter.schema_id(),
        1001,
        "the registry's id, not the compiled-in one"
    );
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<UsageEvent> = SyntheticStream::new(
        3,
        SyntheticConfig {
            tenants: 2,
            start_ms: now - 3_600_000,
            end_ms: now,
            include_unpriced: false,
        },
    )
    .take(50)
    .collect();
    for e in &events {
        emitter.emit(e).await.expect("delivered");
    }
    // A record with an id nobody knows.
    let mut stray = costpipe_schemas::UsageCodec::current()
        .encode(&events[0])
        .expect("encode");
    stray[1..5].copy_from_slice(&424_242u32.to_be_bytes());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&names.usage).key("acme").payload(&stray),
            Duration::from_secs(10),
        )
        .await
        .expect("sent");

    // Rollups are written after the events of an epoch: wait for them.
    wait_scalar(
        &stack,
        &format!("SELECT sum(events) FROM {db}.usage_cost_minute"),
        50,
    )
    .await;
    assert_eq!(
        stack
            .query(&format!("SELECT count() FROM {db}.usage_events_priced"))
            .await,
        "50"
    );
    assert_eq!(
        rollup_by_tenant(&stack, &db).await,
        expected_by_tenant(&events)
    );
    assert!(aggregator
        .log_text()
        .contains("schema learnt from the registry"));
    let letters = wait_records(&stack, &names.dead_letters, 1).await;
    let code = header(&letters[0], "costpipe.reason_code");
    assert_eq!(code.as_deref(), Some("unknown_schema_id"));
    assert_eq!(letters[0].payload(), Some(&stray[..]));

    drop(aggregator);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
