//! `HttpIngestConfig`: every setting of `costpipe-ingest-http`, from flags or the environment.

use std::net::SocketAddr;

use clap::Parser;

use costpipe_clickhouse::ClickHouseArgs;
use costpipe_kafka::KafkaArgs;
use costpipe_schemas::ValidationLimits;

use super::verdict::Rules;
use crate::dead_letters::DEFAULT_MAX_VALUE_BYTES;

const DAY_MS: i64 = 86_400_000;

/// The HTTP ingest service's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "costpipe-ingest-http",
    about = "HTTP ingest of usage events: JSON, JSON arrays and NDJSON in, the usage topic out"
)]
pub struct HttpIngestConfig {
    /// Listen address.
    #[arg(long, env = "COSTPIPE_INGEST_ADDR", default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// ClickHouse, where the aggregator stores events: read by `GET /v1/events/{event_id}`
    /// only (not needed to ingest).
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Most `GET /v1/events/{event_id}` lookups in flight at once (more: 429, retry after 1 s).
    #[arg(
        long,
        env = "COSTPIPE_INGEST_STATUS_MAX_IN_FLIGHT",
        default_value_t = 16
    )]
    pub status_max_in_flight: usize,
    /// Usage events topic.
    #[arg(
        long,
        env = "COSTPIPE_USAGE_TOPIC",
        default_value = "costpipe.usage.v1"
    )]
    pub usage_topic: String,
    /// Dead-letter topic.
    #[arg(
        long,
        env = "COSTPIPE_DEAD_LETTER_TOPIC",
        default_value = "costpipe.usage.dlq"
    )]
    pub dead_letter_topic: String,
    /// API keys: `tenant:sha256hex` pairs, comma-separated (hash = `printf %s "$KEY" | sha256sum`).
    #[arg(
        long,
        env = "COSTPIPE_INGEST_API_KEYS",
        default_value = "",
        hide_env_values = true
    )]
    pub api_keys: String,
    /// Largest request body, in bytes (larger: 413 body_too_large).
    #[arg(long, env = "COSTPIPE_INGEST_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers, in milliseconds: from accept
    /// for the first request, from its first byte for a later one on a keep-alive connection.
    #[arg(
        long,
        env = "COSTPIPE_INGEST_HEADER_READ_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub header_read_timeout_ms: u64,
    /// Deadline of a whole request (body included) until the answer, in milliseconds
    /// (past it: 408 request_timeout).
    #[arg(
        long,
        env = "COSTPIPE_INGEST_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub request_timeout_ms: u64,
    /// Idle keep-alive timeout, in milliseconds: a connection that answered a request and has
    /// not received a byte of the next one (HTTP/1), or has no stream open (HTTP/2), is closed
    /// after this. HTTP/2 connections are also pinged at this interval and closed when a ping
    /// is not answered within it. 0: no keep-alive (HTTP/1 closes after each answer), no pings.
    #[arg(
        long,
        env = "COSTPIPE_INGEST_IDLE_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub idle_timeout_ms: u64,
    /// Most open connections; past it, new connections are closed at accept.
    #[arg(
        long,
        env = "COSTPIPE_INGEST_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: usize,
    /// Most requests in flight on one connection (HTTP/2 concurrent streams; HTTP/1 serves
    /// one at a time).
    #[arg(
        long,
        env = "COSTPIPE_INGEST_MAX_REQUESTS_PER_CONNECTION",
        default_value_t = 100
    )]
    pub max_requests_per_connection: u32,
    /// Each tenant's rate in events per second, unless `tenant_rates` names it (0: no
    /// limit). The bucket holds one second's worth; over it: 429 with `Retry-After`.
    #[arg(
        long,
        env = "COSTPIPE_INGEST_RATE_EVENTS_PER_S",
        default_value_t = 50_000
    )]
    pub rate_events_per_s: u32,
    /// Each tenant's rate in body bytes per second (decompressed), unless `tenant_rates`
    /// names it (0: no limit).
    #[arg(
        long,
        env = "COSTPIPE_INGEST_RATE_BYTES_PER_S",
        default_value_t = 64 << 20
    )]
    pub rate_bytes_per_s: u32,
    /// Per-tenant rates: `tenant=events_per_s:bytes_per_s` pairs, comma-separated (0: no limit).
    #[arg(long, env = "COSTPIPE_INGEST_TENANT_RATES", default_value = "")]
    pub tenant_rates: String,
    /// Most events in one request (more: 413 batch_too_large).
    #[arg(
        long,
        env = "COSTPIPE_INGEST_MAX_BATCH_EVENTS",
        default_value_t = 10_000
    )]
    pub max_batch_events: usize,
    /// Most labels on one event.
    #[arg(long, env = "COSTPIPE_INGEST_MAX_LABELS", default_value_t = 32)]
    pub max_labels: usize,
    /// Longest label key or value, in bytes.
    #[arg(long, env = "COSTPIPE_INGEST_MAX_LABEL_BYTES", default_value_t = 256)]
    pub max_label_bytes: usize,
    /// Longest string field (ids, names), in bytes.
    #[arg(long, env = "COSTPIPE_INGEST_MAX_FIELD_BYTES", default_value_t = 256)]
    pub max_field_bytes: usize,
    /// How far before now an event time may lie, in milliseconds (default 400 days).
    #[arg(long, env = "COSTPIPE_INGEST_MAX_PAST_MS", default_value_t = 400 * DAY_MS)]
    pub max_past_ms: i64,
    /// How far after now an event time may lie, in milliseconds (default 1 day).
    #[arg(long, env = "COSTPIPE_INGEST_MAX_FUTURE_MS", default_value_t = DAY_MS)]
    pub max_future_ms: i64,
    /// Accept (and drop) fields the usage event does not have, instead of rejecting the event.
    #[arg(long, env = "COSTPIPE_INGEST_ALLOW_UNKNOWN_FIELDS")]
    pub allow_unknown_fields: bool,
    /// Largest dead-letter value in bytes; longer input is cut and flagged `costpipe.truncated`.
    #[arg(long, env = "COSTPIPE_INGEST_DEAD_LETTER_MAX_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES)]
    pub dead_letter_max_bytes: usize,
    /// How long an event may wait for the broker's acknowledgement, in milliseconds.
    #[arg(
        long,
        env = "COSTPIPE_INGEST_DELIVERY_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub delivery_timeout_ms: u32,
    /// How long the producer lets a batch fill, in milliseconds.
    #[arg(long, env = "COSTPIPE_INGEST_LINGER_MS", default_value_t = 10)]
    pub linger_ms: u32,
    /// Confluent-compatible schema registry: register the usage schema under
    /// `<usage topic>-value` at start-up and write the id it assigns (unset: the compiled-in ids).
    #[arg(long, env = "COSTPIPE_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// Create missing topics at start-up with this many usage partitions (0: do not create).
    #[arg(long, env = "COSTPIPE_CREATE_TOPICS_PARTITIONS", default_value_t = 8)]
    pub create_topics_partitions: i32,
}

impl HttpIngestConfig {
    /// Defaults, with `brokers`, topics and keys given (for tests and the benchmark).
    pub fn new(
        brokers: impl Into<String>,
        usage_topic: impl Into<String>,
        dead_letter_topic: impl Into<String>,
        api_keys: impl Into<String>,
    ) -> Self {
        let mut c = HttpIngestConfig::parse_from(["costpipe-ingest-http"]);
        c.kafka = KafkaArgs::new(brokers);
        c.usage_topic = usage_topic.into();
        c.dead_letter_topic = dead_letter_topic.into();
        c.api_keys = api_keys.into();
        c
    }

    /// The event rules.
    pub fn limits(&self) -> ValidationLimits {
        ValidationLimits {
            max_field_bytes: self.max_field_bytes,
            max_labels: self.max_labels,
            max_label_bytes: self.max_label_bytes,
            max_past_ms: self.max_past_ms,
            max_future_ms: self.max_future_ms,
        }
    }

    /// The request rules.
    pub fn rules(&self) -> Rules {
        Rules {
            limits: self.limits(),
            max_batch_events: self.max_batch_events,
            reject_unknown_fields: !self.allow_unknown_fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_shared_rules() {
        let c = HttpIngestConfig::new("b", "u", "d", "");
        assert_eq!(c.limits(), ValidationLimits::default());
        assert_eq!(c.addr.to_string(), "127.0.0.1:8090");
        assert!(c.rules().reject_unknown_fields);
        // The largest dead letter stays under Kafka's 1 MB default record size.
        assert!(c.dead_letter_max_bytes < 1_000_000);
    }
}
