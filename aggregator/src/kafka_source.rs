//! Kafka source: a consumer-group member on the usage topic whose partitions start where the
//! ClickHouse checkpoint says, not where Kafka's committed offsets say.
//!
//! On assignment, the rebalance callback reads the latest epoch intent of each new partition,
//! assigns the partition at that epoch's start (so the epoch is replayed) and queues the
//! resume plan for the processor. Because the callback runs inside the consumer's poll, the
//! plan is queued before any record of the partition can be returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::Handle;

use costpipe_aggregator_core::{plan_resume, ResumePlan, StartAt};

use crate::clickhouse_sink::ClickHouseStore;

/// A change of this instance's partitions, for the processor.
#[derive(Debug)]
pub enum PartitionChange {
    Assigned(i32, ResumePlan),
    Revoked(i32),
    /// The checkpoint could not be read: the instance must stop rather than guess.
    Failed(String),
}

/// The consumer's context: rebalance handling.
pub struct SourceContext {
    topic: String,
    store: ClickHouseStore,
    runtime: Handle,
    changes: Mutex<Vec<PartitionChange>>,
    pending: AtomicBool,
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

    fn push(&self, change: PartitionChange) {
        if let Ok(mut c) = self.changes.lock() {
            c.push(change);
        }
        self.pending.store(true, Ordering::Release);
    }

    fn plan_assignment(&self, tpl: &mut TopicPartitionList) -> anyhow::Result<()> {
        // The poll runs on a runtime worker; block_in_place lets it wait for ClickHouse
        // without starving other tasks.
        let intents = tokio::task::block_in_place(|| {
            self.runtime
                .block_on(self.store.latest_intents(&self.topic))
        })?;
        let partitions: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        for p in partitions {
            let plan = plan_resume(intents.get(&p).copied());
            let offset = match plan.start {
                StartAt::Beginning => Offset::Beginning,
                StartAt::Offset(o) => Offset::Offset(o),
            };
            tpl.set_partition_offset(&self.topic, p, offset)?;
            tracing::info!(partition = p, ?plan, "partition assigned");
            self.push(PartitionChange::Assigned(p, plan));
        }
        Ok(())
    }
}

impl ClientContext for SourceContext {}

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
                    self.push(PartitionChange::Failed(format!("{e:#}")));
                    return;
                }
                if let Err(e) = base_consumer.assign(tpl) {
                    self.push(PartitionChange::Failed(format!("assign failed: {e}")));
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

/// Creates the consumer and subscribes it to `topic`.
pub fn subscribe(
    brokers: &str,
    group_id: &str,
    topic: &str,
    session_timeout_ms: u32,
    store: ClickHouseStore,
) -> KafkaResult<Arc<UsageConsumer>> {
    let context = SourceContext {
        topic: topic.to_string(),
        store,
        runtime: Handle::current(),
        changes: Mutex::new(Vec::new()),
        pending: AtomicBool::new(false),
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
        // librdkafka's 1 s default stalls partitions whenever decoding lags fetching.
        .set("fetch.queue.backoff.ms", "10")
        .create_with_context(context)?;
    consumer.subscribe(&[topic])?;
    Ok(Arc::new(consumer))
}
