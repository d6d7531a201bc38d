//! The small endpoints the dashboard needs beyond the cost API: `GET /v1/whoami` (who a key
//! is, and which tenants it may pick), `GET /v1/tenants/{tenant}/budgets/states` (each
//! budget's latest state and forecast record from `budget_control_history`, so budget gauges
//! work without Kafka) and `GET /v1/tenants/{tenant}/controls` (the latest control records,
//! newest first). A tenant key reads its own tenant only (403 otherwise, checked before any
//! SQL); caller values reach ClickHouse only as query parameters.

use std::collections::BTreeSet;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::costs::local;
use crate::costs_store::fetch;
use crate::error::{ApiError, ErrorBody};
use crate::params::checked_value;
use crate::plan::{Param, Sql};
use crate::request::QueryPairs;
use crate::AppState;

/// Most tenants `whoami` lists for an admin (the picker is a plain list).
const MAX_TENANTS: u64 = 1_000;
/// Most budgets one states answer holds.
const MAX_BUDGETS: u64 = 1_000;
/// Default and largest `n` of the control events endpoint.
const DEFAULT_CONTROLS: u64 = 50;
const MAX_CONTROLS: u64 = 500;

/// A tenant a key may read, with what the dashboard needs to show its numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TenantInfo {
    pub tenant: String,
    /// The tenant's time zone (IANA): ranges and buckets are in it.
    pub time_zone: String,
    /// The tenant's billing currency in billing's price catalog (`COSTPIPE_CATALOG`, the
    /// aggregator's setting of the same name): the currency of its billing costs and of the
    /// live windows.
    pub billing_currency: String,
}

/// Who a key is.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// `admin` or `tenant`.
    pub role: String,
    /// The key's tenant; `null` for an admin key.
    pub tenant: Option<String>,
    /// The tenants this key may read: its own for a tenant key; for an admin, every tenant
    /// with costs (hourly rollup) or a configured key or time zone, sorted, at most 1,000.
    pub tenants: Vec<TenantInfo>,
}

fn info(state: &AppState, tenant: &str) -> TenantInfo {
    TenantInfo {
        tenant: tenant.to_string(),
        time_zone: state.zones.of(Some(tenant)).name().to_string(),
        billing_currency: state.catalog.billing_currency(tenant).to_string(),
    }
}

#[derive(Debug, Row, Deserialize)]
struct TenantRow {
    tenant_id: String,
}

/// Who the key is and which tenants it may read.
#[utoipa::path(get, path = "/v1/whoami",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<WhoAmI>, ApiError> {
    match state.keys.authenticate(&headers)? {
        Principal::Tenant(t) => Ok(Json(WhoAmI {
            role: "tenant".into(),
            tenants: vec![info(&state, &t)],
            tenant: Some(t),
        })),
        Principal::Admin => {
            let mut sql = Sql::default();
            let max = sql.bind(Param::UInt(MAX_TENANTS));
            // One LowCardinality column of the hourly rollup: every tenant that has costs.
            sql.text = format!(
                "SELECT DISTINCT toString(tenant_id) AS tenant_id FROM usage_cost_hour \
                 ORDER BY tenant_id LIMIT {max}"
            );
            let rows: Vec<TenantRow> = fetch(&state.client, &state.limits, &sql).await?;
            let mut names: BTreeSet<String> = rows.into_iter().map(|r| r.tenant_id).collect();
            names.extend(state.keys.tenants());
            names.extend(state.zones.by_tenant.keys().cloned());
            Ok(Json(WhoAmI {
                role: "admin".into(),
                tenant: None,
                tenants: names
                    .iter()
                    .take(MAX_TENANTS as usize)
                    .map(|t| info(&state, t))
                    .collect(),
            }))
        }
    }
}

/// One budget of a tenant: its latest state, and the aggregator's latest forecast for the
/// same period.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetState {
    pub budget_id: String,
    /// The latest STATE record (control record v2 as JSON: level, spend, limit, ratio,
    /// currency, scope, period, period_start/period_end, shadow, …). States are published on
    /// level changes, so `spend` is the spend at the last change; `null` while the budget
    /// never left OK (it is listed because it has a forecast).
    #[schema(value_type = Option<Object>)]
    pub state: Option<serde_json::Value>,
    /// When its latest record (state or forecast) was decided (RFC 3339, tenant's zone).
    pub decided_at: String,
    /// The latest FORECAST record (`forecast_spend` above the limit) of the state's period
    /// (any period without a state), if the aggregator published one.
    #[schema(value_type = Option<Object>)]
    pub forecast: Option<serde_json::Value>,
}

/// A tenant's budgets.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetStates {
    pub tenant: String,
    pub budgets: Vec<BudgetState>,
}

#[derive(Debug, Row, Deserialize)]
struct StateRow {
    budget_id: String,
    state: String,
    decided_ms: i64,
    forecast: String,
}

fn budget_states_sql(tenant: &str) -> Sql {
    let mut sql = Sql::default();
    let t = sql.bind(Param::Str(tenant.to_string()));
    let max = sql.bind(Param::UInt(MAX_BUDGETS));
    // One row per logical transition is kept by `control_id`, re-publications included:
    // the latest by `decided_at` is what the control topic ended with. A budget that never
    // left OK has no STATE record, but has one once it forecasts an overrun.
    sql.text = format!(
        "SELECT budget_id, argMaxIf(record, decided_at, kind = 'STATE') AS state, \
         toInt64(toUnixTimestamp64Milli(max(decided_at))) AS decided_ms, \
         argMaxIf(record, decided_at, kind = 'FORECAST') AS forecast \
         FROM budget_control_history WHERE tenant_id = {t} AND kind IN ('STATE', 'FORECAST') \
         GROUP BY budget_id ORDER BY budget_id LIMIT {max}"
    );
    sql
}

/// The forecast record when it is of the state's period (a forecast of an earlier period
/// says nothing about the current one); without a state, the latest forecast.
fn same_period(state: Option<&serde_json::Value>, forecast: &str) -> Option<serde_json::Value> {
    let f: serde_json::Value = serde_json::from_str(forecast).ok()?;
    match state {
        Some(s) => (f.get("period") == s.get("period")).then_some(f),
        None => Some(f),
    }
}

/// Each budget of the tenant with its latest state (and forecast), from the control
/// history; no Kafka needed.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/budgets/states",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = BudgetStates), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn budget_states(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<BudgetStates>, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    state.keys.authenticate(&headers)?.check_tenant(&tenant)?;
    QueryPairs::parse(raw.as_deref())?.check_keys(&[], false)?;
    let tz = state.zones.of(Some(&tenant));
    let rows: Vec<StateRow> =
        fetch(&state.client, &state.limits, &budget_states_sql(&tenant)).await?;
    let budgets = rows
        .into_iter()
        .filter_map(|r| {
            // `''` when the budget has no record of that kind.
            let state: Option<serde_json::Value> = serde_json::from_str(&r.state).ok();
            let forecast = same_period(state.as_ref(), &r.forecast);
            (state.is_some() || forecast.is_some()).then(|| BudgetState {
                budget_id: r.budget_id,
                state,
                forecast,
                decided_at: local_ms(r.decided_ms, tz),
            })
        })
        .collect();
    Ok(Json(BudgetStates { tenant, budgets }))
}

fn local_ms(ms: i64, tz: chrono_tz::Tz) -> String {
    local(ms.div_euclid(1000), tz)
}

/// One published control record.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlEvent {
    pub control_id: String,
    pub budget_id: String,
    /// `STATE`, `FORECAST` or `SPIKE`.
    pub kind: String,
    pub level: String,
    /// Empty for a budget's first record.
    pub previous_level: String,
    /// RFC 3339, in the tenant's zone.
    pub decided_at: String,
    /// The whole record (control record v2 as JSON): spend, limit, ratio, currency, scope,
    /// period, shadow, reason, forecast_spend, ….
    #[schema(value_type = Object)]
    pub record: serde_json::Value,
}

/// A tenant's latest control records.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlEvents {
    pub tenant: String,
    pub events: Vec<ControlEvent>,
}

#[derive(Debug, Row, Deserialize)]
struct ControlRow {
    control_id: String,
    budget_id: String,
    kind: String,
    level: String,
    previous_level: String,
    decided_ms: i64,
    record: String,
}

fn controls_sql(tenant: &str, n: u64) -> Sql {
    let mut sql = Sql::default();
    let t = sql.bind(Param::Str(tenant.to_string()));
    let n = sql.bind(Param::UInt(n));
    // `LIMIT 1 BY control_id` keeps one row of a transition the aggregator re-published
    // (the table collapses them only when parts merge).
    sql.text = format!(
        "SELECT control_id, budget_id, toString(kind) AS kind, toString(level) AS level, \
         toString(previous_level) AS previous_level, \
         toInt64(toUnixTimestamp64Milli(decided_at)) AS decided_ms, record \
         FROM budget_control_history WHERE tenant_id = {t} \
         ORDER BY decided_at DESC, control_id LIMIT 1 BY control_id LIMIT {n}"
    );
    sql
}

/// The tenant's latest control records (states, forecasts, spikes), newest first. Query:
/// `n` (default 50, at most 500).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/controls",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("n" = Option<u64>, Query, description = "How many, newest first (default 50, at most 500)")),
    responses((status = 200, body = ControlEvents), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn controls(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ControlEvents>, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    state.keys.authenticate(&headers)?.check_tenant(&tenant)?;
    let pairs = QueryPairs::parse(raw.as_deref())?;
    pairs.check_keys(&["n"], false)?;
    let n = pairs.count("n", DEFAULT_CONTROLS, MAX_CONTROLS)?;
    let tz = state.zones.of(Some(&tenant));
    let rows: Vec<ControlRow> =
        fetch(&state.client, &state.limits, &controls_sql(&tenant, n)).await?;
    let events = rows
        .into_iter()
        .map(|r| ControlEvent {
            decided_at: local_ms(r.decided_ms, tz),
            record: serde_json::from_str(&r.record).unwrap_or(serde_json::Value::Null),
            control_id: r.control_id,
            budget_id: r.budget_id,
            kind: r.kind,
            level: r.level,
            previous_level: r.previous_level,
        })
        .collect();
    Ok(Json(ControlEvents { tenant, events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_values_are_parameters() {
        let hostile = "acme' OR 1=1 --";
        for sql in [budget_states_sql(hostile), controls_sql(hostile, 5)] {
            assert!(!sql.text.contains(hostile), "{}", sql.text);
            assert!(sql
                .params
                .contains(&("p0".into(), Param::Str(hostile.into()))));
        }
    }

    #[test]
    fn a_forecast_of_another_period_is_left_out() {
        let state = serde_json::json!({"period": "month@2026-03-01T00:00:00Z"});
        let same = r#"{"period": "month@2026-03-01T00:00:00Z", "forecast_spend": "12"}"#;
        let older = r#"{"period": "month@2026-02-01T00:00:00Z", "forecast_spend": "12"}"#;
        assert!(same_period(Some(&state), same).is_some());
        assert!(same_period(Some(&state), older).is_none());
        assert!(same_period(Some(&state), "").is_none());
        assert!(same_period(None, older).is_some(), "a budget still at OK");
    }
}
