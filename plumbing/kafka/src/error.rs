//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong in Kafka plumbing.
#[derive(Debug, Error)]
pub enum Error {
    /// librdkafka refused to create a client (a bad setting) or an admin request failed
    /// before the broker answered.
    #[error("Kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The broker refused to create a topic (other than because it already exists).
    #[error("cannot create topic {topic}: {code}")]
    TopicNotCreated {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: rdkafka::types::RDKafkaErrorCode,
    },
    /// An operation did not finish within its timeout (e.g. the broker is unreachable).
    #[error("{what} did not finish within {after_ms} ms")]
    Timeout {
        /// What was attempted.
        what: String,
        /// The timeout, in milliseconds.
        after_ms: u64,
    },
    /// A setting is unusable (e.g. a dead-letter cap of 0 bytes).
    #[error("invalid setting: {0}")]
    Config(String),
    /// A dead letter could not be handed to the producer (its queue is full, or the
    /// record is refused locally).
    #[error("dead letter not queued: {0}")]
    DeadLetterNotQueued(rdkafka::error::KafkaError),
    /// The broker did not acknowledge a dead letter within the delivery timeout.
    #[error("dead letter not delivered: {0}")]
    DeadLetterNotDelivered(rdkafka::error::KafkaError),
    /// The producer was dropped while a dead letter was in flight.
    #[error("dead letter producer dropped")]
    ProducerDropped,
    /// The schema registry could not be reached, timed out, or answered with a server
    /// error; worth retrying.
    #[error("schema registry at {url} unavailable: {detail}")]
    RegistryUnavailable {
        /// The registry's base URL.
        url: String,
        /// What happened.
        detail: String,
    },
    /// The schema registry refused the request (e.g. an incompatible schema).
    #[error("schema registry refused {what}: HTTP {status}: {body}")]
    RegistryRefused {
        /// What was asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body.
        body: String,
    },
}
