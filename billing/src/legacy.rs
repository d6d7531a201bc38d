//! The first endpoints (month-to-date by reported model × department, unpriced models),
//! kept for existing callers, now behind the keys: a tenant key reads its own month to date;
//! all tenants and the unpriced report need an admin key.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;

use crate::bill::{month_to_date, Month, MonthToDate};
use crate::error::ApiError;
use crate::store::{BillingStore, UnpricedModel};
use crate::AppState;

#[derive(Deserialize)]
pub struct PeriodQuery {
    period: Option<String>,
}

fn month_of(q: &PeriodQuery) -> Result<(Month, i64, i64), ApiError> {
    let month = match &q.period {
        None => Month::current(),
        Some(p) => Month::parse(p)
            .ok_or_else(|| ApiError::bad_request("invalid_period", "period must be YYYY-MM"))?,
    };
    let (start, end) = month
        .bounds_s()
        .ok_or_else(|| ApiError::bad_request("invalid_period", "period is out of range"))?;
    Ok((month, start, end))
}

fn store(state: &AppState) -> BillingStore {
    BillingStore::new(state.client.clone(), state.ping_timeout)
}

pub async fn tenant_month_to_date(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<MonthToDate>, ApiError> {
    state.keys.authenticate(&headers)?.check_tenant(&tenant)?;
    let (month, start, end) = month_of(&q)?;
    let lines = store(&state)
        .cost_lines(&tenant, start, end)
        .await
        .map_err(|e| ApiError::storage(&format!("{e:#}")))?;
    Ok(Json(month_to_date(&tenant, month, lines)))
}

pub async fn all_month_to_date(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<Vec<MonthToDate>>, ApiError> {
    state.keys.authenticate(&headers)?.check_admin()?;
    let (month, start, end) = month_of(&q)?;
    let store = store(&state);
    let mut bills = Vec::new();
    let tenants = store
        .tenants(start, end)
        .await
        .map_err(|e| ApiError::storage(&format!("{e:#}")))?;
    for tenant in tenants {
        let lines = store
            .cost_lines(&tenant, start, end)
            .await
            .map_err(|e| ApiError::storage(&format!("{e:#}")))?;
        bills.push(month_to_date(&tenant, month, lines));
    }
    Ok(Json(bills))
}

pub async fn unpriced(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PeriodQuery>,
) -> Result<Json<Vec<UnpricedModel>>, ApiError> {
    state.keys.authenticate(&headers)?.check_admin()?;
    let (_, start, end) = month_of(&q)?;
    Ok(Json(
        store(&state)
            .unpriced(start, end)
            .await
            .map_err(|e| ApiError::storage(&format!("{e:#}")))?,
    ))
}
