//! The emitter: validates, encodes (Avro, Confluent wire format) and produces usage events.
//!
//! Idempotent producer keyed by tenant, so one tenant's events keep their order; batched and
//! lz4-compressed; bounded in memory by librdkafka's queue limits, with back-pressure: when the
//! queue is full, `enqueue` waits instead of growing it.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use uuid::Uuid;

use costpipe_schemas::{UsageCodec, UsageEvent, ValidationLimits};

use crate::error::EmitError;

/// Emitter settings.
#[derive(Debug, Clone)]
pub struct EmitterConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Usage topic.
    pub topic: String,
    /// How long a batch may wait to fill, in milliseconds.
    pub linger_ms: u32,
    /// Largest number of events waiting in memory before `enqueue` waits.
    pub max_queued_events: u32,
    /// Largest size of events waiting in memory, in KiB.
    pub max_queued_kib: u32,
    /// How long the producer retries one event before reporting failure, in milliseconds.
    pub delivery_timeout_ms: u32,
    /// Validation rules applied before anything is sent.
    pub limits: ValidationLimits,
}

impl EmitterConfig {
    /// Defaults for `brokers` and `topic`.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        EmitterConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            linger_ms: 10,
            max_queued_events: 200_000,
            max_queued_kib: 256 * 1024,
            delivery_timeout_ms: 120_000,
            limits: ValidationLimits::default(),
        }
    }
}

/// Where an event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    pub event_id: Uuid,
    pub partition: i32,
    pub offset: i64,
}

/// A produced event whose acknowledgement is still on its way.
pub struct PendingDelivery {
    event_id: Uuid,
    future: DeliveryFuture,
}

impl PendingDelivery {
    /// Waits for the broker's acknowledgement.
    pub async fn wait(self) -> Result<DeliveryReport, EmitError> {
        match self.future.await {
            Ok(Ok(delivery)) => Ok(DeliveryReport {
                event_id: self.event_id,
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((e, _))) => Err(EmitError::Delivery(e.to_string())),
            Err(_) => Err(EmitError::Delivery(
                "producer dropped before delivery".into(),
            )),
        }
    }
}

/// Produces usage events to Kafka.
pub struct Emitter {
    producer: FutureProducer,
    codec: UsageCodec,
    config: EmitterConfig,
}

impl Emitter {
    /// Creates the producer.
    pub fn new(config: EmitterConfig) -> Result<Emitter, EmitError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", config.linger_ms.to_string())
            .set("batch.size", (1 << 20).to_string())
            .set(
                "queue.buffering.max.messages",
                config.max_queued_events.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                config.max_queued_kib.to_string(),
            )
            .set(
                "delivery.timeout.ms",
                config.delivery_timeout_ms.to_string(),
            )
            .create()
            .map_err(|e| EmitError::Config(e.to_string()))?;
        Ok(Emitter {
            producer,
            codec: UsageCodec::current(),
            config,
        })
    }

    /// Registers the usage schema with a Confluent-compatible registry under
    /// `<topic>-value` and writes the id it assigns from now on.
    pub async fn use_schema_registry(mut self, url: &str) -> Result<Emitter, EmitError> {
        let subject = costpipe_schemas::registry::subject_for_topic(&self.config.topic);
        let text =
            costpipe_schemas::SchemaRegistry::source(self.codec.schema_id()).ok_or_else(|| {
                EmitError::Config("the current usage schema has no source text".into())
            })?;
        let id = crate::schema_registry::RegistryClient::new(url)
            .register(&subject, text)
            .await
            .map_err(|e| EmitError::Config(e.to_string()))?;
        self.codec = self.codec.with_writer_id(id, &subject);
        Ok(self)
    }

    /// The schema id records are written with.
    pub fn schema_id(&self) -> u32 {
        self.codec.schema_id()
    }

    /// Validates and encodes `event`, then hands it to the producer, waiting while the
    /// in-memory queue is full. The returned handle resolves once the broker acknowledged it.
    pub async fn enqueue(&self, event: &UsageEvent) -> Result<PendingDelivery, EmitError> {
        let now = chrono::Utc::now().timestamp_millis();
        self.config
            .limits
            .check(event, now)
            .map_err(EmitError::Invalid)?;
        let payload = self.codec.encode(event)?;
        self.enqueue_encoded(event.event_id, &event.tenant_id, &payload)
            .await
    }

    /// Produces an already validated and encoded event (HTTP ingest, dead-letter replay).
    pub async fn enqueue_encoded(
        &self,
        event_id: Uuid,
        tenant: &str,
        payload: &[u8],
    ) -> Result<PendingDelivery, EmitError> {
        let mut backoff = Duration::from_millis(1);
        loop {
            let record = FutureRecord::to(&self.config.topic)
                .key(tenant)
                .payload(payload);
            match self.producer.send_result(record) {
                Ok(future) => return Ok(PendingDelivery { event_id, future }),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err((e, _)) => return Err(EmitError::Delivery(e.to_string())),
            }
        }
    }

    /// Sends one event and waits for its acknowledgement.
    pub async fn emit(&self, event: &UsageEvent) -> Result<DeliveryReport, EmitError> {
        self.enqueue(event).await?.wait().await
    }

    /// Waits until every queued event is acknowledged or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), EmitError> {
        self.producer
            .flush(Timeout::After(timeout))
            .map_err(|e| EmitError::Delivery(e.to_string()))
    }
}
