//! The most expensive requests and traces of a tenant: raw events with their repricing
//! corrections, ranked by billing cost within each billing currency.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::costs::local;
use crate::costs_store::{fetch, money};
use crate::error::{ApiError, ErrorBody};
use crate::params::checked_value;
use crate::plan::{Param, Sql};
use crate::request::QueryPairs;
use crate::AppState;

/// One expensive request or trace.
#[derive(Debug, Serialize, ToSchema)]
pub struct Expensive {
    /// `request_id` of a request, `trace_id` of a trace.
    pub id: String,
    /// The event id (requests only).
    pub event_id: Option<String>,
    pub trace_id: String,
    /// Catalog model of a request; models of a trace, comma-separated.
    pub model: String,
    /// First event time (RFC 3339, in the tenant's zone).
    pub first_event_time: String,
    pub requests: u64,
    pub billing_currency: String,
    #[schema(value_type = String)]
    pub billing_cost: Decimal,
}

/// The answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExpensiveResponse {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub rows: Vec<Expensive>,
}

#[derive(Debug, Row, Deserialize)]
struct Ranked {
    id: String,
    event_id: String,
    trace_id: String,
    model: String,
    first_s: i64,
    requests: u64,
    billing_currency: String,
    cost_text: String,
}

/// Per event: its billing cost plus its corrections in the same billing currency.
pub(crate) fn events_with_corrections(
    sql: &mut Sql,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
) -> String {
    let cond = |sql: &mut Sql, col: &str, t: &str| {
        let tp = sql.bind(Param::Str(tenant.to_string()));
        let a = sql.bind(Param::Int(from_ms));
        let b = sql.bind(Param::Int(to_ms));
        format!("{t} = {tp} AND {col} >= fromUnixTimestamp64Milli({a}, 'UTC') AND {col} < fromUnixTimestamp64Milli({b}, 'UTC')")
    };
    let e = cond(sql, "e.event_time", "e.tenant_id");
    let c = cond(sql, "event_time", "tenant_id");
    format!(
        "SELECT e.event_id AS event_id, e.request_id AS request_id, e.trace_id AS trace_id, e.span_name AS span_name, e.event_time AS event_time, \
         toString(if(e.price_model = '', e.model, e.price_model)) AS model, toString(e.billing_currency) AS billing_currency, \
         e.billing_cost + c.delta AS cost \
         FROM usage_events_priced AS e LEFT ANY JOIN (SELECT event_id, billing_currency, sum(billing_cost_delta) AS delta \
         FROM usage_cost_corrections WHERE {c} GROUP BY event_id, billing_currency) AS c \
         ON e.event_id = c.event_id AND e.billing_currency = c.billing_currency WHERE {e}"
    )
}

async fn expensive(
    state: AppState,
    headers: HeaderMap,
    tenant: String,
    raw: Option<String>,
    traces: bool,
) -> Result<Json<ExpensiveResponse>, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    state.keys.authenticate(&headers)?.check_tenant(&tenant)?;
    let pairs = QueryPairs::parse(raw.as_deref())?;
    pairs.check_keys(&["period", "from", "to", "tz", "n"], false)?;
    let tz = state.zones.of(Some(&tenant));
    let range = pairs.range(tz, state.limits.max_range_days)?;
    let n = pairs.count("n", 10, state.limits.max_top)?;
    let mut sql = Sql::default();
    let inner = events_with_corrections(
        &mut sql,
        &tenant,
        range.start.timestamp_millis(),
        range.end.timestamp_millis(),
    );
    let n = sql.bind(Param::UInt(n));
    sql.text = if traces {
        format!(
            "SELECT trace_id AS id, '' AS event_id, trace_id, arrayStringConcat(arraySort(groupUniqArray(model)), ',') AS model, \
             toInt64(toUnixTimestamp(min(event_time))) AS first_s, count() AS requests, billing_currency, \
             toString(sum(cost)) AS cost_text FROM ({inner}) WHERE trace_id != '' \
             GROUP BY trace_id, billing_currency \
             ORDER BY billing_currency, sum(cost) DESC, trace_id LIMIT {n} BY billing_currency"
        )
    } else {
        format!(
            "SELECT request_id AS id, toString(event_id) AS event_id, trace_id, model, \
             toInt64(toUnixTimestamp(event_time)) AS first_s, toUInt64(1) AS requests, billing_currency, \
             toString(cost) AS cost_text FROM ({inner}) \
             ORDER BY billing_currency, cost DESC, event_id LIMIT {n} BY billing_currency"
        )
    };
    let rows: Vec<Ranked> = fetch(&state.client, &state.limits, &sql).await?;
    Ok(Json(ExpensiveResponse {
        tenant,
        from: local(range.start.timestamp(), tz),
        to: local(range.end.timestamp(), tz),
        rows: rows
            .into_iter()
            .map(|r| {
                Ok(Expensive {
                    billing_cost: money(&r.cost_text)?,
                    event_id: (!traces).then_some(r.event_id),
                    id: r.id,
                    trace_id: r.trace_id,
                    model: r.model,
                    first_event_time: local(r.first_s, tz),
                    requests: r.requests,
                    billing_currency: r.billing_currency,
                })
            })
            .collect::<Result<_, ApiError>>()?,
    }))
}

/// The `n` most expensive requests of a tenant (per billing currency). Query: range as for
/// costs, `n` (default 10).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/top/requests",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = ExpensiveResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn top_requests(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ExpensiveResponse>, ApiError> {
    expensive(state, headers, tenant, raw, false).await
}

/// The `n` most expensive traces of a tenant (events sharing a `trace_id`).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/top/traces",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = ExpensiveResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn top_traces(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ExpensiveResponse>, ApiError> {
    expensive(state, headers, tenant, raw, true).await
}
