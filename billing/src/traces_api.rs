//! `GET /v1/tenants/{tenant}/traces/{trace_id}/allocation?strategy=direct|proportional|hybrid`:
//! a trace's cost per span (events plus their repricing corrections, per billing currency,
//! within the range asked) and its allocation (`allocation`). One query.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::allocation::{allocate, Allocation, SpanCost, Strategy};
use crate::costs::local;
use crate::costs_store::{fetch, money};
use crate::error::{ApiError, ErrorBody};
use crate::params::checked_value;
use crate::plan::{Param, Sql};
use crate::request::QueryPairs;
use crate::top_requests::events_with_corrections;
use crate::AppState;

/// A trace's allocation in one billing currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceCurrency {
    pub billing_currency: String,
    /// The trace's cost: Σ `allocated_cost` = Σ `direct_cost`, exactly.
    #[schema(value_type = String)]
    pub trace_cost: Decimal,
    pub spans: Vec<Allocation>,
}

/// The answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceAllocationResponse {
    pub tenant: String,
    pub trace_id: String,
    pub strategy: Strategy,
    pub from: String,
    pub to: String,
    /// Span names configured as auxiliary (`COSTPIPE_BILLING_TRACE_AUXILIARY_SPANS`).
    pub auxiliary_spans: Vec<String>,
    pub currencies: Vec<TraceCurrency>,
}

#[derive(Debug, Row, Deserialize)]
struct SpanRow {
    span_name: String,
    billing_currency: String,
    requests: u64,
    cost_text: String,
}

/// A trace's cost per span (`span_name`) and its allocation: `direct` (each span bears its
/// own cost), `proportional` (auxiliary spans' cost shared by primary spans in proportion
/// to their own cost) or `hybrid` (shared by the configured weights of primary span names).
/// Query: `strategy` (default hybrid) and the range as for costs (`period` or `from`/`to`).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/traces/{trace_id}/allocation",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("trace_id" = String, Path, description = "Trace id"),
           ("strategy" = Option<String>, Query, description = "direct, proportional or hybrid (default)")),
    responses((status = 200, body = TraceAllocationResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn allocation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, trace_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<TraceAllocationResponse>, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    let trace_id = checked_value("trace_id", &trace_id)?;
    state.keys.authenticate(&headers)?.check_tenant(&tenant)?;
    let pairs = QueryPairs::parse(raw.as_deref())?;
    pairs.check_keys(&["period", "from", "to", "tz", "strategy"], false)?;
    let strategy = match pairs.one("strategy")?.as_deref() {
        None => Strategy::Hybrid,
        Some(s) => Strategy::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_strategy",
                "strategy is direct, proportional or hybrid",
            )
        })?,
    };
    let tz = state.zones.of(Some(&tenant));
    let range = pairs.range(tz, state.limits.max_range_days)?;
    let mut sql = Sql::default();
    let inner = events_with_corrections(
        &mut sql,
        &tenant,
        range.start.timestamp_millis(),
        range.end.timestamp_millis(),
    );
    let t = sql.bind(Param::Str(trace_id.clone()));
    sql.text = format!(
        "SELECT span_name, billing_currency, count() AS requests, toString(sum(cost)) AS cost_text \
         FROM ({inner}) WHERE trace_id = {t} GROUP BY span_name, billing_currency \
         ORDER BY billing_currency, span_name"
    );
    let rows: Vec<SpanRow> = fetch(&state.client, &state.limits, &sql).await?;
    if rows.is_empty() || trace_id.is_empty() {
        return Err(ApiError::not_found(
            "no event of this trace in the range for this tenant",
        ));
    }
    let mut by: BTreeMap<String, Vec<SpanCost>> = BTreeMap::new();
    for r in rows {
        by.entry(r.billing_currency).or_default().push(SpanCost {
            cost: money(&r.cost_text)?,
            span_name: r.span_name,
            requests: r.requests,
        });
    }
    let rules = &state.trace_rules;
    Ok(Json(TraceAllocationResponse {
        tenant,
        trace_id,
        strategy,
        from: local(range.start.timestamp(), tz),
        to: local(range.end.timestamp(), tz),
        auxiliary_spans: rules.auxiliary.iter().cloned().collect(),
        currencies: by
            .into_iter()
            .map(|(billing_currency, spans)| TraceCurrency {
                trace_cost: spans.iter().map(|s| s.cost).sum::<Decimal>().normalize(),
                spans: allocate(&spans, strategy, rules),
                billing_currency,
            })
            .collect(),
    }))
}
