//! The aggregator's run loop: Kafka records in, epochs out to ClickHouse, dead letters and
//! budget levels out to Kafka. All decisions are the core's; this file only moves data.
//!
//! Per epoch, in this order: dead letters delivered → intent written → events and rollups
//! written under dedup tokens → Kafka offset committed (progress only) → budgets evaluated
//! from ClickHouse and level changes published. A crash anywhere in between is repaired by
//! replaying the partition's last intent on the next assignment.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use costpipe_aggregator_core::dedup;
use costpipe_aggregator_core::{
    BudgetTracker, EpochIntent, Period, Processor, SealedEpoch, SourceRecord,
};
use costpipe_pricing::Catalog;
use costpipe_schemas::{BudgetControl, ControlCodec, ValidationLimits};

use std::collections::HashSet;

use costpipe_ingest::schema_registry::RegistryClient;

use crate::catalog_reload::{CatalogWatcher, ReloadOutcome};
use crate::clickhouse_sink::ClickHouseStore;
use crate::config::AggregatorConfig;
use crate::kafka_sinks;
use crate::kafka_source::{self, PartitionChange, UsageConsumer};
use crate::telemetry::{LevelLabel, Metrics, OutcomeLabel, ReasonLabel};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Everything the loop owns.
pub struct Pipeline {
    config: AggregatorConfig,
    store: ClickHouseStore,
    consumer: Arc<UsageConsumer>,
    producer: FutureProducer,
    control_codec: ControlCodec,
    processor: Processor,
    budgets: BudgetTracker,
    metrics: Metrics,
    catalog_watcher: Option<CatalogWatcher>,
    registry: Option<RegistryClient>,
    /// Ids the registry does not have: their records are dead-lettered without asking again.
    missing_schema_ids: HashSet<u32>,
}

impl Pipeline {
    /// Connects everything; fails with a clear message when a dependency is unusable.
    pub async fn start(config: AggregatorConfig, metrics: Metrics) -> anyhow::Result<Pipeline> {
        let store = ClickHouseStore::new(
            &config.clickhouse_url,
            &config.clickhouse_database,
            &config.clickhouse_user,
            &config.clickhouse_password,
        )?;
        migrate_with_retry(&store).await?;
        let catalog = match &config.catalog {
            Some(path) => Catalog::from_path(path)?,
            None => Catalog::builtin(),
        };
        tracing::info!(
            version = catalog.version(),
            models = catalog.models().len(),
            "price catalog loaded"
        );
        if config.create_topics_partitions > 0 {
            costpipe_ingest::topics::ensure_topics(&config.brokers, &pipeline_topics(&config))
                .await
                .context("creating topics")?;
        }
        let producer = kafka_sinks::producer(&config.brokers)?;
        let consumer = kafka_source::subscribe(
            &config.brokers,
            &config.group_id,
            &config.usage_topic,
            config.session_timeout_ms,
            store.clone(),
        )?;
        let processor = Processor::new(
            config.usage_topic.clone(),
            Arc::new(catalog),
            ValidationLimits::default(),
            config.epoch_policy()?,
        );
        let budgets = BudgetTracker::new(config.budget_policy()?);
        let catalog_watcher = config.catalog.clone().map(CatalogWatcher::new);
        let registry = config
            .schema_registry_url
            .as_deref()
            .map(RegistryClient::new);
        Ok(Pipeline {
            catalog_watcher,
            registry,
            missing_schema_ids: HashSet::new(),
            config,
            store,
            consumer,
            producer,
            control_codec: ControlCodec::control_v1(),
            processor,
            budgets,
            metrics,
        })
    }

    /// Runs until `shutdown` resolves, then writes what is open and returns.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        // Publish the current level of every budgeted tenant, so that a level decided before
        // a crash but not yet published is not lost.
        let period = Period::of_millis(now_ms());
        self.evaluate_budgets(BTreeMap::from([(period, None)]))
            .await?;
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut since_check = 0usize;
        let mut reload_tick = tokio::time::interval(Duration::from_millis(
            self.config.catalog_reload_interval_ms.max(100),
        ));
        let consumer = self.consumer.clone();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = reload_tick.tick() => self.reload_catalog().await?,
                _ = tick.tick() => {
                    self.apply_partition_changes()?;
                    let due = self.processor.seal_due(now_ms());
                    self.write(due).await?;
                }
                msg = consumer.recv() => {
                    let msg = msg.context("consuming usage events")?;
                    self.apply_partition_changes()?;
                    if let Some(payload) = msg.payload() {
                        self.learn_schema_of(payload).await?;
                    }
                    let rec = SourceRecord {
                        partition: msg.partition(),
                        offset: msg.offset(),
                        key: msg.key(),
                        payload: msg.payload(),
                    };
                    self.processor.handle_record(rec, now_ms());
                    since_check += 1;
                    if since_check >= 1024 {
                        since_check = 0;
                        let due = self.processor.seal_due(now_ms());
                        self.write(due).await?;
                    }
                }
            }
        }
        tracing::info!("shutting down: writing open epochs");
        self.apply_partition_changes()?;
        let open = self.processor.seal_all();
        self.write(open).await?;
        Ok(())
    }

    /// Fetches the schema of a record's id from the registry when it is not known yet.
    async fn learn_schema_of(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        let Ok((id, _)) = costpipe_schemas::wire::split(payload) else {
            return Ok(());
        };
        if self.processor.knows_schema(id) || self.missing_schema_ids.contains(&id) {
            return Ok(());
        }
        match registry.schema(id).await? {
            Some(text) => match self
                .processor
                .learn_schema(id, &format!("registry:{id}"), &text)
            {
                Ok(()) => tracing::info!(schema_id = id, "schema learnt from the registry"),
                Err(e) => {
                    tracing::warn!(schema_id = id, error = %e, "registry schema is not a usage event");
                    self.missing_schema_ids.insert(id);
                }
            },
            None => {
                tracing::warn!(schema_id = id, "schema id unknown to the registry");
                self.missing_schema_ids.insert(id);
            }
        }
        Ok(())
    }

    /// Swaps in a changed, valid catalog. Open epochs are written first, so that each epoch
    /// is priced by one catalog version.
    async fn reload_catalog(&mut self) -> anyhow::Result<()> {
        let Some(watcher) = self.catalog_watcher.as_mut() else {
            return Ok(());
        };
        match watcher.check() {
            ReloadOutcome::Unchanged => {}
            ReloadOutcome::Refused(e) => {
                tracing::error!(error = %e, "changed price catalog refused; the old catalog stays in force");
                self.metrics
                    .catalog_reloads
                    .get_or_create(&OutcomeLabel {
                        outcome: "refused".into(),
                    })
                    .inc();
            }
            ReloadOutcome::Loaded(catalog) => {
                let open = self.processor.seal_all();
                self.write(open).await?;
                tracing::info!(
                    version = catalog.version(),
                    models = catalog.models().len(),
                    "price catalog reloaded"
                );
                self.processor.set_catalog(Arc::new(catalog));
                self.metrics
                    .catalog_reloads
                    .get_or_create(&OutcomeLabel {
                        outcome: "loaded".into(),
                    })
                    .inc();
            }
        }
        Ok(())
    }

    fn apply_partition_changes(&mut self) -> anyhow::Result<()> {
        for change in self.consumer.context().take_changes() {
            match change {
                PartitionChange::Assigned(p, plan) => self.processor.assign(p, plan),
                PartitionChange::Revoked(p) => self.processor.revoke(p),
                PartitionChange::Failed(reason) => {
                    anyhow::bail!("cannot take up partitions: {reason}")
                }
            }
        }
        self.metrics
            .assigned_partitions
            .set(self.processor.assigned().count() as i64);
        Ok(())
    }

    async fn write(&mut self, epochs: Vec<SealedEpoch>) -> anyhow::Result<()> {
        if epochs.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        let mut touched: BTreeMap<Period, BTreeSet<String>> = BTreeMap::new();
        for epoch in epochs {
            let epoch = self.without_duplicates(epoch).await?;
            self.write_epoch(&epoch).await?;
            let end = ends.entry(epoch.partition).or_default();
            *end = (*end).max(epoch.end_offset);
            for (key, _) in &epoch.rollups {
                touched
                    .entry(Period::of_millis(key.minute * 1000))
                    .or_default()
                    .insert(key.tenant_id.clone());
            }
        }
        let mut commit = TopicPartitionList::new();
        for (partition, end) in ends {
            commit.add_partition_offset(
                &self.config.usage_topic,
                partition,
                Offset::Offset(end),
            )?;
        }
        // Kafka's committed offsets only show progress; the checkpoint is in ClickHouse.
        if let Err(e) = self.consumer.commit(&commit, CommitMode::Async) {
            tracing::warn!(error = %e, "offset commit failed (progress display only)");
        }
        self.evaluate_budgets(touched.into_iter().map(|(p, t)| (p, Some(t))).collect())
            .await?;
        self.metrics
            .flush_seconds_total
            .inc_by(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Drops events already counted (same id, same content); conflicts become dead letters.
    async fn without_duplicates(&mut self, epoch: SealedEpoch) -> anyhow::Result<SealedEpoch> {
        let Some(lookup) = dedup::lookup_for(&epoch) else {
            return Ok(epoch);
        };
        let stored = self.store.stored_fingerprints(&lookup).await?;
        let (epoch, report) = dedup::dedup(epoch, &stored);
        if report.duplicates > 0 || report.conflicts > 0 {
            tracing::info!(
                partition = epoch.partition,
                duplicates = report.duplicates,
                conflicts = report.conflicts,
                "duplicate event ids not counted again"
            );
            if !epoch.replay {
                self.metrics.events_duplicate.inc_by(report.duplicates);
            }
        }
        Ok(epoch)
    }

    async fn write_epoch(&mut self, epoch: &SealedEpoch) -> anyhow::Result<()> {
        if !epoch.replay && !epoch.dead_letters.is_empty() {
            kafka_sinks::send_dead_letters(
                &self.producer,
                &self.config.dead_letter_topic,
                &epoch.topic,
                &epoch.dead_letters,
                now_ms(),
            )
            .await?;
            for dl in &epoch.dead_letters {
                tracing::warn!(partition = dl.partition, offset = dl.offset, reason_code = dl.reason_code, error = %dl.reason, "dead letter");
                self.metrics
                    .dead_letters
                    .get_or_create(&ReasonLabel {
                        reason: dl.reason_code.to_string(),
                    })
                    .inc();
            }
        }
        self.store.write_intent(&EpochIntent::of(epoch)).await?;
        self.store.write_epoch(epoch).await?;
        if epoch.replay {
            self.metrics.epochs_replayed.inc();
            tracing::info!(
                partition = epoch.partition,
                start = epoch.start_offset,
                end = epoch.end_offset,
                "checkpointed epoch replayed"
            );
        } else {
            self.metrics.events_priced.inc_by(epoch.events.len() as u64);
            self.metrics.events_unpriced.inc_by(
                epoch
                    .events
                    .iter()
                    .filter(|e| e.priced.is_unpriced())
                    .count() as u64,
            );
        }
        self.metrics.epochs_written.inc();
        Ok(())
    }

    /// Evaluates budgets of the given periods (`None`: every tenant) from ClickHouse spend
    /// and publishes level changes.
    async fn evaluate_budgets(
        &mut self,
        periods: BTreeMap<Period, Option<BTreeSet<String>>>,
    ) -> anyhow::Result<()> {
        let currency = self.budgets.policy().currency.clone();
        let mut controls: Vec<BudgetControl> = Vec::new();
        for (period, tenants) in periods {
            let tenants: Option<Vec<String>> = tenants.map(|t| {
                t.into_iter()
                    .filter(|t| self.budgets.policy().limit_of(t).is_some())
                    .collect()
            });
            if tenants.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            let spend = self
                .store
                .period_spend(period, &currency, tenants.as_deref())
                .await?;
            let now = now_ms();
            controls.extend(
                spend
                    .into_iter()
                    .filter_map(|(tenant, s)| self.budgets.evaluate(&tenant, period, s, now)),
            );
        }
        if controls.is_empty() {
            return Ok(());
        }
        kafka_sinks::publish_controls(
            &self.producer,
            &self.control_codec,
            &self.config.control_topic,
            &controls,
        )
        .await?;
        for c in &controls {
            tracing::info!(tenant = %c.tenant_id, period = %c.period, level = %c.level, previous = ?c.previous_level, spend = %c.spend, limit = %c.limit, "budget level published");
            self.metrics
                .control_events
                .get_or_create(&LevelLabel {
                    level: c.level.to_string(),
                })
                .inc();
        }
        Ok(())
    }
}

/// The topics the aggregator reads and writes.
pub fn pipeline_topics(config: &AggregatorConfig) -> Vec<costpipe_ingest::topics::TopicSpec> {
    use costpipe_ingest::topics::TopicSpec;
    vec![
        TopicSpec {
            name: config.usage_topic.clone(),
            partitions: config.create_topics_partitions,
            compacted: false,
        },
        TopicSpec {
            name: config.control_topic.clone(),
            partitions: 1,
            compacted: true,
        },
        TopicSpec {
            name: config.dead_letter_topic.clone(),
            partitions: 1,
            compacted: false,
        },
    ]
}

async fn migrate_with_retry(store: &ClickHouseStore) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %format!("{e:#}"), "ClickHouse not ready, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.context("applying ClickHouse migrations")),
        }
    }
}
