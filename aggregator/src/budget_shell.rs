//! The budgets' shell around the core's `BudgetBook`: definitions from the compacted budgets
//! topic (seeded from the budgets file), what was published from the control topic, spend
//! restored from ClickHouse once per assignment, time ticks, and a publisher task that puts
//! control records on the control topic in order, then hands them to a task of its own that
//! writes ClickHouse's history (so that no ClickHouse insert delays a publication).
//!
//! Ownership: a tenant's budgets are evaluated by the instance holding the tenant's usage
//! partition (`tenant_partition`); budgets naming no tenant only by an instance holding every
//! partition (a single aggregator, as in the demo). With several instances such budgets are
//! not evaluated: their spend spans partitions, and evaluating them from ClickHouse totals
//! on a timer is not built yet.

use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;

use costpipe_aggregator_core::budgets::{tenant_partition, Budget, SpendFacts, SpendMode};
use costpipe_aggregator_core::Processor;
use costpipe_kafka::{TableRecord, TableUpdate};
use costpipe_schemas::{BudgetControl, ControlCodec, ControlKind};

use crate::budget_source::{self, BudgetChange};
use crate::clickhouse_budgets::SpendRow;
use crate::clickhouse_store::ClickHouseStore;
use crate::config::AggregatorConfig;
use crate::kafka_sinks;
use crate::kafka_source::restore_since;
use crate::telemetry::{BudgetLabel, LevelLabel, Metrics};
use crate::usage_metrics::{top_ratios, usage_ratio};

/// How long start-up waits for a compacted topic to be read.
const TABLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Budgets created at run time backfilled per tick (one query each).
const BACKFILLS_PER_TICK: usize = 16;

/// The budgets' shell.
pub struct BudgetShell {
    brokers: String,
    usage_topic: String,
    control_topic: String,
    updates: Receiver<TableUpdate>,
    publisher: Option<mpsc::UnboundedSender<BudgetControl>>,
    publisher_task: Option<tokio::task::JoinHandle<()>>,
    partitions: i32,
    tick_ms: i64,
    last_tick: i64,
    metrics: Metrics,
    /// At most this many budgets in `llm_budget_usage_ratio`.
    max_ratios: usize,
    /// Budget ids with a ratio series.
    ratio_ids: BTreeSet<String>,
}

fn facts_of(row: &SpendRow) -> SpendFacts<'_> {
    fn text(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    SpendFacts {
        tenant: &row.tenant_id,
        department: text(&row.department),
        user: text(&row.user_id),
        project: text(&row.project_id),
        feature: text(&row.feature),
        model: text(&row.price_model),
        api_key: text(&row.api_key),
        at_ms: row.bin_ms,
        amount: row.amount(),
        currency: &row.billing_currency,
        event_id: None,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("blocking task")?
}

/// The usage topic's partition count (0 if unknown yet).
fn partition_count(brokers: &str, topic: &str) -> anyhow::Result<i32> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32))
}

fn apply(processor: &mut Processor, record: TableRecord, now_ms: i64) {
    let catalog = processor.catalog().clone();
    match budget_source::change_of(&record.key, record.value.as_deref()) {
        BudgetChange::Upsert(def) => {
            let id = def.budget_id.clone();
            match processor.budgets_mut().upsert(*def, &catalog, now_ms) {
                Ok(_) => tracing::debug!(budget = %id, "budget loaded"),
                Err(e) => tracing::error!(budget = %id, error = %e, "budget refused"),
            }
        }
        BudgetChange::Delete(id) => {
            processor.budgets_mut().remove(&id, now_ms);
            tracing::info!(budget = %id, "budget deleted");
        }
        BudgetChange::Invalid { key, reason } => {
            tracing::error!(key = %key, error = %reason, "budgets topic record refused")
        }
    }
}

impl BudgetShell {
    /// Loads the budgets topic (seeding it from the file and legacy limits), restores what
    /// was published from the control topic, and starts the publisher.
    pub async fn start(
        config: &AggregatorConfig,
        store: &ClickHouseStore,
        producer: &FutureProducer,
        processor: &mut Processor,
        metrics: Metrics,
    ) -> anyhow::Result<BudgetShell> {
        let brokers = config.kafka.brokers.clone();
        let topic = config.budget_topic.clone();
        let updates = {
            let (b, t) = (brokers.clone(), topic.clone());
            blocking(move || Ok(costpipe_kafka::follow(&b, &t, TABLE_TIMEOUT)?)).await?
        };
        let now = chrono::Utc::now().timestamp_millis();
        let deadline = Instant::now() + TABLE_TIMEOUT;
        loop {
            match updates.try_recv() {
                Ok(TableUpdate::Record(r)) => apply(processor, r, now),
                Ok(TableUpdate::CaughtUp) => break,
                Err(TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(_) => anyhow::bail!("budgets topic {topic} not read within {TABLE_TIMEOUT:?}"),
            }
        }
        // Seed: file budgets (and legacy limits) the topic does not have yet. Later edits go
        // through the topic (costpipe-budgets, the billing API); the file never overrides them.
        let mut seeds = match &config.budgets_file {
            Some(path) => budget_source::read_budgets_file(path)?,
            None => Vec::new(),
        };
        seeds.extend(budget_source::legacy_budgets(
            &crate::config::parse_limits(&config.budget_limits)?
                .into_iter()
                .collect(),
            &config.budget_currency,
        ));
        let catalog = processor.catalog().clone();
        for d in &seeds {
            costpipe_aggregator_core::budgets::Budget::from_definition(d.clone(), &catalog)
                .with_context(|| "budgets file".to_string())?;
        }
        let missing: Vec<_> = seeds
            .into_iter()
            .filter(|d| processor.budgets().get(&d.budget_id).is_none())
            .collect();
        if !missing.is_empty() {
            budget_source::publish_definitions(producer, &topic, &missing).await?;
            tracing::info!(budgets = missing.len(), topic = %topic, "budgets seeded");
            // Take them now rather than on the first tick, so that the first events count.
            for d in missing {
                let key = d.budget_id.clone().into_bytes();
                let value = serde_json::to_vec(&d)?;
                apply(
                    processor,
                    TableRecord {
                        key,
                        value: Some(value),
                    },
                    now,
                );
            }
        }
        let control = {
            let (b, t) = (brokers.clone(), config.control_topic.clone());
            blocking(move || Ok(costpipe_kafka::read_to_end(&b, &t, TABLE_TIMEOUT)?)).await?
        };
        let codec = ControlCodec::current();
        for r in &control {
            if let Some(Ok(c)) = r.value.as_deref().map(|v| codec.decode(v)) {
                processor.budgets_mut().restore_published(&c);
            }
        }
        tracing::info!(
            budgets = processor.budgets().len(),
            control_records = control.len(),
            "budgets loaded"
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(publish_loop(
            rx,
            producer.clone(),
            config.control_topic.clone(),
            store.clone(),
        ));
        Ok(BudgetShell {
            brokers,
            usage_topic: config.usage_topic.clone(),
            control_topic: config.control_topic.clone(),
            updates,
            publisher: Some(tx),
            publisher_task: Some(task),
            partitions: 0,
            tick_ms: config.budget_tick_ms.max(10),
            last_tick: 0,
            metrics,
            max_ratios: config.metrics_max_budgets,
            ratio_ids: BTreeSet::new(),
        })
    }

    /// Hands the core's control records to the publisher.
    pub fn forward(&mut self, processor: &mut Processor) {
        while let Some(c) = processor.budgets_mut().poll_output() {
            // The metric counts level changes; FORECAST and SPIKE records only repeat the
            // level in force.
            if c.kind == ControlKind::State {
                self.metrics
                    .control_events
                    .get_or_create(&LevelLabel {
                        level: c.level.to_string(),
                    })
                    .inc();
            }
            if let Some(tx) = &self.publisher {
                let _ = tx.send(c);
            }
        }
    }

    /// Definition changes, time ticks (rollovers, expiries, slides) and backfills of budgets
    /// created at run time.
    pub async fn on_tick(
        &mut self,
        processor: &mut Processor,
        store: &ClickHouseStore,
        now_ms: i64,
    ) {
        loop {
            match self.updates.try_recv() {
                Ok(TableUpdate::Record(r)) => apply(processor, r, now_ms),
                Ok(TableUpdate::CaughtUp) => {}
                Err(_) => break,
            }
        }
        if now_ms - self.last_tick >= self.tick_ms {
            self.last_tick = now_ms;
            let replaying = processor
                .assigned()
                .collect::<Vec<_>>()
                .into_iter()
                .any(|p| processor.is_replaying(p));
            processor.budgets_mut().set_hold_downward(replaying);
            processor.budgets_mut().handle_tick(now_ms);
            for id in processor
                .budgets()
                .pending_backfill()
                .into_iter()
                .take(BACKFILLS_PER_TICK)
            {
                let tenant = processor.budgets().get(&id).and_then(|b| b.tenant.clone());
                match store
                    .budget_spend(
                        &self.usage_topic,
                        &[],
                        tenant.as_deref(),
                        restore_since(now_ms),
                        now_ms,
                    )
                    .await
                {
                    Ok(rows) => {
                        let catalog = processor.catalog().clone();
                        let only = |b: &Budget| b.id == id;
                        for row in &rows {
                            processor.budgets_mut().handle_spend(
                                &facts_of(row),
                                &catalog,
                                now_ms,
                                SpendMode::Restore(&only),
                            );
                        }
                        processor.budgets_mut().mark_backfilled(&id, now_ms);
                        tracing::info!(budget = %id, rows = rows.len(), "budget spend restored");
                    }
                    Err(e) => {
                        tracing::warn!(budget = %id, error = %format!("{e:#}"), "budget spend not restored yet");
                        break;
                    }
                }
            }
            self.metrics.budgets.set(processor.budgets().len() as i64);
            self.export_ratios(processor, now_ms);
        }
        self.forward(processor);
    }

    /// `llm_budget_usage_ratio` of the budgets this instance evaluates (owned, spend
    /// restored): spend over limit in the current period or window, as evaluated.
    fn export_ratios(&mut self, processor: &Processor, now_ms: i64) {
        let book = processor.budgets();
        let pending: BTreeSet<_> = book.pending_backfill().into_iter().collect();
        let ratios = book
            .ids()
            .filter(|id| !pending.contains(*id))
            .filter_map(|id| {
                let budget = book.get(id)?;
                if !book.owns(budget.tenant.as_deref()) {
                    return None;
                }
                let spend = book.spend_of(id, now_ms)?;
                Some((id.to_string(), usage_ratio(spend, budget.limit_at(now_ms))))
            })
            .collect();
        let exported = top_ratios(ratios, self.max_ratios);
        let now: BTreeSet<String> = exported.iter().map(|(id, _)| id.clone()).collect();
        for gone in self.ratio_ids.difference(&now) {
            self.metrics.budget_usage_ratio.remove(&BudgetLabel {
                budget_id: gone.clone(),
            });
        }
        for (budget_id, ratio) in exported {
            self.metrics
                .budget_usage_ratio
                .get_or_create(&BudgetLabel { budget_id })
                .set(ratio);
        }
        self.ratio_ids = now;
    }

    /// After partitions were assigned or revoked: ownership, what was published (other
    /// instances may have published since start), and the new partitions' budget spend.
    pub async fn on_assignment(
        &mut self,
        processor: &mut Processor,
        store: &ClickHouseStore,
        taken_up: &BTreeSet<i32>,
        now_ms: i64,
    ) {
        let (b, t) = (self.brokers.clone(), self.usage_topic.clone());
        match blocking(move || partition_count(&b, &t)).await {
            Ok(n) if n > 0 => self.partitions = n,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "usage topic metadata"),
        }
        let assigned: BTreeSet<i32> = processor.assigned().collect();
        processor
            .budgets_mut()
            .set_assignment(self.partitions, assigned);
        processor.budgets_mut().drop_unowned();
        // Without budgets there is nothing to restore, so no query on the assignment path (a
        // budget created later is backfilled on its own on the next tick).
        if taken_up.is_empty() || processor.budgets().is_empty() {
            return;
        }
        processor.budgets_mut().set_hold_downward(true);
        let (b, t) = (self.brokers.clone(), self.control_topic.clone());
        match blocking(move || Ok(costpipe_kafka::read_to_end(&b, &t, TABLE_TIMEOUT)?)).await {
            Ok(records) => {
                let codec = ControlCodec::current();
                for r in &records {
                    if let Some(Ok(c)) = r.value.as_deref().map(|v| codec.decode(v)) {
                        processor.budgets_mut().restore_published(&c);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "control topic not read"),
        }
        let partitions: Vec<i32> = taken_up.iter().copied().collect();
        let n = self.partitions;
        let selects = move |b: &Budget| {
            b.tenant
                .as_deref()
                .is_some_and(|t| partitions.contains(&tenant_partition(t, n)))
        };
        let taken: Vec<i32> = taken_up.iter().copied().collect();
        let mut delay = Duration::from_millis(100);
        for attempt in 0..6 {
            match store
                .budget_spend(
                    &self.usage_topic,
                    &taken,
                    None,
                    restore_since(now_ms),
                    now_ms,
                )
                .await
            {
                Ok(rows) => {
                    let catalog = processor.catalog().clone();
                    for row in &rows {
                        processor.budgets_mut().handle_spend(
                            &facts_of(row),
                            &catalog,
                            now_ms,
                            SpendMode::Restore(&selects),
                        );
                    }
                    processor
                        .budgets_mut()
                        .mark_backfilled_where(&selects, now_ms);
                    tracing::info!(partitions = ?taken, rows = rows.len(), "budget spend restored");
                    break;
                }
                Err(e) => {
                    // Left pending: the tick backfills each budget on its own later.
                    tracing::warn!(attempt, error = %format!("{e:#}"), "budget spend not restored yet");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        self.forward(processor);
    }

    /// Publishes what is queued, then stops the publisher.
    pub async fn shutdown(mut self) {
        self.publisher.take();
        if let Some(task) = self.publisher_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

/// Publishes control records in order to the control topic (retried until the broker has
/// them; the same records, so the same ids), then hands them to the history writer.
///
/// The history write to ClickHouse runs in a task of its own: the next records are published
/// as soon as the broker has acknowledged these, never after a ClickHouse insert. That insert
/// took 0.1–0.7 s on a loaded machine and up to ~30 s of retries in an outage, and every
/// breach decided meanwhile waited for it (aggregator/BENCHMARKS.md, "2026-12-01: budgets").
async fn publish_loop(
    mut rx: mpsc::UnboundedReceiver<BudgetControl>,
    producer: FutureProducer,
    topic: String,
    store: ClickHouseStore,
) {
    let codec = ControlCodec::current();
    let (history_tx, history_rx) = mpsc::unbounded_channel();
    let history = tokio::spawn(history_loop(history_rx, store));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(c) = rx.try_recv() {
            batch.push(c);
        }
        let mut delay = Duration::from_millis(100);
        while let Err(e) = kafka_sinks::publish_controls(&producer, &codec, &topic, &batch).await {
            tracing::error!(error = %format!("{e:#}"), "budget controls not published; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        for c in &batch {
            tracing::info!(budget = %c.budget_id, control_id = %c.control_id, kind = c.kind.as_str(), level = %c.level, previous = ?c.previous_level, spend = %c.spend, limit = %c.limit, currency = %c.currency, period = %c.period, shadow = c.shadow, "budget control published");
        }
        // The history task only ends when this sender is dropped.
        let _ = history_tx.send(batch);
    }
    // Shutdown: what was published is written to the history before the task ends.
    drop(history_tx);
    let _ = history.await;
}

/// Writes published control records to ClickHouse's history, in publication order; batches
/// that queued up during a slow insert go in one insert.
async fn history_loop(mut rx: mpsc::UnboundedReceiver<Vec<BudgetControl>>, store: ClickHouseStore) {
    while let Some(mut batch) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        let mut delay = Duration::from_millis(200);
        for attempt in 0..8 {
            match store.write_control_history(&batch).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(attempt, error = %format!("{e:#}"), "budget control history not written; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
