//! Metric names and the Prometheus registry of the aggregator, served on /metrics.
//!
//! Two groups (every metric is listed, with its labels and meaning, in DEVELOPERS.md,
//! "Metrics"):
//! - the seeds' usage metrics, unprefixed: `llm_tokens_total`, `llm_requests_total`,
//!   `llm_cost_usd_total`, `request_cost_usd` and `llm_budget_usage_ratio`, fed once per
//!   stored epoch by [`crate::usage_metrics::UsageMetrics`] and per budget tick;
//! - the pipeline's own, `costpipe_aggregator_*`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use costpipe_aggregator_core::metrics::{ticks_to_f64, REQUEST_COST_BOUNDS_TICKS};

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

/// Label of a per-partition gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

/// Labels of `llm_tokens_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub token_type: String,
}

/// Label of `llm_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

/// Labels of `llm_cost_usd_total`, in the seeds' order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CostLabels {
    pub model: String,
    pub department: String,
    pub tenant: String,
}

/// Label of `llm_budget_usage_ratio`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    pub budget_id: String,
}

/// Labels of the counters of amounts not put into USD.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnconvertedLabels {
    pub currency: String,
    pub reason: String,
}

/// A counter whose value its owner sets from an exact total it keeps. Money is summed
/// exactly (integer ticks, `Decimal`) and converted to `f64` once per update: adding `f64`
/// increments would drift from the decimal sum a test or an invoice computes.
#[derive(Debug, Clone, Default)]
pub struct ExactCounter(Arc<AtomicU64>);

impl ExactCounter {
    /// Sets the value (the owner only ever raises it).
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl TypedMetric for ExactCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ExactCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, f64, f64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A histogram fed with whole batches (bucket counts and an exact sum computed per epoch),
/// so that the hot path never observes samples one by one.
#[derive(Debug, Clone)]
pub struct BatchHistogram(Arc<Mutex<BatchState>>);

#[derive(Debug)]
struct BatchState {
    /// Upper bound and count of each bucket (not cumulative); the last bound is `f64::MAX`,
    /// which the text encoder writes as `+Inf`.
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
}

impl BatchHistogram {
    /// A histogram with these upper bounds (`+Inf` is added).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let buckets = bounds
            .into_iter()
            .chain(std::iter::once(f64::MAX))
            .map(|b| (b, 0))
            .collect();
        BatchHistogram(Arc::new(Mutex::new(BatchState {
            buckets,
            count: 0,
            sum: 0.0,
        })))
    }

    /// Adds per-bucket counts (one per bound, then `+Inf`) and sets the sum to `sum`, the
    /// owner's exact running total.
    pub fn add(&self, counts: &[u64], sum: f64) {
        if let Ok(mut s) = self.0.lock() {
            for ((_, n), add) in s.buckets.iter_mut().zip(counts) {
                *n += add;
            }
            s.count += counts.iter().sum::<u64>();
            s.sum = sum;
        }
    }
}

impl TypedMetric for BatchHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for BatchHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = self.0.lock() else {
            return Ok(());
        };
        encoder.encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Every metric the aggregator exports.
#[derive(Clone)]
pub struct Metrics {
    // The seeds' usage metrics (unprefixed).
    pub llm_tokens: Family<TokenLabels, Counter>,
    pub llm_requests: Family<ModelLabel, Counter>,
    pub llm_cost_usd: Family<CostLabels, ExactCounter>,
    pub request_cost_usd: BatchHistogram,
    pub budget_usage_ratio: Family<BudgetLabel, Gauge<f64, AtomicU64>>,
    // Pipeline metrics (`costpipe_aggregator_*`).
    pub events_priced: Counter,
    pub events_unpriced: Family<ReasonLabel, Counter>,
    pub events_duplicate: Counter,
    pub cost_unconverted: Family<UnconvertedLabels, Counter>,
    pub cost_unconverted_amount: Family<UnconvertedLabels, ExactCounter>,
    pub dead_letters: Family<ReasonLabel, Counter>,
    pub epochs_written: Counter,
    pub epochs_replayed: Counter,
    pub control_events: Family<LevelLabel, Counter>,
    /// Budgets loaded.
    pub budgets: Gauge,
    pub flush_seconds_total: Counter<f64, AtomicU64>,
    pub flush_latency: Histogram,
    pub assigned_partitions: Gauge,
    pub catalog_reloads: Family<OutcomeLabel, Counter>,
    pub events_late: Counter,
    pub write_retries: Counter,
    pub window_keys: Gauge,
    pub window_bytes: Gauge,
    pub recent_ids: Gauge,
    pub restore_seconds: Histogram,
    pub records_consumed: Counter,
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    pub sink_pending_records: Gauge,
    pub consumption_paused: Gauge,
    pub registry: Arc<Registry>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let m = Metrics {
            llm_tokens: Family::default(),
            llm_requests: Family::default(),
            llm_cost_usd: Family::default(),
            request_cost_usd: BatchHistogram::new(
                REQUEST_COST_BOUNDS_TICKS.iter().map(|&t| ticks_to_f64(t)),
            ),
            budget_usage_ratio: Family::default(),
            events_priced: Counter::default(),
            events_unpriced: Family::default(),
            events_duplicate: Counter::default(),
            cost_unconverted: Family::default(),
            cost_unconverted_amount: Family::default(),
            dead_letters: Family::default(),
            epochs_written: Counter::default(),
            epochs_replayed: Counter::default(),
            control_events: Family::default(),
            budgets: Gauge::default(),
            flush_seconds_total: Counter::default(),
            // 5 ms to about 82 s: an epoch write is tens of ms, a ClickHouse outage retries
            // for as long as it lasts.
            flush_latency: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            assigned_partitions: Gauge::default(),
            catalog_reloads: Family::default(),
            events_late: Counter::default(),
            write_retries: Counter::default(),
            window_keys: Gauge::default(),
            window_bytes: Gauge::default(),
            recent_ids: Gauge::default(),
            restore_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            records_consumed: Counter::default(),
            consumer_lag: Family::default(),
            sink_pending_records: Gauge::default(),
            consumption_paused: Gauge::default(),
            registry: Arc::new(Registry::default()),
        };
        root.register(
            "llm_tokens",
            "Tokens of stored usage events, by catalog model (\"unknown\" when not in the catalog) and token type as reported",
            m.llm_tokens.clone(),
        );
        root.register(
            "llm_requests",
            "Stored usage events (one per LLM call), by catalog model",
            m.llm_requests.clone(),
        );
        root.register(
            "llm_cost_usd",
            "Cost of stored usage events in USD at the catalog's rates, by catalog model, department and tenant (top N tenants and departments by cost, the rest \"other\")",
            m.llm_cost_usd.clone(),
        );
        root.register(
            "request_cost_usd",
            "Cost in USD of each stored usage event whose cost is known in USD",
            m.request_cost_usd.clone(),
        );
        root.register(
            "llm_budget_usage_ratio",
            "Spend over limit of each budget this instance evaluates, in its current period or window",
            m.budget_usage_ratio.clone(),
        );
        let agg = root.sub_registry_with_prefix("costpipe_aggregator");
        agg.register(
            "events_late",
            "Events older than their partition's watermark (counted; rolling windows that no longer cover them skip them)",
            m.events_late.clone(),
        );
        agg.register(
            "write_retries",
            "Epoch write steps that failed and were retried with backoff",
            m.write_retries.clone(),
        );
        agg.register(
            "window_keys",
            "Tenant x department x model keys held in the sliding windows",
            m.window_keys.clone(),
        );
        agg.register(
            "window_bytes",
            "Approximate heap bytes of the sliding windows",
            m.window_bytes.clone(),
        );
        agg.register(
            "recent_ids",
            "Counted event ids remembered to drop copies, over every assigned partition",
            m.recent_ids.clone(),
        );
        agg.register(
            "restore_seconds",
            "Time to take a partition up (claim, checkpoint, recent ids, window minutes)",
            m.restore_seconds.clone(),
        );
        agg.register(
            "events_priced",
            "Usage events priced and written",
            m.events_priced.clone(),
        );
        agg.register(
            "events_unpriced",
            "Stored events priced at zero, by reason (unknown_model, no_price_at_time, no_exchange_rate, ...)",
            m.events_unpriced.clone(),
        );
        agg.register(
            "cost_unconverted",
            "Stored events whose cost is known but could not be put into USD, by currency and reason",
            m.cost_unconverted.clone(),
        );
        agg.register(
            "cost_unconverted_amount",
            "Sum of the amounts not put into USD, in their own currency, by currency and reason",
            m.cost_unconverted_amount.clone(),
        );
        agg.register(
            "dead_letters",
            "Records forwarded to the dead-letter topic, by reason",
            m.dead_letters.clone(),
        );
        agg.register(
            "epochs_written",
            "Partition epochs written to ClickHouse",
            m.epochs_written.clone(),
        );
        agg.register(
            "epochs_replayed",
            "Epochs rebuilt from a checkpoint after a restart",
            m.epochs_replayed.clone(),
        );
        agg.register(
            "control_events",
            "Budget control records published, by level",
            m.control_events.clone(),
        );
        agg.register("budgets", "Budgets loaded", m.budgets.clone());
        agg.register(
            "flush_seconds",
            "Time spent writing epochs",
            m.flush_seconds_total.clone(),
        );
        agg.register(
            "flush_latency_seconds",
            "Time to write one epoch, from the sink taking it to its completion mark (retries included)",
            m.flush_latency.clone(),
        );
        agg.register(
            "assigned_partitions",
            "Usage partitions owned by this instance",
            m.assigned_partitions.clone(),
        );
        agg.register(
            "events_duplicate",
            "Events dropped because the same event_id with the same content was already counted",
            m.events_duplicate.clone(),
        );
        agg.register(
            "catalog_reloads",
            "Catalog file changes, by outcome (loaded, refused)",
            m.catalog_reloads.clone(),
        );
        agg.register(
            "records_consumed",
            "Records taken from the usage topic (before decoding, deduplication and dead-lettering)",
            m.records_consumed.clone(),
        );
        agg.register(
            "consumer_lag",
            "Records on the broker not yet consumed, per assigned partition (the broker's high watermark from the consumer's statistics, every 5 s, minus the next offset)",
            m.consumer_lag.clone(),
        );
        agg.register(
            "sink_pending_records",
            "Records sealed and waiting to be written (consumption pauses at COSTPIPE_SINK_MAX_PENDING_RECORDS)",
            m.sink_pending_records.clone(),
        );
        agg.register(
            "consumption_paused",
            "1 while the assigned partitions are paused because sealed epochs wait for room in the sink (a slow or unavailable ClickHouse), else 0",
            m.consumption_paused.clone(),
        );
        Metrics {
            registry: Arc::new(root),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_exact_values_are_exposed() {
        let m = Metrics::new();
        m.llm_cost_usd
            .get_or_create(&CostLabels {
                model: "gpt-4o".into(),
                department: "none".into(),
                tenant: "acme".into(),
            })
            .set(0.1 + 0.2);
        m.request_cost_usd.add(&[1, 0, 2], 0.5);
        m.events_priced.inc();
        let text = m.encode();
        // dtoa writes a round-trip form, not always the shortest: compare the parsed value.
        let cost = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "llm_cost_usd_total{model=\"gpt-4o\",department=\"none\",tenant=\"acme\"} ",
                )
            })
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(cost, Some(0.1 + 0.2), "{text}");
        for line in [
            "request_cost_usd_count 3",
            "request_cost_usd_sum 0.5",
            "request_cost_usd_bucket{le=\"0.0001\"} 1",
            "request_cost_usd_bucket{le=\"0.0005\"} 3",
            "request_cost_usd_bucket{le=\"+Inf\"} 3",
            "costpipe_aggregator_events_priced_total 1",
            "# TYPE llm_cost_usd counter",
            "# TYPE request_cost_usd histogram",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
