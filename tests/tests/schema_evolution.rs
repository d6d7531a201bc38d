//! Schema evolution through the real broker: v1 records (an old emitter) and v2 records (with
//! the new `cache_write_1h_tokens`) share one topic. The v2 aggregator prices both exactly; a
//! v1 reader (an old consumer) reads every record on the topic, v2 ones included.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

use costpipe_e2e::*;
use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::{ensure_topics, TopicSpec};
use costpipe_schemas::codec::Codec;
use costpipe_schemas::{UsageCodec, UsageEvent, USAGE_V1_ID, USAGE_V2_ID};

/// The usage event as a v1 consumer knows it: no `cache_write_1h_tokens`.
#[derive(Debug, Deserialize, serde::Serialize)]
struct UsageEventV1 {
    event_id: String,
    tenant_id: String,
    model: String,
    input_tokens: i64,
    cache_write_tokens: i64,
    output_tokens: i64,
    labels: BTreeMap<String, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn v1_and_v2_records_share_a_topic() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_evolution");
    let db = names.database.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let mut events: Vec<UsageEvent> = SyntheticStream::new(
        5,
        SyntheticConfig {
            tenants: 3,
            start_ms: now - 3_600_000,
            end_ms: now,
            include_unpriced: false,
        },
    )
    .take(400)
    .collect();
    // Half the events written by a v1 emitter, half by a v2 one that knows 1-hour cache writes.
    for e in events.iter_mut().skip(200) {
        e.cache_write_1h_tokens = Some(e.cache_write_tokens + 100);
    }
    ensure_topics(
        &stack.brokers,
        &[TopicSpec {
            name: names.usage.clone(),
            partitions: 2,
            compacted: false,
        }],
    )
    .await
    .expect("topics");
    let aggregator = Service::aggregator(&stack, &names, "", &[]);

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .expect("producer");
    let v1 = UsageCodec::usage_v1();
    for e in &events[..200] {
        let bytes = v1.encode(e).expect("v1 encodes");
        assert_eq!(bytes[4], USAGE_V1_ID as u8);
        producer
            .send(
                FutureRecord::to(&names.usage)
                    .key(&e.tenant_id)
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .expect("sent");
    }
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");
    assert_eq!(emitter.schema_id(), USAGE_V2_ID);
    for e in &events[200..] {
        emitter.emit(e).await.expect("delivered");
    }

    wait_scalar(
        &stack,
        &format!("SELECT sum(events) FROM {db}.usage_cost_minute"),
        400,
    )
    .await;
    assert_eq!(
        rollup_by_tenant(&stack, &db).await,
        expected_by_tenant(&events),
        "both versions priced exactly"
    );
    assert_eq!(
        stack
            .query(&format!(
                "SELECT sum(cache_write_1h_tokens) FROM {db}.usage_events_priced"
            ))
            .await,
        events
            .iter()
            .map(|e| e.cache_write_1h_tokens.unwrap_or(0))
            .sum::<i64>()
            .to_string()
    );

    // An old consumer reads the whole topic, v2 records included.
    let old_reader: Codec<UsageEventV1> = Codec::try_for_id(USAGE_V1_ID).expect("v1 codec");
    let records = read_topic(&stack.brokers, &names.usage, 2);
    assert_eq!(records.len(), 400);
    let mut seen = HashSet::new();
    let mut v2_records = 0;
    for m in &records {
        let bytes = m.payload().expect("payload");
        v2_records += usize::from(bytes[4] == USAGE_V2_ID as u8);
        let old = old_reader
            .decode(bytes)
            .expect("a v1 reader reads every record");
        seen.insert(old.event_id);
    }
    assert_eq!(v2_records, 200);
    assert_eq!(
        seen,
        events
            .iter()
            .map(|e| e.event_id.to_string())
            .collect::<HashSet<_>>()
    );

    drop(aggregator);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
