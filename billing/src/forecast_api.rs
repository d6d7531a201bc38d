//! `GET /v1/tenants/{tenant}/forecast`: one query for the spend so far and the spend of the
//! trend window (per billing currency, events plus repricing corrections), then the
//! projection of `forecast`. A tenant key is held to its own tenant before any SQL is built.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::costs::local;
use crate::costs_store::{fetch, money};
use crate::error::{ApiError, ErrorBody};
use crate::forecast::{days, project, Spans, METHOD};
use crate::params::checked_value;
use crate::plan::{Param, Sql};
use crate::request::QueryPairs;
use crate::spend_sql::spend_rows;
use crate::AppState;

/// The projection in one billing currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastRow {
    pub billing_currency: String,
    /// Billing cost from the period start to `as_of`.
    #[schema(value_type = String)]
    pub spent: Decimal,
    /// Billing cost of the trend window.
    #[schema(value_type = String)]
    pub trend_window_spent: Decimal,
    /// `spent` per day elapsed (12 places).
    #[schema(value_type = String)]
    pub month_to_date_daily_rate: Decimal,
    /// `trend_window_spent` per day of the window (12 places).
    #[schema(value_type = String)]
    pub trend_window_daily_rate: Decimal,
    /// The trend correction (6 places, within [0.5, 2]).
    #[schema(value_type = String)]
    pub trend_correction: Decimal,
    /// Projected billing cost of the whole period.
    #[schema(value_type = String)]
    pub projected: Decimal,
}

/// A forecast.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastResponse {
    pub tenant: String,
    /// `YYYY-MM`.
    pub period: String,
    pub time_zone: String,
    pub period_start: String,
    /// Exclusive.
    pub period_end: String,
    /// The instant forecast from (capped at `period_end`).
    pub as_of: String,
    pub trend_window_start: String,
    /// Days from the period start to `as_of` (6 places).
    #[schema(value_type = String)]
    pub elapsed_days: Decimal,
    #[schema(value_type = String)]
    pub trend_window_days: Decimal,
    #[schema(value_type = String)]
    pub days_in_period: Decimal,
    /// The method, exactly.
    pub method: String,
    /// One row per billing currency with spend in the period; empty when none.
    pub rows: Vec<ForecastRow>,
}

#[derive(Debug, Row, Deserialize)]
struct SpendRow {
    billing_currency: String,
    spent_text: String,
    recent_text: String,
}

/// The query: `[start, as_of)` spend and `[window, as_of)` spend per billing currency.
fn spend_sql(tenant: &str, start_ms: i64, window_ms: i64, as_of_ms: i64) -> Sql {
    let mut sql = Sql::default();
    let rows = spend_rows(&mut sql, tenant, start_ms, as_of_ms);
    let w = sql.bind(Param::Int(window_ms));
    sql.text = format!(
        "SELECT billing_currency, toString(sum(c)) AS spent_text, \
         toString(sumIf(c, t >= fromUnixTimestamp64Milli({w}, 'UTC'))) AS recent_text \
         FROM ({rows}) GROUP BY billing_currency ORDER BY billing_currency"
    );
    sql
}

fn parse_as_of(s: Option<String>) -> Result<DateTime<Utc>, ApiError> {
    match s {
        None => Ok(Utc::now()),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::bad_request("invalid_time", "`as_of` is an RFC 3339 date-time")),
    }
}

/// Projected period-end spend of one tenant.
///
/// Query: `period=YYYY-MM` (required, in the tenant's time zone; `tz` overrides), `as_of`
/// (RFC 3339; default now; capped at the period end). The answer states its method; see
/// `billing/README.md`.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/forecast",
    params(("tenant" = String, Path, description = "Tenant id")),
    responses((status = 200, body = ForecastResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn forecast(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ForecastResponse>, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    state.keys.authenticate(&headers)?.check_tenant(&tenant)?;
    let pairs = QueryPairs::parse(raw.as_deref())?;
    pairs.check_keys(&["period", "tz", "as_of"], false)?;
    let period = pairs
        .one("period")?
        .ok_or_else(|| ApiError::bad_request("invalid_period", "`period=YYYY-MM` is required"))?;
    // `range` reads `period` and `tz` the way every other endpoint does.
    let range = pairs.range(state.zones.of(Some(&tenant)), state.limits.max_range_days)?;
    let as_of = parse_as_of(pairs.one("as_of")?)?.min(range.end);
    if as_of <= range.start {
        return Err(ApiError::bad_request(
            "invalid_as_of",
            "`as_of` must be after the period's start",
        ));
    }
    let window = (as_of - Duration::days(7)).max(range.start);
    let spans = Spans {
        elapsed_ms: (as_of - range.start).num_milliseconds(),
        window_ms: (as_of - window).num_milliseconds(),
        period_ms: (range.end - range.start).num_milliseconds(),
    };
    let sql = spend_sql(
        &tenant,
        range.start.timestamp_millis(),
        window.timestamp_millis(),
        as_of.timestamp_millis(),
    );
    let spend: Vec<SpendRow> = fetch(&state.client, &state.limits, &sql).await?;
    let rows = spend
        .into_iter()
        .map(|r| {
            let spent = money(&r.spent_text)?;
            let recent = money(&r.recent_text)?;
            let p = project(spent, recent, spans).map_err(|e| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "overflow", &e.to_string())
            })?;
            Ok(ForecastRow {
                billing_currency: r.billing_currency,
                spent,
                trend_window_spent: recent,
                month_to_date_daily_rate: p.month_to_date_daily_rate,
                trend_window_daily_rate: p.recent_daily_rate,
                trend_correction: p.correction,
                projected: p.projected,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let tz = range.tz;
    // `local` works in whole seconds; as_of keeps its milliseconds in RFC 3339.
    let local_ms = |t: DateTime<Utc>| t.with_timezone(&tz).to_rfc3339();
    Ok(Json(ForecastResponse {
        tenant,
        period,
        time_zone: tz.name().to_string(),
        period_start: local(range.start.timestamp(), tz),
        period_end: local(range.end.timestamp(), tz),
        as_of: local_ms(as_of),
        trend_window_start: local_ms(window),
        elapsed_days: days(spans.elapsed_ms),
        trend_window_days: days(spans.window_ms),
        days_in_period: days(spans.period_ms),
        method: METHOD.to_string(),
        rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_a_parameter() {
        let sql = spend_sql("o'brien {x:String}", 1, 2, 3);
        assert!(!sql.text.contains("o'brien"));
        assert_eq!(sql.params.len(), 4);
        assert!(sql.text.contains("{p0:String}") && sql.text.contains("{p3:Int64}"));
    }

    #[test]
    fn as_of_is_rfc3339() {
        assert!(parse_as_of(Some("2026-03-11T00:00:00Z".into())).is_ok());
        assert!(parse_as_of(Some("2026-03-11".into())).is_err());
    }
}
