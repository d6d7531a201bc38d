//! The invoice endpoints: read the tenant's issued invoices, read the month's cost groups
//! (raw events plus repricing corrections, grouped by catalog model, department, project and
//! currencies) and the exchange rates used, assemble (`invoice`), and for an issue store the
//! document once (`billing_invoices`, migration 043).

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::costs::local;
use crate::costs_store::{fetch, money, TokenCounts};
use crate::day_split::DaySplit;
use crate::error::{ApiError, ErrorBody};
use crate::invoice::{assemble, invoice_id, to_csv, Group, Inputs, Invoice, Item, RateUsed};
use crate::params::{checked_value, month_range, TimeRange};
use crate::plan::{Param, Sql};
use crate::request::QueryPairs;
use crate::AppState;

#[derive(Debug, Row, Deserialize)]
struct GroupRow {
    period: String,
    model: String,
    department: String,
    project: String,
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
    event_cost_text: String,
}

/// Usage of one line at one set of unit prices: quantities and prices of every kind.
#[derive(Debug, Row, Deserialize)]
struct ItemRow {
    model: String,
    currency: String,
    billing_currency: String,
    /// input, cached_input, cache_write_5m, cache_write_1h, output, reasoning, request.
    quantities: Vec<u64>,
    prices: Vec<String>,
}

/// The kinds of `ItemRow`'s arrays, in order.
const ITEM_KINDS: [&str; 7] = [
    "input",
    "cached_input",
    "cache_write_5m",
    "cache_write_1h",
    "output",
    "reasoning",
    "request",
];

#[derive(Debug, Row, Deserialize)]
struct RateRow {
    currency: String,
    billing_currency: String,
    rate_text: String,
    first_s: i64,
    last_s: i64,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct StoredInvoice {
    invoice_id: String,
    tenant_id: String,
    period: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    issued_at: chrono::DateTime<Utc>,
    document: String,
}

#[derive(Debug, Row, Deserialize)]
struct DocRow {
    document: String,
}

const TOKENS: &str = "input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, cache_write_1h_tokens";

fn range_cond(
    sql: &mut Sql,
    col: &str,
    tenant_col: &str,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
) -> String {
    let t = sql.bind(Param::Str(tenant.to_string()));
    let a = sql.bind(Param::Int(from_ms));
    let b = sql.bind(Param::Int(to_ms));
    format!("{tenant_col} = {t} AND {col} >= fromUnixTimestamp64Milli({a}, 'UTC') AND {col} < fromUnixTimestamp64Milli({b}, 'UTC')")
}

/// Cost groups of `tenant` for event times in `[from, to)`, by month in the zone:
/// `month_starts` are the local month starts inside the range. Whole UTC days come from the
/// daily invoice lines (069), the rest from raw events, repricing corrections from their
/// table (with the corrected event's project).
fn groups_sql(tenant: &str, from_ms: i64, to_ms: i64, tz: &str, month_starts: &[i64]) -> Sql {
    let mut sql = Sql::default();
    let days = DaySplit::new(&mut sql, INVOICE_DAYS, from_ms, to_ms, month_starts);
    let ev = range_cond(&mut sql, "event_time", "tenant_id", tenant, from_ms, to_ms);
    let outside = days.raw_cond(&mut sql, "event_time");
    let t = sql.bind(Param::Str(tenant.to_string()));
    let inside = days.rollup_cond(&mut sql, "day");
    let joined = range_cond(&mut sql, "event_time", "tenant_id", tenant, from_ms, to_ms);
    let corrected = range_cond(&mut sql, "event_time", "tenant_id", tenant, from_ms, to_ms);
    let corr = range_cond(
        &mut sql,
        "c.event_time",
        "c.tenant_id",
        tenant,
        from_ms,
        to_ms,
    );
    let tz = sql.bind(Param::Str(tz.to_string()));
    let zeros = TOKENS
        .split(", ")
        .map(|c| format!("toUInt64(0) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sums = TOKENS
        .split(", ")
        .map(|c| format!("sum({c}) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    sql.text = format!(
        "SELECT formatDateTime(toStartOfMonth(t, {tz}), '%Y-%m') AS period, model, department, project, currency, billing_currency, \
         sum(events) AS events, {sums}, toString(sum(cost)) AS cost_text, toString(sum(billing_cost)) AS billing_cost_text, \
         toString(sum(event_cost)) AS event_cost_text FROM ( \
         SELECT toDateTime64(day, 3, 'UTC') AS t, toString(model) AS model, toString(department) AS department, \
         project_id AS project, toString(currency) AS currency, toString(billing_currency) AS billing_currency, events, \
         {TOKENS}, cost, billing_cost, cost AS event_cost FROM usage_invoice_day WHERE tenant_id = {t} AND {inside} \
         UNION ALL \
         SELECT event_time AS t, toString(if(price_model = '', model, price_model)) AS model, toString(department) AS department, \
         project_id AS project, toString(currency) AS currency, toString(billing_currency) AS billing_currency, toUInt64(1) AS events, \
         {TOKENS}, cost, billing_cost, cost AS event_cost FROM usage_events_priced WHERE {ev} AND {outside} \
         UNION ALL \
         SELECT c.event_time AS t, toString(if(c.price_model = '', c.model, c.price_model)) AS model, toString(c.department) AS department, \
         e.project_id AS project, toString(c.currency) AS currency, toString(c.billing_currency) AS billing_currency, toUInt64(0) AS events, \
         {zeros}, c.cost_delta AS cost, c.billing_cost_delta AS billing_cost, toDecimal128(0, 12) AS event_cost \
         FROM usage_cost_corrections AS c LEFT ANY JOIN (SELECT event_id, project_id FROM usage_events_priced WHERE {joined} \
         AND event_id IN (SELECT event_id FROM usage_cost_corrections WHERE {corrected})) AS e \
         ON c.event_id = e.event_id WHERE {corr}) \
         GROUP BY period, model, department, project, currency, billing_currency \
         ORDER BY period, model, department, project, currency, billing_currency"
    );
    sql
}

/// The daily invoice lines (migration 069).
const INVOICE_DAYS: &str = "usage_invoice_day";

const PRICE_COLUMNS: &str =
    "unit_price_input, unit_price_cached_input, unit_price_cache_write_5m, \
    unit_price_cache_write_1h, unit_price_output, unit_price_reasoning, unit_price_request";

/// Usage of `tenant` in `r` by line (model, currencies) and the unit prices applied
/// (migration 060), with the quantity of each kind: output tokens that are not reasoning
/// and reasoning tokens are separate kinds, `request` counts calls. Grouping by the prices
/// (a handful of sets per model) reads each day's line once, and each raw event outside
/// the whole days once; the items are split out in Rust.
fn items_sql(tenant: &str, r: &TimeRange) -> Sql {
    let mut sql = Sql::default();
    let (from_ms, to_ms) = (r.start.timestamp_millis(), r.end.timestamp_millis());
    let days = DaySplit::new(&mut sql, INVOICE_DAYS, from_ms, to_ms, &[]);
    let t = sql.bind(Param::Str(tenant.to_string()));
    let inside = days.rollup_cond(&mut sql, "day");
    let w = range_cond(&mut sql, "event_time", "tenant_id", tenant, from_ms, to_ms);
    let outside = days.raw_cond(&mut sql, "event_time");
    sql.text = format!(
        "SELECT model, currency, billing_currency, \
         [sum(input_tokens), sum(cached_input_tokens), sum(cache_write_tokens), sum(cache_write_1h_tokens), \
          sum(plain_output_tokens), sum(reasoning_tokens), sum(events)] AS quantities, \
         [toString(unit_price_input), toString(unit_price_cached_input), toString(unit_price_cache_write_5m), \
          toString(unit_price_cache_write_1h), toString(unit_price_output), toString(unit_price_reasoning), \
          toString(unit_price_request)] AS prices FROM ( \
         SELECT toString(model) AS model, toString(currency) AS currency, toString(billing_currency) AS billing_currency, \
         {PRICE_COLUMNS}, input_tokens, cached_input_tokens, cache_write_tokens, cache_write_1h_tokens, \
         plain_output_tokens, reasoning_tokens, events FROM usage_invoice_day WHERE tenant_id = {t} AND {inside} \
         UNION ALL \
         SELECT toString(if(price_model = '', model, price_model)) AS model, toString(currency) AS currency, \
         toString(billing_currency) AS billing_currency, {PRICE_COLUMNS}, input_tokens, cached_input_tokens, \
         cache_write_tokens, cache_write_1h_tokens, toUInt64(greatest(output_tokens, reasoning_tokens) - reasoning_tokens) AS plain_output_tokens, \
         reasoning_tokens, toUInt64(1) AS events FROM usage_events_priced WHERE {w} AND {outside}) \
         GROUP BY model, currency, billing_currency, {PRICE_COLUMNS}"
    );
    sql
}

/// The items of `period`'s lines from the grouped rows: one per line, kind and unit price,
/// quantities summed over the rows sharing them; free or unused kinds are left out.
fn items_of(
    period: &str,
    rows: Vec<ItemRow>,
) -> Result<Vec<(crate::invoice::LineKey, Item)>, ApiError> {
    type Key = (crate::invoice::LineKey, &'static str, rust_decimal::Decimal);
    let mut by: std::collections::BTreeMap<Key, u64> = std::collections::BTreeMap::new();
    for r in rows {
        let line = (period.to_string(), r.model, r.currency, r.billing_currency);
        for ((kind, q), p) in ITEM_KINDS.iter().zip(&r.quantities).zip(&r.prices) {
            let price = money(p)?;
            if *q > 0 && !price.is_zero() {
                let n = by.entry((line.clone(), kind, price)).or_default();
                *n = n
                    .checked_add(*q)
                    .ok_or_else(|| ApiError::storage(&"an invoice quantity overflows"))?;
            }
        }
    }
    by.into_iter()
        .map(|((line, kind, price), q)| {
            let line_id = format!("{}/{}/{}/{}", line.0, line.1, line.2, line.3);
            let item = Item::new(&line_id, kind, price, q)
                .ok_or_else(|| ApiError::storage(&"an invoice item does not fit a Decimal"))?;
            Ok((line, item))
        })
        .collect()
}

fn rates_sql(tenant: &str, r: &TimeRange) -> Sql {
    let mut sql = Sql::default();
    let (from_ms, to_ms) = (r.start.timestamp_millis(), r.end.timestamp_millis());
    let days = DaySplit::new(&mut sql, INVOICE_DAYS, from_ms, to_ms, &[]);
    let t = sql.bind(Param::Str(tenant.to_string()));
    let inside = days.rollup_cond(&mut sql, "day");
    let w = range_cond(&mut sql, "event_time", "tenant_id", tenant, from_ms, to_ms);
    let outside = days.raw_cond(&mut sql, "event_time");
    sql.text = format!(
        "SELECT currency, billing_currency, toString(exchange_rate) AS rate_text, \
         toInt64(toUnixTimestamp(min(first_event))) AS first_s, toInt64(toUnixTimestamp(max(last_event))) AS last_s FROM ( \
         SELECT toString(currency) AS currency, toString(billing_currency) AS billing_currency, exchange_rate, \
         first_event, last_event FROM usage_invoice_day WHERE tenant_id = {t} AND {inside} AND NOT unpriced \
         UNION ALL \
         SELECT toString(currency) AS currency, toString(billing_currency) AS billing_currency, exchange_rate, \
         event_time AS first_event, event_time AS last_event FROM usage_events_priced WHERE {w} AND {outside} AND NOT unpriced) \
         GROUP BY currency, billing_currency, exchange_rate \
         ORDER BY currency, billing_currency, exchange_rate"
    );
    sql
}

fn issued_sql(tenant: &str, period: Option<&str>) -> Sql {
    let mut sql = Sql::default();
    let t = sql.bind(Param::Str(tenant.to_string()));
    let p = match period {
        Some(p) => format!(" AND period = {}", sql.bind(Param::Str(p.to_string()))),
        None => String::new(),
    };
    // The first stored row of an invoice is the invoice (a second issue is dropped by its
    // insert token; this guards against one that was not).
    sql.text = format!(
        "SELECT argMin(document, issued_at) AS document FROM billing_invoices \
         WHERE tenant_id = {t}{p} GROUP BY invoice_id ORDER BY any(period)"
    );
    sql
}

async fn issued(
    state: &AppState,
    tenant: &str,
    period: Option<&str>,
) -> Result<Vec<Invoice>, ApiError> {
    let rows: Vec<DocRow> =
        fetch(&state.client, &state.limits, &issued_sql(tenant, period)).await?;
    rows.iter()
        .map(|r| {
            serde_json::from_str(&r.document)
                .map_err(|e| ApiError::storage(&format!("stored invoice unreadable: {e}")))
        })
        .collect()
}

/// The local month starts strictly inside `(from, to)` (ms), `from` being one.
fn month_starts(
    from: chrono::DateTime<Utc>,
    to: chrono::DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Result<Vec<i64>, ApiError> {
    let mut out = Vec::new();
    let mut month = from.with_timezone(&tz).format("%Y-%m").to_string();
    loop {
        let end = month_range(&month, tz)?.end;
        if end >= to {
            return Ok(out);
        }
        out.push(end.timestamp_millis());
        month = end.with_timezone(&tz).format("%Y-%m").to_string();
    }
}

/// The draft invoice of `tenant` for `period` as of now.
async fn draft(state: &AppState, tenant: &str, period: &str) -> Result<Invoice, ApiError> {
    let tz = state.zones.of(Some(tenant));
    let range = month_range(period, tz)?;
    let earlier: Vec<Invoice> = issued(state, tenant, None)
        .await?
        .into_iter()
        .filter(|i| i.period.as_str() < period)
        .collect();
    let from = match earlier.iter().map(|i| i.period.as_str()).min() {
        Some(p) => month_range(p, tz)?.start,
        None => range.start,
    };
    let rows: Vec<GroupRow> = fetch(
        &state.client,
        &state.limits,
        &groups_sql(
            tenant,
            from.timestamp_millis(),
            range.end.timestamp_millis(),
            tz.name(),
            &month_starts(from, range.end, tz)?,
        ),
    )
    .await?;
    let groups = rows
        .into_iter()
        .map(|r| {
            Ok(Group {
                amount: money(&r.cost_text)?,
                billing_amount: money(&r.billing_cost_text)?,
                tokens: TokenCounts {
                    input: r.input_tokens,
                    output: r.output_tokens,
                    cached_input: r.cached_input_tokens,
                    cache_write_5m: r.cache_write_tokens,
                    cache_write_1h: r.cache_write_1h_tokens,
                    reasoning: r.reasoning_tokens,
                },
                event_amount: money(&r.event_cost_text)?,
                requests: r.events,
                period: r.period,
                model: r.model,
                department: r.department,
                project: r.project,
                currency: r.currency,
                billing_currency: r.billing_currency,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let rates: Vec<RateRow> =
        fetch(&state.client, &state.limits, &rates_sql(tenant, &range)).await?;
    let rates = rates
        .into_iter()
        .map(|r| {
            Ok(RateUsed {
                rate: money(&r.rate_text)?,
                from: r.currency,
                to: r.billing_currency,
                first_used: local(r.first_s, tz),
                last_used: local(r.last_s, tz),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let item_rows: Vec<ItemRow> =
        fetch(&state.client, &state.limits, &items_sql(tenant, &range)).await?;
    let items = items_of(period, item_rows)?;
    Ok(assemble(Inputs {
        tenant,
        period,
        time_zone: tz.name(),
        period_start: local(range.start.timestamp(), tz),
        period_end: local(range.end.timestamp(), tz),
        groups: &groups,
        rates,
        issued: &earlier,
        items: &items,
        terms: state.terms.of(tenant),
    }))
}

fn respond(inv: Invoice, csv: bool) -> Result<Response, ApiError> {
    if csv {
        let body = to_csv(&inv).map_err(|e| ApiError::storage(&e))?;
        Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
    } else {
        Ok(Json(inv).into_response())
    }
}

fn wants_csv(raw: Option<&str>) -> Result<bool, ApiError> {
    let pairs = QueryPairs::parse(raw)?;
    pairs.check_keys(&["format"], false)?;
    match pairs.one("format")?.as_deref() {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(_) => Err(ApiError::bad_request(
            "invalid_format",
            "format is json or csv",
        )),
    }
}

/// A tenant's invoice for a month: the issued invoice if there is one (it never changes),
/// else a draft as of now. `?format=csv` for CSV.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/invoices/{period}",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("period" = String, Path, description = "YYYY-MM"),
           ("format" = Option<String>, Query, description = "json (default) or csv")),
    responses((status = 200, body = Invoice), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_invoice(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, period)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    state.keys.authenticate(&headers)?.check_tenant(&tenant)?;
    let csv = wants_csv(raw.as_deref())?;
    month_range(&period, state.zones.of(Some(&tenant)))?;
    if let Some(inv) = issued(&state, &tenant, Some(&period)).await?.pop() {
        return respond(inv, csv);
    }
    respond(draft(&state, &tenant, &period).await?, csv)
}

/// Issues a tenant's invoice for a month (admin key): stores the draft as of now, once.
/// Issuing again returns the stored invoice unchanged. A month cannot be issued after a
/// later one (409): its late usage belongs on the next invoice as an adjustment.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/invoices/{period}/issue",
    params(("tenant" = String, Path, description = "Tenant id"),
           ("period" = String, Path, description = "YYYY-MM")),
    responses((status = 200, body = Invoice), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn issue_invoice(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, period)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = checked_value("tenant", &tenant)?;
    state.keys.authenticate(&headers)?.check_admin()?;
    month_range(&period, state.zones.of(Some(&tenant)))?;
    let all = issued(&state, &tenant, None).await?;
    if let Some(inv) = all.iter().find(|i| i.period == period) {
        return respond(inv.clone(), false);
    }
    if all.iter().any(|i| i.period > period) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "later_invoice_issued",
            "a later month is already issued; this month's usage is billed there as adjustments",
        ));
    }
    let mut inv = draft(&state, &tenant, &period).await?;
    let now = Utc::now();
    inv.status = "issued".into();
    inv.issued_at = Some(now.to_rfc3339());
    let document = serde_json::to_string(&inv).map_err(|e| ApiError::storage(&e))?;
    let id = invoice_id(&tenant, &period);
    let mut insert = state
        .client
        .insert::<StoredInvoice>("billing_invoices")
        .await
        .map_err(|e| ApiError::storage(&e))?
        .with_setting("insert_deduplication_token", format!("invoice/{id}"))
        .with_timeouts(
            Some(state.limits.query_timeout()),
            Some(state.limits.query_timeout()),
        );
    insert
        .write(&StoredInvoice {
            invoice_id: id,
            tenant_id: tenant.clone(),
            period: period.clone(),
            issued_at: now,
            document,
        })
        .await
        .map_err(|e| ApiError::storage(&e))?;
    insert.end().await.map_err(|e| ApiError::storage(&e))?;
    tracing::info!(tenant = %tenant, period = %period, "invoice issued");
    let stored = issued(&state, &tenant, Some(&period))
        .await?
        .pop()
        .ok_or_else(|| ApiError::storage(&"issued invoice not found after insert"))?;
    respond(stored, false)
}
