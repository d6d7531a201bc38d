//! costpipe-billing: the billing API over ClickHouse. Costs by any dimension and grain
//! (with cache savings), top-N, the most expensive requests and traces, monthly invoices
//! (items by token kind and unit price, tenant terms), reports with suggestions, trace cost
//! allocation, forecasts and anomalies, for one tenant (its key) or all (an admin key); the
//! built-in dashboard over that API (`dashboard`, `/dashboard/`) with the endpoints it needs
//! (`dashboard_api`, `live_api`); and a client of the API (`cli`). See `billing/README.md`.

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
pub mod dashboard;
pub mod dashboard_api;
pub mod day_split;
pub mod error;
pub mod forecast;
pub mod forecast_api;
pub mod invoice;
pub mod invoices;
pub mod legacy;
pub mod limits;
pub mod live_api;
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
    /// The aggregator's live view (`/v1/tenants/{tenant}/live`).
    pub live: Arc<live_api::LiveProxy>,
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
        .route("/v1/whoami", get(dashboard_api::whoami))
        .route(
            "/v1/tenants/{tenant}/budgets/states",
            get(dashboard_api::budget_states),
        )
        .route(
            "/v1/tenants/{tenant}/controls",
            get(dashboard_api::controls),
        )
        .route("/v1/tenants/{tenant}/live", get(live_api::live))
        .merge(budgets_api::routes())
        .merge(dashboard::routes())
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

#[cfg(test)]
mod route_tests {
    //! The dashboard's endpoints through the real router, without ClickHouse (its URL
    //! points nowhere): whatever is refused here is refused before any query.

    use super::*;
    use axum::body::Body;
    use axum::http::{header, Request as HttpRequest, StatusCode};
    use tower::ServiceExt;

    use crate::auth::digest_hex;

    fn state() -> AppState {
        let keys = Keys::parse(
            &digest_hex("root"),
            &format!(
                "{}=acme,{}=globex",
                digest_hex("acme-key"),
                digest_hex("gx")
            ),
        )
        .unwrap();
        AppState {
            client: clickhouse::Client::default().with_url("http://127.0.0.1:1"),
            keys: Arc::new(keys),
            limits: Arc::new(Limits::default()),
            zones: Arc::new(Zones::parse("UTC", "acme=Europe/Paris").unwrap()),
            metrics: Arc::new(Metrics::default()),
            terms: Arc::new(terms::Terms::load(None).unwrap()),
            trace_rules: Arc::new(allocation::Rules::parse("retrieval", "").unwrap()),
            catalog: Arc::new(costpipe_pricing::Catalog::builtin()),
            ping_timeout: Duration::from_secs(1),
            live: Arc::new(live_api::LiveProxy::disabled()),
        }
    }

    async fn get(path: &str, key: Option<&str>) -> (StatusCode, String) {
        let mut req = HttpRequest::get(path);
        if let Some(k) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let resp = app(state())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn whoami_tells_a_tenant_key_its_tenant() {
        let (s, body) = get("/v1/whoami", Some("acme-key")).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["role"], "tenant");
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["tenants"].as_array().unwrap().len(), 1);
        assert_eq!(v["tenants"][0]["time_zone"], "Europe/Paris");
        assert_eq!(v["tenants"][0]["billing_currency"], "USD");
        assert_eq!(get("/v1/whoami", None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            get("/v1/whoami", Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn a_tenant_key_cannot_read_another_tenant() {
        for path in [
            "/v1/tenants/globex/budgets/states",
            "/v1/tenants/globex/controls",
            "/v1/tenants/globex/live",
        ] {
            let (s, body) = get(path, Some("acme-key")).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {body}");
            assert_eq!(get(path, None).await.0, StatusCode::UNAUTHORIZED, "{path}");
        }
    }

    #[tokio::test]
    async fn the_live_view_says_when_no_aggregator_is_configured() {
        let (s, body) = get("/v1/tenants/acme/live", Some("acme-key")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("live_unavailable"), "{body}");
        assert!(body.contains("COSTPIPE_BILLING_LIVE_URL"), "{body}");
    }

    #[tokio::test]
    async fn bad_parameters_are_refused_before_any_query() {
        let (s, _) = get("/v1/tenants/acme/controls?n=0", Some("acme-key")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = get("/v1/tenants/acme/controls?n=501", Some("acme-key")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = get("/v1/tenants/acme/budgets/states?x=1", Some("root")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn the_dashboard_is_served_without_a_key() {
        let (s, body) = get("/dashboard/", None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("<title>"), "{body}");
        let resp = app(state())
            .oneshot(HttpRequest::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(resp.status().is_redirection());
        assert_eq!(resp.headers()[header::LOCATION], "/dashboard/");
    }
}
