//! The cost and top-N endpoints: parse, plan (`plan`), run one query (`costs_store`), shape
//! the answer. A tenant key is held to its own tenant here, before any SQL is built.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use crate::costs_store::{fetch, money, RawCostRow, TokenCounts};
use crate::error::{ApiError, ErrorBody};
use crate::params::{checked_value, Dimension, Grain};
use crate::plan::{cost_sql, CostQuery, Order, Source};
use crate::request::QueryPairs;
use crate::AppState;

/// Most values one filter may list.
const MAX_FILTER_VALUES: usize = 100;

/// One row of a cost answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CostRow {
    /// The group's value of each `group_by` dimension.
    pub group: BTreeMap<String, String>,
    /// Start of the bucket in the answer's time zone (RFC 3339); the range start for
    /// `grain=total`.
    pub bucket_start: String,
    /// Currency of `cost` (the price's).
    pub currency: String,
    /// Currency of `billing_cost` (the tenant's).
    pub billing_currency: String,
    pub requests: u64,
    pub unpriced_requests: i64,
    pub tokens: TokenCounts,
    /// Exact decimal, in `currency`.
    #[schema(value_type = String)]
    pub cost: Decimal,
    /// Exact decimal, in `billing_currency`.
    #[schema(value_type = String)]
    pub billing_cost: Decimal,
    /// What cached reads saved against the same tokens at the input price (cached-input
    /// tokens × (input − cached-input unit price), adjusted like the cost), in `currency`.
    #[schema(value_type = String)]
    pub cache_savings: Decimal,
    /// `cache_savings` in `billing_currency`.
    #[schema(value_type = String)]
    pub billing_cache_savings: Decimal,
}

/// A cost answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostsResponse {
    /// `null` for every tenant.
    pub tenant: Option<String>,
    /// Range start, in the time zone.
    pub from: String,
    /// Range end (exclusive), in the time zone.
    pub to: String,
    pub time_zone: String,
    pub grain: Grain,
    pub group_by: Vec<String>,
    /// The table that answered.
    pub source: Source,
    pub rows: Vec<CostRow>,
}

pub(crate) fn local(ts_s: i64, tz: Tz) -> String {
    Utc.timestamp_opt(ts_s, 0)
        .single()
        .map(|t| t.with_timezone(&tz).to_rfc3339())
        .unwrap_or_default()
}

fn shape(q: &CostQuery, rows: Vec<RawCostRow>) -> Result<Vec<CostRow>, ApiError> {
    let names: Vec<String> = q.group_by.iter().map(Dimension::name).collect();
    rows.into_iter()
        .map(|r| {
            Ok(CostRow {
                group: names.iter().cloned().zip(r.keys.iter().cloned()).collect(),
                bucket_start: local(r.bucket, q.range.tz),
                tokens: TokenCounts::of(&r),
                cost: money(&r.cost_text)?,
                billing_cost: money(&r.billing_cost_text)?,
                cache_savings: money(&r.cache_savings_text)?,
                billing_cache_savings: money(&r.billing_cache_savings_text)?,
                currency: r.currency,
                billing_currency: r.billing_currency,
                requests: r.events,
                unpriced_requests: r.unpriced_events,
            })
        })
        .collect()
}

/// The source a caller asked for (`source=auto|day|hour|minute|day_user|raw`), checked against what
/// can answer exactly.
fn source_of(pairs: &QueryPairs, q: &CostQuery) -> Result<Source, ApiError> {
    let s = match pairs.one("source")?.as_deref() {
        None | Some("auto") => return Ok(Source::choose(q)),
        Some("day") => Source::Day,
        Some("hour") => Source::Hour,
        Some("minute") => Source::Minute,
        Some("day_user") => Source::DayUser,
        Some("raw") => Source::Raw,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_source",
                "source must be auto, day, hour, minute, day_user or raw",
            ))
        }
    };
    if s.answers(q) {
        Ok(s)
    } else {
        Err(ApiError::bad_request(
            "source_cannot_answer",
            "that table does not hold these dimensions at this step or alignment",
        ))
    }
}

/// Plans and answers a cost question for `tenant` (`None`: all tenants).
pub(crate) async fn answer(
    state: &AppState,
    tenant: Option<String>,
    pairs: &QueryPairs,
    group_by: Vec<Dimension>,
    grain: Grain,
    order: Order,
) -> Result<CostsResponse, ApiError> {
    let zone = state.zones.of(tenant.as_deref());
    let range = pairs.range(zone, state.limits.max_range_days)?;
    let q = CostQuery {
        tenant: tenant.clone(),
        range,
        grain,
        group_by,
        filters: pairs.filters(MAX_FILTER_VALUES)?,
        order,
    };
    let source = source_of(pairs, &q)?;
    let rows: Vec<RawCostRow> = fetch(&state.client, &state.limits, &cost_sql(&q, source)).await?;
    state.metrics.query(source);
    if let Order::Series { max_rows } = order {
        if rows.len() as u64 > max_rows {
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "too_many_rows",
                &format!("the answer has more than {max_rows} rows; use a coarser grain, fewer dimensions or a shorter range"),
            ));
        }
    }
    Ok(CostsResponse {
        tenant,
        from: local(q.range.start.timestamp(), q.range.tz),
        to: local(q.range.end.timestamp(), q.range.tz),
        time_zone: q.range.tz.name().to_string(),
        grain,
        group_by: q.group_by.iter().map(Dimension::name).collect(),
        source,
        rows: shape(&q, rows)?,
    })
}

const COST_KEYS: &[&str] = &["period", "from", "to", "tz", "grain", "group_by", "source"];

async fn costs(
    state: AppState,
    headers: &HeaderMap,
    tenant: Option<String>,
    raw: Option<String>,
) -> Result<Json<CostsResponse>, ApiError> {
    let who = state.keys.authenticate(headers)?;
    match &tenant {
        Some(t) => who.check_tenant(t)?,
        None => who.check_admin()?,
    }
    let pairs = QueryPairs::parse(raw.as_deref())?;
    pairs.check_keys(COST_KEYS, true)?;
    let group_by = pairs.group_by(state.limits.max_group_by)?;
    let grain = pairs.grain(Grain::Day)?;
    let order = Order::Series {
        max_rows: state.limits.max_rows,
    };
    Ok(Json(
        answer(&state, tenant, &pairs, group_by, grain, order).await?,
    ))
}

/// Costs of one tenant.
///
/// Query: `period=YYYY-MM` or `from`/`to` (local `YYYY-MM-DD[THH:MM[:SS]]`), `tz` (IANA;
/// default the tenant's zone), `grain` (minute, hour, day, week, month, total; default day),
/// `group_by` (comma-separated: department, model, reported_model, provider, user, project,
/// feature, environment, label:<key>), `source` (auto, hour, minute, raw), and filters: any
/// dimension as a key, repeatable (`department=eng&label:team=ml`).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/costs",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = CostsResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn tenant_costs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<CostsResponse>, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    costs(state, &headers, Some(tenant), raw).await
}

/// Costs of all tenants (admin key). Same query as the tenant endpoint; `tenant` is a
/// dimension here.
#[utoipa::path(get, path = "/v1/costs",
    responses((status = 200, body = CostsResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn all_costs(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<CostsResponse>, ApiError> {
    costs(state, &headers, None, raw).await
}

const TOP_KEYS: &[&str] = &["period", "from", "to", "tz", "dimension", "n", "source"];

async fn top(
    state: AppState,
    headers: &HeaderMap,
    tenant: Option<String>,
    raw: Option<String>,
) -> Result<Json<CostsResponse>, ApiError> {
    let who = state.keys.authenticate(headers)?;
    match &tenant {
        Some(t) => who.check_tenant(t)?,
        None => who.check_admin()?,
    }
    let pairs = QueryPairs::parse(raw.as_deref())?;
    pairs.check_keys(TOP_KEYS, true)?;
    let dim = pairs
        .one("dimension")?
        .ok_or_else(|| ApiError::bad_request("invalid_dimension", "`dimension` is required"))?;
    let dim = Dimension::parse(&dim)?;
    let n = pairs.count("n", 10, state.limits.max_top)?;
    Ok(Json(
        answer(
            &state,
            tenant,
            &pairs,
            vec![dim],
            Grain::Total,
            Order::Top { n },
        )
        .await?,
    ))
}

/// The `n` values of a dimension with the highest cost for one tenant, ranked within each
/// billing currency. Query: `dimension`, `n` (default 10), the range and filters of costs.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/top",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = CostsResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn tenant_top(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<CostsResponse>, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    top(state, &headers, Some(tenant), raw).await
}

/// Top-N over all tenants (admin key).
#[utoipa::path(get, path = "/v1/top",
    responses((status = 200, body = CostsResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn all_top(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<CostsResponse>, ApiError> {
    top(state, &headers, None, raw).await
}
