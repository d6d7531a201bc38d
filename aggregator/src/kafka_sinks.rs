//! Kafka outputs: dead letters (original bytes, reason in headers) and budget control
//! records (Avro, keyed by scope, on the compacted control topic).

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use costpipe_aggregator_core::DeadLetter;
use costpipe_schemas::{BudgetControl, ControlCodec};

use costpipe_schemas::dead_letter as headers;

const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Idempotent producer shared by both outputs.
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?)
}

/// Forwards dead letters and waits until the broker has them all.
pub async fn send_dead_letters(
    producer: &FutureProducer,
    topic: &str,
    source_topic: &str,
    letters: &[DeadLetter],
    now_ms: i64,
) -> anyhow::Result<()> {
    let sends = letters.iter().map(|dl| {
        let partition = dl.partition.to_string();
        let offset = dl.offset.to_string();
        let failed_at = now_ms.to_string();
        let hdrs = OwnedHeaders::new()
            .insert(Header {
                key: headers::REASON_CODE,
                value: Some(dl.reason_code),
            })
            .insert(Header {
                key: headers::REASON,
                value: Some(&dl.reason),
            })
            .insert(Header {
                key: headers::SOURCE,
                value: Some(headers::SOURCE_AGGREGATOR),
            })
            .insert(Header {
                key: headers::SOURCE_TOPIC,
                value: Some(source_topic),
            })
            .insert(Header {
                key: headers::SOURCE_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: headers::SOURCE_OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: headers::FAILED_AT,
                value: Some(&failed_at),
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(&dl.payload[..])
            .headers(hdrs);
        if let Some(k) = &dl.key {
            record = record.key(&k[..]);
        }
        let send = producer.send(record, Timeout::After(SEND_TIMEOUT));
        async move {
            send.await
                .map_err(|(e, _)| anyhow::anyhow!("dead letter not delivered: {e}"))
        }
    });
    try_join_all(sends).await?;
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
        .map(|c| Ok((c.scope_key.clone(), codec.encode(c)?)))
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
