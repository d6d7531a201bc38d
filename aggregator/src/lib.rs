//! The aggregator service around the pure core (`costpipe-aggregator-core`): the Kafka
//! source, the ClickHouse store (positions and rows), the epoch sink, the live view, the
//! dead-letter and control producers, catalog reloading, metrics (the usage metrics are fed
//! by stored epochs), and the run loop. Binaries: `costpipe-aggregator` and
//! `costpipe-reprice`.

pub mod budget_shell;
pub mod budget_source;
pub mod catalog_reload;
pub mod clickhouse_budgets;
pub mod clickhouse_reprice;
pub mod clickhouse_store;
pub mod config;
pub mod epoch_sink;
pub mod events_block;
pub mod kafka_sinks;
pub mod kafka_source;
pub mod live;
pub mod pipeline;
pub mod telemetry;
pub mod usage_metrics;
