//! The aggregator's run loop: Kafka records in, sealed epochs out to the epoch sink, budget
//! levels out to the control topic, live views out to HTTP. All decisions are the core's; this
//! file only moves data.
//!
//! Records are decoded, priced, deduplicated and added to the windows by the core as they
//! arrive. Sealed epochs go to the [`EpochSink`] task, which writes them (dead letters →
//! intent → fenced rows → commit) while consumption goes on; its bounded queue is the
//! backpressure during a ClickHouse outage or a slow insert. A sealed epoch the queue has no
//! room for is held here and the assigned partitions are paused (the loop keeps polling, so
//! the group membership, rebalances, the live view and the budgets' tick go on); they resume
//! once every held epoch is queued. Budgets are updated from memory by every
//! accepted event and re-evaluated on a tick (rollovers); their control records go to the
//! control publisher task (`budget_shell`), which publishes them in order and records them
//! in ClickHouse.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use costpipe_aggregator_core::{EpochWrite, Processor, RecentIds, RetryPolicy, SourceRecord};
use costpipe_kafka::{DeadLetterProducer, RegistryClient, TopicSpec};
use costpipe_pricing::Catalog;
use costpipe_schemas::ValidationLimits;

use crate::budget_shell::BudgetShell;
use crate::catalog_reload::{CatalogWatcher, ReloadOutcome};
use crate::clickhouse_store::ClickHouseStore;
use crate::config::AggregatorConfig;
use crate::epoch_sink::{EpochSink, Held, SinkReport};
use crate::kafka_sinks;
use crate::kafka_source::{self, PartitionChange, RestoreSettings, UsageConsumer};
use crate::live::{LiveReply, LiveRequest};
use crate::telemetry::{Metrics, OutcomeLabel, PartitionLabel, ReasonLabel};
use crate::usage_metrics::UsageMetrics;

/// Records taken from the consumer per turn of the main loop.
const RECORDS_PER_TURN: usize = 256;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Everything the loop owns.
pub struct Pipeline {
    config: AggregatorConfig,
    store: ClickHouseStore,
    consumer: Arc<UsageConsumer>,
    dead_letters: Option<DeadLetterProducer>,
    processor: Processor,
    budgets: BudgetShell,
    catalog: Arc<Catalog>,
    metrics: Metrics,
    /// The seeds' usage metrics, fed by stored epochs.
    usage: UsageMetrics,
    /// Partitions with a consumer-lag series.
    lag_partitions: BTreeSet<i32>,
    catalog_watcher: Option<CatalogWatcher>,
    registry: Option<RegistryClient>,
    /// Ids the registry does not have: their records are dead-lettered without asking again.
    missing_schema_ids: HashSet<u32>,
    /// Generation this instance claimed, per assigned partition.
    generations: std::collections::BTreeMap<i32, u64>,
    live: mpsc::Receiver<LiveRequest>,
    owner: String,
    /// Sealed epochs the sink had no room for yet, in the order they were sealed.
    held: std::collections::VecDeque<Held>,
    /// Whether the assigned partitions are paused because epochs are held.
    paused: bool,
}

impl Pipeline {
    /// Connects everything; fails with a clear message when a dependency is unusable.
    pub async fn start(
        config: AggregatorConfig,
        metrics: Metrics,
        live: mpsc::Receiver<LiveRequest>,
    ) -> anyhow::Result<Pipeline> {
        let store = ClickHouseStore::new(&config.clickhouse)?;
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
            costpipe_kafka::ensure_topics(&config.kafka.brokers, &pipeline_topics(&config))
                .await
                .context("creating topics")?;
        }
        let producer = kafka_sinks::producer(&config.kafka.brokers)?;
        let dead_letters = kafka_sinks::dead_letter_producer(
            &config.kafka.brokers,
            &config.dead_letter_topic,
            config.dead_letter_max_bytes,
        )?;
        let consumer = kafka_source::subscribe(
            &config.kafka.brokers,
            &config.group_id,
            &config.usage_topic,
            config.session_timeout_ms,
            config.usage_fetch_wait_max_ms,
            store.clone(),
            RestoreSettings {
                owner: config.advertised_url(),
                recent_ids: config.recent_ids_policy(),
            },
        )?;
        let catalog = Arc::new(catalog);
        let watermarks = config.watermark_config();
        watermarks
            .validate(now_ms())
            .context("watermark settings")?;
        let processor = Processor::new(
            config.usage_topic.clone(),
            catalog.clone(),
            ValidationLimits::default(),
            config.epoch_policy()?,
        )
        .with_recent_ids_policy(config.recent_ids_policy())
        .with_watermarks(watermarks)
        .with_zone(config.zone()?);
        let mut processor = processor;
        let budgets =
            BudgetShell::start(&config, &store, &producer, &mut processor, metrics.clone())
                .await
                .context("loading budgets")?;
        let catalog_watcher = config.catalog.clone().map(CatalogWatcher::new);
        let registry = config
            .schema_registry_url
            .as_deref()
            .map(RegistryClient::new);
        let config_owner = config.advertised_url();
        let usage = UsageMetrics::new(metrics.clone(), config.metrics_caps());
        Ok(Pipeline {
            usage,
            lag_partitions: BTreeSet::new(),
            catalog_watcher,
            registry,
            missing_schema_ids: HashSet::new(),
            config,
            store,
            consumer,
            dead_letters: Some(dead_letters),
            processor,
            budgets,
            catalog,
            metrics,
            generations: Default::default(),
            owner: config_owner,
            live,
            held: Default::default(),
            paused: false,
        })
    }

    /// Runs until `shutdown` resolves, then writes what is open and returns. Dependency
    /// failures never end it: the sink retries, and consumption waits for the sink.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let dead_letters = self.dead_letters.take().context("the pipeline runs once")?;
        let (sink, mut reports) = EpochSink::start(
            self.store.clone(),
            dead_letters,
            self.config.sink_max_pending_records,
        );
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut housekeeping = tokio::time::interval(Duration::from_secs(5));
        let mut since_check = 0usize;
        let mut reload_tick = tokio::time::interval(Duration::from_millis(
            self.config.catalog_reload_interval_ms.max(100),
        ));
        let consumer = self.consumer.clone();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = reload_tick.tick() => self.reload_catalog(&sink).await?,
                _ = housekeeping.tick() => self.housekeeping(),
                _ = tick.tick() => {
                    self.apply_partition_changes().await;
                    self.seal_and_send(&sink, false).await?;
                    self.metrics.sink_pending_records.set(sink.pending() as i64);
                    self.budgets.on_tick(&mut self.processor, &self.store, now_ms()).await;
                }
                Some(report) = reports.recv() => {
                    self.handle_report(report).await;
                    self.offer_held(&sink)?;
                }
                Some(request) = self.live.recv() => self.answer_live(request).await,
                msg = consumer.recv() => {
                    // Records already fetched are taken without another turn of the select
                    // (its timers and channels cost more than a record's own work), a bounded
                    // number at a time so that ticks and reports still get their turn.
                    let mut next = Some(msg);
                    let mut taken = 0usize;
                    // One clock read per turn: the records of a turn arrive within
                    // microseconds, and the epoch age and lateness work in milliseconds.
                    let mut now = now_ms();
                    while let Some(msg) = next.take() {
                        taken += 1;
                        if taken < RECORDS_PER_TURN {
                            next = consumer.recv().now_or_never();
                        }
                        let msg = match msg {
                            Ok(m) => m,
                            Err(e) => {
                                tracing::warn!(error = %e, "consumer error");
                                continue;
                            }
                        };
                        if self.apply_partition_changes().await {
                            // A take-up can wait on ClickHouse for a while.
                            now = now_ms();
                        }
                        if let Some(payload) = msg.payload() {
                            self.learn_schema_of(payload).await;
                        }
                        let rec = SourceRecord {
                            partition: msg.partition(),
                            offset: msg.offset(),
                            key: msg.key(),
                            payload: msg.payload(),
                        };
                        // Counted when their epoch is stored, so that a rebuilt epoch is not
                        // counted twice.
                        self.processor.handle_record(rec, now);
                        self.budgets.forward(&mut self.processor);
                        since_check += 1;
                        if since_check >= 1024 {
                            since_check = 0;
                            self.seal_and_send(&sink, false).await?;
                        }
                    }
                    // Once per turn, not per record.
                    self.metrics.records_consumed.inc_by(taken as u64);
                }
            }
        }
        tracing::info!("shutting down: writing open epochs");
        self.apply_partition_changes().await;
        self.seal_and_send(&sink, true).await?;
        while let Some((write, catalog)) = self.held.pop_front() {
            sink.send(write, catalog).await?;
        }
        drop(sink);
        while let Some(report) = reports.recv().await {
            self.handle_report(report).await;
        }
        self.budgets.forward(&mut self.processor);
        self.budgets.shutdown().await;
        Ok(())
    }

    /// Seals due (or, with `all`, every) epochs and queues them for the sink; those it has no
    /// room for are held, and consumption paused, until it has.
    async fn seal_and_send(&mut self, sink: &EpochSink, all: bool) -> anyhow::Result<()> {
        let now = now_ms();
        let sealed = if all {
            self.processor.seal_all()
        } else {
            self.processor.seal_due(now, sink.is_busy())
        };
        for epoch in sealed {
            let Some(&generation) = self.generations.get(&epoch.partition) else {
                continue;
            };
            if epoch.replay {
                self.metrics.epochs_replayed.inc();
            }
            let retry = RetryPolicy {
                initial_backoff_ms: 100,
                max_backoff_ms: self.config.clickhouse_max_backoff_ms,
            };
            // Catalogs are swapped only after every open epoch was sealed, so the one in force
            // now priced this epoch.
            self.held.push_back((
                EpochWrite::new(epoch, generation, retry),
                self.catalog.clone(),
            ));
        }
        self.offer_held(sink)
    }

    /// Queues held epochs, oldest first, while the sink has room (a partition's epochs stay in
    /// order); pauses the assigned partitions while any is left, resumes them when none is.
    fn offer_held(&mut self, sink: &EpochSink) -> anyhow::Result<()> {
        while let Some((write, catalog)) = self.held.pop_front() {
            if let Some(back) = sink.try_send(write, catalog)? {
                self.held.push_front(back);
                break;
            }
        }
        let pause = !self.held.is_empty();
        // Re-paused on every offer while held: a partition assigned meanwhile is paused too.
        if pause || self.paused {
            match self.consumer.assignment() {
                Ok(assigned) => {
                    let done = if pause {
                        self.consumer.pause(&assigned)
                    } else {
                        self.consumer.resume(&assigned)
                    };
                    match done {
                        Ok(()) => {
                            if pause != self.paused {
                                tracing::debug!(
                                    paused = pause,
                                    held = self.held.len(),
                                    "consumption"
                                );
                            }
                            self.paused = pause;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, paused = pause, "pausing or resuming consumption")
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the assignment"),
            }
        }
        self.metrics.consumption_paused.set(i64::from(self.paused));
        Ok(())
    }

    fn housekeeping(&mut self) {
        let now = now_ms();
        self.processor.evict_recent_ids(now);
        self.processor.evict_windows(now);
        let (keys, bytes) = self.processor.window_size();
        self.metrics.window_keys.set(keys as i64);
        self.metrics.window_bytes.set(bytes as i64);
        self.metrics
            .recent_ids
            .set(self.processor.recent_ids_count() as i64);
        self.update_lag();
    }

    /// Consumer lag per assigned partition: the broker's high watermark (from the consumer's
    /// statistics) minus the next offset the processor expects. tansu reports watermarks
    /// short of the last record at times, so a negative difference is shown as 0.
    fn update_lag(&mut self) {
        let offsets = self.consumer.context().broker_offsets();
        let assigned: BTreeSet<i32> = self.processor.assigned().collect();
        for p in self.lag_partitions.difference(&assigned) {
            self.metrics
                .consumer_lag
                .remove(&PartitionLabel { partition: *p });
        }
        self.lag_partitions.retain(|p| assigned.contains(p));
        for &p in &assigned {
            let Some(&(low, high)) = offsets.get(&p) else {
                continue;
            };
            let next = self.processor.next_offset(p).unwrap_or(low);
            self.metrics
                .consumer_lag
                .get_or_create(&PartitionLabel { partition: p })
                .set(high.saturating_sub(next).max(0));
            self.lag_partitions.insert(p);
        }
    }

    async fn handle_report(&mut self, report: SinkReport) {
        match report {
            SinkReport::Complete {
                epoch,
                generation: _,
                seconds,
                tally,
            } => {
                self.metrics.epochs_written.inc();
                self.metrics.flush_seconds_total.inc_by(seconds);
                self.metrics.flush_latency.observe(seconds);
                // A rebuilt epoch is rebuilt only because its first write never completed, so
                // counting every completed epoch counts each record once (usage_metrics.rs).
                self.usage.record(&tally);
                self.metrics
                    .events_duplicate
                    .inc_by(epoch.duplicates.len() as u64);
                for dl in &epoch.dead_letters {
                    self.metrics
                        .dead_letters
                        .get_or_create(&ReasonLabel {
                            reason: dl.reason_code.to_string(),
                        })
                        .inc();
                    tracing::warn!(partition = dl.partition, offset = dl.offset, reason_code = dl.reason_code, error = %dl.reason, "dead letter");
                }
                // Last: a scrape that sees the epoch's events counted sees all of the above.
                self.metrics.events_priced.inc_by(tally.events);
                let mut commit = TopicPartitionList::new();
                if commit
                    .add_partition_offset(
                        &self.config.usage_topic,
                        epoch.partition,
                        Offset::Offset(epoch.end_offset),
                    )
                    .is_ok()
                {
                    // Kafka's committed offsets only show progress; the checkpoint is in ClickHouse.
                    if let Err(e) = self.consumer.commit(&commit, CommitMode::Async) {
                        tracing::debug!(error = %e, "offset commit failed (progress display only)");
                    }
                }
            }
            SinkReport::Fenced {
                partition,
                generation,
            } => {
                tracing::warn!(
                    partition,
                    generation,
                    "another instance claimed the partition; dropping it"
                );
                if self.generations.get(&partition) == Some(&generation) {
                    self.generations.remove(&partition);
                    self.processor.revoke(partition);
                }
            }
            SinkReport::Retrying {
                partition,
                step,
                error,
            } => {
                self.metrics.write_retries.inc();
                tracing::warn!(partition, ?step, %error, "epoch write failed; retrying with backoff");
            }
        }
    }

    /// Applies pending assignments and revocations; whether there were any.
    async fn apply_partition_changes(&mut self) -> bool {
        let changes = self.consumer.context().take_changes();
        if changes.is_empty() {
            return false;
        }
        let mut taken_up = BTreeSet::new();
        for change in changes {
            match change {
                PartitionChange::Assigned(taken) => {
                    let now = now_ms();
                    let p = taken.partition;
                    self.processor.assign_at(
                        p,
                        taken.plan,
                        RecentIds::restored_with_estimates(taken.recent_ids),
                        now,
                    );
                    for m in &taken.minutes {
                        if let Err(e) = self.processor.restore_minute(
                            p,
                            &m.tenant_id,
                            &m.department,
                            &m.model,
                            m.minute_s.saturating_mul(1000),
                            &m.amounts(),
                            now,
                        ) {
                            tracing::error!(partition = p, tenant = %m.tenant_id, error = %e, "window minute not restored");
                        }
                    }
                    self.generations.insert(p, taken.generation);
                    taken_up.insert(p);
                    self.metrics.restore_seconds.observe(taken.restore_seconds);
                }
                PartitionChange::Revoked(p) => {
                    self.generations.remove(&p);
                    self.processor.revoke(p);
                }
            }
        }
        self.metrics
            .assigned_partitions
            .set(self.processor.assigned().count() as i64);
        // Budgets follow the assignment: restore the new partitions' budget spend (one
        // query) and what was published for them, before their records are consumed.
        self.budgets
            .on_assignment(&mut self.processor, &self.store, &taken_up, now_ms())
            .await;
        true
    }

    async fn answer_live(&mut self, request: LiveRequest) {
        let now = now_ms();
        let reply = match self.processor.live_view(&request.tenant, now) {
            Some((watermark, rows)) => LiveReply::Held {
                instance: self.owner.clone(),
                watermark_ms: watermark,
                rows,
            },
            None => LiveReply::NotHeld {
                instance: self.owner.clone(),
                owner: self
                    .store
                    .tenant_owner(&self.config.usage_topic, &request.tenant)
                    .await
                    .ok()
                    .flatten(),
            },
        };
        let _ = request.reply.send(reply);
    }

    /// Fetches the schema of a record's id from the registry when it is not known yet.
    async fn learn_schema_of(&mut self, payload: &[u8]) {
        let Some(registry) = &self.registry else {
            return;
        };
        let Ok((id, _)) = costpipe_schemas::wire::split(payload) else {
            return;
        };
        if self.processor.knows_schema(id) || self.missing_schema_ids.contains(&id) {
            return;
        }
        let answer = match registry.schema(id).await {
            Ok(a) => a,
            Err(e) => {
                // Not cached: the next record with this id asks again.
                tracing::warn!(schema_id = id, error = %e, "schema registry unreachable");
                return;
            }
        };
        match answer {
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
    }

    /// Swaps in a changed, valid catalog. Open epochs are written first, so that each epoch
    /// is priced by one catalog version.
    async fn reload_catalog(&mut self, sink: &EpochSink) -> anyhow::Result<()> {
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
                self.seal_and_send(sink, true).await?;
                tracing::info!(
                    version = catalog.version(),
                    models = catalog.models().len(),
                    "price catalog reloaded"
                );
                let catalog = Arc::new(catalog);
                self.catalog = catalog.clone();
                self.processor.set_catalog(catalog);
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
}

/// The topics the aggregator reads and writes.
pub fn pipeline_topics(config: &AggregatorConfig) -> Vec<TopicSpec> {
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
        TopicSpec {
            name: config.budget_topic.clone(),
            partitions: 1,
            compacted: true,
        },
    ]
}

/// Applies the migrations, waiting for ClickHouse as long as it takes (with backoff).
async fn migrate_with_retry(store: &ClickHouseStore) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(200);
    let started = Instant::now();
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), waited_s = started.elapsed().as_secs(), "ClickHouse not ready, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
