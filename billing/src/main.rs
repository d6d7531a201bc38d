//! costpipe-billing: the billing API over ClickHouse.
//!
//! `GET /v1/tenants/{tenant}/costs/month-to-date?period=YYYY-MM` returns a tenant's bill
//! by model and department; `GET /v1/costs/month-to-date` returns every tenant's bill;
//! `GET /v1/unpriced?period=YYYY-MM` lists models that had no price, for the catalog owner.

mod bill;
mod store;

use std::net::SocketAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;

use costpipe_clickhouse::{ClickHouseArgs, RetryPolicy};

use crate::bill::{month_to_date, Month, MonthToDate};
use crate::store::BillingStore;

/// The billing service's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "costpipe-billing",
    about = "Billing API over costpipe's ClickHouse tables"
)]
struct BillingConfig {
    /// Listen address.
    #[arg(long, env = "COSTPIPE_BILLING_ADDR", default_value = "127.0.0.1:8088")]
    addr: SocketAddr,
    /// ClickHouse connection.
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

/// An error answer: JSON with a machine-readable code.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(serde_json::json!({ "error": self.1, "message": self.2 })),
        )
            .into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "query failed");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            format!("{e:#}"),
        )
    }
}

#[derive(Deserialize)]
struct PeriodQuery {
    period: Option<String>,
}

fn month_of(q: &PeriodQuery) -> Result<(Month, i64, i64), ApiError> {
    let month = match &q.period {
        None => Month::current(),
        Some(p) => Month::parse(p).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "invalid_period",
                format!("period {p:?} is not YYYY-MM"),
            )
        })?,
    };
    let (start, end) = month.bounds_s().ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "invalid_period",
            format!("period {month} is out of range"),
        )
    })?;
    Ok((month, start, end))
}

async fn tenant_month_to_date(
    State(store): State<BillingStore>,
    Path(tenant): Path<String>,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<MonthToDate>, ApiError> {
    let (month, start, end) = month_of(&q)?;
    let lines = store.cost_lines(&tenant, start, end).await?;
    Ok(Json(month_to_date(&tenant, month, lines)))
}

async fn all_month_to_date(
    State(store): State<BillingStore>,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<Vec<MonthToDate>>, ApiError> {
    let (month, start, end) = month_of(&q)?;
    let mut bills = Vec::new();
    for tenant in store.tenants(start, end).await? {
        let lines = store.cost_lines(&tenant, start, end).await?;
        bills.push(month_to_date(&tenant, month, lines));
    }
    Ok(Json(bills))
}

async fn unpriced(
    State(store): State<BillingStore>,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<Vec<crate::store::UnpricedModel>>, ApiError> {
    let (_, start, end) = month_of(&q)?;
    Ok(Json(store.unpriced(start, end).await?))
}

async fn ready(State(store): State<BillingStore>) -> Result<&'static str, ApiError> {
    store.ping().await?;
    Ok("ready")
}

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = BillingConfig::parse();
    let client = config.clickhouse.client()?;
    spawn_migrations(client.clone(), config.clickhouse.database.clone());
    let store = BillingStore::new(client, config.clickhouse.timeout());
    let app = Router::new()
        .route(
            "/v1/tenants/{tenant}/costs/month-to-date",
            get(tenant_month_to_date),
        )
        .route("/v1/costs/month-to-date", get(all_month_to_date))
        .route("/v1/unpriced", get(unpriced))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(store);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.addr))?;
    tracing::info!(addr = %config.addr, "billing listening");
    axum::serve(listener, app).await?;
    Ok(())
}
