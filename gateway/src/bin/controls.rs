//! costpipe-controls: prints the budget records on the control topic (v1 records are read
//! upgraded to v2) and what a gateway would decide now for each budget's own scope.

use std::time::Duration;

use clap::Parser;

use costpipe_gateway::convert::state_of;
use costpipe_gateway::{read_all, BudgetTable, Dimension, RequestContext};
use costpipe_kafka::KafkaArgs;

/// Settings.
#[derive(Debug, Parser)]
#[command(
    name = "costpipe-controls",
    about = "Shows budget records from the control topic and the decisions they imply"
)]
struct ControlsConfig {
    /// Kafka connection.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Control topic.
    #[arg(
        long,
        env = "COSTPIPE_CONTROL_TOPIC",
        default_value = "costpipe.control.v1"
    )]
    topic: String,
    /// Give up reading after this long, in milliseconds.
    #[arg(long, env = "COSTPIPE_CONTROLS_TIMEOUT_MS", default_value_t = 30_000)]
    timeout_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let cfg = ControlsConfig::parse();
    let records = read_all(
        &cfg.kafka.brokers,
        &cfg.topic,
        Duration::from_millis(cfg.timeout_ms),
    )?;
    let mut table = BudgetTable::default();
    println!(
        "Budget records on {} ({} records):",
        cfg.topic,
        records.len()
    );
    for c in &records {
        let previous = c.previous_level.map_or("-".to_string(), |l| l.to_string());
        println!(
            "  {:<24} {:<7} {:<10} {:>9} -> {:<9} spend {:>14} / limit {:>8} {}",
            c.budget_id,
            c.kind.as_str(),
            c.period,
            previous,
            c.level.to_string(),
            c.spend,
            c.limit,
            c.currency
        );
        match state_of(c) {
            Ok(Some(state)) => {
                table.apply(state);
            }
            Ok(None) => {}
            Err(e) => println!("    (not enforceable: {e})"),
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut budgets: Vec<_> = table.iter().collect();
    budgets.sort_by(|a, b| a.budget_id.cmp(&b.budget_id));
    println!("Gateway decisions now, for a request in each budget's scope:");
    for s in budgets {
        let get = |d| s.scope.get(d);
        let ctx = RequestContext {
            tenant: get(Dimension::Tenant).unwrap_or(""),
            department: get(Dimension::Department),
            user: get(Dimension::User),
            project: get(Dimension::Project),
            model: get(Dimension::Model),
            feature: get(Dimension::Feature),
            api_key: get(Dimension::ApiKey),
        };
        let d = table.decide(&ctx, now);
        println!(
            "  {:<24} {:<9} (by {})",
            s.budget_id,
            d.action.as_str(),
            d.budget_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
