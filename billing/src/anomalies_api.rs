//! `GET /v1/tenants/{tenant}/anomalies`: three queries (hourly spend, requests above 2 ×
//! p95, daily p95 tokens per request), run side by side, and the rules of `anomalies`.
//! A tenant key is held to its own tenant before any SQL is built.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{Duration, NaiveDate};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::anomalies::{
    flag_hours, flag_token_jumps, METHOD_HOURS, METHOD_REQUESTS, METHOD_TOKENS, TRAILING_HOURS,
};
use crate::costs::local;
use crate::costs_store::{fetch, money};
use crate::error::{ApiError, ErrorBody};
use crate::params::{checked_value, TimeRange};
use crate::plan::{Param, Sql};
use crate::request::QueryPairs;
use crate::spend_sql::spend_rows;
use crate::top_requests::events_with_corrections;
use crate::AppState;

/// An hour that cost too much.
#[derive(Debug, Serialize, ToSchema)]
pub struct HourAnomaly {
    pub hour_start: String,
    pub billing_currency: String,
    #[schema(value_type = String)]
    pub billing_cost: Decimal,
    /// Mean hourly cost of the 24 hours before (12 places).
    #[schema(value_type = String)]
    pub trailing_mean: Decimal,
    /// `above_3x_trailing_mean` and/or `above_mean_plus_3_sigma`.
    pub rules: Vec<String>,
}

/// A request that cost more than twice the p95.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestAnomaly {
    pub request_id: String,
    pub event_id: String,
    pub event_time: String,
    pub model: String,
    pub billing_currency: String,
    #[schema(value_type = String)]
    pub billing_cost: Decimal,
    /// The p95 request cost of the range in this currency.
    #[schema(value_type = String)]
    pub p95: Decimal,
}

/// A day whose p95 tokens per request is at least 4 × the day before's.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenJumpAnomaly {
    /// `YYYY-MM-DD` in the tenant's zone.
    pub day: String,
    pub p95_tokens_per_request: u64,
    pub previous_day_p95: u64,
    pub requests: u64,
}

/// The rules, as applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnomalyMethods {
    pub hours: String,
    pub requests: String,
    pub token_jumps: String,
}

/// The anomalies of a range.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnomaliesResponse {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub time_zone: String,
    pub method: AnomalyMethods,
    pub hours: Vec<HourAnomaly>,
    pub requests: Vec<RequestAnomaly>,
    pub token_jumps: Vec<TokenJumpAnomaly>,
}

#[derive(Debug, Row, Deserialize)]
struct HourRow {
    hour_s: i64,
    billing_currency: String,
    cost_text: String,
}

#[derive(Debug, Row, Deserialize)]
struct RequestRow {
    request_id: String,
    event_id: String,
    event_ms: i64,
    model: String,
    billing_currency: String,
    cost_text: String,
    p95_text: String,
}

#[derive(Debug, Row, Deserialize)]
struct DayRow {
    day: String,
    requests: u64,
    p95: u64,
}

/// Hourly spend from 24 hours before the range (the first hours' trailing window).
fn hours_sql(tenant: &str, r: &TimeRange) -> Sql {
    let mut sql = Sql::default();
    let from = r.start - Duration::hours(TRAILING_HOURS);
    let rows = spend_rows(
        &mut sql,
        tenant,
        from.timestamp_millis(),
        r.end.timestamp_millis(),
    );
    let tz = sql.bind(Param::Str(r.tz.name().to_string()));
    sql.text = format!(
        "SELECT toInt64(toUnixTimestamp(toStartOfHour(t, {tz}))) AS hour_s, billing_currency, \
         toString(sum(c)) AS cost_text FROM ({rows}) GROUP BY hour_s, billing_currency \
         ORDER BY billing_currency, hour_s"
    );
    sql
}

/// Requests above 2 × their currency's p95 over the range, at most `max_rows + 1`.
fn requests_sql(tenant: &str, r: &TimeRange, max_rows: u64) -> Sql {
    let mut sql = Sql::default();
    let per = events_with_corrections(
        &mut sql,
        tenant,
        r.start.timestamp_millis(),
        r.end.timestamp_millis(),
    );
    let limit = sql.bind(Param::UInt(max_rows.saturating_add(1)));
    sql.text = format!(
        "WITH per AS ({per}) \
         SELECT per.request_id AS request_id, toString(per.event_id) AS event_id, \
         toInt64(toUnixTimestamp64Milli(per.event_time)) AS event_ms, per.model AS model, \
         per.billing_currency AS billing_currency, toString(per.cost) AS cost_text, toString(q.p95) AS p95_text \
         FROM per INNER JOIN (SELECT billing_currency, quantileExact(0.95)(cost) AS p95 FROM per \
         GROUP BY billing_currency) AS q ON per.billing_currency = q.billing_currency \
         WHERE per.cost > 2 * q.p95 ORDER BY billing_currency, per.cost DESC, event_id LIMIT {limit}"
    );
    sql
}

const TOKENS: &str = "input_tokens + cached_input_tokens + cache_write_tokens + cache_write_1h_tokens + output_tokens";

/// p95 tokens per request per local day, from two days before the range (the first day's
/// previous day, whatever the zone's offset changes).
fn days_sql(tenant: &str, r: &TimeRange) -> Sql {
    let mut sql = Sql::default();
    let t = sql.bind(Param::Str(tenant.to_string()));
    let a = sql.bind(Param::Int((r.start - Duration::days(2)).timestamp_millis()));
    let b = sql.bind(Param::Int(r.end.timestamp_millis()));
    let tz = sql.bind(Param::Str(r.tz.name().to_string()));
    sql.text = format!(
        "SELECT toString(toDate(event_time, {tz})) AS day, count() AS requests, \
         quantileExact(0.95)({TOKENS}) AS p95 FROM usage_events_priced \
         WHERE tenant_id = {t} AND event_time >= fromUnixTimestamp64Milli({a}, 'UTC') \
         AND event_time < fromUnixTimestamp64Milli({b}, 'UTC') GROUP BY day ORDER BY day"
    );
    sql
}

fn bad_day() -> ApiError {
    ApiError::storage(&"ClickHouse returned a day that is not YYYY-MM-DD")
}

/// Anomalies of one tenant over a range.
///
/// Query: `period=YYYY-MM` or `from`/`to` (local `YYYY-MM-DD[THH:MM[:SS]]`; whole hours),
/// `tz`. Hours more than 3 × their trailing 24-hour mean or above mean + 3σ; requests above
/// 2 × the range's p95 request cost; days whose p95 tokens per request is ≥ 4 × the day
/// before's. The rules are stated in `method`.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/anomalies",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = AnomaliesResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn anomalies(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AnomaliesResponse>, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    state.keys.authenticate(&headers)?.check_tenant(&tenant)?;
    let pairs = QueryPairs::parse(raw.as_deref())?;
    pairs.check_keys(&["period", "from", "to", "tz"], false)?;
    let r = pairs.range(state.zones.of(Some(&tenant)), state.limits.max_range_days)?;
    let max_rows = state.limits.max_rows;
    let (h_sql, q_sql, d_sql) = (
        hours_sql(&tenant, &r),
        requests_sql(&tenant, &r, max_rows),
        days_sql(&tenant, &r),
    );
    // Three independent reads, run side by side: the request's time is the slowest one's.
    let (hours, requests, days) = tokio::try_join!(
        fetch::<HourRow>(&state.client, &state.limits, &h_sql),
        fetch::<RequestRow>(&state.client, &state.limits, &q_sql),
        fetch::<DayRow>(&state.client, &state.limits, &d_sql),
    )?;
    if requests.len() as u64 > max_rows {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_rows",
            &format!("more than {max_rows} anomalous requests; use a shorter range"),
        ));
    }
    let tz = r.tz;

    let mut by_hour = BTreeMap::new();
    for h in hours {
        by_hour.insert((h.billing_currency, h.hour_s), money(&h.cost_text)?);
    }
    let hours = flag_hours(&by_hour, r.start.timestamp(), r.end.timestamp())
        .into_iter()
        .map(|f| HourAnomaly {
            hour_start: local(f.hour_s, tz),
            billing_currency: f.billing_currency,
            billing_cost: f.cost,
            trailing_mean: f.trailing_mean,
            rules: f.rules.iter().map(|s| s.to_string()).collect(),
        })
        .collect();

    let requests = requests
        .into_iter()
        .map(|q| {
            Ok(RequestAnomaly {
                billing_cost: money(&q.cost_text)?,
                p95: money(&q.p95_text)?,
                event_time: local(q.event_ms.div_euclid(1000), tz),
                request_id: q.request_id,
                event_id: q.event_id,
                model: q.model,
                billing_currency: q.billing_currency,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;

    let mut by_day = BTreeMap::new();
    for d in days {
        let day = NaiveDate::parse_from_str(&d.day, "%Y-%m-%d").map_err(|_| bad_day())?;
        by_day.insert(day, (d.p95, d.requests));
    }
    let first = r.start.with_timezone(&tz).date_naive();
    let last = (r.end - Duration::milliseconds(1))
        .with_timezone(&tz)
        .date_naive();
    let token_jumps = flag_token_jumps(&by_day, first, last)
        .into_iter()
        .map(|j| TokenJumpAnomaly {
            day: j.day.format("%Y-%m-%d").to_string(),
            p95_tokens_per_request: j.p95,
            previous_day_p95: j.previous_p95,
            requests: j.requests,
        })
        .collect();

    Ok(Json(AnomaliesResponse {
        tenant,
        from: local(r.start.timestamp(), tz),
        to: local(r.end.timestamp(), tz),
        time_zone: tz.name().to_string(),
        method: AnomalyMethods {
            hours: METHOD_HOURS.to_string(),
            requests: METHOD_REQUESTS.to_string(),
            token_jumps: METHOD_TOKENS.to_string(),
        },
        hours,
        requests,
        token_jumps,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{month_range, parse_zone};

    #[test]
    fn every_value_is_a_parameter() {
        let r = month_range("2026-03", parse_zone("Asia/Tokyo").unwrap()).unwrap();
        let odd = "o'brien {x:String}";
        for sql in [
            hours_sql(odd, &r),
            requests_sql(odd, &r, 10),
            days_sql(odd, &r),
        ] {
            assert!(!sql.text.contains("o'brien") && !sql.text.contains("Tokyo"));
            assert!(sql
                .params
                .iter()
                .any(|(_, p)| *p == Param::Str(odd.to_string())));
        }
    }
}
