//! The dead-letter producer every producer of dead letters uses (HTTP ingest, the
//! aggregator). Deciding *that* something is a dead letter is the caller's business; this
//! module writes it in the one format that `costpipe-deadletters` reads back.
//!
//! A dead letter's value is the original bytes as received, its key the original record
//! key (or else the tenant), and its reason and origin travel in the headers named in
//! [`costpipe_schemas::dead_letter`]. Kafka refuses records over its size limit
//! (librdkafka `message.max.bytes` and the broker's default are about 1 MB), so a value
//! longer than the producer's cap is cut to its first bytes and flagged with [`TRUNCATED`],
//! [`ORIGINAL_SIZE`] and, when the whole value was at hand, [`ORIGINAL_SHA256`]. A
//! truncated letter can be listed, not replayed.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use costpipe_schemas::dead_letter as h;
use costpipe_schemas::dead_letter::FittedValue;

use crate::Error;

pub use costpipe_schemas::dead_letter::{
    CONTENT_TYPE, DEFAULT_MAX_VALUE_BYTES, ORIGINAL_SHA256, ORIGINAL_SIZE, SOURCE_AGGREGATOR,
    SOURCE_HTTP_INGEST, TRUNCATED,
};

/// How many dead letters [`DeadLetterProducer::send_all`] keeps in flight at most; with
/// values capped at [`DEFAULT_MAX_VALUE_BYTES`] that stays far under librdkafka's queue
/// limits, so sending never fails with a full queue.
pub const SEND_ALL_IN_FLIGHT: usize = 1000;

/// Where a dead letter was read from, when it came from Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterOrigin<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One dead letter to write.
#[derive(Debug, Clone, Default)]
pub struct NewDeadLetter<'a> {
    /// The bytes as received.
    pub payload: &'a [u8],
    /// Total size of what was received, when `payload` is already only a prefix of it.
    pub received_bytes: Option<usize>,
    /// Stable machine-readable reason, e.g. `negative_tokens`.
    pub reason_code: &'a str,
    /// Human-readable reason.
    pub reason: &'a str,
    /// The record key; `None`: the tenant, if any.
    pub key: Option<&'a [u8]>,
    /// The authenticated tenant, where known.
    pub tenant: Option<&'a str>,
    /// The request's content type, for letters holding a whole body.
    pub content_type: Option<&'a str>,
    /// Where it was read from, when it came from Kafka.
    pub origin: Option<DeadLetterOrigin<'a>>,
    /// When it was rejected, UTC milliseconds since the epoch.
    pub failed_at_ms: i64,
}

/// `payload` cut to at most `max_value_bytes`, with the headers that say what was cut.
/// `received_bytes` is the size of what was received when `payload` is only its prefix
/// already (a request body read up to its limit): then the letter is flagged truncated
/// with that size, without [`ORIGINAL_SHA256`], since the whole value was never at hand.
/// Otherwise this is [`costpipe_schemas::dead_letter::fit_value`]. Pure.
pub fn fit_value(
    payload: &[u8],
    received_bytes: Option<usize>,
    max_value_bytes: usize,
) -> FittedValue<'_> {
    match received_bytes {
        Some(received) if received > payload.len() => FittedValue {
            value: &payload[..payload.len().min(max_value_bytes)],
            headers: vec![
                (TRUNCATED, "true".to_string()),
                (ORIGINAL_SIZE, received.to_string()),
            ],
        },
        _ => costpipe_schemas::dead_letter::fit_value(payload, max_value_bytes),
    }
}

/// Produces dead letters to one topic.
#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: FutureProducer,
    topic: String,
    source: &'static str,
    max_value_bytes: usize,
}

impl std::fmt::Debug for DeadLetterProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterProducer")
            .field("topic", &self.topic)
            .field("source", &self.source)
            .field("max_value_bytes", &self.max_value_bytes)
            .finish_non_exhaustive()
    }
}

impl DeadLetterProducer {
    /// An idempotent producer for `topic`, writing letters from `source`
    /// ([`SOURCE_HTTP_INGEST`], [`SOURCE_AGGREGATOR`]); values are capped at
    /// `max_value_bytes`; a dead letter not acknowledged within `delivery_timeout_ms` is
    /// reported lost.
    pub fn new(
        brokers: &str,
        topic: impl Into<String>,
        source: &'static str,
        max_value_bytes: usize,
        delivery_timeout_ms: u32,
    ) -> Result<Self, Error> {
        if max_value_bytes == 0 {
            return Err(Error::Config(
                "the dead-letter value cap must be at least 1 byte".into(),
            ));
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("delivery.timeout.ms", delivery_timeout_ms.to_string())
            .create()?;
        Ok(DeadLetterProducer {
            producer,
            topic: topic.into(),
            source,
            max_value_bytes,
        })
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The cap on a letter's value, in bytes.
    pub fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    /// The underlying producer (readiness checks use its metadata).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Queues one dead letter; the future resolves when the broker has it. Queuing happens
    /// now, so the future borrows nothing.
    pub fn send(
        &self,
        letter: &NewDeadLetter<'_>,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        let fitted = fit_value(letter.payload, letter.received_bytes, self.max_value_bytes);
        let failed_at = letter.failed_at_ms.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: h::REASON_CODE,
                value: Some(letter.reason_code),
            })
            .insert(Header {
                key: h::REASON,
                value: Some(letter.reason),
            })
            .insert(Header {
                key: h::SOURCE,
                value: Some(self.source),
            })
            .insert(Header {
                key: h::FAILED_AT,
                value: Some(&failed_at),
            });
        if let Some(o) = &letter.origin {
            headers = headers
                .insert(Header {
                    key: h::SOURCE_TOPIC,
                    value: Some(o.topic),
                })
                .insert(Header {
                    key: h::SOURCE_PARTITION,
                    value: Some(&o.partition.to_string()),
                })
                .insert(Header {
                    key: h::SOURCE_OFFSET,
                    value: Some(&o.offset.to_string()),
                });
        }
        if let Some(t) = letter.tenant {
            headers = headers.insert(Header {
                key: h::TENANT,
                value: Some(t),
            });
        }
        if let Some(ct) = letter.content_type {
            headers = headers.insert(Header {
                key: CONTENT_TYPE,
                value: Some(ct),
            });
        }
        for (key, value) in &fitted.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_str()),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(fitted.value)
            .headers(headers);
        if let Some(k) = letter.key.or(letter.tenant.map(str::as_bytes)) {
            record = record.key(k);
        }
        let sent = self.producer.send_result(record).map_err(|(e, _)| e);
        async move {
            match sent {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(Error::DeadLetterNotDelivered(e)),
                    Err(_) => Err(Error::ProducerDropped),
                },
                Err(e) => Err(Error::DeadLetterNotQueued(e)),
            }
        }
    }

    /// Sends every letter and waits until the broker has them all, with at most
    /// [`SEND_ALL_IN_FLIGHT`] in flight. The first failure is returned.
    pub async fn send_all<'a>(
        &self,
        letters: impl IntoIterator<Item = NewDeadLetter<'a>>,
    ) -> Result<(), Error> {
        let mut in_flight = FuturesUnordered::new();
        for letter in letters {
            if in_flight.len() >= SEND_ALL_IN_FLIGHT {
                if let Some(done) = in_flight.next().await {
                    done?;
                }
            }
            in_flight.push(self.send(&letter));
        }
        while let Some(done) = in_flight.next().await {
            done?;
        }
        Ok(())
    }

    /// Waits for every dead letter in flight.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        Ok(self.producer.flush(Timeout::After(timeout))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(f: &'a FittedValue<'_>, name: &str) -> Option<&'a str> {
        f.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn small_values_are_kept_whole() {
        let f = fit_value(b"abc", None, 3);
        assert_eq!(f.value, b"abc");
        assert!(f.headers.is_empty());
        let f = fit_value(b"abc", Some(3), 3);
        assert!(f.headers.is_empty());
    }

    #[test]
    fn long_values_are_cut_and_described() {
        let f = fit_value(b"abcdef", None, 4);
        assert_eq!(f.value, b"abcd");
        assert_eq!(header(&f, TRUNCATED), Some("true"));
        assert_eq!(header(&f, ORIGINAL_SIZE), Some("6"));
        // SHA-256("abcdef")
        assert_eq!(
            header(&f, ORIGINAL_SHA256),
            Some("bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721")
        );
    }

    #[test]
    fn a_prefix_received_is_flagged_without_a_hash() {
        // Only the first 4 bytes of a 10-byte body were read: nothing to hash, still flagged.
        let f = fit_value(b"abcd", Some(10), 100);
        assert_eq!(f.value, b"abcd");
        assert_eq!(header(&f, TRUNCATED), Some("true"));
        assert_eq!(header(&f, ORIGINAL_SIZE), Some("10"));
        assert_eq!(header(&f, ORIGINAL_SHA256), None);
        // And cut further when the prefix itself is over the cap.
        assert_eq!(fit_value(b"abcd", Some(10), 2).value, b"ab");
        // A received size smaller than the payload is not believed.
        assert!(fit_value(b"abcd", Some(2), 100).headers.is_empty());
    }

    #[test]
    fn a_zero_cap_is_refused() {
        let err =
            DeadLetterProducer::new("127.0.0.1:1", "t", SOURCE_AGGREGATOR, 0, 1000).unwrap_err();
        assert!(matches!(err, Error::Config(_)));
    }
}
