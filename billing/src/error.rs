//! The one error shape of the API: `{"error": "<code>", "message": "<text>"}`. Messages are
//! written here or by the request checks, never copied from ClickHouse: a storage failure is
//! logged in full and answered with a fixed text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_grain`, `forbidden`, `too_many_rows`.
    pub error: String,
    /// Human-readable explanation; never contains database internals.
    pub message: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: &str) -> ApiError {
        ApiError {
            status,
            code,
            message: message.to_string(),
        }
    }

    pub fn bad_request(code: &'static str, message: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <key>` header is required",
        )
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this key may not read that tenant or that endpoint",
        )
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// A storage failure: logged with its cause, answered without it.
    pub fn storage(cause: &dyn std::fmt::Display) -> ApiError {
        let text = cause.to_string();
        tracing::error!(error = %text, "ClickHouse query failed");
        // ClickHouse names the limit it hit (codes 158 TOO_MANY_ROWS, 159 TIMEOUT_EXCEEDED,
        // 396 TOO_MANY_ROWS_OR_BYTES, 241 MEMORY_LIMIT_EXCEEDED): tell the caller which
        // kind of limit, in our words.
        let limit = |code: &str| text.contains(&format!("Code: {code}."));
        if limit("159") {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "query_timeout",
                "the query took longer than the billing query timeout; narrow the range or the grouping",
            )
        } else if limit("158") || limit("396") || limit("241") {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "query_too_large",
                "the query exceeds the billing limits on groups, rows or memory; narrow it",
            )
        } else {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the cost store could not answer; try again later",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}
