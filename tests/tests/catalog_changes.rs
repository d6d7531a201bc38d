//! Catalog changes on a running pipeline: an unknown model is priced at zero and reported;
//! an invalid catalog file is refused while the old one keeps pricing; a valid one is picked
//! up without a restart; repricing writes corrections so that totals match the new catalog,
//! with an audit trail, and a second run changes nothing.

use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use costpipe_e2e::*;
use costpipe_ingest::{Emitter, EmitterConfig};
use costpipe_kafka::{ensure_topics, TopicSpec};
use costpipe_pricing::Catalog;
use costpipe_schemas::UsageEvent;

const NEW_MODEL: &str = r#"
[[models]]
key = "mistral-large-latest"
provider = "mistral"
kind = "chat"
currency = "USD"
  [[models.prices]]
  effective_from = "2024-01-01T00:00:00Z"
  source = "e2e test"
  input = "2.00"
  output = "6.00"
"#;

fn events(model: &str, n: usize) -> Vec<UsageEvent> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..n)
        .map(|i| {
            let mut e = UsageEvent::new(Uuid::new_v4(), now - 1000 * i as i64, "acme", "p", model);
            e.input_tokens = 1000 + i as i64;
            e.output_tokens = 100 + i as i64;
            e
        })
        .collect()
}

/// Independent prices: gpt-4o 2.50 / 10.00, the new model 2.00 / 6.00.
fn expected(e: &UsageEvent) -> Decimal {
    let (i, o) = if e.model == "gpt-4o" {
        (dec!(2.50), dec!(10.00))
    } else {
        (dec!(2.00), dec!(6.00))
    };
    (Decimal::from(e.input_tokens) * i + Decimal::from(e.output_tokens) * o) / dec!(1000000)
}

async fn send(emitter: &Emitter, events: &[UsageEvent]) {
    for e in events {
        emitter.emit(e).await.expect("delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/test starts it"]
async fn unknown_model_is_kept_then_repriced_and_catalog_reloads_safely() {
    let stack = Stack::from_env();
    let names = Names::new("e2e_catalog");
    let db = names.database.clone();
    let catalog_path = std::env::temp_dir().join(format!("{db}.toml"));
    std::fs::write(&catalog_path, Catalog::DEFAULT_TOML).expect("catalog file");
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
    let catalog_arg = catalog_path.display().to_string();
    let mut aggregator = Service::aggregator(
        &stack,
        &names,
        "",
        &[
            ("COSTPIPE_CATALOG", &catalog_arg),
            ("COSTPIPE_CATALOG_RELOAD_INTERVAL_MS", "300"),
        ],
    );
    let emitter = Emitter::new(EmitterConfig::new(&stack.brokers, &names.usage)).expect("emitter");

    // 1. An unknown model is priced at zero, flagged and reported, never dropped.
    let mut all = events("gpt-4o", 100);
    let unknown = events("mistral-large-latest", 100);
    send(&emitter, &all).await;
    send(&emitter, &unknown).await;
    wait_event_count(&stack, &db, 200).await;
    assert_eq!(
        stack
            .query(&format!(
                "SELECT sum(unpriced_events) FROM {db}.usage_cost_minute"
            ))
            .await,
        "100"
    );
    let billing = Service::billing(&stack, &names);
    let unpriced_url = format!("http://127.0.0.1:{}/v1/unpriced", billing.port);
    let report: serde_json::Value =
        wait_for("billing's unpriced report", Duration::from_secs(30), || {
            let url = unpriced_url.clone();
            async move { reqwest::get(&url).await.ok()?.json().await.ok() }
        })
        .await;
    assert_eq!(report[0]["model"], "mistral-large-latest");
    assert_eq!(report[0]["events"], 100);
    assert_eq!(report[0]["reason"], "unknown_model");

    // 2. An invalid catalog is refused; the old one keeps pricing.
    std::fs::write(
        &catalog_path,
        Catalog::DEFAULT_TOML.replacen("input = \"2.50\"", "input = \"-2.50\"", 1),
    )
    .expect("write");
    wait_for("the refusal", Duration::from_secs(20), || {
        let port = aggregator.port;
        async move {
            metrics_text(port)
                .await
                .contains("costpipe_aggregator_catalog_reloads_total{outcome=\"refused\"} 1")
                .then_some(())
        }
    })
    .await;
    assert!(
        aggregator
            .log_text()
            .contains("model gpt-4o: price input is negative (-2.50)"),
        "the refusal names what is wrong"
    );
    let more = events("gpt-4o", 10);
    send(&emitter, &more).await;
    all.extend(more);
    wait_event_count(&stack, &db, 210).await;
    aggregator.assert_running();

    // 3. A valid catalog that prices the new model is picked up without a restart.
    std::fs::write(
        &catalog_path,
        format!("{}\n{NEW_MODEL}", Catalog::DEFAULT_TOML),
    )
    .expect("write");
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
    let priced_now = events("mistral-large-latest", 10);
    send(&emitter, &priced_now).await;
    wait_event_count(&stack, &db, 220).await;
    assert_eq!(
        stack
            .query(&format!(
                "SELECT sum(unpriced_events) FROM {db}.usage_cost_minute"
            ))
            .await,
        "100"
    );

    // 4. Repricing corrects the 100 events priced before the model was known.
    let period = chrono::Utc::now().format("%Y-%m").to_string();
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
                "added mistral-large-latest",
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
    assert!(
        stdout.contains("220 events examined, 100 change"),
        "{stdout}"
    );

    let mut every = all.clone();
    every.extend(unknown.iter().cloned());
    every.extend(priced_now.iter().cloned());
    let want: Decimal = every.iter().map(expected).sum();
    let totals = rollup_by_tenant(&stack, &db).await;
    assert_eq!(totals["acme"], want, "totals match the new catalog exactly");
    assert_eq!(
        stack
            .query(&format!(
                "SELECT sum(unpriced_events) FROM {db}.usage_cost_minute"
            ))
            .await,
        "0"
    );
    assert_eq!(
        stack
            .query(&format!(
                "SELECT count(), uniqExact(event_id), any(reason) FROM {db}.usage_cost_corrections"
            ))
            .await,
        "100\t100\tadded mistral-large-latest",
        "the audit trail has one correction per changed event"
    );
    let report: serde_json::Value = reqwest::get(&unpriced_url)
        .await
        .expect("report")
        .json()
        .await
        .expect("json");
    assert_eq!(
        report,
        serde_json::json!([]),
        "nothing is unpriced any more"
    );

    // 5. Running it again changes nothing.
    let again = String::from_utf8_lossy(&reprice().stdout).to_string();
    assert!(again.contains("220 events examined, 0 change"), "{again}");
    assert_eq!(
        stack
            .query(&format!("SELECT count() FROM {db}.usage_cost_corrections"))
            .await,
        "100"
    );

    drop(aggregator);
    drop(billing);
    let _ = std::fs::remove_file(&catalog_path);
    stack.query(&format!("DROP DATABASE {db}")).await;
}
