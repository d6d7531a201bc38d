//! ClickHouse plumbing shared by every costpipe service that talks to ClickHouse (the
//! aggregator, `costpipe-reprice`, billing).
//!
//! This crate owns:
//! - [`ClickHouseArgs`]: the `--clickhouse-*` flags (`COSTPIPE_CLICKHOUSE_*`), declared once
//!   and flattened into each binary's config, and [`ClickHouseArgs::client`], which builds a
//!   [`clickhouse::Client`] with a connect timeout and socket read/write timeouts;
//! - [`migrations`]: applying `costpipe_schemas::clickhouse_ddl::MIGRATIONS`;
//! - [`retry`]: classifying errors as retryable or permanent, and retrying with exponential
//!   backoff and jitter.
//!
//! It must not know about any service or table beyond the migrations: it depends on
//! `costpipe-schemas` only, never on the aggregator, ingest, billing or pricing. Queries
//! and rows belong to the services. Nothing here exits the process.

pub mod args;
pub mod client;
pub mod error;
pub mod migrations;
pub mod retry;

pub use args::ClickHouseArgs;
pub use client::{build_client, with_timeout, ClientSettings};
pub use error::Error;
pub use migrations::migrate;
pub use retry::{classify, retry, Classify, ErrorClass, RetryPolicy};
