//! Billing's Prometheus metrics (served on `/metrics`): answered queries by the table that
//! answered them, answers by status, and request latency by route (the route's template,
//! e.g. `/v1/tenants/{tenant}/costs`, so the label set is bounded by the API).

use std::sync::Mutex;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::plan::Source;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// 1 ms to about 33 s: an answer from a rollup is milliseconds, a raw-events scan of a big
/// tenant seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    queries: Family<SourceLabel, Counter>,
    responses: Family<StatusLabel, Counter>,
    request_seconds: Family<RouteLabel, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let queries = Family::<SourceLabel, Counter>::default();
        let responses = Family::<StatusLabel, Counter>::default();
        let request_seconds =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "costpipe_billing_queries",
            "Cost queries answered, by the table that answered",
            queries.clone(),
        );
        registry.register(
            "costpipe_billing_responses",
            "HTTP answers by status code",
            responses.clone(),
        );
        registry.register(
            "costpipe_billing_request_seconds",
            "Time from a request to its answer, by route template (\"unmatched\" for unknown paths)",
            request_seconds.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            queries,
            responses,
            request_seconds,
        }
    }
}

impl Metrics {
    pub fn query(&self, source: Source) {
        let source = match source {
            Source::Day => "day",
            Source::Hour => "hour",
            Source::Minute => "minute",
            Source::DayUser => "day_user",
            Source::Raw => "raw",
        };
        self.queries
            .get_or_create(&SourceLabel {
                source: source.into(),
            })
            .inc();
    }

    pub fn response(&self, status: u16) {
        self.responses
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// Records an answered request's latency under its route template.
    pub fn latency(&self, route: &str, seconds: f64) {
        self.request_seconds
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            if encode(&mut out, &r).is_err() {
                out.clear();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_recorded_by_route_template() {
        let m = Metrics::default();
        m.response(200);
        m.latency("/v1/tenants/{tenant}/costs", 0.003);
        let text = m.render();
        for line in [
            "costpipe_billing_responses_total{status=\"200\"} 1",
            "costpipe_billing_request_seconds_count{route=\"/v1/tenants/{tenant}/costs\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
