//! The same event_id is counted once, however it arrives: a replayed batch (emitter retry,
//! dead-letter replay) leaves ClickHouse totals unchanged; the same id with different content
//! is dead-lettered as a conflict, never silently dropped or merged.

use std::time::Duration;

use rdkafka::message::Message;

use costpipe_e2e::*;
use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::{ensure_topics, TopicSpec};
use costpipe_schemas::UsageEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn a_replayed_batch_leaves_totals_unchanged() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_idem");
    let db = names.database.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<UsageEvent> = SyntheticStream::new(
        9,
        SyntheticConfig {
            tenants: 3,
            start_ms: now - 86_400_000,
            end_ms: now,
            include_unpriced: false,
        },
    )
    .take(1000)
    .collect();
    let expected = expected_by_tenant(&events);
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
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");

    // The first batch, with one event sent twice back to back (an in-flight retry).
    for e in &events {
        emitter.emit(e).await.expect("delivered");
    }
    emitter.emit(&events[0]).await.expect("delivered");
    wait_for("the first batch", Duration::from_secs(90), || {
        let (port, stack, db) = (aggregator.port, &stack, &db);
        async move {
            let duplicates =
                metric_value(port, "costpipe_aggregator_events_duplicate_total").await?;
            let counted = scalar(
                stack,
                &format!("SELECT sum(events) FROM {db}.usage_cost_minute"),
            )
            .await?;
            (duplicates == 1 && counted == 1000).then_some(())
        }
    })
    .await;
    assert_eq!(rollup_by_tenant(&stack, &db).await, expected);

    // The whole batch replayed.
    for e in &events {
        emitter.emit(e).await.expect("delivered");
    }
    wait_for(
        "the replay to be recognised",
        Duration::from_secs(90),
        || {
            let port = aggregator.port;
            async move {
                (metric_value(port, "costpipe_aggregator_events_duplicate_total").await? == 1001)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        rollup_by_tenant(&stack, &db).await,
        expected,
        "totals unchanged by the replay"
    );
    assert_eq!(
        stack
            .query(&format!(
                "SELECT count(), uniqExact(event_id) FROM {db}.usage_events_priced"
            ))
            .await,
        "1000\t1000"
    );
    assert_eq!(
        stack
            .query(&format!("SELECT sum(events) FROM {db}.usage_cost_minute"))
            .await,
        "1000"
    );

    // Same id, different content: a conflict, kept on the dead-letter topic.
    let mut conflicting = events[1].clone();
    conflicting.output_tokens += 1;
    emitter.emit(&conflicting).await.expect("delivered");
    let letters = wait_records(&stack, &names.dead_letters, 1).await;
    let reason = header(&letters[0], "costpipe.reason_code");
    assert_eq!(reason.as_deref(), Some("duplicate_event_id_conflict"));
    assert!(
        letters[0].payload().is_some_and(|p| !p.is_empty()),
        "original bytes kept"
    );
    assert_eq!(
        rollup_by_tenant(&stack, &db).await,
        expected,
        "the conflict is not counted"
    );

    drop(aggregator);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
