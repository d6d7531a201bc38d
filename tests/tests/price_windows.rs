//! Time-of-day prices on the real broker and ClickHouse: DeepSeek V4 Pro events on both sides
//! of a peak/off-peak boundary are first priced under a catalog without windows (the catalog
//! before issue 11: one flat price), then the catalog gains DeepSeek's peak/off-peak windows
//! and is reloaded; new events across the boundary are stored with the window they fall in and
//! its price, and `costpipe-reprice` corrects the old ones exactly, once, with an audit trail
//! naming the window. Both catalogs are written here, in force since 2020, so nothing depends
//! on today's date but where the boundary falls: the latest weekday 04:00 UTC at least a day
//! ago. Expected prices are DeepSeek's (issue 11), worked by hand below.

use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc, Weekday};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use costpipe_e2e::*;
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_schemas::UsageEvent;

const HEAD: &str = "catalog_version = \"VERSION\"\ndefault_billing_currency = \"USD\"\n\
[[models]]\nkey = \"deepseek-v4-pro\"\nprovider = \"deepseek\"\nkind = \"chat\"\ncurrency = \"USD\"\n\
  [[models.prices]]\n  effective_from = \"2020-01-01T00:00:00Z\"\n  source = \"e2e test\"\n";

/// Before the fix: one price all week (input / cache hit / output per M).
fn flat_catalog() -> String {
    HEAD.replace("VERSION", "e2e-flat")
        + "  input = \"0.435\"\n  cached_input = \"0.003625\"\n  output = \"0.87\"\n"
}

/// After the fix: DeepSeek's weekday peak hours, off-peak at half price.
fn windowed_catalog() -> String {
    let wd = "[\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]";
    HEAD.replace("VERSION", "e2e-windows")
        + &format!(
            "    [[models.prices.windows]]\n    name = \"peak\"\n    input = \"1.32\"\n    cached_input = \"0.044\"\n    output = \"3.96\"\n\
             times = [{{ days = {wd}, from = \"01:00\", to = \"04:00\" }}, {{ days = {wd}, from = \"06:00\", to = \"10:00\" }}]\n\
             [[models.prices.windows]]\n    name = \"off-peak\"\n    input = \"0.66\"\n    cached_input = \"0.022\"\n    output = \"1.98\"\n\
             times = [{{ days = {wd}, from = \"00:00\", to = \"01:00\" }}, {{ days = {wd}, from = \"04:00\", to = \"06:00\" }},\n\
             {{ days = {wd}, from = \"10:00\", to = \"24:00\" }}, {{ days = [\"sat\", \"sun\"], from = \"00:00\", to = \"24:00\" }}]\n"
        )
}

/// The latest Monday–Friday 04:00 UTC (peak ends) at least a day before now.
fn boundary_ms() -> i64 {
    let mut day = (Utc::now() - chrono::Duration::days(1)).date_naive();
    while matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
        day = day.pred_opt().expect("a day before");
    }
    let t = Utc.from_utc_datetime(&day.and_hms_opt(4, 0, 0).expect("04:00"));
    let t = if t > Utc::now() - chrono::Duration::days(1) {
        t - chrono::Duration::days(if day.weekday() == Weekday::Mon { 3 } else { 1 })
    } else {
        t
    };
    t.timestamp_millis()
}

/// Events at `boundary + offset` for each offset (ms), 10,000 input, 2,000 cache hits and
/// 1,000 output tokens each.
fn events(boundary: i64, offsets: &[i64]) -> Vec<UsageEvent> {
    offsets
        .iter()
        .map(|off| {
            let mut e = UsageEvent::new(
                Uuid::new_v4(),
                boundary + off,
                "acme",
                "p",
                "deepseek-v4-pro",
            );
            e.input_tokens = 10_000;
            e.cached_input_tokens = 2_000;
            e.output_tokens = 1_000;
            e
        })
        .collect()
}

/// Peak:     10,000 x 1.32 + 2,000 x 0.044 + 1,000 x 3.96 = 13,200 + 88 + 3,960 = 17,248 per M.
/// Off-peak: half of it, 8,624 per M. Flat:  10,000 x 0.435 + 2,000 x 0.003625 + 1,000 x 0.87
///           = 4,350 + 7.25 + 870 = 5,227.25 per M.
const PEAK: Decimal = dec!(0.017248);
const OFF_PEAK: Decimal = dec!(0.008624);
const FLAT: Decimal = dec!(0.00522725);

/// Offsets from 04:00: before it is peak (03:59:59.999 and earlier), from it off-peak.
const OFFSETS: [i64; 6] = [-60_000, -1_000, -1, 0, 1, 60_000];
const PEAK_EVENTS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn deepseek_events_across_a_peak_boundary_are_priced_in_their_window_and_repriced() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_windows");
    let db = names.database.clone();
    let catalog_path = std::env::temp_dir().join(format!("{db}.toml"));
    std::fs::write(&catalog_path, flat_catalog()).expect("catalog file");
    names.create_usage_topic(&stack).await;
    let catalog_arg = catalog_path.display().to_string();
    let aggregator = Service::aggregator(
        &stack,
        &names,
        "",
        &[
            ("COSTPIPE_CATALOG", &catalog_arg),
            ("COSTPIPE_CATALOG_RELOAD_INTERVAL_MS", "300"),
        ],
    );
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");
    let boundary = boundary_ms();
    println!(
        "boundary (peak ends): {}",
        Utc.timestamp_millis_opt(boundary).unwrap()
    );

    // 1. Under the flat catalog: every event at the flat price, no window.
    let old = events(boundary, &OFFSETS);
    for e in &old {
        emitter.emit(e).await.expect("delivered");
    }
    wait_event_count(&stack, &db, old.len() as u64).await;
    assert_eq!(
        stack
            .query(&format!(
                "SELECT count(), toString(sum(cost)), groupUniqArray(price_window) FROM {db}.usage_events_priced"
            ))
            .await,
        format!("6\t{}\t['']", (FLAT * dec!(6)).normalize())
    );

    // 2. The windowed catalog is picked up without a restart.
    std::fs::write(&catalog_path, windowed_catalog()).expect("write");
    wait_for("the reload", Duration::from_secs(20), || {
        let port = aggregator.port;
        async move {
            metrics_text(port)
                .await
                .contains("costpipe_aggregator_catalog_reloads_total{outcome=\"loaded\"} 1")
                .then_some(())
        }
    })
    .await;
    let new = events(boundary, &OFFSETS);
    for e in &new {
        emitter.emit(e).await.expect("delivered");
    }
    wait_event_count(&stack, &db, 12).await;
    for (i, e) in new.iter().enumerate() {
        let (window, cost) = if i < PEAK_EVENTS {
            ("peak", PEAK)
        } else {
            ("off-peak", OFF_PEAK)
        };
        assert_eq!(
            stack
                .query(&format!(
                    "SELECT price_window, toString(cost), catalog_version FROM {db}.usage_events_priced WHERE event_id = '{}'",
                    e.event_id
                ))
                .await,
            format!("{window}\t{}\te2e-windows", cost.normalize()),
            "event at boundary {:+} ms",
            OFFSETS[i]
        );
    }

    // 3. Repricing corrects the six old events to their windows' prices, exactly.
    let period = Utc
        .timestamp_millis_opt(boundary)
        .unwrap()
        .format("%Y-%m")
        .to_string();
    let reprice = || {
        std::process::Command::new(binary("costpipe-reprice"))
            .args([
                "--tenant",
                "acme",
                "--period",
                &period,
                "--catalog",
                &catalog_arg,
                "--reason",
                "DeepSeek peak/off-peak prices",
            ])
            .env("COSTPIPE_CLICKHOUSE_URL", &stack.clickhouse_url)
            .env("COSTPIPE_CLICKHOUSE_DATABASE", &db)
            .output()
            .expect("run costpipe-reprice")
    };
    let out = reprice();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "reprice failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("12 events examined, 6 change"), "{stdout}");
    // Old: 6 x FLAT; now 3 x PEAK + 3 x OFF_PEAK for the old and the new events alike.
    let want = (PEAK + OFF_PEAK) * dec!(3) * dec!(2);
    assert_eq!(
        rollup_by_tenant(&stack, &db).await["acme"],
        want,
        "totals match the windowed prices"
    );
    let audit = stack
        .query(&format!(
            "SELECT price_window, count(), toString(sum(cost_delta)), any(reason) FROM {db}.usage_cost_corrections GROUP BY price_window ORDER BY price_window FORMAT TSV"
        ))
        .await;
    assert_eq!(
        audit,
        format!(
            "off-peak\t3\t{}\tDeepSeek peak/off-peak prices\npeak\t3\t{}\tDeepSeek peak/off-peak prices",
            ((OFF_PEAK - FLAT) * dec!(3)).normalize(),
            ((PEAK - FLAT) * dec!(3)).normalize()
        ),
        "one correction per changed event, naming the window of its new price"
    );
    for (i, e) in old.iter().enumerate() {
        let cost = if i < PEAK_EVENTS { PEAK } else { OFF_PEAK };
        assert_eq!(
            stack
                .query(&format!(
                    "SELECT toString((SELECT sum(cost) FROM {db}.usage_events_priced WHERE event_id = '{id}') + \
                     (SELECT sum(cost_delta) FROM {db}.usage_cost_corrections WHERE event_id = '{id}'))",
                    id = e.event_id
                ))
                .await,
            cost.normalize().to_string(),
            "old event at boundary {:+} ms",
            OFFSETS[i]
        );
    }

    // 4. A second run changes nothing.
    let again = String::from_utf8_lossy(&reprice().stdout).to_string();
    assert!(again.contains("12 events examined, 0 change"), "{again}");
    assert_eq!(
        stack
            .query(&format!("SELECT count() FROM {db}.usage_cost_corrections"))
            .await,
        "6"
    );

    drop(aggregator);
    let _ = std::fs::remove_file(&catalog_path);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
