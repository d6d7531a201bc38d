//! Metric names and the Prometheus registry of HTTP ingest, served on `/metrics`.
//! Every name is `costpipe_ingest_http_<name>`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of a counter by rejection reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Label of the rate-limit counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLabel {
    pub tenant: String,
    pub limit: String,
}

/// Label of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

/// Label of a counter by body format.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabel {
    pub format: String,
}

/// Every metric HTTP ingest exports.
#[derive(Clone)]
pub struct Metrics {
    /// `requests_total{status}`: answered requests by HTTP status.
    pub requests: Family<StatusLabel, Counter>,
    /// `events_received_total{format}`: events found in request bodies.
    pub events_received: Family<FormatLabel, Counter>,
    /// `events_accepted_total`: events acknowledged by the broker (answered `accepted`).
    pub events_accepted: Counter,
    /// `rejections_total{reason}`: events and whole bodies refused, by reason.
    pub rejections: Family<ReasonLabel, Counter>,
    /// `dead_letters_total{reason}`: dead letters the broker acknowledged, by reason.
    pub dead_letters: Family<ReasonLabel, Counter>,
    /// `dead_letter_failures_total`: dead letters that could not be delivered.
    pub dead_letter_failures: Counter,
    /// `delivery_failures_total`: valid events the broker did not acknowledge (answered `failed`).
    pub delivery_failures: Counter,
    /// `unauthorized_total`: requests without a known API key.
    pub unauthorized: Counter,
    /// `connections_refused_total{reason}`: connections closed by the service:
    /// `max_connections` (over the cap at accept, every connection busy),
    /// `evicted_waiting` (closed at the cap to make room: it had waited longest for a
    /// request), `header_read_timeout` (headers too slow), `idle_timeout` (keep-alive idle).
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// `requests_timed_out_total`: requests answered 408 by the whole-request deadline.
    pub requests_timed_out: Counter,
    /// `rate_limited_total{tenant, limit}`: requests refused by a tenant's rate (`events` or
    /// `bytes`); tenants are the configured ones, so the label set is bounded.
    pub rate_limited: Family<RateLabel, Counter>,
    /// `request_seconds`: time from the request to the answer of `POST /v1/events`.
    pub request_seconds: Histogram,
    registry: std::sync::Arc<Registry>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("costpipe_ingest_http");
        let requests = Family::<StatusLabel, Counter>::default();
        let events_received = Family::<FormatLabel, Counter>::default();
        let events_accepted = Counter::default();
        let rejections = Family::<ReasonLabel, Counter>::default();
        let dead_letters = Family::<ReasonLabel, Counter>::default();
        let dead_letter_failures = Counter::default();
        let delivery_failures = Counter::default();
        let unauthorized = Counter::default();
        let connections_refused = Family::<ReasonLabel, Counter>::default();
        let requests_timed_out = Counter::default();
        let rate_limited = Family::<RateLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused (429, or 413 when larger than a second's worth) by a tenant's rate, by tenant and limit (events, bytes)",
            rate_limited.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed by the service, by reason (max_connections, evicted_waiting, header_read_timeout, idle_timeout)",
            connections_refused.clone(),
        );
        registry.register(
            "requests_timed_out",
            "Requests answered 408 because the whole-request deadline passed",
            requests_timed_out.clone(),
        );
        let request_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "requests",
            "Answered POST /v1/events requests, by HTTP status",
            requests.clone(),
        );
        registry.register(
            "events_received",
            "Events found in request bodies, by body format",
            events_received.clone(),
        );
        registry.register(
            "events_accepted",
            "Events acknowledged by the broker",
            events_accepted.clone(),
        );
        registry.register(
            "rejections",
            "Events and whole request bodies refused, by reason code",
            rejections.clone(),
        );
        registry.register(
            "dead_letters",
            "Dead letters acknowledged by the broker, by reason code",
            dead_letters.clone(),
        );
        registry.register(
            "dead_letter_failures",
            "Dead letters the broker did not acknowledge",
            dead_letter_failures.clone(),
        );
        registry.register(
            "delivery_failures",
            "Valid events the broker did not acknowledge",
            delivery_failures.clone(),
        );
        registry.register(
            "unauthorized",
            "Requests without a known API key",
            unauthorized.clone(),
        );
        registry.register(
            "request_seconds",
            "Duration of POST /v1/events until the answer",
            request_seconds.clone(),
        );
        Metrics {
            requests,
            events_received,
            events_accepted,
            rejections,
            dead_letters,
            dead_letter_failures,
            delivery_failures,
            unauthorized,
            connections_refused,
            requests_timed_out,
            rate_limited,
            request_seconds,
            registry: std::sync::Arc::new(registry),
        }
    }

    /// Counts a rejection.
    pub fn rejected(&self, reason: &str) {
        self.rejections
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a refused or closed connection.
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a request refused by a tenant's rate.
    pub fn rate_limited(&self, tenant: &str, limit: &str) {
        self.rate_limited
            .get_or_create(&RateLabel {
                tenant: tenant.to_string(),
                limit: limit.to_string(),
            })
            .inc();
    }

    /// Counts a delivered dead letter.
    pub fn dead_lettered(&self, reason: &str) {
        self.dead_letters
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let m = Metrics::new();
        m.rejected("negative_tokens");
        m.dead_lettered("negative_tokens");
        m.events_accepted.inc();
        let text = m.encode();
        for line in [
            "costpipe_ingest_http_rejections_total{reason=\"negative_tokens\"} 1",
            "costpipe_ingest_http_dead_letters_total{reason=\"negative_tokens\"} 1",
            "costpipe_ingest_http_events_accepted_total 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
