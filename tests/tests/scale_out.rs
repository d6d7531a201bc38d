//! Scale-out: aggregators in one consumer group share the usage partitions. One is killed
//! mid-stream, the survivor takes its partitions through the restore path, a third joins,
//! and then every event is stored once with exact per-minute totals, and the live view of
//! every tenant is served by the instance that holds it, while the other names the holder.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use costpipe_e2e::*;
use costpipe_kafka::{ensure_topics, TopicSpec};

const EVENTS: usize = 120_000;
const PARTITIONS: i32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn two_aggregators_share_partitions_and_survive_losing_one() {
    let seed = test_seed("scale_out");
    let stack = Stack::from_env();
    let names = Names::new("e2e_scale");
    let events = synthetic_events(seed, 8, 86_400_000, EVENTS);
    let expected = expected_by_minute(&events);
    let tenants: BTreeSet<String> = events.iter().map(|e| e.tenant_id.clone()).collect();
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
    let settings = [
        ("COSTPIPE_EPOCH_MAX_RECORDS", "3000"),
        ("COSTPIPE_EPOCH_MAX_AGE_MS", "200"),
        ("COSTPIPE_SESSION_TIMEOUT_MS", "3000"),
    ];
    let mut a = Service::aggregator(&stack, &names, "", &settings);
    let mut b = Service::aggregator(&stack, &names, "", &settings);
    for s in [&a, &b] {
        wait_taken_up(s).await;
    }

    let producer = spawn_producer(
        &stack.brokers,
        &names.usage,
        events,
        10_000,
        Duration::from_millis(300),
    );

    // Kill one instance at a random instant once rows are flowing.
    let db = names.database.clone();
    wait_for("the first rows", Duration::from_secs(60), || {
        let (stack, db) = (&stack, &db);
        async move {
            let n = scalar(
                stack,
                &format!("SELECT count() FROM {db}.usage_events_priced"),
            )
            .await?;
            (n > 0).then_some(())
        }
    })
    .await;
    let delay = rand::rngs::StdRng::seed_from_u64(seed).random_range(0..2000);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    b.assert_running();
    b.kill();
    eprintln!("killed one instance {delay} ms after the first rows");

    let ends = producer.await.expect("producer finished");
    // A third instance joins: partitions move again, through the same restore path.
    let mut c = Service::aggregator(&stack, &names, "", &settings);
    wait_complete(&stack, &db, &names.usage, &ends, Duration::from_secs(300)).await;
    a.assert_running();
    c.assert_running();

    assert_stored_exactly(&stack, &db, EVENTS, &expected, seed).await;

    // Once both live instances have taken their partitions up, each tenant is held by
    // exactly one of them, and the other names it.
    let urls = BTreeMap::from([
        (a.port, format!("http://127.0.0.1:{}", a.port)),
        (c.port, format!("http://127.0.0.1:{}", c.port)),
    ]);
    for tenant in &tenants {
        let answers = wait_for(
            &format!("the live view of {tenant}"),
            Duration::from_secs(60),
            || async {
                let ra = live_view(a.port, tenant, Duration::from_secs(10)).await;
                let rc = live_view(c.port, tenant, Duration::from_secs(10)).await;
                let held: Vec<u16> = [(a.port, &ra), (c.port, &rc)]
                    .iter()
                    .filter(|(_, r)| r.0 == 200)
                    .map(|(p, _)| *p)
                    .collect();
                match held[..] {
                    [holder] => Some((holder, ra, rc)),
                    _ => None,
                }
            },
        )
        .await;
        let (holder, ra, rc) = answers;
        let (held, other) = if holder == a.port { (ra, rc) } else { (rc, ra) };
        let keys = held.1["keys"].as_array().expect("keys");
        assert!(
            !keys.is_empty(),
            "{tenant}: the holder shows its windows: {}",
            held.1
        );
        assert_eq!(
            other.0, 404,
            "{tenant}: the other instance does not hold it"
        );
        assert_eq!(
            other.1["owner"].as_str(),
            Some(urls[&holder].as_str()),
            "{tenant}: the other instance names the holder: {}",
            other.1
        );
    }

    drop((a, c));
    stack.query(&format!("DROP DATABASE {db}")).await;
}
