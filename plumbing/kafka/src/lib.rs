//! Kafka plumbing shared by every costpipe service that talks to the broker.
//!
//! This crate owns:
//! - [`KafkaArgs`]: the `--brokers` flag (`COSTPIPE_KAFKA_BROKERS`), declared once and
//!   flattened into each binary's config;
//! - [`topics`]: creating the pipeline's topics when they are missing, within a timeout;
//! - [`schema_registry`]: the client of an optional Confluent-compatible schema registry,
//!   with connect and request timeouts;
//! - [`compacted`]: compacted topics (budgets, controls) read as tables and followed;
//! - [`dead_letters`]: the one producer of dead letters, which caps a letter's value and
//!   flags what it cut.
//!
//! It must not know about any service: it depends on `costpipe-schemas` only, never on the
//! aggregator, ingest, billing or pricing. Decisions about *what* is a dead letter, which
//! topics a service needs and when to retry belong to the services.

pub mod args;
pub mod compacted;
pub mod dead_letters;
pub mod error;
pub mod schema_registry;
pub mod topics;

pub use args::{KafkaArgs, DEFAULT_BROKERS};
pub use compacted::{follow, read_to_end, TableRecord, TableUpdate};
pub use dead_letters::{
    DeadLetterOrigin, DeadLetterProducer, NewDeadLetter, DEFAULT_MAX_VALUE_BYTES,
};
pub use error::Error;
pub use schema_registry::RegistryClient;
pub use topics::{ensure_topics, ensure_topics_within, TopicSpec};
