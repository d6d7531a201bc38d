//! Kafka source: a consumer-group member on the usage topic whose partitions start where the
//! ClickHouse checkpoint says, not where Kafka's committed offsets say.
//!
//! On assignment, the rebalance callback takes each new partition up: it claims a new
//! generation, reads the checkpoint (after the claim, so that a zombie's intent stored before
//! it is seen), restores the partition's recent event ids and window minutes, assigns the
//! partition where the core's plan says, and queues all of it for the processor. Because the
//! callback runs inside the consumer's poll, the state is queued before any record of the
//! partition can be returned. While ClickHouse is unreachable the callback retries with
//! backoff, so consumption waits instead of the process exiting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::Handle;

use costpipe_aggregator_core::{
    next_generation, plan_resume, RecentIdsPolicy, ResumePlan, StartAt,
};

use crate::clickhouse_store::{ClickHouseStore, WindowMinute};

/// A partition taken up, with the state its processor needs.
#[derive(Debug)]
pub struct TakenUp {
    pub partition: i32,
    pub plan: ResumePlan,
    pub generation: u64,
    pub recent_ids: Vec<costpipe_aggregator_core::RestoredId>,
    pub minutes: Vec<WindowMinute>,
    pub restore_seconds: f64,
}

/// A change of this instance's partitions, for the processor.
#[derive(Debug)]
pub enum PartitionChange {
    Assigned(Box<TakenUp>),
    Revoked(i32),
}

/// How a partition's state is restored.
#[derive(Debug, Clone)]
pub struct RestoreSettings {
    /// This instance's address, recorded with its claims (for the live view's redirects).
    pub owner: String,
    /// The processor's id memory: ids are restored over its horizon, estimates awaiting
    /// their real count over its estimate horizon.
    pub recent_ids: RecentIdsPolicy,
}

/// The consumer's context: rebalance handling.
pub struct SourceContext {
    topic: String,
    store: ClickHouseStore,
    restore: RestoreSettings,
    runtime: Handle,
    changes: Mutex<Vec<PartitionChange>>,
    pending: AtomicBool,
    /// (low, high) watermark per partition of the usage topic, from the last statistics.
    offsets: Mutex<BTreeMap<i32, (i64, i64)>>,
}

impl SourceContext {
    /// Takes the queued partition changes, if any (cheap when there are none).
    pub fn take_changes(&self) -> Vec<PartitionChange> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.changes
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    /// The broker's (low, high) watermarks per partition, as of the consumer's last
    /// statistics (every [`STATISTICS_INTERVAL_MS`]).
    pub fn broker_offsets(&self) -> BTreeMap<i32, (i64, i64)> {
        self.offsets.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn push(&self, change: PartitionChange) {
        if let Ok(mut c) = self.changes.lock() {
            c.push(change);
        }
        self.pending.store(true, Ordering::Release);
    }

    /// Takes `partition` up: claim, checkpoint, recent ids, window minutes.
    async fn take_up(&self, partition: i32) -> anyhow::Result<TakenUp> {
        let started = std::time::Instant::now();
        let before = self.store.checkpoint(&self.topic, partition).await?;
        let generation = next_generation(&before);
        self.store
            .claim(&self.topic, partition, generation, &self.restore.owner)
            .await?;
        let cp = self.store.checkpoint(&self.topic, partition).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let recent_ids = self
            .store
            .recent_ids(
                &self.topic,
                partition,
                now.saturating_sub(self.restore.recent_ids.horizon_ms),
                now.saturating_sub(self.restore.recent_ids.estimate_horizon_ms),
            )
            .await?;
        let minutes = self
            .store
            .window_minutes(&self.topic, partition, restore_since(now))
            .await?;
        Ok(TakenUp {
            partition,
            plan: plan_resume(&cp),
            generation,
            recent_ids,
            minutes,
            restore_seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Takes `partition` up, retrying with backoff until ClickHouse answers.
    fn take_up_with_retry(&self, partition: i32) -> TakenUp {
        let mut delay_ms = 100u64;
        loop {
            // The poll runs on a runtime worker; block_in_place lets it wait for ClickHouse
            // without starving other tasks.
            let result =
                tokio::task::block_in_place(|| self.runtime.block_on(self.take_up(partition)));
            match result {
                Ok(t) => return t,
                Err(e) => {
                    tracing::warn!(partition, error = %format!("{e:#}"), retry_in_ms = delay_ms, "cannot take the partition up yet");
                    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
                    delay_ms = (delay_ms * 2).min(10_000);
                }
            }
        }
    }

    fn plan_assignment(&self, tpl: &mut TopicPartitionList) -> anyhow::Result<()> {
        let partitions: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        for p in partitions {
            let taken = self.take_up_with_retry(p);
            let offset = match taken.plan.start {
                StartAt::Beginning => Offset::Beginning,
                StartAt::Offset(o) => Offset::Offset(o),
            };
            tpl.set_partition_offset(&self.topic, p, offset)?;
            tracing::info!(
                partition = p,
                plan = ?taken.plan,
                generation = taken.generation,
                recent_ids = taken.recent_ids.len(),
                window_minutes = taken.minutes.len(),
                restore_seconds = taken.restore_seconds,
                "partition taken up"
            );
            self.push(PartitionChange::Assigned(Box::new(taken)));
        }
        Ok(())
    }
}

/// Window minutes older than this cannot reach any window or calendar period kept: the
/// previous month, whatever the zone (a day of margin for zones ahead of or behind UTC).
pub fn restore_since(now_ms: i64) -> i64 {
    use chrono::{Datelike, TimeZone};
    let now = chrono::Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_default();
    let (y, m) = if now.month() == 1 {
        (now.year() - 1, 12)
    } else {
        (now.year(), now.month() - 1)
    };
    chrono::Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_millis() - 86_400_000)
}

/// How often librdkafka reports statistics (the consumer-lag metric's refresh).
pub const STATISTICS_INTERVAL_MS: u32 = 5_000;

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        // Partition -1 is librdkafka's internal unassigned queue; negative offsets are unknown.
        let offsets = topic
            .partitions
            .iter()
            .filter(|(p, s)| **p >= 0 && s.hi_offset >= 0)
            .map(|(p, s)| (*p, (s.lo_offset.max(0), s.hi_offset)))
            .collect();
        if let Ok(mut o) = self.offsets.lock() {
            *o = offsets;
        }
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(e) = self.plan_assignment(tpl) {
                    tracing::error!(error = %format!("{e:#}"), "cannot set start offsets");
                }
                if let Err(e) = base_consumer.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                for e in tpl.elements() {
                    tracing::info!(partition = e.partition(), "partition revoked");
                    self.push(PartitionChange::Revoked(e.partition()));
                }
                if let Err(e) = base_consumer.unassign() {
                    tracing::warn!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = base_consumer.unassign();
            }
        }
    }
}

/// The usage consumer.
pub type UsageConsumer = StreamConsumer<SourceContext>;

/// Creates the consumer and subscribes it to `topic`. `fetch_wait_max_ms` is how long the
/// broker may hold a fetch that has too little data (`fetch.wait.max.ms`).
pub fn subscribe(
    brokers: &str,
    group_id: &str,
    topic: &str,
    session_timeout_ms: u32,
    fetch_wait_max_ms: u32,
    store: ClickHouseStore,
    restore: RestoreSettings,
) -> KafkaResult<Arc<UsageConsumer>> {
    let context = SourceContext {
        topic: topic.to_string(),
        store,
        restore,
        runtime: Handle::current(),
        changes: Mutex::new(Vec::new()),
        pending: AtomicBool::new(false),
        offsets: Mutex::new(BTreeMap::new()),
    };
    let consumer: UsageConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_timeout_ms / 4).max(500).to_string(),
        )
        .set("partition.assignment.strategy", "range")
        // A ClickHouse outage stops consumption (bounded buffering); stay in the group for
        // a long one rather than rebalancing every five minutes.
        .set("max.poll.interval.ms", "900000")
        // librdkafka's 1 s default stalls partitions whenever decoding lags fetching.
        .set("fetch.queue.backoff.ms", "10")
        // Watermarks for the consumer-lag metric, without a request of our own.
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string())
        // A real Kafka broker answers a fetch as soon as data arrives; tansu holds it for
        // about half this long even when it has data, which every event then waits for
        // (aggregator/BENCHMARKS.md, "2026-12-01: budgets").
        .set("fetch.wait.max.ms", fetch_wait_max_ms.to_string())
        .create_with_context(context)?;
    consumer.subscribe(&[topic])?;
    Ok(Arc::new(consumer))
}
