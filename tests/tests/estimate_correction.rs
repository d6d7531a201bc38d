//! An estimated usage event (the gateway counted the tokens itself, label
//! `costpipe_usage=estimated`) is replaced by the later real count for the same id: ClickHouse
//! totals (rollups, raw events plus corrections, billing's API) and the aggregator's live view
//! equal the real count, computed here; nothing is dead-lettered for it. After a restart the
//! real count sent again is a plain duplicate and another count for it a conflict, and the
//! correction is still stored once. A real count that comes after the id horizon (short
//! here) still corrects its estimate, both from memory and after a restore.

use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use costpipe_e2e::*;
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_schemas::UsageEvent;

async fn text(stack: &Stack, sql: &str) -> String {
    stack.query(sql).await.trim().to_string()
}

/// (events, input, output, cost) of `table`'s rows of `tenant`, summed.
async fn totals(stack: &Stack, db: &str, table: &str, tenant: &str) -> (u64, u64, u64, Decimal) {
    let row = text(
        stack,
        &format!(
            "SELECT sum(events), sum(input_tokens), sum(output_tokens), toString(sum(cost)) \
             FROM {db}.{table} WHERE tenant_id = '{tenant}' FORMAT TSV"
        ),
    )
    .await;
    let f: Vec<&str> = row.split('\t').collect();
    (
        f[0].parse().expect("events"),
        f[1].parse().expect("input"),
        f[2].parse().expect("output"),
        Decimal::from_str(f[3]).expect("cost"),
    )
}

/// Waits until the minute, hour and day rollups of `tenant` all hold `expected`.
async fn wait_rollups_at(
    stack: &Stack,
    db: &str,
    tenant: &str,
    expected: (u64, u64, u64, Decimal),
) {
    wait_for(
        "the expected counts in every rollup",
        Duration::from_secs(60),
        || async {
            (totals(stack, db, "usage_cost_minute", tenant).await == expected
                && totals(stack, db, "usage_cost_hour", tenant).await == expected
                && totals(stack, db, "usage_cost_day", tenant).await == expected)
                .then_some(())
        },
    )
    .await;
}

async fn live_24h(port: u16, tenant: &str) -> Option<(u64, u64, u64, Decimal)> {
    let v: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{port}/v1/live/tenants/{tenant}"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
    let keys = v["keys"].as_array()?;
    let mut out = (0, 0, 0, Decimal::ZERO);
    for k in keys {
        let w = &k["windows"]["24h"];
        out.0 += w["events"].as_u64()?;
        out.1 += w["tokens"]["input"].as_u64()?;
        out.2 += w["tokens"]["output"].as_u64()?;
        out.3 += Decimal::from_str(w["cost"].as_str()?).ok()?;
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn a_real_count_replaces_its_estimate_exactly_once() {
    let seed = test_seed("estimate_correction");
    let mut rng = StdRng::seed_from_u64(seed);
    let stack = Stack::from_env();
    let names = Names::new("e2e_estimate");
    let db = names.database.clone();
    names.create_usage_topic(&stack).await;
    let mut aggregator = Service::aggregator(&stack, &names, "", &[]);
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");

    let tenant = "acme";
    let now = chrono::Utc::now().timestamp_millis();
    let id = uuid::Uuid::from_u128(u128::from(seed) << 1 | 1);
    let mut estimate = UsageEvent::new(id, now - 30_000, tenant, "openai", "gpt-4o");
    estimate.department = Some("research".into());
    estimate.request_id = Some(format!("chatcmpl-{seed}"));
    estimate.input_tokens = rng.random_range(100..5_000);
    estimate.output_tokens = rng.random_range(100..5_000);
    estimate
        .labels
        .insert("costpipe_usage".into(), "estimated".into());
    // The provider's real count: other token numbers, no estimate flag.
    let mut real = estimate.clone();
    real.labels.clear();
    real.input_tokens = estimate.input_tokens + rng.random_range(1..500);
    real.output_tokens = rng.random_range(1..estimate.output_tokens);

    emitter.emit(&estimate).await.expect("estimate delivered");
    // The minute rollup is a materialized view: ClickHouse may show the raw row a moment
    // before the view's part, so wait for the rollup row itself, then compare it.
    wait_scalar(
        &stack,
        &format!("SELECT count() FROM {db}.usage_cost_minute WHERE tenant_id = '{tenant}'"),
        1,
    )
    .await;
    assert_eq!(
        totals(&stack, &db, "usage_cost_minute", tenant).await,
        (
            1,
            estimate.input_tokens as u64,
            estimate.output_tokens as u64,
            expected_cost(&estimate)
        ),
        "the estimate is counted first"
    );
    emitter.emit(&real).await.expect("real count delivered");
    wait_scalar(
        &stack,
        &format!(
            "SELECT count() FROM {db}.usage_cost_corrections WHERE reason = 'estimate_corrected'"
        ),
        2,
    )
    .await;
    let expected = (
        1u64,
        real.input_tokens as u64,
        real.output_tokens as u64,
        expected_cost(&real),
    );
    assert_ne!(expected_cost(&real), expected_cost(&estimate));
    // The correction's epoch completes (its marker) right after its rows.
    wait_rollups_at(&stack, &db, tenant, expected).await;
    // Raw events plus corrections, as billing reads them.
    let raw = text(
        &stack,
        &format!(
            "SELECT toString(sum(c)) FROM (SELECT cost AS c FROM {db}.usage_events_priced WHERE tenant_id = '{tenant}' \
             UNION ALL SELECT cost_delta FROM {db}.usage_cost_corrections WHERE tenant_id = '{tenant}')"
        ),
    )
    .await;
    assert_eq!(Decimal::from_str(&raw).expect("decimal"), expected.3);
    // The live view (24 h window, billing currency USD = price currency here).
    wait_for(
        "the live view at the real count",
        Duration::from_secs(30),
        || async { (live_24h(aggregator.port, tenant).await == Some(expected)).then_some(()) },
    )
    .await;

    // After a restart (ids and windows restored from ClickHouse): the real count again is a
    // duplicate, another count a conflict; a later event shows both were handled.
    aggregator.kill();
    let aggregator = Service::aggregator(&stack, &names, "", &[]);
    let mut other = real.clone();
    other.output_tokens += 1;
    let mut later = real.clone();
    later.event_id = uuid::Uuid::from_u128(u128::from(seed) << 1);
    later.input_tokens = 10;
    later.output_tokens = 20;
    for e in [&real, &estimate, &other, &later] {
        emitter.emit(e).await.expect("delivered");
    }
    wait_scalar(
        &stack,
        &format!("SELECT count() FROM {db}.usage_events_priced"),
        2,
    )
    .await;
    let both = (
        2u64,
        expected.1 + 10,
        expected.2 + 20,
        expected.3 + expected_cost(&later),
    );
    wait_for(
        "the totals after the restart",
        Duration::from_secs(60),
        || async { (totals(&stack, &db, "usage_cost_minute", tenant).await == both).then_some(()) },
    )
    .await;
    assert_eq!(
        scalar(
            &stack,
            &format!("SELECT count() FROM {db}.usage_cost_corrections WHERE reason = 'estimate_corrected'")
        )
        .await,
        Some(2),
        "the correction is stored once"
    );
    wait_for(
        "the live view after the restart",
        Duration::from_secs(30),
        || async { (live_24h(aggregator.port, tenant).await == Some(both)).then_some(()) },
    )
    .await;
    // Dead letters: only the late estimate and the other count (conflicts), never the
    // correction.
    let letters = wait_records(&stack, &names.dead_letters, 2).await;
    let reasons: Vec<String> = letters
        .iter()
        .map(|m| header(m, "costpipe.reason_code").unwrap_or_default())
        .collect();
    assert_eq!(letters.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r == "duplicate_event_id_conflict"),
        "{reasons:?}"
    );
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Waits until the events with `ids` are stored, and returns when the last was.
async fn stored_at(stack: &Stack, db: &str, ids: &[uuid::Uuid]) -> i64 {
    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    wait_scalar(
        stack,
        &format!("SELECT count() FROM {db}.usage_events_priced WHERE event_id IN ({list})"),
        ids.len() as u64,
    )
    .await;
    text(
        stack,
        &format!(
            "SELECT toUnixTimestamp64Milli(max(ingested_at)) FROM {db}.usage_events_priced \
             WHERE event_id IN ({list})"
        ),
    )
    .await
    .parse()
    .expect("ms")
}

/// Waits until the wall clock is `ms` past `since_ms`.
async fn wait_past(what: &str, since_ms: i64, ms: i64) {
    wait_for(
        what,
        Duration::from_millis((ms + 30_000) as u64),
        || async { (now_ms() > since_ms + ms).then_some(()) },
    )
    .await;
}

/// Waits for the correction of the estimate `id` (its two rows), then asserts that the id
/// has one row in the events table, the estimate's, and those two correction rows.
async fn assert_corrected_once(stack: &Stack, db: &str, id: uuid::Uuid) {
    wait_for(
        "the estimate's correction",
        Duration::from_secs(60),
        || async { (rows_of(stack, db, id).await.1 == Some(2)).then_some(()) },
    )
    .await;
    assert_eq!(rows_of(stack, db, id).await, (Some(1), Some(2)), "{id}");
}

/// Rows of `id` in the events table and in the estimate corrections.
async fn rows_of(stack: &Stack, db: &str, id: uuid::Uuid) -> (Option<u64>, Option<u64>) {
    (
        scalar(
            stack,
            &format!("SELECT count() FROM {db}.usage_events_priced WHERE event_id = '{id}'"),
        )
        .await,
        scalar(
            stack,
            &format!(
                "SELECT count() FROM {db}.usage_cost_corrections \
                 WHERE reason = 'estimate_corrected' AND event_id = '{id}'"
            ),
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn a_real_count_after_the_id_horizon_still_corrects_its_estimate() {
    // Ids are remembered for 3 s here; estimates keep the default horizon (35 days).
    const HORIZON_MS: i64 = 3_000;
    let env = [("COSTPIPE_RECENT_IDS_HORIZON_MS", "3000")];
    let seed = test_seed("estimate_correction_after_the_horizon");
    let mut rng = StdRng::seed_from_u64(seed);
    let stack = Stack::from_env();
    let names = Names::new("e2e_estimate_late");
    let db = names.database.clone();
    names.create_usage_topic(&stack).await;
    let mut aggregator = Service::aggregator(&stack, &names, "", &env);
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");
    let tenant = "globex";
    let base = u128::from(seed) << 8;
    let event = |n: u128, rng: &mut StdRng, estimated: bool| {
        let mut e = UsageEvent::new(
            uuid::Uuid::from_u128(base | n),
            now_ms() - 30_000,
            tenant,
            "openai",
            "gpt-4o",
        );
        e.input_tokens = rng.random_range(100..5_000);
        e.output_tokens = rng.random_range(100..5_000);
        if estimated {
            e.labels.insert("costpipe_usage".into(), "estimated".into());
        }
        e
    };
    let real_count = |estimate: &UsageEvent, rng: &mut StdRng| {
        let mut real = estimate.clone();
        real.labels.clear();
        real.input_tokens += rng.random_range(1..500);
        real
    };

    // 1. From memory: an estimate and a plain event, then both again past the id horizon.
    let estimate = event(1, &mut rng, true);
    let plain = event(2, &mut rng, false);
    for e in [&estimate, &plain] {
        emitter.emit(e).await.expect("delivered");
    }
    stored_at(&stack, &db, &[estimate.event_id, plain.event_id]).await;
    // The aggregator evicts past the horizon every few seconds. It holds one id once it has:
    // the estimate, which outlives the horizon (with the plain id's horizon for estimates
    // too, the count would go from 2 to 0 and this would time out).
    wait_for(
        "the plain id to leave and the estimate to stay",
        Duration::from_secs(60),
        || async {
            (metric_value(aggregator.port, "costpipe_aggregator_recent_ids").await == Some(1))
                .then_some(())
        },
    )
    .await;
    let real = real_count(&estimate, &mut rng);
    for e in [&plain, &real] {
        emitter.emit(e).await.expect("delivered");
    }
    // The plain copy shows the horizon had passed: it was counted again (the documented
    // bound for ids), while the estimate was corrected, not counted beside its real count.
    wait_scalar(
        &stack,
        &format!(
            "SELECT count() FROM {db}.usage_events_priced WHERE event_id = '{}'",
            plain.event_id
        ),
        2,
    )
    .await;
    assert_corrected_once(&stack, &db, real.event_id).await;

    // 2. From ClickHouse: an estimate stored more than the id horizon before a restart is
    // restored as an estimate, and its real count corrects it.
    let estimate2 = event(3, &mut rng, true);
    emitter.emit(&estimate2).await.expect("delivered");
    let at = stored_at(&stack, &db, &[estimate2.event_id]).await;
    wait_past("the id horizon", at, HORIZON_MS + 1_000).await;
    aggregator.kill();
    let aggregator = Service::aggregator(&stack, &names, "", &env);
    wait_taken_up(&aggregator).await;
    let real2 = real_count(&estimate2, &mut rng);
    emitter.emit(&real2).await.expect("delivered");
    assert_corrected_once(&stack, &db, real2.event_id).await;

    // Every rollup holds the real counts and the plain event twice, computed here.
    let counted = [&plain, &plain, &real, &real2];
    let expected = (
        counted.len() as u64,
        counted.iter().map(|e| e.input_tokens as u64).sum(),
        counted.iter().map(|e| e.output_tokens as u64).sum(),
        counted.iter().map(|e| expected_cost(e)).sum(),
    );
    wait_rollups_at(&stack, &db, tenant, expected).await;
    wait_for(
        "the live view at the real counts",
        Duration::from_secs(30),
        || async { (live_24h(aggregator.port, tenant).await == Some(expected)).then_some(()) },
    )
    .await;
}
