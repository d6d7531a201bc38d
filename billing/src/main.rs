//! costpipe-billing: starts the billing API (no subcommand, or `serve`), or calls it
//! (`costs`, `top`, `invoice`, `report`, `forecast`, `anomalies`, `traces`: see `cli.rs`,
//! the library crate and `billing/README.md`).

use std::sync::Arc;

use clap::Parser;

use costpipe_billing::auth::Keys;
use costpipe_billing::cli::{self, ClientArgs, Command};
use costpipe_billing::config::BillingConfig;
use costpipe_billing::telemetry::Metrics;
use costpipe_billing::{app, AppState, Zones};
use costpipe_clickhouse::RetryPolicy;

/// Applies the ClickHouse migrations in the background, retrying while ClickHouse is not
/// reachable, so billing answers (`/readyz` says whether ClickHouse does) whichever of
/// billing and the aggregator starts first. A permanent failure (e.g. a user without DDL
/// rights, the tables being the aggregator's to create) is logged, not fatal.
fn spawn_migrations(client: clickhouse::Client, database: String) {
    tokio::spawn(async move {
        let applied = costpipe_clickhouse::retry(&RetryPolicy::default(), "migrations", || {
            costpipe_clickhouse::migrate(&client, &database)
        })
        .await;
        match applied {
            Ok(()) => tracing::info!(database = %database, "ClickHouse migrations applied"),
            Err(e) => tracing::warn!(error = %e, "ClickHouse migrations not applied"),
        }
    });
}

/// The service's settings and, for the client subcommands, where the API is.
#[derive(Debug, clap::Parser)]
#[command(
    name = "costpipe-billing",
    about = "Billing API over costpipe's ClickHouse tables, and a client of it"
)]
struct Cli {
    #[command(flatten)]
    serve: BillingConfig,
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    match args
        .command
        .as_ref()
        .map(cli::request)
        .transpose()?
        .flatten()
    {
        Some(req) => {
            let body = cli::send(&args.client, &req).await?;
            println!("{}", cli::render(&body));
            Ok(())
        }
        None => serve(args.serve).await,
    }
}

async fn serve(config: BillingConfig) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let keys = Keys::parse(&config.admin_key_sha256, &config.tenant_keys)?;
    config.validate(!keys.is_empty())?;
    if keys.is_empty() {
        tracing::warn!(addr = %config.addr, "no API keys configured: the API is open (loopback only)");
    }
    let zones = Zones::parse(&config.default_time_zone, &config.tenant_time_zones)?;
    // An empty setting (docker-compose's `${VAR:-}`) means none.
    let set = |p: &Option<std::path::PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
    let terms = costpipe_billing::terms::Terms::load(set(&config.tenant_terms).as_deref())?;
    let catalog = match &set(&config.catalog) {
        Some(path) => costpipe_pricing::Catalog::from_path(path)
            .map_err(|e| anyhow::anyhow!("catalog {}: {e}", path.display()))?,
        None => costpipe_pricing::Catalog::builtin(),
    };
    let trace_rules = costpipe_billing::allocation::Rules::parse(
        &config.trace_auxiliary_spans,
        &config.trace_weights,
    )?;
    let client = config.clickhouse.client()?;
    spawn_migrations(client.clone(), config.clickhouse.database.clone());
    let state = AppState {
        client,
        keys: Arc::new(keys),
        limits: Arc::new(config.limits.clone()),
        zones: Arc::new(zones),
        metrics: Arc::new(Metrics::default()),
        terms: Arc::new(terms),
        catalog: Arc::new(catalog),
        trace_rules: Arc::new(trace_rules),
        ping_timeout: config.clickhouse.timeout(),
        live: Arc::new(costpipe_billing::live_api::LiveProxy::new(&config.live)?),
    };
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.addr))?;
    tracing::info!(addr = %config.addr, "billing listening");
    let budgets = Arc::new(costpipe_billing::budgets_api::BudgetsClient::new(
        &config.budgets,
    )?);
    axum::serve(listener, app(state).layer(axum::Extension(budgets))).await?;
    Ok(())
}
