//! The aggregator service around the pure core (`costpipe-aggregator-core`): the Kafka
//! source, the ClickHouse sink and position store, the dead-letter and control producers,
//! catalog reloading, metrics, and the run loop. Binaries: `costpipe-aggregator` and
//! `costpipe-reprice`.

pub mod catalog_reload;
pub mod clickhouse_reprice;
pub mod clickhouse_sink;
pub mod config;
pub mod kafka_sinks;
pub mod kafka_source;
pub mod pipeline;
pub mod telemetry;
