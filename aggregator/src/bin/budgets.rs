//! costpipe-budgets: manages budget definitions on the compacted budgets topic.
//!
//! `validate FILE` checks a budgets file (JSON array or TOML `[[budgets]]`) against the
//! catalog without publishing; `apply FILE` validates and publishes every budget in it;
//! `list` and `get ID` read the topic as a table; `delete ID` publishes a tombstone (the
//! aggregator then publishes the budget's recovery to OK if it was not OK).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use costpipe_aggregator::budget_source::{self, BudgetChange};
use costpipe_aggregator::kafka_sinks;
use costpipe_aggregator_core::budgets::Budget;
use costpipe_kafka::KafkaArgs;
use costpipe_pricing::Catalog;
use costpipe_schemas::BudgetDefinition;

/// Settings.
#[derive(Debug, Parser)]
#[command(
    name = "costpipe-budgets",
    about = "Validates, applies, lists and deletes budgets"
)]
struct BudgetsConfig {
    /// Kafka connection.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Compacted budgets topic.
    #[arg(
        long,
        env = "COSTPIPE_BUDGET_TOPIC",
        default_value = "costpipe.budgets.v1"
    )]
    topic: String,
    /// Price catalog budgets are checked against (currencies, models); the shipped one when unset.
    #[arg(long, env = "COSTPIPE_CATALOG")]
    catalog: Option<PathBuf>,
    /// How long reading the topic may take, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks a budgets file; publishes nothing.
    Validate { file: PathBuf },
    /// Validates a budgets file and publishes every budget in it.
    Apply { file: PathBuf },
    /// Every budget on the topic, as JSON lines.
    List,
    /// One budget, as JSON.
    Get { id: String },
    /// Deletes a budget (a tombstone on the topic).
    Delete { id: String },
}

fn catalog(cfg: &BudgetsConfig) -> anyhow::Result<Catalog> {
    Ok(match &cfg.catalog {
        Some(p) => Catalog::from_path(p)?,
        None => Catalog::builtin(),
    })
}

fn validated(cfg: &BudgetsConfig, file: &std::path::Path) -> anyhow::Result<Vec<BudgetDefinition>> {
    let defs = budget_source::read_budgets_file(file)?;
    let catalog = catalog(cfg)?;
    for d in &defs {
        Budget::from_definition(d.clone(), &catalog)
            .with_context(|| format!("{}", file.display()))?;
    }
    Ok(defs)
}

fn table(cfg: &BudgetsConfig) -> anyhow::Result<BTreeMap<String, BudgetDefinition>> {
    let records = costpipe_kafka::read_to_end(
        &cfg.kafka.brokers,
        &cfg.topic,
        Duration::from_millis(cfg.timeout_ms),
    )?;
    let mut out = BTreeMap::new();
    for r in records {
        match budget_source::change_of(&r.key, r.value.as_deref()) {
            BudgetChange::Upsert(d) => {
                out.insert(d.budget_id.clone(), *d);
            }
            BudgetChange::Delete(id) => {
                out.remove(&id);
            }
            BudgetChange::Invalid { key, reason } => {
                eprintln!("costpipe-budgets: skipping record {key:?}: {reason}")
            }
        }
    }
    Ok(out)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cfg = BudgetsConfig::parse();
    if let Err(e) = run(cfg).await {
        eprintln!("costpipe-budgets: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cfg: BudgetsConfig) -> anyhow::Result<()> {
    match &cfg.command {
        Command::Validate { file } => {
            let defs = validated(&cfg, file)?;
            println!("{}: {} budgets valid", file.display(), defs.len());
        }
        Command::Apply { file } => {
            let defs = validated(&cfg, file)?;
            let producer = kafka_sinks::producer(&cfg.kafka.brokers)?;
            budget_source::publish_definitions(&producer, &cfg.topic, &defs).await?;
            println!("{} budgets published to {}", defs.len(), cfg.topic);
        }
        Command::List => {
            for d in table(&cfg)?.values() {
                println!("{}", serde_json::to_string(d)?);
            }
        }
        Command::Get { id } => {
            let t = table(&cfg)?;
            let d = t
                .get(id)
                .with_context(|| format!("no budget {id:?} on {}", cfg.topic))?;
            println!("{}", serde_json::to_string_pretty(d)?);
        }
        Command::Delete { id } => {
            anyhow::ensure!(
                costpipe_schemas::budget_definition::valid_budget_id(id),
                "budget_id {id:?} is not a valid id"
            );
            let producer = kafka_sinks::producer(&cfg.kafka.brokers)?;
            budget_source::publish_delete(&producer, &cfg.topic, id).await?;
            println!("budget {id} deleted from {}", cfg.topic);
        }
    }
    Ok(())
}
