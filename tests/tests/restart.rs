//! Crash safety: 1,000,000 events, and the aggregator SIGKILLed at 20 random instants
//! mid-stream and restarted each time. ClickHouse must then hold each `event_id` once, and
//! every (tenant, department, model, minute) total must equal an independent recomputation
//! from the events sent (a hand-written price table, not the pricing crate).
//!
//! The kill instants come from a logged seed (`SEED=n` replays the same schedule). Every wait
//! is on a condition: the instance has taken its partitions up; every produced offset is in a
//! complete epoch.

use std::time::Duration;

use rand::{Rng, SeedableRng};

use costpipe_e2e::*;
use costpipe_kafka::{ensure_topics, TopicSpec};

const EVENTS: usize = 1_000_000;
const KILLS: usize = 20;
const PARTITIONS: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn a_million_events_survive_twenty_sigkills_exactly_once() {
    let seed = test_seed("restart");
    let stack = Stack::from_env();
    let names = Names::new("e2e_restart");
    let events = synthetic_events(seed, 6, 3 * 86_400_000, EVENTS);
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

    // Epochs of a few thousand records, so that kills land between intent and rows too;
    // epochs under 1,000 records are held for more, as in production (there up to 5 s).
    let settings = [
        ("COSTPIPE_EPOCH_MAX_RECORDS", "5000"),
        ("COSTPIPE_EPOCH_MAX_AGE_MS", "200"),
        ("COSTPIPE_EPOCH_MIN_RECORDS", "1000"),
        ("COSTPIPE_EPOCH_MAX_HOLD_MS", "1000"),
        ("COSTPIPE_SESSION_TIMEOUT_MS", "3000"),
        ("RUST_LOG", "warn,costpipe_aggregator::kafka_source=info"),
    ];
    // In bursts with pauses, so that the stream lasts through most of the kills.
    let producer = spawn_producer(
        &stack.brokers,
        &names.usage,
        events,
        20_000,
        Duration::from_millis(500),
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let db = names.database.clone();
    for kill in 0..KILLS {
        let mut aggregator = Service::aggregator(&stack, &names, "", &settings);
        wait_taken_up(&aggregator).await;
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

    assert_stored_exactly(&stack, &db, EVENTS, &expected, seed).await;

    drop(aggregator);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
