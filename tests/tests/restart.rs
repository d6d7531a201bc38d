//! Crash safety: the aggregator is SIGKILLed at random moments mid-stream, several times,
//! and restarted. ClickHouse must still hold every event exactly once and totals must equal
//! the independent sums to the last decimal place.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use costpipe_e2e::*;
use costpipe_ingest::synthetic::{SyntheticConfig, SyntheticStream};
use costpipe_ingest::topics::{ensure_topics, TopicSpec};
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_schemas::UsageEvent;

const EVENTS: usize = 12_000;
const KILLS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn sigkill_mid_stream_never_loses_or_doubles_an_event() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_restart");
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<UsageEvent> = SyntheticStream::new(
        2,
        SyntheticConfig {
            tenants: 5,
            start_ms: now - 20 * 86_400_000,
            end_ms: now,
            include_unpriced: true,
        },
    )
    .take(EVENTS)
    .collect();
    let expected = expected_by_tenant(&events);
    ensure_topics(
        &stack.brokers,
        &[TopicSpec {
            name: names.usage.clone(),
            partitions: 4,
            compacted: false,
        }],
    )
    .await
    .expect("topics");

    // Small, frequent epochs so that kills land between intent and data writes too.
    let small_epochs = [
        ("COSTPIPE_EPOCH_MAX_RECORDS", "300"),
        ("COSTPIPE_EPOCH_MAX_AGE_MS", "150"),
    ];
    let producer = {
        let brokers = stack.brokers.clone();
        let topic = names.usage.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let emitter = Emitter::new(EmitterConfig::new(&brokers, &topic)).expect("emitter");
            // ~25 s of traffic, in bursts, so that every kill lands mid-stream.
            for chunk in events.chunks(500) {
                let mut pending = Vec::new();
                for e in chunk {
                    pending.push(emitter.enqueue(e).await.expect("enqueue").wait());
                }
                for p in futures::future::join_all(pending).await {
                    p.expect("delivered");
                }
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let db = names.database.clone();
    let mut logs = String::new();
    for kill in 0..KILLS {
        let mut aggregator = Service::aggregator(&stack, &names, "", &small_epochs);
        // Let this instance take up its partitions, then kill it at a random moment.
        wait_for(
            "the aggregator to take up partitions",
            Duration::from_secs(60),
            || {
                let log = aggregator.log_text();
                async move { log.contains("partition assigned").then_some(()) }
            },
        )
        .await;
        let delay = rng.random_range(200..2500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        aggregator.assert_running();
        aggregator.kill();
        let written = scalar(
            &stack,
            &format!("SELECT count() FROM {db}.usage_events_priced"),
        )
        .await
        .unwrap_or(0);
        eprintln!("kill {kill}: SIGKILL after {delay} ms, {written} events written so far");
        logs.push_str(&aggregator.log_text());
    }
    producer.await.expect("producer finished");

    let mut aggregator = Service::aggregator(&stack, &names, "", &small_epochs);
    wait_for(
        "every event in ClickHouse",
        Duration::from_secs(120),
        || {
            let (stack, db) = (&stack, &db);
            async move {
                let n = scalar(
                    stack,
                    &format!("SELECT sum(events) FROM {db}.usage_cost_minute"),
                )
                .await?;
                (n >= EVENTS as u64).then_some(())
            }
        },
    )
    .await;
    // Give a wrongly double-counting pipeline time to show it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    aggregator.assert_running();
    logs.push_str(&aggregator.log_text());

    assert_eq!(
        stack
            .query(&format!("SELECT sum(events) FROM {db}.usage_cost_minute"))
            .await,
        EVENTS.to_string(),
        "rollup counts every event once"
    );
    assert_eq!(
        stack
            .query(&format!(
                "SELECT count(), uniqExact(event_id) FROM {db}.usage_events_priced"
            ))
            .await,
        format!("{EVENTS}\t{EVENTS}"),
        "raw table holds every event once"
    );
    let got = rollup_by_tenant(&stack, &db).await;
    assert_eq!(got, expected, "totals are exact after {KILLS} SIGKILLs");
    assert!(got.values().sum::<Decimal>() > Decimal::ZERO);
    let replays = logs.matches("checkpointed epoch replayed").count();
    assert!(
        replays >= KILLS,
        "each restart replays its last checkpointed epochs (saw {replays})"
    );

    drop(aggregator);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
