//! The OpenAPI document (utoipa), served on `/openapi.json` and checked in as
//! `billing/openapi.json`; a test keeps the two equal.

use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The API.
#[derive(OpenApi)]
#[openapi(
    info(title = "costpipe billing", description = "Costs (with cache savings), top-N, invoices with items and terms, reports with suggestions, trace cost allocation, forecasts, anomalies, budget states, control events and the aggregator's live windows over costpipe's ClickHouse tables. Money is exact decimal text."),
    paths(
        crate::costs::tenant_costs,
        crate::costs::all_costs,
        crate::costs::tenant_top,
        crate::costs::all_top,
        crate::top_requests::top_requests,
        crate::top_requests::top_traces,
        crate::invoices::get_invoice,
        crate::invoices::issue_invoice,
        crate::forecast_api::forecast,
        crate::anomalies_api::anomalies,
        crate::reports_api::report,
        crate::traces_api::allocation,
        crate::budgets_api::list,
        crate::budgets_api::get_budget,
        crate::budgets_api::put_budget,
        crate::budgets_api::delete_budget,
        crate::budgets_api::budget_status,
        crate::dashboard_api::whoami,
        crate::dashboard_api::budget_states,
        crate::dashboard_api::controls,
        crate::live_api::live,
    ),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into())
}

pub async fn serve() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_document_is_what_is_served() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let served = super::document();
        if std::env::var("UPDATE_OPENAPI").is_ok() {
            std::fs::write(path, &served).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            checked_in, served,
            "billing/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p costpipe-billing openapi"
        );
    }
}
