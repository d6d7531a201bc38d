//! Kafka outputs: dead letters (original bytes, reason in headers, through the shared
//! `costpipe_kafka::DeadLetterProducer`, which caps their size) and budget control records
//! (Avro v2, keyed by budget id, on the compacted control topic).

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use costpipe_aggregator_core::DeadLetter;
use costpipe_kafka::dead_letters::{
    DeadLetterOrigin, DeadLetterProducer, NewDeadLetter, SOURCE_AGGREGATOR,
};
use costpipe_schemas::{BudgetControl, ControlCodec};

const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a dead letter may wait for the broker's acknowledgement (librdkafka's default
/// `delivery.timeout.ms`, which the aggregator always used).
const DEAD_LETTER_DELIVERY_TIMEOUT_MS: u32 = 300_000;

/// The control producer's settings: idempotent, every replica's acknowledgement, 5 ms linger.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5");
    config
}

/// Idempotent producer of control records.
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(producer_config(brokers).create()?)
}

/// The dead-letter producer: values over `max_value_bytes` are cut and flagged.
pub fn dead_letter_producer(
    brokers: &str,
    topic: &str,
    max_value_bytes: usize,
) -> anyhow::Result<DeadLetterProducer> {
    Ok(DeadLetterProducer::new(
        brokers,
        topic,
        SOURCE_AGGREGATOR,
        max_value_bytes,
        DEAD_LETTER_DELIVERY_TIMEOUT_MS,
    )?)
}

/// Forwards dead letters read from `source_topic` and waits until the broker has them all.
pub async fn send_dead_letters(
    producer: &DeadLetterProducer,
    source_topic: &str,
    letters: &[DeadLetter],
    now_ms: i64,
) -> anyhow::Result<()> {
    // Built before the await: a closure-backed iterator held across it makes the future's
    // Send-ness higher-ranked, which tokio::spawn cannot prove.
    let built: Vec<NewDeadLetter<'_>> = letters
        .iter()
        .map(|dl| NewDeadLetter {
            payload: &dl.payload,
            reason_code: dl.reason_code,
            reason: &dl.reason,
            key: dl.key.as_deref(),
            origin: Some(DeadLetterOrigin {
                topic: source_topic,
                partition: dl.partition,
                offset: dl.offset,
            }),
            failed_at_ms: now_ms,
            ..NewDeadLetter::default()
        })
        .collect();
    producer.send_all(built).await?;
    Ok(())
}

/// The compaction key of a control record: the budget id for STATE records (the latest is
/// the budget's state), `<budget id>#FORECAST` / `#SPIKE` for the others, so that they never
/// compact a state away (`#` is not allowed in budget ids).
pub fn control_key(c: &BudgetControl) -> String {
    match c.kind {
        costpipe_schemas::ControlKind::State => c.budget_id.clone(),
        kind => format!("{}#{}", c.budget_id, kind.as_str()),
    }
}

/// Publishes control records and waits until the broker has them all.
pub async fn publish_controls(
    producer: &FutureProducer,
    codec: &ControlCodec,
    topic: &str,
    controls: &[BudgetControl],
) -> anyhow::Result<()> {
    let encoded: Vec<(String, Vec<u8>)> = controls
        .iter()
        .map(|c| Ok((control_key(c), codec.encode(c)?)))
        .collect::<anyhow::Result<_>>()?;
    let sends = encoded.iter().map(|(key, payload)| {
        let send = producer.send(
            FutureRecord::to(topic).key(key).payload(payload),
            Timeout::After(SEND_TIMEOUT),
        );
        async move {
            send.await
                .map_err(|(e, _)| anyhow::anyhow!("control record not delivered: {e}"))
        }
    });
    try_join_all(sends).await?;
    Ok(())
}
