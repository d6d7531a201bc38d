//! costpipe-controls: prints the budget level changes on the control topic and what a
//! gateway would decide for each tenant now.

use std::time::Duration;

use clap::Parser;

use costpipe_gateway::{read_all, BudgetTable};
use costpipe_kafka::KafkaArgs;

/// Settings.
#[derive(Debug, Parser)]
#[command(
    name = "costpipe-controls",
    about = "Shows budget level changes from the control topic"
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
    /// Stop reading after this long without a new record, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    idle_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let cfg = ControlsConfig::parse();
    let records = read_all(
        &cfg.kafka.brokers,
        &cfg.topic,
        Duration::from_millis(cfg.idle_ms),
    )?;
    let mut table = BudgetTable::default();
    println!(
        "Budget level changes on {} ({} records):",
        cfg.topic,
        records.len()
    );
    for c in &records {
        let previous = c.previous_level.map_or("-".to_string(), |l| l.to_string());
        println!(
            "  {:<10} {:<8} {:>9} -> {:<9} spend {:>14} / limit {:>8} {}",
            c.tenant_id.as_deref().unwrap_or(&c.budget_id),
            c.period,
            previous,
            c.level.to_string(),
            c.spend,
            c.limit,
            c.currency
        );
        table.apply(c.clone());
    }
    let mut tenants: Vec<_> = table.iter().filter_map(|c| c.tenant_id.clone()).collect();
    tenants.sort();
    println!("Gateway decisions now:");
    for t in tenants {
        println!("  {:<10} {:?}", t, table.decide(&t));
    }
    Ok(())
}
