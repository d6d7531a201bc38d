//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong in ClickHouse plumbing.
#[derive(Debug, Error)]
pub enum Error {
    /// The configured database name is not a plain identifier (it is spliced into DDL).
    #[error("invalid ClickHouse database name {0:?}")]
    InvalidDatabaseName(String),
    /// A setting is unusable (e.g. a timeout of 0 ms).
    #[error("invalid ClickHouse setting: {0}")]
    Config(String),
    /// A migration statement failed.
    #[error("migration {name} failed: {source}")]
    Migration {
        /// The migration's stable name.
        name: &'static str,
        /// What ClickHouse said.
        source: clickhouse::error::Error,
    },
    /// A call did not finish within its deadline ([`crate::with_timeout`]).
    #[error("{what} did not finish within {after_ms} ms")]
    Timeout {
        /// What was attempted.
        what: String,
        /// The deadline, in milliseconds.
        after_ms: u64,
    },
    /// Any other error from the ClickHouse client.
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::error::Error),
}
