//! Metric names and the Prometheus registry of the example gateway, served on `/metrics`.
//! Every name is `costpipe_gateway_<name>`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of the decision counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

/// Label of a counter by reason code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Label of the usage event counter: `reported` (the provider's usage) or `estimated`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UsageLabel {
    pub usage: String,
}

/// Labels of the request counter: the route's template and the answer's status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatusLabels {
    pub route: String,
    pub status: u16,
}

/// Label of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

/// 1 ms to about 65 s: a refusal is answered in microseconds, a provider call in seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric the example gateway exports.
#[derive(Clone)]
pub struct Metrics {
    /// `decisions_total{action}`: `decide()` answers for chat requests.
    pub decisions: Family<ActionLabel, Counter>,
    /// `refusals_total{reason}`: requests answered without calling the provider (the error
    /// code of the answer: `budget_exceeded`, `budget_throttled`,
    /// `budget_reservation_denied`, `control_view_stale`, …) or failed upstream.
    pub refusals: Family<ReasonLabel, Counter>,
    /// `usage_events_total{usage}`: usage events handed to the emitter.
    pub usage_events: Family<UsageLabel, Counter>,
    /// `usage_event_failures_total`: usage events not delivered (or invalid).
    pub usage_event_failures: Counter,
    /// `requests_total{route, status}`: answered requests, by route template (`unmatched`
    /// for unknown paths) and HTTP status.
    pub requests: Family<RouteStatusLabels, Counter>,
    /// `request_seconds{route}`: time from a request to its answer's head (a streamed
    /// answer's body is not waited for).
    pub request_seconds: Family<RouteLabel, Histogram, fn() -> Histogram>,
    registry: std::sync::Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("costpipe_gateway");
        let decisions = Family::<ActionLabel, Counter>::default();
        let refusals = Family::<ReasonLabel, Counter>::default();
        let usage_events = Family::<UsageLabel, Counter>::default();
        let usage_event_failures = Counter::default();
        let requests = Family::<RouteStatusLabels, Counter>::default();
        let request_seconds =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "requests",
            "Answered requests, by route template and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_seconds",
            "Time from a request to its answer's head, by route template",
            request_seconds.clone(),
        );
        registry.register(
            "decisions",
            "decide() answers for chat requests, by action",
            decisions.clone(),
        );
        registry.register(
            "refusals",
            "Requests not forwarded (or failed upstream), by error code",
            refusals.clone(),
        );
        registry.register(
            "usage_events",
            "Usage events handed to the emitter, by usage source (reported, estimated)",
            usage_events.clone(),
        );
        registry.register(
            "usage_event_failures",
            "Usage events not delivered or invalid",
            usage_event_failures.clone(),
        );
        Metrics {
            decisions,
            refusals,
            usage_events,
            usage_event_failures,
            requests,
            request_seconds,
            registry: std::sync::Arc::new(registry),
        }
    }

    /// Counts a decision.
    pub fn decided(&self, action: &str) {
        self.decisions
            .get_or_create(&ActionLabel {
                action: action.to_string(),
            })
            .inc();
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a usage event handed to the emitter.
    pub fn emitted(&self, estimated: bool) {
        let usage = if estimated { "estimated" } else { "reported" };
        self.usage_events
            .get_or_create(&UsageLabel {
                usage: usage.to_string(),
            })
            .inc();
    }

    /// Counts an answered request and its latency.
    pub fn answered(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RouteStatusLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_route_and_status_with_latency() {
        let m = Metrics::new();
        m.answered("/v1/chat/completions", 200, 0.002);
        m.answered("/v1/chat/completions", 429, 0.0001);
        let text = m.encode();
        for line in [
            "costpipe_gateway_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1",
            "costpipe_gateway_requests_total{route=\"/v1/chat/completions\",status=\"429\"} 1",
            "costpipe_gateway_request_seconds_count{route=\"/v1/chat/completions\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
