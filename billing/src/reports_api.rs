//! `GET /v1/tenants/{tenant}/reports?period=daily|weekly|monthly&date=YYYY-MM-DD`: the
//! period containing `date` (a local day; the Monday-to-Sunday week; the month) and the one
//! before it, in one query over raw events plus repricing corrections, then `report`. The
//! catalog (`COSTPIPE_CATALOG`) names cheaper models for the downgrade suggestion.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{Datelike, Duration, NaiveDate};
use clickhouse::Row;
use costpipe_pricing::{Catalog, ModelKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::costs::local;
use crate::costs_store::{fetch, money, TokenCounts};
use crate::error::{ApiError, ErrorBody};
use crate::params::{checked_value, parse_local, TimeRange};
use crate::plan::{Param, Sql};
use crate::report::{assemble, Breakdown, Cheaper, CheaperModel, Group, Suggestion, Summary};
use crate::request::QueryPairs;
use crate::AppState;

/// A report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportResponse {
    pub tenant: String,
    /// `daily`, `weekly` or `monthly`.
    pub period: String,
    pub time_zone: String,
    pub from: String,
    /// Exclusive.
    pub to: String,
    pub previous_from: String,
    pub summary: Vec<Summary>,
    pub by_model: Vec<Breakdown>,
    pub by_department: Vec<Breakdown>,
    pub suggestions: Vec<Suggestion>,
    /// Each budget scoped to the tenant, with its latest state record (control record v2
    /// as JSON: level, spend, limit, ratio, period, …) decided before the period's end:
    /// for a past period, the state it ended in. Empty when the tenant has no budget state.
    #[schema(value_type = Vec<Object>)]
    pub budget_status: Vec<serde_json::Value>,
    /// How the suggestions' savings are estimated.
    pub method: String,
}

const METHOD: &str = "cache_more: cached-input share of input tokens under 20 %; saving = per model max(0, 0.2*(input+cached) - cached) * S/input, S = sum(input tokens * (input - cached-input unit price))/1e6. downgrade_model: fewer than 300 output tokens per request on average and a cheaper chat model of the same provider and currency in the catalog; saving = cost - the same tokens and requests at its prices. fastest_growing: largest growth of a model's or department's billing cost against the previous period; saving = the growth. Amounts in `currency`, 12 places, half to even.";

#[derive(Debug, Row, Deserialize)]
struct GroupRow {
    current: u8,
    model: String,
    department: String,
    currency: String,
    billing_currency: String,
    events: u64,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
    cache_write_1h_tokens: u64,
    cost_text: String,
    billing_cost_text: String,
    savings_text: String,
    billing_savings_text: String,
    potential_text: String,
}

const TOKENS: [&str; 6] = [
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cache_write_1h_tokens",
];

fn groups_sql(tenant: &str, previous_start_ms: i64, start_ms: i64, end_ms: i64) -> Sql {
    let mut sql = Sql::default();
    let cond = |sql: &mut Sql, col: &str, t: &str| {
        let tp = sql.bind(Param::Str(tenant.to_string()));
        let a = sql.bind(Param::Int(previous_start_ms));
        let b = sql.bind(Param::Int(end_ms));
        format!("{t} = {tp} AND {col} >= fromUnixTimestamp64Milli({a}, 'UTC') AND {col} < fromUnixTimestamp64Milli({b}, 'UTC')")
    };
    let ev = cond(&mut sql, "event_time", "tenant_id");
    let co = cond(&mut sql, "event_time", "tenant_id");
    let start = sql.bind(Param::Int(start_ms));
    let sums = TOKENS.map(|c| format!("sum({c}) AS {c}")).join(", ");
    let zeros = TOKENS.map(|c| format!("toUInt64(0) AS {c}")).join(", ");
    sql.text = format!(
        "SELECT toUInt8(t >= fromUnixTimestamp64Milli({start}, 'UTC')) AS current, model, department, currency, billing_currency, \
         sum(events) AS events, {sums}, toString(sum(cost)) AS cost_text, toString(sum(billing_cost)) AS billing_cost_text, \
         toString(sum(savings)) AS savings_text, toString(sum(billing_savings)) AS billing_savings_text, \
         toString(sum(potential)) AS potential_text FROM ( \
         SELECT event_time AS t, toString(if(price_model = '', model, price_model)) AS model, toString(department) AS department, \
         toString(currency) AS currency, toString(billing_currency) AS billing_currency, toUInt64(1) AS events, {}, \
         cost, billing_cost, cache_savings AS savings, billing_cache_savings AS billing_savings, \
         toDecimal128(input_tokens * (unit_price_input - unit_price_cached_input) / 1000000, 12) AS potential \
         FROM usage_events_priced WHERE {ev} \
         UNION ALL SELECT event_time AS t, toString(if(price_model = '', model, price_model)) AS model, toString(department) AS department, \
         toString(currency) AS currency, toString(billing_currency) AS billing_currency, toUInt64(0) AS events, {zeros}, \
         cost_delta AS cost, billing_cost_delta AS billing_cost, toDecimal128(0, 12) AS savings, toDecimal128(0, 12) AS billing_savings, \
         toDecimal128(0, 12) AS potential FROM usage_cost_corrections WHERE {co}) \
         GROUP BY current, model, department, currency, billing_currency \
         ORDER BY current, model, department, currency, billing_currency",
        TOKENS.join(", ")
    );
    sql
}

#[derive(Debug, Row, Deserialize)]
struct BudgetStateRow {
    record: String,
}

/// The latest STATE record of each budget of `tenant` decided before `end_ms`. The history
/// keeps one row per logical transition (`control_id`), re-publications included, so the
/// latest by `decided_at` is the state the control topic ended with.
fn budget_status_sql(tenant: &str, end_ms: i64) -> Sql {
    let mut sql = Sql::default();
    let t = sql.bind(Param::Str(tenant.to_string()));
    let end = sql.bind(Param::Int(end_ms));
    sql.text = format!(
        "SELECT argMax(record, decided_at) AS record FROM budget_control_history \
         WHERE tenant_id = {t} AND kind = 'STATE' AND decided_at < fromUnixTimestamp64Milli({end}, 'UTC') \
         GROUP BY budget_id ORDER BY budget_id"
    );
    sql
}

/// The catalog as [`Cheaper`], at one instant.
pub struct CatalogAt<'a> {
    pub catalog: &'a Catalog,
    pub at_ms: i64,
}

impl Cheaper for CatalogAt<'_> {
    fn cheaper(&self, model: &str, currency: &str) -> Option<CheaperModel> {
        let m = self.catalog.lookup(model)?;
        let base = &m.period_at(self.at_ms)?.base;
        self.catalog
            .models()
            .iter()
            .filter(|c| {
                c.provider == m.provider
                    && c.kind == ModelKind::Chat
                    && &*c.currency == currency
                    && c.key != m.key
            })
            .filter_map(|c| Some((c, &c.period_at(self.at_ms)?.base)))
            .filter(|(_, p)| p.input < base.input && p.output < base.output)
            .min_by(|a, b| {
                (a.1.input + a.1.output, &a.0.key).cmp(&(b.1.input + b.1.output, &b.0.key))
            })
            .map(|(c, p)| CheaperModel {
                name: c.key.to_string(),
                input: p.input,
                cached_input: p.cached_input,
                cache_write_5m: p.cache_write_5m,
                cache_write_1h: p.cache_write_1h,
                output: p.output,
                reasoning: p.reasoning.unwrap_or(p.output),
                per_request: p.per_request,
            })
    }
}

/// The report's range and the previous one's start, from `period` and a local `date`.
fn ranges(
    period: &str,
    date: &str,
    tz: chrono_tz::Tz,
) -> Result<(TimeRange, chrono::DateTime<chrono::Utc>), ApiError> {
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| ApiError::bad_request("invalid_time", "date is YYYY-MM-DD"))?;
    let bad = || ApiError::bad_request("invalid_time", "date out of range");
    let (start, end, prev) = match period {
        "daily" => (day, day + Duration::days(1), day - Duration::days(1)),
        "weekly" => {
            let monday = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
            (
                monday,
                monday + Duration::days(7),
                monday - Duration::days(7),
            )
        }
        "monthly" => {
            let first = day.with_day(1).ok_or_else(bad)?;
            let next = first
                .checked_add_months(chrono::Months::new(1))
                .ok_or_else(bad)?;
            let prev = first
                .checked_sub_months(chrono::Months::new(1))
                .ok_or_else(bad)?;
            (first, next, prev)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_period",
                "period is daily, weekly or monthly",
            ))
        }
    };
    let at = |d: NaiveDate| parse_local(&d.format("%Y-%m-%d").to_string(), tz);
    let range = TimeRange::new(at(start)?, at(end)?, tz, 40)?;
    Ok((range, at(prev)?))
}

/// A tenant's cost report for the day, week (Monday to Sunday) or month containing `date`
/// (in the tenant's zone): summary, breakdowns by model and department, the trend against
/// the previous period, and optimisation suggestions with estimated savings.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/reports",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("period" = String, Query, description = "daily, weekly or monthly"),
           ("date" = String, Query, description = "YYYY-MM-DD in the tenant's time zone")),
    responses((status = 200, body = ReportResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReportResponse>, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    state.keys.authenticate(&headers)?.check_tenant(&tenant)?;
    let pairs = QueryPairs::parse(raw.as_deref())?;
    pairs.check_keys(&["period", "date"], false)?;
    let period = pairs
        .one("period")?
        .ok_or_else(|| ApiError::bad_request("invalid_period", "`period` is required"))?;
    let date = pairs
        .one("date")?
        .ok_or_else(|| ApiError::bad_request("invalid_time", "`date` is required"))?;
    let tz = state.zones.of(Some(&tenant));
    let (range, previous_start) = ranges(&period, &date, tz)?;
    let sql = groups_sql(
        &tenant,
        previous_start.timestamp_millis(),
        range.start.timestamp_millis(),
        range.end.timestamp_millis(),
    );
    let rows: Vec<GroupRow> = fetch(&state.client, &state.limits, &sql).await?;
    let states: Vec<BudgetStateRow> = fetch(
        &state.client,
        &state.limits,
        &budget_status_sql(&tenant, range.end.timestamp_millis()),
    )
    .await?;
    let budget_status = states
        .iter()
        .filter_map(|r| serde_json::from_str(&r.record).ok())
        .collect();
    let groups = rows
        .into_iter()
        .map(|r| {
            Ok(Group {
                current: r.current == 1,
                requests: r.events,
                tokens: TokenCounts {
                    input: r.input_tokens,
                    output: r.output_tokens,
                    cached_input: r.cached_input_tokens,
                    cache_write_5m: r.cache_write_tokens,
                    cache_write_1h: r.cache_write_1h_tokens,
                    reasoning: r.reasoning_tokens,
                },
                cost: money(&r.cost_text)?,
                billing_cost: money(&r.billing_cost_text)?,
                cache_savings: money(&r.savings_text)?,
                billing_cache_savings: money(&r.billing_savings_text)?,
                uncached_saving_potential: money(&r.potential_text)?,
                model: r.model,
                department: r.department,
                currency: r.currency,
                billing_currency: r.billing_currency,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let catalog = state.catalog.clone();
    let parts = assemble(
        &groups,
        &CatalogAt {
            catalog: &catalog,
            at_ms: range.end.timestamp_millis() - 1,
        },
    );
    Ok(Json(ReportResponse {
        tenant,
        period,
        time_zone: tz.name().to_string(),
        from: local(range.start.timestamp(), tz),
        to: local(range.end.timestamp(), tz),
        previous_from: local(previous_start.timestamp(), tz),
        summary: parts.summary,
        by_model: parts.by_model,
        by_department: parts.by_department,
        suggestions: parts.suggestions,
        budget_status,
        method: METHOD.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_their_predecessors() {
        let tz = chrono_tz::UTC;
        let (r, prev) = ranges("weekly", "2026-03-01", tz).unwrap();
        // 2026-03-01 is a Sunday: its week starts on Monday 2026-02-23.
        assert_eq!(r.start.to_rfc3339(), "2026-02-23T00:00:00+00:00");
        assert_eq!(r.end.to_rfc3339(), "2026-03-02T00:00:00+00:00");
        assert_eq!(prev.to_rfc3339(), "2026-02-16T00:00:00+00:00");
        let (r, prev) = ranges("monthly", "2026-03-31", tz).unwrap();
        assert_eq!(r.start.to_rfc3339(), "2026-03-01T00:00:00+00:00");
        assert_eq!(prev.to_rfc3339(), "2026-02-01T00:00:00+00:00");
        let (r, prev) = ranges("daily", "2026-03-01", tz).unwrap();
        assert_eq!(prev.to_rfc3339(), "2026-02-28T00:00:00+00:00");
        assert_eq!(r.end.to_rfc3339(), "2026-03-02T00:00:00+00:00");
        assert!(ranges("yearly", "2026-03-01", tz).is_err());
        assert!(ranges("daily", "2026-02-30", tz).is_err());
    }
}
