//! costpipe-catalog: `check` compares the catalog with the vendored price tables and fails on
//! a disagreement the allowlist does not explain; `check --model NAME --at TIME` explains the
//! price that would apply to a call.

use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use costpipe_catalog::{check, explain::explain, load_tables, Allowlist, SNAPSHOT_AS_OF};
use costpipe_pricing::Catalog;

/// Catalog tools.
#[derive(Debug, Parser)]
#[command(
    name = "costpipe-catalog",
    about = "Checks and explains the price catalog"
)]
struct CatalogConfig {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare the catalog with external price tables, or explain one model's price.
    Check(CheckConfig),
}

/// `check` settings.
#[derive(Debug, clap::Args)]
struct CheckConfig {
    /// Catalog file (the shipped catalog when unset).
    #[arg(long, env = "COSTPIPE_CATALOG")]
    catalog: Option<PathBuf>,
    /// Folder of external tables (litellm-*.json, genai-prices-*.json, models.dev*.json).
    #[arg(long, default_value = "pricing/catalog/external")]
    tables: PathBuf,
    /// Deliberate differences, each with its reason.
    #[arg(long, default_value = "pricing/catalog/check-allowlist.toml")]
    allowlist: PathBuf,
    /// Instant whose catalog prices are compared (the snapshots' date by default).
    #[arg(long, default_value = SNAPSHOT_AS_OF)]
    as_of: DateTime<Utc>,
    /// Explain this model name's price instead of checking (with --at).
    #[arg(long, requires = "at")]
    model: Option<String>,
    /// Event time to explain the price at (RFC 3339).
    #[arg(long, requires = "model")]
    at: Option<DateTime<Utc>>,
    /// Prompt tokens of the call, to choose a long-context tier when explaining.
    #[arg(long, requires = "model")]
    prompt_tokens: Option<u64>,
}

fn main() {
    let CatalogConfig {
        command: Command::Check(cfg),
    } = CatalogConfig::parse();
    match run(cfg) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("costpipe-catalog: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Whether the check passed (explaining always passes).
fn run(cfg: CheckConfig) -> anyhow::Result<bool> {
    let catalog = match &cfg.catalog {
        Some(path) => Catalog::from_path(path)?,
        None => Catalog::builtin(),
    };
    if let (Some(model), Some(at)) = (&cfg.model, cfg.at) {
        print!(
            "{}",
            explain(&catalog, model, at, cfg.prompt_tokens).map_err(anyhow::Error::msg)?
        );
        return Ok(true);
    }
    let tables = load_tables(&cfg.tables)?;
    if tables.is_empty() {
        bail!("no price tables in {}", cfg.tables.display());
    }
    let text = std::fs::read_to_string(&cfg.allowlist)
        .with_context(|| format!("reading {}", cfg.allowlist.display()))?;
    let allow = Allowlist::from_toml(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("allowlist {}", cfg.allowlist.display()))?;
    let report = check(&catalog, &tables, &allow, cfg.as_of);
    println!(
        "catalog {} at {} against {}",
        catalog.version(),
        cfg.as_of.format("%Y-%m-%dT%H:%M:%SZ"),
        tables
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for d in report.disagreements.iter().filter(|d| d.allowed.is_some()) {
        println!(
            "allowed    {d}\n           because: {}",
            d.allowed.as_deref().unwrap_or("")
        );
    }
    for d in report.unexplained() {
        println!("DISAGREES  {d}");
    }
    for a in &report.stale {
        println!(
            "STALE      allowlist entry {} / {} / {} explains no difference: remove it",
            a.model,
            a.source,
            a.component.as_deref().unwrap_or("*")
        );
    }
    println!(
        "{} values agree, {} differences allowed, {} unexplained, {} stale allowlist entries; not compared (no USD table quotes them): {}",
        report.agreed,
        report.disagreements.len() - report.unexplained().count(),
        report.unexplained().count(),
        report.stale.len(),
        report.not_compared.join(", ")
    );
    Ok(report.passed())
}
