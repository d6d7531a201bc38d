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
use costpipe_schemas::{BudgetControl, BudgetLevel, ControlCodec, ControlKind, UsageEvent};
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

/// Every control record on the topic, in order (all kinds).
fn all_controls(stack: &Stack, names: &Names) -> Vec<BudgetControl> {
    let codec = ControlCodec::current();
    read_topic(&stack.brokers, &names.control, 1)
        .iter()
        .filter_map(|m| {
            let c = codec.decode(m.payload()?).expect("control records decode");
            let key = match c.kind {
                ControlKind::State => c.budget_id.clone(),
                kind => format!("{}#{}", c.budget_id, kind.as_str()),
            };
            assert_eq!(
                m.key(),
                Some(key.as_bytes()),
                "keyed by budget id (and kind)"
            );
            Some(c)
        })
        .collect()
}

/// The STATE records, in order: what gateways follow.
fn controls(stack: &Stack, names: &Names) -> Vec<BudgetControl> {
    all_controls(stack, names)
        .into_iter()
        .filter(|c| c.kind == ControlKind::State)
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

    // The billing API: status from the history, tenant keys held to their tenant's budgets,
    // and a limit raised through it recovers the budget at once (API → budgets topic →
    // aggregator).
    let (_billing, api) = costpipe_e2e::billing_client::start_billing(
        &stack,
        &names,
        "admin-key",
        &[("acme", "acme-key"), ("globex", "globex-key")],
        &[
            ("COSTPIPE_KAFKA_BROKERS", &stack.brokers),
            ("COSTPIPE_BUDGET_TOPIC", &names.budgets),
        ],
    )
    .await;
    // The aggregator created the tables already, so billing may not listen yet.
    wait_for("billing listening", Duration::from_secs(30), || {
        let api = &api;
        async move {
            let r = api
                .http
                .get(format!("{}/healthz", api.base))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;
    let status = wait_for(
        "budget status in the history",
        Duration::from_secs(30),
        || {
            let api = &api;
            async move {
                let v = api
                    .json("/v1/budgets/acme:research:day/status", "acme-key")
                    .await;
                (v["status"]["level"] == "BLOCK").then_some(v)
            }
        },
    )
    .await;
    assert_eq!(status["status"]["spend"], "1");
    assert_eq!(
        api.get("/v1/budgets/acme:research:day", Some("globex-key"))
            .await
            .0,
        404
    );
    let mine = api.json("/v1/budgets", "acme-key").await;
    let ids: Vec<_> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["budget_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["acme:research:day"]);
    assert_eq!(
        api.json("/v1/budgets", "admin-key")
            .await
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let mut raised = status["definition"].clone();
    raised["limit"] = "10".into();
    let put = api
        .http
        .put(format!("{}/v1/budgets/acme:research:day", api.base))
        .bearer_auth("acme-key")
        .body(raised.to_string())
        .send()
        .await
        .expect("put");
    assert_eq!(put.status().as_u16(), 200);
    // 1 USD of 10 is 10 %, below the lowest rung's 0.5 − 0.02: straight back to OK.
    let after = wait_level(&stack, &names, "acme:research:day", BudgetLevel::Ok).await;
    let ok = after.last().unwrap();
    assert_eq!(ok.previous_level, Some(BudgetLevel::Block));
    assert!(ok.reason.contains("limit now 10"), "{}", ok.reason);

    // The history table has each transition once.
    let db = names.database.clone();
    let n = wait_for("control history", Duration::from_secs(30), || {
        let (stack, db) = (&stack, &db);
        async move {
            let n = scalar(
                stack,
                &format!("SELECT uniqExact(control_id) FROM {db}.budget_control_history WHERE kind = 'STATE'"),
            )
            .await?;
            (n >= 9).then_some(n)
        }
    })
    .await;
    assert_eq!(
        n, 9,
        "4 acme (with the recovery) + 3 euro + 2 roller transitions"
    );
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

/// A spike end to end: 25 hours of history placed relative to now (one event 25 hours ago,
/// then alternately 1 and 3 events of 0.10 USD in each of the last 24 full hours: mean
/// 0.20, σ 0.10), then 6 events in the current hour. The SPIKE record, keyed
/// `<budget>#SPIKE`, fires once, at 0.60 (above mean + 3σ = 0.50, not above 3 × mean =
/// 0.60), with the id of the budget and hour, and lands in the history table; a restarted
/// aggregator that read it back publishes no other for the hour, even with more spend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn a_spike_is_published_once_per_hour_with_its_numbers_across_a_restart() {
    const HOUR: i64 = 3_600_000;
    let stack = Stack::from_env();
    let names = Names::new("e2e_budgets_spike");
    names.create_usage_topic(&stack).await;
    // The current hour must outlast the test (a minute or two): start in a fresh one when
    // fewer than 6 minutes are left.
    let left = HOUR - now_ms().rem_euclid(HOUR);
    if left < 6 * 60_000 {
        eprintln!("waiting {} s for the next hour", left / 1000 + 1);
        tokio::time::sleep(Duration::from_millis(left as u64 + 1_000)).await;
    }
    let budgets = serde_json::json!([{
        "budget_id": "spiky:7d",
        "scope": {"tenant": "spiky"},
        "period": {"rolling": "7d"},
        "limit": "1000", "currency": "USD",
        "spike": {"min_spend": "0.5"}
    }, {
        // A marker: the 57th event (5.7 USD) takes it past 50 % of 11.3 USD, the 56th
        // (5.6) does not. The control topic has one partition and the aggregator publishes
        // in order, so once its WARNING is read, anything the 56th event published is too.
        "budget_id": "marker:7d",
        "scope": {"tenant": "spiky"},
        "period": {"rolling": "7d"},
        "limit": "11.3", "currency": "USD"
    }]);
    let file = std::env::temp_dir().join(format!("{}-budgets.json", names.database));
    std::fs::write(&file, serde_json::to_vec(&budgets).expect("json")).expect("write");
    let mut agg = aggregator(&stack, &names, &file);
    wait_taken_up(&agg).await;
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");

    let hour = now_ms().div_euclid(HOUR) * HOUR;
    let mut history = vec![event("spiky", "d", hour - 25 * HOUR + 1_800_000)];
    for k in 1..=24i64 {
        let n = if k % 2 == 1 { 1 } else { 3 };
        history.extend((0..n).map(|i| event("spiky", "d", hour - k * HOUR + 1_800_000 + i)));
    }
    send(&emitter, &history).await;
    let t = now_ms();
    send(
        &emitter,
        &(0..6)
            .map(|i| event("spiky", "d", t + i))
            .collect::<Vec<_>>(),
    )
    .await;

    let spikes_of = |stack: &Stack, names: &Names| -> Vec<BudgetControl> {
        all_controls(stack, names)
            .into_iter()
            .filter(|c| c.kind == ControlKind::Spike)
            .collect()
    };
    let spikes = wait_for("the SPIKE record", Duration::from_secs(60), || {
        let found = spikes_of(&stack, &names);
        async move { (!found.is_empty()).then_some(found) }
    })
    .await;
    assert_eq!(spikes.len(), 1, "{spikes:#?}");
    let s = &spikes[0];
    let hour_label = chrono::DateTime::from_timestamp_millis(hour)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        s.reason,
        format!(
            "spike: 0.6 USD spent in the hour from {hour_label} so far, above mean + 3 * \
sigma = 0.5; trailing 24 h: mean 0.2, sigma 0.1"
        )
    );
    assert_eq!(
        s.control_id,
        costpipe_schemas::control_id(
            "spiky:7d",
            ControlKind::Spike,
            hour,
            "",
            costpipe_schemas::Direction::Up,
            BudgetLevel::Ok
        )
    );
    assert_eq!(s.level, BudgetLevel::Ok);
    assert_eq!(spend(s), dec!(0.10) * dec!(55), "the 7-day window's spend");
    assert!(!s.shadow);
    assert!(
        s.method
            .as_deref()
            .unwrap_or_default()
            .contains("24 full hours"),
        "{:?}",
        s.method
    );

    let db = names.database.clone();
    let history_rows = wait_for("the spike in the history", Duration::from_secs(30), || {
        let (stack, db) = (&stack, &db);
        async move {
            let rows = stack
                .try_query(&format!(
                    "SELECT control_id, reason FROM {db}.budget_control_history FINAL \
                     WHERE kind = 'SPIKE' FORMAT TSV"
                ))
                .await?;
            (!rows.is_empty()).then_some(rows)
        }
    })
    .await;
    assert_eq!(history_rows, format!("{}\t{}", s.control_id, s.reason));

    // A crash and a restart in the same hour, then more spend: no second spike.
    agg.kill();
    let mut agg = aggregator(&stack, &names, &file);
    wait_taken_up(&agg).await;
    send(&emitter, &[event("spiky", "d", now_ms())]).await;
    wait_event_count(&stack, &db, 56).await;
    assert!(
        !all_controls(&stack, &names)
            .iter()
            .any(|c| c.budget_id == "marker:7d" && c.level != BudgetLevel::Ok),
        "the marker must not have moved yet"
    );
    send(&emitter, &[event("spiky", "d", now_ms())]).await;
    wait_for("the marker's WARNING", Duration::from_secs(60), || {
        let moved = all_controls(&stack, &names)
            .iter()
            .any(|c| c.budget_id == "marker:7d" && c.level == BudgetLevel::Warning);
        async move { moved.then_some(()) }
    })
    .await;
    let after = spikes_of(&stack, &names);
    assert_eq!(
        after.iter().map(|c| &c.control_id).collect::<BTreeSet<_>>(),
        BTreeSet::from([&s.control_id]),
        "{after:#?}"
    );
    assert!(
        now_ms() < hour + HOUR,
        "the test outlasted the hour; its restart check proves nothing"
    );
    agg.assert_running();
    drop(agg);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
