//! ClickHouse unreachable for 60 s in the middle of a 200,000-event stream: nothing is lost,
//! nothing is counted twice, and the aggregator rides it out (retrying with backoff) instead
//! of exiting. Its sink holds at most 20,000 records, so the outage fills it: consumption
//! pauses (the `consumption_paused` gauge), and meanwhile the live view still answers, since
//! the run loop waits for no one.
//!
//! The aggregator reaches ClickHouse through a TCP proxy (`costpipe_e2e::proxy`): cutting the
//! proxy resets its connections and refuses new ones, which is what a stopped server looks like
//! from the aggregator, without stopping the ClickHouse other test binaries are using.
//!
//! The first half of the events is produced, the cut comes as soon as some events are stored
//! (a condition), the second half is produced during the outage, and the proxy is restored
//! 60 s after the cut (the one sleep: the duration of the fault). Then every produced offset
//! must be in a complete epoch, each `event_id` stored once, and every (tenant, department,
//! model, minute) total equal to an independent recomputation from the events sent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use costpipe_e2e::proxy::Proxy;
use costpipe_e2e::*;
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::{ensure_topics, TopicSpec};

const EVENTS: usize = 200_000;
const PARTITIONS: i32 = 2;
const OUTAGE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn a_sixty_second_clickhouse_outage_loses_and_doubles_nothing() {
    let started = Instant::now();
    let seed = test_seed("clickhouse_outage");
    let stack = Stack::from_env();
    let names = Names::new("e2e_ch_outage");
    let events = synthetic_events(seed, 6, 86_400_000, EVENTS);
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

    let proxy = Proxy::for_url(&stack.clickhouse_url).await;
    let proxy_url = proxy.url();
    // Epochs of at most 5,000 records, so that the outage catches many of them in flight
    // and queued.
    let mut aggregator = Service::aggregator(
        &stack,
        &names,
        "",
        &[
            ("COSTPIPE_CLICKHOUSE_URL", proxy_url.as_str()),
            ("COSTPIPE_EPOCH_MAX_RECORDS", "5000"),
            ("COSTPIPE_EPOCH_MAX_AGE_MS", "200"),
            ("COSTPIPE_SINK_MAX_PENDING_RECORDS", "20000"),
        ],
    );
    wait_taken_up(&aggregator).await;
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");
    let (first, second) = events.split_at(EVENTS / 2);
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    produce_events(&emitter, first, 10_000, Duration::ZERO, &mut ends).await;

    // Cut as soon as some events are stored: the aggregator is then mid-stream.
    let db = names.database.clone();
    let count_sql = format!("SELECT count() FROM {db}.usage_events_priced");
    let before_cut = wait_for("some events stored", Duration::from_secs(120), || async {
        scalar(&stack, &count_sql).await.filter(|&n| n > 0)
    })
    .await;
    proxy.cut().await;
    let cut_at = Instant::now();
    eprintln!(
        "cut at {:?} into the test, {before_cut} events stored",
        started.elapsed()
    );

    // The second half arrives during the outage, in ten bursts.
    produce_events(
        &emitter,
        second,
        10_000,
        Duration::from_millis(500),
        &mut ends,
    )
    .await;
    eprintln!("second half produced {:?} after the cut", cut_at.elapsed());
    assert!(
        cut_at.elapsed() < OUTAGE,
        "the second half was produced during the outage"
    );
    assert_eq!(
        ends.values().sum::<i64>(),
        EVENTS as i64,
        "every event produced once"
    );
    // The sink fills up (an epoch is at most 5,000 records): consumption pauses, and the run
    // loop still serves the live view.
    let port = aggregator.port;
    wait_for("the sink full", Duration::from_secs(30), || async {
        metric_value(port, "costpipe_aggregator_sink_pending_records")
            .await
            .filter(|&n| n > 15_000)
    })
    .await;
    wait_for("consumption paused", Duration::from_secs(5), || async {
        (metric_value(port, "costpipe_aggregator_consumption_paused").await == Some(1))
            .then_some(())
    })
    .await;
    let tenant = &events[0].tenant_id;
    let asked = Instant::now();
    let (status, _) = live_view(port, tenant, Duration::from_secs(5)).await;
    assert_eq!(
        status, 200,
        "live view of {tenant} while consumption is paused"
    );
    eprintln!("live view answered in {:?} while paused", asked.elapsed());
    // What reached ClickHouse before the cut has landed by now; nothing more may land while cut.
    let during = scalar(&stack, &count_sql).await.expect("count");
    tokio::time::sleep(OUTAGE.saturating_sub(cut_at.elapsed())).await;
    aggregator.assert_running();
    let at_restore = scalar(&stack, &count_sql).await.expect("count");
    assert_eq!(
        during, at_restore,
        "nothing is written while ClickHouse is unreachable"
    );
    assert!(
        at_restore < EVENTS as u64,
        "the outage caught the stream mid-way ({at_restore} of {EVENTS} stored)"
    );
    proxy.restore().await;
    eprintln!(
        "restored at {:?} into the test, {at_restore} events stored; {} connections reset by the cut",
        started.elapsed(),
        proxy.reset()
    );

    wait_complete(&stack, &db, &names.usage, &ends, Duration::from_secs(120)).await;
    aggregator.assert_running();
    assert_eq!(
        metric_value(port, "costpipe_aggregator_consumption_paused").await,
        Some(0),
        "consumption resumed"
    );
    eprintln!("complete at {:?} into the test", started.elapsed());

    assert_stored_exactly(&stack, &db, EVENTS, &expected, seed).await;

    drop(aggregator);
    drop(proxy);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
