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

/// Idempotent producer of control records.
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?)
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

/// Publishes control records and waits until the broker has them all.
pub async fn publish_controls(
    producer: &FutureProducer,
    codec: &ControlCodec,
    topic: &str,
    controls: &[BudgetControl],
) -> anyhow::Result<()> {
    let encoded: Vec<(String, Vec<u8>)> = controls
        .iter()
        .map(|c| Ok((c.budget_id.clone(), codec.encode(c)?)))
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
