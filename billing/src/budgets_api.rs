//! Budgets through the billing API: `GET /v1/budgets`, `GET|PUT|DELETE /v1/budgets/{id}` and
//! `GET /v1/budgets/{id}/status`. Definitions are read from and written to the compacted
//! budgets topic (the aggregator follows it); the status is the latest state record of the
//! budget in `budget_control_history`. An admin key manages every budget; a tenant key only
//! budgets whose scope names its tenant. Definitions are checked for shape here; the
//! aggregator checks them against the catalog (currencies, models) and logs a refusal.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Extension, Json, Router};
use clickhouse::Row;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use costpipe_kafka::KafkaArgs;
use costpipe_schemas::budget_definition::valid_budget_id;
use costpipe_schemas::BudgetDefinition;

use crate::auth::Principal;
use crate::costs_store::fetch;
use crate::error::{ApiError, ErrorBody};
use crate::plan::{Param, Sql};
use crate::AppState;

/// How long reading or writing the budgets topic may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where budgets live.
#[derive(Debug, Clone, clap::Args)]
pub struct BudgetsArgs {
    /// Kafka connection (the budgets topic).
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Compacted budgets topic.
    #[arg(
        long,
        env = "COSTPIPE_BUDGET_TOPIC",
        default_value = "costpipe.budgets.v1"
    )]
    pub budget_topic: String,
}

/// The budgets topic's client, shared by the handlers (an axum `Extension`).
pub struct BudgetsClient {
    brokers: String,
    topic: String,
    producer: FutureProducer,
}

impl BudgetsClient {
    /// A producer for the budgets topic (connects lazily).
    pub fn new(args: &BudgetsArgs) -> anyhow::Result<BudgetsClient> {
        let producer = args
            .kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", KAFKA_TIMEOUT.as_millis().to_string())
            .create()?;
        Ok(BudgetsClient {
            brokers: args.kafka.brokers.clone(),
            topic: args.budget_topic.clone(),
            producer,
        })
    }

    /// Every budget on the topic (latest value per key, tombstones applied).
    async fn table(&self) -> Result<Vec<BudgetDefinition>, ApiError> {
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        let records = tokio::task::spawn_blocking(move || {
            costpipe_kafka::read_to_end(&brokers, &topic, KAFKA_TIMEOUT)
        })
        .await
        .map_err(|e| kafka_error(&e))?
        .map_err(|e| kafka_error(&e))?;
        let mut table = std::collections::BTreeMap::new();
        for r in records {
            let key = String::from_utf8_lossy(&r.key).into_owned();
            match r.value.as_deref().map(BudgetDefinition::from_json) {
                Some(Ok(d)) if d.budget_id == key => {
                    table.insert(key, d);
                }
                Some(_) => {} // not a valid definition: the aggregator ignores it too
                None => {
                    table.remove(&key);
                }
            }
        }
        Ok(table.into_values().collect())
    }

    async fn send(&self, id: &str, value: Option<&[u8]>) -> Result<(), ApiError> {
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).key(id);
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.producer
            .send(record, Timeout::After(KAFKA_TIMEOUT))
            .await
            .map_err(|(e, _)| kafka_error(&e))?;
        Ok(())
    }
}

fn kafka_error(cause: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %cause, "budgets topic unavailable");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "budgets_unavailable",
        "the budgets topic cannot be reached; retry later",
    )
}

/// One budget: its definition (as on the budgets topic) and, on the status endpoint, its
/// latest published state.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetView {
    pub budget_id: String,
    /// The definition (see DEVELOPERS.md, Budgets): scope, period, limit, currency, ladder, …
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
    /// The latest state record (control record v2 as JSON), if any was published.
    #[schema(value_type = Option<Object>)]
    pub status: Option<serde_json::Value>,
}

fn view(d: &BudgetDefinition, status: Option<serde_json::Value>) -> BudgetView {
    BudgetView {
        budget_id: d.budget_id.clone(),
        definition: serde_json::to_value(d).unwrap_or_default(),
        status,
    }
}

fn tenant_of(d: &BudgetDefinition) -> Option<&str> {
    d.scope.get("tenant").map(String::as_str)
}

/// Whether `who` may see and change `d`: admins every budget, a tenant key those scoped to
/// its tenant.
fn may_manage(who: &Principal, d: &BudgetDefinition) -> bool {
    match who {
        Principal::Admin => true,
        Principal::Tenant(t) => tenant_of(d) == Some(t.as_str()),
    }
}

fn client(ext: Option<Extension<Arc<BudgetsClient>>>) -> Result<Arc<BudgetsClient>, ApiError> {
    ext.map(|Extension(c)| c).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "budgets_unavailable",
            "budgets are not configured on this instance",
        )
    })
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    if valid_budget_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_budget_id",
            "a budget id is 1-128 characters of [A-Za-z0-9._:-]",
        ))
    }
}

async fn find(c: &BudgetsClient, who: &Principal, id: &str) -> Result<BudgetDefinition, ApiError> {
    // Another tenant's budget answers 404 like a missing one: its existence is not told.
    c.table()
        .await?
        .into_iter()
        .find(|d| d.budget_id == id && may_manage(who, d))
        .ok_or_else(|| ApiError::not_found("no such budget"))
}

/// The budgets this key manages.
#[utoipa::path(get, path = "/v1/budgets",
    responses((status = 200, body = [BudgetView]), (status = 401, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    ext: Option<Extension<Arc<BudgetsClient>>>,
) -> Result<Json<Vec<BudgetView>>, ApiError> {
    let who = state.keys.authenticate(&headers)?;
    let c = client(ext)?;
    Ok(Json(
        c.table()
            .await?
            .iter()
            .filter(|d| may_manage(&who, d))
            .map(|d| view(d, None))
            .collect(),
    ))
}

/// One budget.
#[utoipa::path(get, path = "/v1/budgets/{id}",
    params(("id" = String, Path, description = "Budget id")),
    responses((status = 200, body = BudgetView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_budget(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ext: Option<Extension<Arc<BudgetsClient>>>,
) -> Result<Json<BudgetView>, ApiError> {
    let who = state.keys.authenticate(&headers)?;
    checked_id(&id)?;
    let c = client(ext)?;
    Ok(Json(view(&find(&c, &who, &id).await?, None)))
}

/// Creates or replaces a budget. The body is the definition; its `budget_id` must be the
/// path's. A tenant key may only write budgets scoped to its tenant.
#[utoipa::path(put, path = "/v1/budgets/{id}",
    params(("id" = String, Path, description = "Budget id")),
    request_body(content = Object, description = "The budget definition"),
    responses((status = 200, body = BudgetView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_budget(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ext: Option<Extension<Arc<BudgetsClient>>>,
    body: axum::body::Bytes,
) -> Result<Json<BudgetView>, ApiError> {
    let who = state.keys.authenticate(&headers)?;
    checked_id(&id)?;
    let def = BudgetDefinition::from_json(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_budget",
            &e.to_string(),
        )
    })?;
    if def.budget_id != id {
        return Err(ApiError::bad_request(
            "budget_id_mismatch",
            "the body's budget_id must be the path's",
        ));
    }
    if !may_manage(&who, &def) {
        return Err(ApiError::forbidden());
    }
    let c = client(ext)?;
    if let Principal::Tenant(_) = who {
        // A tenant may not take over an id another tenant's budget uses.
        let table = c.table().await?;
        if table
            .iter()
            .any(|d| d.budget_id == id && !may_manage(&who, d))
        {
            return Err(ApiError::forbidden());
        }
    }
    let value = serde_json::to_vec(&def).map_err(|e| kafka_error(&e))?;
    c.send(&id, Some(&value)).await?;
    Ok(Json(view(&def, None)))
}

/// Deletes a budget (a tombstone; the aggregator publishes its recovery if it was not OK).
#[utoipa::path(delete, path = "/v1/budgets/{id}",
    params(("id" = String, Path, description = "Budget id")),
    responses((status = 204), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_budget(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ext: Option<Extension<Arc<BudgetsClient>>>,
) -> Result<StatusCode, ApiError> {
    let who = state.keys.authenticate(&headers)?;
    checked_id(&id)?;
    let c = client(ext)?;
    find(&c, &who, &id).await?;
    c.send(&id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Row, Deserialize)]
struct StatusRow {
    record: String,
}

/// A budget with its latest published state (level, spend, limit, period, …).
#[utoipa::path(get, path = "/v1/budgets/{id}/status",
    params(("id" = String, Path, description = "Budget id")),
    responses((status = 200, body = BudgetView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn budget_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ext: Option<Extension<Arc<BudgetsClient>>>,
) -> Result<Json<BudgetView>, ApiError> {
    let who = state.keys.authenticate(&headers)?;
    checked_id(&id)?;
    let c = client(ext)?;
    let def = find(&c, &who, &id).await?;
    let mut sql = Sql::default();
    let p = sql.bind(Param::Str(id.clone()));
    sql.text = format!(
        "SELECT argMax(record, decided_at) AS record FROM budget_control_history \
         WHERE budget_id = {p} AND kind = 'STATE' GROUP BY budget_id"
    );
    let rows: Vec<StatusRow> = fetch(&state.client, &state.limits, &sql).await?;
    let status = rows
        .first()
        .and_then(|r| serde_json::from_str(&r.record).ok());
    Ok(Json(view(&def, status)))
}

/// The routes, merged into the API's router. Handlers answer 503 unless a
/// [`BudgetsClient`] extension is installed (`main.rs` does).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/budgets", get(list))
        .route(
            "/v1/budgets/{id}",
            get(get_budget).put(put_budget).delete(delete_budget),
        )
        .route("/v1/budgets/{id}/status", get(budget_status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(tenant: Option<&str>) -> BudgetDefinition {
        let mut v = serde_json::json!({"budget_id": "b", "period": {"calendar": "day"},
            "limit": "5", "currency": "USD"});
        if let Some(t) = tenant {
            v["scope"] = serde_json::json!({"tenant": t});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tenant_keys_manage_their_tenants_budgets_only() {
        let acme = Principal::Tenant("acme".into());
        assert!(may_manage(&acme, &def(Some("acme"))));
        assert!(!may_manage(&acme, &def(Some("globex"))));
        assert!(
            !may_manage(&acme, &def(None)),
            "global budgets are the admin's"
        );
        assert!(may_manage(&Principal::Admin, &def(None)));
    }

    #[test]
    fn ids_are_checked_before_anything_else() {
        assert!(checked_id("acme:research:day").is_ok());
        assert_eq!(checked_id("a b").unwrap_err().code, "invalid_budget_id");
        assert_eq!(checked_id("").unwrap_err().code, "invalid_budget_id");
    }
}
