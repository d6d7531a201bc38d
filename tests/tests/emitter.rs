//! The emitter delivers 100,000 events with a delivery report each, through a deliberately
//! small in-memory queue (back-pressure instead of unbounded memory), keeping each tenant's
//! events in order on one partition.

use std::collections::{BTreeMap, HashSet};

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::message::Message;

use costpipe_e2e::*;
use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::{ensure_topics, TopicSpec};
use costpipe_schemas::UsageEvent;

const EVENTS: usize = 100_000;
const PARTITIONS: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn one_hundred_thousand_events_each_with_a_delivery_report() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_emitter");
    ensure_topics(
        &stack.brokers,
        &[TopicSpec {
            name: names.usage.clone(),
            partitions: PARTITIONS,
            compacted: false,
        }],
    )
    .await
    .expect("topics");
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<UsageEvent> = SyntheticStream::new(
        11,
        SyntheticConfig {
            tenants: 6,
            start_ms: now - 86_400_000,
            end_ms: now,
            include_unpriced: true,
        },
    )
    .take(EVENTS)
    .collect();
    let mut config = EmitterConfig::new(&stack.brokers, &names.usage);
    // 2,000 events at most in memory: the other 98,000 wait for room.
    config.max_queued_events = 2_000;
    let emitter = Emitter::new(config).expect("emitter");

    let mut pending = FuturesOrdered::new();
    let mut reports = Vec::with_capacity(EVENTS);
    for e in &events {
        pending.push_back(emitter.enqueue(e).await.expect("enqueue").wait());
        // The caller keeps a bounded window too, as a service would.
        while pending.len() >= 5_000 {
            reports.push(pending.next().await.expect("a report").expect("delivered"));
        }
    }
    while let Some(r) = pending.next().await {
        reports.push(r.expect("delivered"));
    }
    emitter
        .flush(std::time::Duration::from_secs(30))
        .expect("flush");

    assert_eq!(reports.len(), EVENTS, "one delivery report per event");
    let positions: HashSet<(i32, i64)> = reports.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(positions.len(), EVENTS, "every event has its own position");
    for (e, r) in events.iter().zip(&reports) {
        assert_eq!(
            e.event_id, r.event_id,
            "reports come back for the right events"
        );
    }
    // Keyed by tenant: one partition per tenant, offsets in send order.
    let mut by_tenant: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (e, r) in events.iter().zip(&reports) {
        by_tenant
            .entry(&e.tenant_id)
            .or_default()
            .push((r.partition, r.offset));
    }
    for (tenant, placed) in &by_tenant {
        assert!(
            placed
                .windows(2)
                .all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1),
            "{tenant}: one partition, in order"
        );
    }

    let on_topic = read_topic(&stack.brokers, &names.usage, PARTITIONS);
    assert_eq!(
        on_topic.len(),
        EVENTS,
        "the topic holds exactly the events sent"
    );
    let codec = costpipe_schemas::UsageCodec::current();
    let ids: HashSet<uuid::Uuid> = on_topic
        .iter()
        .map(|m| {
            codec
                .decode(m.payload().expect("payload"))
                .expect("decodes")
                .event_id
        })
        .collect();
    assert_eq!(ids.len(), EVENTS);
}
