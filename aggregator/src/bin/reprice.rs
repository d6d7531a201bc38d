//! costpipe-reprice: after a catalog change, recomputes the cost of a tenant's stored events
//! in a period and writes corrections, so that ClickHouse totals match the new catalog. Every
//! change is kept in `usage_cost_corrections` (the audit trail). Running it again changes
//! nothing. On a terminal each step shows progress on stderr; the last line is a summary.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use clap::Parser;
use rust_decimal::Decimal;

use costpipe_aggregator::clickhouse_reprice::{stored_events, write_corrections, Correction};
use costpipe_aggregator::clickhouse_store::ClickHouseStore;
use costpipe_aggregator_core::reprice::corrections;
use costpipe_clickhouse::{retry, ClickHouseArgs, RetryPolicy};
use costpipe_pricing::{price_event, Catalog};
use costpipe_progress::Progress;

/// Repricing settings.
#[derive(Debug, Parser)]
#[command(
    name = "costpipe-reprice",
    about = "Reprices a tenant's stored events after a catalog change"
)]
struct RepriceConfig {
    /// Tenant to reprice.
    #[arg(long)]
    tenant: String,
    /// Month to reprice, YYYY-MM (event time, UTC).
    #[arg(long)]
    period: String,
    /// Catalog to price with (the shipped catalog when unset).
    #[arg(long, env = "COSTPIPE_CATALOG")]
    catalog: Option<std::path::PathBuf>,
    /// Why the prices changed, kept with each correction.
    #[arg(long, default_value = "catalog change")]
    reason: String,
    /// Show what would change without writing.
    #[arg(long)]
    dry_run: bool,
    /// ClickHouse connection.
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

fn month_bounds_ms(period: &str) -> anyhow::Result<(i64, i64)> {
    let start = NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
        .with_context(|| format!("period {period:?} is not YYYY-MM"))?;
    let next = if start.month() == 12 {
        NaiveDate::from_ymd_opt(start.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(start.year(), start.month() + 1, 1)
    }
    .context("period out of range")?;
    let ms = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| Utc.from_utc_datetime(&t).timestamp_millis())
    };
    Ok((
        ms(start).context("bad start")?,
        ms(next).context("bad end")?,
    ))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(RepriceConfig::parse()).await {
        eprintln!("costpipe-reprice: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cfg: RepriceConfig) -> anyhow::Result<()> {
    let catalog = match &cfg.catalog {
        Some(path) => Catalog::from_path(path)?,
        None => Catalog::builtin(),
    };
    let (start, end) = month_bounds_ms(&cfg.period)?;
    let store = ClickHouseStore::new(&cfg.clickhouse)?;
    // A few retries ride out a server that is restarting; a permanent error stops at once.
    retry(
        &RetryPolicy::default().with_max_retries(5),
        "migrations",
        || store.migrate(),
    )
    .await?;
    let started = std::time::Instant::now();
    let reading = Progress::spinner("reading stored events");
    let events = stored_events(&store, &cfg.tenant, start, end).await?;
    reading.clear();
    let pricing = Progress::bar(events.len() as u64, "events", "repricing");
    let mut changes = Vec::new();
    let mut totals: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut changed_events = 0usize;
    for stored in &events {
        pricing.inc(1);
        let priced = price_event(&catalog, &stored.event);
        let deltas = corrections(&stored.amounts, &priced);
        changed_events += usize::from(!deltas.is_empty());
        for delta in deltas {
            *totals.entry(delta.billing_currency.clone()).or_default() += delta.billing_cost;
            changes.push(Correction {
                event: stored.event.clone(),
                price_model: priced.price_model.as_deref().unwrap_or("").to_string(),
                price_window: priced.price_window.as_deref().unwrap_or("").to_string(),
                delta,
            });
        }
    }
    pricing.clear();
    println!(
        "tenant {} period {}: {} events examined, {changed_events} change under catalog {}",
        cfg.tenant,
        cfg.period,
        events.len(),
        catalog.version()
    );
    for (currency, delta) in &totals {
        println!("  billed total changes by {delta} {currency}");
    }
    let examined = events.len();
    let summary = |written: &str| {
        format!(
            "repriced {} {}: {examined} events examined, {changed_events} changed, {written} ({:.1} s)",
            cfg.tenant,
            cfg.period,
            started.elapsed().as_secs_f64()
        )
    };
    if changes.is_empty() || cfg.dry_run {
        println!(
            "{}",
            summary(if cfg.dry_run {
                "dry run: nothing written"
            } else {
                "nothing to write"
            })
        );
        return Ok(());
    }
    let run_id = format!(
        "{}/{}/{}/{}",
        cfg.tenant,
        cfg.period,
        catalog.version(),
        DateTime::<Utc>::from(std::time::SystemTime::now()).format("%Y%m%dT%H%M%S%.3fZ")
    );
    let writing = Progress::spinner("writing corrections");
    write_corrections(&store, &run_id, catalog.version(), &cfg.reason, &changes).await?;
    writing.finish(summary(&format!(
        "{} corrections written as run {run_id} (table usage_cost_corrections)",
        changes.len()
    )));
    Ok(())
}
