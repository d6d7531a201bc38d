//! Crash safety: 1,000,000 events, and the aggregator SIGKILLed at 20 random instants
//! mid-stream and restarted each time. ClickHouse must then hold each `event_id` once, and
//! every (tenant, department, model, minute) total must equal an independent recomputation
//! from the events sent (a hand-written price table, not the pricing crate).
//!
//! The kill instants come from a logged seed (`SEED=n` replays the same schedule). Every wait
//! is on a condition: the instance has taken its partitions up; every produced offset is in a
//! complete epoch.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use costpipe_e2e::*;
use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::{ensure_topics, TopicSpec};
use costpipe_schemas::UsageEvent;

const EVENTS: usize = 1_000_000;
const KILLS: usize = 20;
const PARTITIONS: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn a_million_events_survive_twenty_sigkills_exactly_once() {
    let seed = test_seed("restart");
    let stack = Stack::from_env();
    let names = Names::new("e2e_restart");
    // Three days of event times ending now: validation accepts them whatever the date, and
    // every assertion is per minute, so no month end can change the outcome.
    let now = chrono::Utc::now().timestamp_millis();
    let start_ms = now - 3 * 86_400_000;
    let events: Vec<UsageEvent> = SyntheticStream::new(
        seed,
        SyntheticConfig {
            tenants: 6,
            start_ms,
            end_ms: now,
            include_unpriced: true,
        },
    )
    .take(EVENTS)
    .collect();
    let expected = expected_by_minute(&events);
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

    // Epochs of a few thousand records, so that kills land between intent and rows too.
    let settings = [
        ("COSTPIPE_EPOCH_MAX_RECORDS", "5000"),
        ("COSTPIPE_EPOCH_MAX_AGE_MS", "200"),
        ("COSTPIPE_SESSION_TIMEOUT_MS", "3000"),
        ("RUST_LOG", "warn,costpipe_aggregator::kafka_source=info"),
    ];
    let producer = {
        let brokers = stack.brokers.clone();
        let topic = names.usage.clone();
        tokio::spawn(async move {
            let emitter = Emitter::new(EmitterConfig::new(&brokers, &topic)).expect("emitter");
            let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
            // In bursts with pauses, so that the stream lasts through most of the kills.
            for chunk in events.chunks(20_000) {
                let mut pending = Vec::with_capacity(chunk.len());
                for e in chunk {
                    pending.push(emitter.enqueue(e).await.expect("enqueue").wait());
                }
                for p in futures::future::join_all(pending).await {
                    let d = p.expect("delivered");
                    let end = ends.entry(d.partition).or_default();
                    *end = (*end).max(d.offset + 1);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            ends
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let db = names.database.clone();
    for kill in 0..KILLS {
        let mut aggregator = Service::aggregator(&stack, &names, "", &settings);
        wait_for(
            "the aggregator to take up partitions",
            Duration::from_secs(60),
            || {
                let log = aggregator.log_text();
                async move { log.contains("partition taken up").then_some(()) }
            },
        )
        .await;
        // The random instant of the kill, after the instance is consuming.
        let delay = rng.random_range(100..3000);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        aggregator.assert_running();
        aggregator.kill();
        let written = scalar(
            &stack,
            &format!("SELECT count() FROM {db}.usage_events_priced"),
        )
        .await
        .unwrap_or(0);
        eprintln!("kill {kill}: SIGKILL {delay} ms after take-up, {written} events stored so far");
    }
    let ends = producer.await.expect("producer finished");
    assert_eq!(
        ends.values().sum::<i64>(),
        EVENTS as i64,
        "every event produced once"
    );

    let mut aggregator = Service::aggregator(&stack, &names, "", &settings);
    wait_complete(&stack, &db, &names.usage, &ends, Duration::from_secs(600)).await;
    aggregator.assert_running();

    assert_eq!(
        stack
            .query(&format!(
                "SELECT count(), uniqExact(event_id) FROM {db}.usage_events_priced"
            ))
            .await,
        format!("{EVENTS}\t{EVENTS}"),
        "each event_id stored once"
    );
    let got = rollup_by_minute(&stack, &db).await;
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty() && got.len() == expected.len(),
        "{} of {} minute totals differ (seed {seed}), e.g. {wrong:?}",
        expected
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .count()
            + got.len().abs_diff(expected.len()),
        expected.len()
    );

    drop(aggregator);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
