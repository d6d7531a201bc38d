//! Metric names and the Prometheus registry of the aggregator, served on /metrics.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of a dead-letter counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Label of a budget-level counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabel {
    pub level: String,
}

/// Label of a catalog reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Every metric the aggregator exports.
#[derive(Clone)]
pub struct Metrics {
    pub events_priced: Counter,
    pub events_unpriced: Counter,
    pub events_duplicate: Counter,
    pub dead_letters: Family<ReasonLabel, Counter>,
    pub epochs_written: Counter,
    pub epochs_replayed: Counter,
    pub control_events: Family<LevelLabel, Counter>,
    /// Budgets loaded.
    pub budgets: Gauge,
    pub flush_seconds_total: Counter<f64, AtomicU64>,
    pub assigned_partitions: Gauge,
    pub catalog_reloads: Family<OutcomeLabel, Counter>,
    pub events_late: Counter,
    pub write_retries: Counter,
    pub window_keys: Gauge,
    pub window_bytes: Gauge,
    pub restore_seconds: Histogram,
    pub registry: Arc<Registry>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("costpipe_aggregator");
        let m = Metrics {
            events_priced: Counter::default(),
            events_unpriced: Counter::default(),
            events_duplicate: Counter::default(),
            dead_letters: Family::default(),
            epochs_written: Counter::default(),
            epochs_replayed: Counter::default(),
            control_events: Family::default(),
            budgets: Gauge::default(),
            flush_seconds_total: Counter::default(),
            assigned_partitions: Gauge::default(),
            catalog_reloads: Family::default(),
            events_late: Counter::default(),
            write_retries: Counter::default(),
            window_keys: Gauge::default(),
            window_bytes: Gauge::default(),
            restore_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            registry: Arc::new(Registry::default()),
        };
        registry.register(
            "events_late",
            "Events older than their partition's watermark (counted; rolling windows that no longer cover them skip them)",
            m.events_late.clone(),
        );
        registry.register(
            "write_retries",
            "Epoch write steps that failed and were retried with backoff",
            m.write_retries.clone(),
        );
        registry.register(
            "window_keys",
            "Tenant x department x model keys held in the sliding windows",
            m.window_keys.clone(),
        );
        registry.register(
            "window_bytes",
            "Approximate heap bytes of the sliding windows",
            m.window_bytes.clone(),
        );
        registry.register(
            "restore_seconds",
            "Time to take a partition up (claim, checkpoint, recent ids, window minutes)",
            m.restore_seconds.clone(),
        );
        registry.register(
            "events_priced",
            "Usage events priced and written",
            m.events_priced.clone(),
        );
        registry.register(
            "events_unpriced",
            "Events whose model is not in the catalog (priced at zero)",
            m.events_unpriced.clone(),
        );
        registry.register(
            "dead_letters",
            "Records forwarded to the dead-letter topic, by reason",
            m.dead_letters.clone(),
        );
        registry.register(
            "epochs_written",
            "Partition epochs written to ClickHouse",
            m.epochs_written.clone(),
        );
        registry.register(
            "epochs_replayed",
            "Epochs rebuilt from a checkpoint after a restart",
            m.epochs_replayed.clone(),
        );
        registry.register(
            "control_events",
            "Budget level changes published, by new level",
            m.control_events.clone(),
        );
        registry.register("budgets", "Budgets loaded", m.budgets.clone());
        registry.register(
            "flush_seconds",
            "Time spent writing epochs",
            m.flush_seconds_total.clone(),
        );
        registry.register(
            "assigned_partitions",
            "Usage partitions owned by this instance",
            m.assigned_partitions.clone(),
        );
        registry.register(
            "events_duplicate",
            "Events dropped because the same event_id with the same content was already counted",
            m.events_duplicate.clone(),
        );
        registry.register(
            "catalog_reloads",
            "Catalog file changes, by outcome (loaded, refused)",
            m.catalog_reloads.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            ..m
        }
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
