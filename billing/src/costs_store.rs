//! Running a planned cost question on ClickHouse and reading its rows. Money is read as
//! decimal text (`toString(sum(...))`) and parsed into `Decimal`; no float ever holds it.

use std::str::FromStr;

use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::limits::Limits;
use crate::plan::Sql;

/// One aggregated row as ClickHouse returns it (`plan::cost_sql`).
#[derive(Debug, Row, Deserialize)]
pub struct RawCostRow {
    pub keys: Vec<String>,
    pub bucket: i64,
    pub currency: String,
    pub billing_currency: String,
    pub events: u64,
    pub unpriced_events: i64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub cost_text: String,
    pub billing_cost_text: String,
    pub cache_savings_text: String,
    pub billing_cache_savings_text: String,
}

/// Tokens by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    /// 5-minute cache writes.
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    /// Part of `output`.
    pub reasoning: u64,
}

impl TokenCounts {
    pub fn of(r: &RawCostRow) -> TokenCounts {
        TokenCounts {
            input: r.input_tokens,
            output: r.output_tokens,
            cached_input: r.cached_input_tokens,
            cache_write_5m: r.cache_write_tokens,
            cache_write_1h: r.cache_write_1h_tokens,
            reasoning: r.reasoning_tokens,
        }
    }

    pub fn add(&mut self, o: &TokenCounts) {
        self.input += o.input;
        self.output += o.output;
        self.cached_input += o.cached_input;
        self.cache_write_5m += o.cache_write_5m;
        self.cache_write_1h += o.cache_write_1h;
        self.reasoning += o.reasoning;
    }

    /// `(kind, count)` for every kind, in a fixed order.
    pub fn kinds(&self) -> [(&'static str, u64); 6] {
        [
            ("input", self.input),
            ("cached_input", self.cached_input),
            ("cache_write_5m", self.cache_write_5m),
            ("cache_write_1h", self.cache_write_1h),
            ("output", self.output),
            ("reasoning", self.reasoning),
        ]
    }
}

/// Parses a decimal ClickHouse returned as text.
pub fn money(s: &str) -> Result<Decimal, ApiError> {
    Decimal::from_str(s)
        .map(|d| d.normalize())
        .map_err(|e| ApiError::storage(&format!("ClickHouse returned {s:?} as money: {e}")))
}

/// Runs `sql` under the limits and returns its rows.
pub async fn fetch<T>(
    client: &clickhouse::Client,
    limits: &Limits,
    sql: &Sql,
) -> Result<Vec<T>, ApiError>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    let query = limits.query(client, sql);
    // ClickHouse stops the query at `max_execution_time`; this deadline also covers a
    // server that stops answering (one second of grace for the error to arrive).
    let deadline = limits.query_timeout() + std::time::Duration::from_secs(1);
    match tokio::time::timeout(deadline, query.fetch_all::<T>()).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(ApiError::storage(&e)),
        Err(_) => Err(ApiError::storage(&"Code: 159. billing deadline passed")),
    }
}
