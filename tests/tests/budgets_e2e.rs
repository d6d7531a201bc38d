//! Budgets end to end, with the real broker and ClickHouse: a department budget driven through
//! 50 % → 80 % → 100 % (levels and spends read back from the control topic and checked against
//! the test's own Decimal sums), a rolling window that recovers with no new spend, a
//! EUR-billed tenant breaching a USD limit at the converted amount, and SIGKILLs during a
//! climb leaving exactly one logical transition (one control id) per level.
//!
//! Nothing depends on the run date: calendar budgets use the fixed-offset zone in which it is
//! now mid-day (so no local midnight falls inside the test), the catalog is the test's own
//! (`tests/data/budgets_catalog.toml`, open-ended rates), and the rolling budget's events are
//! placed so that the window slides past them 15-75 s after they are sent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use chrono::Timelike;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use costpipe_e2e::*;
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_schemas::{BudgetControl, BudgetLevel, ControlCodec, UsageEvent};
use rdkafka::message::Message;

const CATALOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/budgets_catalog.toml");

/// gpt-4o input at 2.50 USD per million tokens (the test catalog's price, written here by
/// hand): 40,000 tokens cost exactly 0.10 USD.
const TOKENS: i64 = 40_000;
const COST_USD: Decimal = dec!(0.10);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fixed-offset IANA zone in which it is now between 10:00 and 14:00, so that no local
/// midnight (day, week or month boundary) falls within the test.
fn midday_zone() -> String {
    let hour = chrono::Utc::now().hour() as i32;
    // Local hour = UTC hour + k; choose k in -12..=12 with local hour 12 (or close).
    let mut k = 12 - hour;
    if k > 12 {
        k -= 24;
    }
    if k < -12 {
        k += 24;
    }
    // Etc/GMT-5 is UTC+5 (the sign is inverted in these names).
    match k {
        0 => "Etc/UTC".to_string(),
        k if k > 0 => format!("Etc/GMT-{k}"),
        k => format!("Etc/GMT+{}", -k),
    }
}

fn event(tenant: &str, department: &str, at_ms: i64) -> UsageEvent {
    let mut e = UsageEvent::new(Uuid::new_v4(), at_ms, tenant, "openai", "gpt-4o");
    e.department = Some(department.to_string());
    e.input_tokens = TOKENS;
    e
}

fn budgets_file(names: &Names, zone: &str) -> PathBuf {
    let budgets = serde_json::json!([
        {
            "budget_id": "acme:research:day",
            "scope": {"tenant": "acme", "department": "research"},
            "period": {"calendar": "day", "time_zone": zone},
            "limit": "1.00", "currency": "USD",
            "ladder": [
                {"at": "0.5", "action": "notify"},
                {"at": "0.8", "action": {"downgrade": {"to": "gpt-4o-mini"}}},
                {"at": "1", "action": "block"}
            ],
            "whitelist_features": ["healthcheck"]
        },
        {
            "budget_id": "euro:month",
            "scope": {"tenant": "euro"},
            "period": {"calendar": "month", "time_zone": zone},
            "limit": "1", "currency": "USD"
        },
        {
            "budget_id": "roller:1h",
            "scope": {"tenant": "roller"},
            "period": {"rolling": "1h"},
            "limit": "0.10", "currency": "USD",
            "ladder": [{"at": "1", "action": "block"}]
        },
        {
            "budget_id": "crash:day",
            "scope": {"tenant": "crash"},
            "period": {"calendar": "day", "time_zone": zone},
            "limit": "1", "currency": "USD",
            "ladder": [
                {"at": "0.25", "action": "notify"},
                {"at": "0.5", "action": {"downgrade": {"to": "gpt-4o-mini"}}},
                {"at": "0.75", "action": {"throttle": {"requests_per_minute": 10}}},
                {"at": "1", "action": "block"}
            ]
        }
    ]);
    let path = std::env::temp_dir().join(format!("{}-budgets.json", names.database));
    std::fs::write(&path, serde_json::to_vec_pretty(&budgets).expect("json")).expect("write");
    path
}

fn aggregator(stack: &Stack, names: &Names, file: &std::path::Path) -> Service {
    Service::aggregator(
        stack,
        names,
        "",
        &[
            ("COSTPIPE_CATALOG", CATALOG),
            ("COSTPIPE_BUDGETS_FILE", file.to_str().expect("path")),
            ("COSTPIPE_BUDGET_TICK_MS", "200"),
        ],
    )
}

async fn send(emitter: &Emitter, events: &[UsageEvent]) {
    for e in events {
        emitter
            .enqueue(e)
            .await
            .expect("enqueue")
            .wait()
            .await
            .expect("delivered");
    }
}

/// Every control record on the topic, in order.
fn controls(stack: &Stack, names: &Names) -> Vec<BudgetControl> {
    let codec = ControlCodec::current();
    read_topic(&stack.brokers, &names.control, 1)
        .iter()
        .filter_map(|m| {
            let c = codec.decode(m.payload()?).expect("control records decode");
            assert_eq!(m.key(), Some(c.budget_id.as_bytes()), "keyed by budget id");
            Some(c)
        })
        .collect()
}

/// The records of `budget`, once its latest level is `level`.
async fn wait_level(
    stack: &Stack,
    names: &Names,
    budget: &str,
    level: BudgetLevel,
) -> Vec<BudgetControl> {
    wait_for(
        &format!("{budget} at {level}"),
        Duration::from_secs(120),
        || async move {
            let of: Vec<_> = controls(stack, names)
                .into_iter()
                .filter(|c| c.budget_id == budget)
                .collect();
            (of.last().map(|c| c.level) == Some(level)).then_some(of)
        },
    )
    .await
}

fn spend(c: &BudgetControl) -> Decimal {
    c.spend.parse().expect("decimal spend")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn department_climb_rolling_recovery_and_eur_conversion() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_budgets");
    names.create_usage_topic(&stack).await;
    let zone = midday_zone();
    let file = budgets_file(&names, &zone);
    let mut agg = aggregator(&stack, &names, &file);
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");

    // The rolling budget first: its one event sits in the minute whose bin leaves the 1 h
    // window 15-75 s from now; 0.10 USD is 100 % of its limit.
    let now = now_ms();
    let minute = (now - 3_600_000 + 15_000 + 59_999).div_euclid(60_000) * 60_000;
    send(&emitter, &[event("roller", "ops", minute + 1_000)]).await;

    // acme/research: 5 events (0.50 = 50 %), with one of another department that must not
    // count, then 3 (0.80), then 2 (1.00).
    let t = now_ms();
    let mut expected = Decimal::ZERO;
    let mut batch: Vec<UsageEvent> = (0..5).map(|i| event("acme", "research", t + i)).collect();
    batch.push(event("acme", "sales", t + 5));
    send(&emitter, &batch).await;
    expected += COST_USD * dec!(5);
    let records = wait_level(&stack, &names, "acme:research:day", BudgetLevel::Warning).await;
    assert_eq!(records.len(), 1);
    assert_eq!(spend(&records[0]), expected);
    assert_eq!(records[0].threshold, "0.5");

    send(
        &emitter,
        &(0..3)
            .map(|i| event("acme", "research", t + 10 + i))
            .collect::<Vec<_>>(),
    )
    .await;
    expected += COST_USD * dec!(3);
    let records = wait_level(&stack, &names, "acme:research:day", BudgetLevel::Downgrade).await;
    assert_eq!(spend(records.last().unwrap()), expected);
    assert_eq!(
        records.last().unwrap().downgrade_to.as_deref(),
        Some("gpt-4o-mini")
    );

    send(
        &emitter,
        &(0..2)
            .map(|i| event("acme", "research", t + 20 + i))
            .collect::<Vec<_>>(),
    )
    .await;
    expected += COST_USD * dec!(2);
    let records = wait_level(&stack, &names, "acme:research:day", BudgetLevel::Block).await;
    let levels: Vec<_> = records.iter().map(|c| c.level).collect();
    assert_eq!(
        levels,
        [
            BudgetLevel::Warning,
            BudgetLevel::Downgrade,
            BudgetLevel::Block
        ]
    );
    let block = records.last().unwrap();
    assert_eq!(spend(block), expected);
    assert_eq!(expected, dec!(1.00));
    assert_eq!(block.limit, "1");
    assert_eq!(block.whitelist_features, ["healthcheck"]);
    assert_eq!(block.period_kind, "day");
    let (start, end) = (block.period_start.unwrap(), block.period_end.unwrap());
    assert_eq!(end - start, 86_400_000, "a fixed-offset zone's day");
    assert!(start <= t && t < end);
    let ids: BTreeSet<_> = records.iter().map(|c| c.control_id.clone()).collect();
    assert_eq!(ids.len(), 3);

    // EUR tenant: each event is billed 0.10 × 0.8 = 0.08 EUR, which the budget converts at
    // 1.25 back to 0.10 USD. 10 events reach the 1 USD limit (0.80 EUR unconverted would
    // only be 80 %).
    send(
        &emitter,
        &(0..10)
            .map(|i| event("euro", "d", t + 30 + i))
            .collect::<Vec<_>>(),
    )
    .await;
    let euro = wait_level(&stack, &names, "euro:month", BudgetLevel::Block).await;
    let levels: Vec<_> = euro.iter().map(|c| c.level).collect();
    assert_eq!(
        levels,
        [
            BudgetLevel::Warning,
            BudgetLevel::Throttle,
            BudgetLevel::Block
        ]
    );
    let block = euro.last().unwrap();
    assert_eq!(spend(block), dec!(0.08) * dec!(10) * dec!(1.25));
    assert_eq!(block.currency, "USD");
    assert_eq!(block.fx_rates.len(), 1);
    assert_eq!(
        (
            block.fx_rates[0].from.as_str(),
            block.fx_rates[0].to.as_str(),
            block.fx_rates[0].rate.as_str()
        ),
        ("EUR", "USD", "1.25")
    );

    // The rolling budget blocked, then recovers as its window slides, with no new spend.
    let roller = wait_level(&stack, &names, "roller:1h", BudgetLevel::Ok).await;
    let levels: Vec<_> = roller.iter().map(|c| c.level).collect();
    assert_eq!(levels, [BudgetLevel::Block, BudgetLevel::Ok]);
    assert_eq!(spend(&roller[0]), COST_USD);
    assert_eq!(spend(&roller[1]), Decimal::ZERO);
    assert!(roller[1].reason.contains("slid"), "{}", roller[1].reason);
    assert!(
        now_ms() >= minute + 3_600_000,
        "recovered only once the window slid"
    );

    // The history table has each transition once.
    let db = names.database.clone();
    let n = wait_for("control history", Duration::from_secs(30), || {
        let (stack, db) = (&stack, &db);
        async move {
            let n = scalar(
                stack,
                &format!("SELECT uniqExact(control_id) FROM {db}.budget_control_history"),
            )
            .await?;
            (n >= 8).then_some(n)
        }
    })
    .await;
    assert_eq!(n, 8, "3 acme + 3 euro + 2 roller transitions");
    agg.assert_running();
    drop(agg);
    stack.query(&format!("DROP DATABASE {db}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn sigkill_during_a_climb_leaves_one_transition_per_level() {
    let seed = test_seed("budgets_sigkill");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stack = Stack::from_env();
    let names = Names::new("e2e_budgets_kill");
    names.create_usage_topic(&stack).await;
    let zone = midday_zone();
    let file = budgets_file(&names, &zone);
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");
    // 20 events of 0.05 USD climb to 1 USD through 0.25, 0.5, 0.75, 1; the aggregator is
    // killed after two seeded events, one of them just after a rung is crossed.
    let kills: BTreeSet<usize> = [rng.random_range(4..=7), rng.random_range(9..=16)].into();
    eprintln!("budgets_sigkill: kills after events {kills:?}");
    let mut agg = aggregator(&stack, &names, &file);
    let t = now_ms();
    for i in 0..20 {
        let mut e = event("crash", "d", t + i as i64);
        e.input_tokens = TOKENS / 2;
        send(&emitter, &[e]).await;
        if kills.contains(&(i + 1)) {
            // Let it get as far as it gets: until the rung just crossed is published, or
            // not at all, at a seeded moment.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
            agg.kill();
            agg = aggregator(&stack, &names, &file);
        }
    }
    let records = wait_level(&stack, &names, "crash:day", BudgetLevel::Block).await;
    let mut ids_by_level: BTreeMap<BudgetLevel, BTreeSet<String>> = BTreeMap::new();
    for c in &records {
        ids_by_level
            .entry(c.level)
            .or_default()
            .insert(c.control_id.clone());
    }
    assert_eq!(
        ids_by_level.keys().copied().collect::<Vec<_>>(),
        [
            BudgetLevel::Warning,
            BudgetLevel::Downgrade,
            BudgetLevel::Throttle,
            BudgetLevel::Block
        ],
        "seed {seed}: every level, no recovery in between: {records:#?}"
    );
    for (level, ids) in &ids_by_level {
        assert_eq!(
            ids.len(),
            1,
            "seed {seed}: one logical transition for {level}: {records:#?}"
        );
    }
    // The consumers' state: the latest record is BLOCK at exactly 1 USD.
    assert_eq!(spend(records.last().unwrap()), dec!(0.05) * dec!(20));
    agg.assert_running();
    drop(agg);
    stack
        .query(&format!("DROP DATABASE {}", names.database))
        .await;
}
