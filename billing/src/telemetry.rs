//! Billing's Prometheus metrics (served on `/metrics`): answered queries by the table that
//! answered them, and answers by route and status.

use std::sync::Mutex;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// The metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    queries: Family<SourceLabel, Counter>,
    responses: Family<StatusLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let queries = Family::<SourceLabel, Counter>::default();
        let responses = Family::<StatusLabel, Counter>::default();
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
        Metrics {
            registry: Mutex::new(registry),
            queries,
            responses,
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
