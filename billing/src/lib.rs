//! costpipe-billing: the billing API over ClickHouse. Costs by any dimension and grain
//! (with cache savings), top-N, the most expensive requests and traces, monthly invoices
//! (items by token kind and unit price, tenant terms), reports with suggestions, trace cost
//! allocation, forecasts and anomalies, for one tenant (its key) or all (an admin key); and
//! a client of that API (`cli`). See `billing/README.md`.

pub mod allocation;
pub mod anomalies;
pub mod anomalies_api;
pub mod auth;
pub mod bill;
pub mod budgets_api;
pub mod cli;
pub mod config;
pub mod costs;
pub mod costs_store;
pub mod day_split;
pub mod error;
pub mod forecast;
pub mod forecast_api;
pub mod invoice;
pub mod invoices;
pub mod legacy;
pub mod limits;
pub mod openapi;
pub mod params;
pub mod plan;
pub mod report;
pub mod reports_api;
pub mod request;
pub mod spend_sql;
pub mod store;
pub mod telemetry;
pub mod terms;
pub mod top_requests;
pub mod traces_api;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono_tz::Tz;

use crate::auth::Keys;
use crate::limits::Limits;
use crate::telemetry::Metrics;

/// Tenants' time zones: ranges and buckets are in the tenant's zone.
#[derive(Debug, Clone)]
pub struct Zones {
    pub default: Tz,
    pub by_tenant: HashMap<String, Tz>,
}

impl Zones {
    /// From `default` and `acme=Europe/Paris,globex=America/New_York`.
    pub fn parse(default: &str, by_tenant: &str) -> anyhow::Result<Zones> {
        let zone = |s: &str| {
            s.trim()
                .parse::<Tz>()
                .map_err(|_| anyhow::anyhow!("unknown time zone {s:?}"))
        };
        let mut zones = Zones {
            default: zone(default)?,
            by_tenant: HashMap::new(),
        };
        for entry in by_tenant.split(',').filter(|s| !s.trim().is_empty()) {
            let (t, z) = entry
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("time zone entry {entry:?} is not tenant=Zone"))?;
            zones.by_tenant.insert(t.to_string(), zone(z)?);
        }
        Ok(zones)
    }

    /// The zone of `tenant` (the default for all-tenant questions).
    pub fn of(&self, tenant: Option<&str>) -> Tz {
        tenant
            .and_then(|t| self.by_tenant.get(t).copied())
            .unwrap_or(self.default)
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub client: clickhouse::Client,
    pub keys: Arc<Keys>,
    pub limits: Arc<Limits>,
    pub zones: Arc<Zones>,
    pub metrics: Arc<Metrics>,
    /// Tenants' discounts and markups on invoices.
    pub terms: Arc<terms::Terms>,
    /// Which trace spans are auxiliary, and the hybrid weights.
    pub trace_rules: Arc<allocation::Rules>,
    /// The price catalog (cheaper models for report suggestions).
    pub catalog: Arc<costpipe_pricing::Catalog>,
    /// Deadline of the readiness probe.
    pub ping_timeout: Duration,
}

async fn count_responses(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // The route's template, not the path: tenant ids and periods stay out of the labels.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    state.metrics.response(resp.status().as_u16());
    state
        .metrics
        .latency(&route, started.elapsed().as_secs_f64());
    resp
}

async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}

async fn ready(State(state): State<AppState>) -> Result<&'static str, error::ApiError> {
    costpipe_clickhouse::with_timeout(
        state.ping_timeout,
        "ClickHouse ping",
        state.client.query("SELECT 1").execute(),
    )
    .await
    .map_err(|e| error::ApiError::storage(&e))?;
    Ok("ready")
}

/// The API's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/tenants/{tenant}/costs", get(costs::tenant_costs))
        .route("/v1/costs", get(costs::all_costs))
        .route("/v1/tenants/{tenant}/top", get(costs::tenant_top))
        .route("/v1/top", get(costs::all_top))
        .route(
            "/v1/tenants/{tenant}/top/requests",
            get(top_requests::top_requests),
        )
        .route(
            "/v1/tenants/{tenant}/top/traces",
            get(top_requests::top_traces),
        )
        .route("/v1/tenants/{tenant}/forecast", get(forecast_api::forecast))
        .route("/v1/tenants/{tenant}/reports", get(reports_api::report))
        .route(
            "/v1/tenants/{tenant}/traces/{trace_id}/allocation",
            get(traces_api::allocation),
        )
        .route(
            "/v1/tenants/{tenant}/anomalies",
            get(anomalies_api::anomalies),
        )
        .route(
            "/v1/tenants/{tenant}/invoices/{period}",
            get(invoices::get_invoice),
        )
        .route(
            "/v1/tenants/{tenant}/invoices/{period}/issue",
            post(invoices::issue_invoice),
        )
        .route(
            "/v1/tenants/{tenant}/costs/month-to-date",
            get(legacy::tenant_month_to_date),
        )
        .route("/v1/costs/month-to-date", get(legacy::all_month_to_date))
        .route("/v1/unpriced", get(legacy::unpriced))
        .merge(budgets_api::routes())
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .with_state(state)
}
