//! Limits that keep one request from taking the database down, and how they are applied to
//! every query: as ClickHouse settings (it stops the query itself) and as a deadline here.

use std::time::Duration;

use clap::Args;

use crate::plan::{Param, Sql};

/// Limits of a billing query. Every one is an environment variable with a safe default.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Limits {
    /// Longest time range of a question, in days.
    #[arg(long, env = "COSTPIPE_BILLING_MAX_RANGE_DAYS", default_value_t = 400)]
    pub max_range_days: i64,
    /// Most dimensions in one `group_by`.
    #[arg(long, env = "COSTPIPE_BILLING_MAX_GROUP_BY", default_value_t = 4)]
    pub max_group_by: usize,
    /// Most distinct groups ClickHouse may build for one query.
    #[arg(long, env = "COSTPIPE_BILLING_MAX_GROUPS", default_value_t = 1_000_000)]
    pub max_groups: u64,
    /// Most rows in one answer; a larger answer is refused (422), never silently cut.
    #[arg(long, env = "COSTPIPE_BILLING_MAX_ROWS", default_value_t = 50_000)]
    pub max_rows: u64,
    /// Largest `n` of a top-N question.
    #[arg(long, env = "COSTPIPE_BILLING_MAX_TOP", default_value_t = 1_000)]
    pub max_top: u64,
    /// Longest a query may run, in milliseconds.
    #[arg(
        long,
        env = "COSTPIPE_BILLING_QUERY_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub query_timeout_ms: u64,
    /// Most memory one query may use in ClickHouse, in bytes.
    #[arg(
        long,
        env = "COSTPIPE_BILLING_MAX_QUERY_MEMORY_BYTES",
        default_value_t = 2_000_000_000
    )]
    pub max_query_memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_range_days: 400,
            max_group_by: 4,
            max_groups: 1_000_000,
            max_rows: 50_000,
            max_top: 1_000,
            query_timeout_ms: 10_000,
            max_query_memory_bytes: 2_000_000_000,
        }
    }
}

impl Limits {
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    /// `sql` as a query on `client`, with its parameters bound and the limits set.
    pub fn query(&self, client: &clickhouse::Client, sql: &Sql) -> clickhouse::query::Query {
        let mut q = client
            .query(&sql.text)
            .with_setting(
                "max_execution_time",
                (self.query_timeout_ms.div_ceil(1000)).to_string(),
            )
            .with_setting("timeout_overflow_mode", "throw")
            .with_setting("max_rows_to_group_by", self.max_groups.to_string())
            .with_setting("group_by_overflow_mode", "throw")
            .with_setting("max_memory_usage", self.max_query_memory_bytes.to_string());
        for (name, p) in &sql.params {
            q = match p {
                Param::Str(s) => q.param(name, s),
                Param::Strs(v) => q.param(name, v),
                Param::Int(i) => q.param(name, i),
                Param::UInt(u) => q.param(name, u),
            };
        }
        q
    }
}
