//! How usage events get into Kafka: the emitter library services link against, HTTP ingest,
//! the dead-letter list/replay tool, and a synthetic event stream for load tests and demos.
//!
//! Topic administration and the schema registry client live in `costpipe-kafka`; they are
//! re-exported here as [`topics`] and [`schema_registry`] for existing users.

pub mod builder;
pub mod dead_letters;
pub mod emitter;
pub mod error;
pub mod http;
pub mod synthetic;

pub use costpipe_kafka::{schema_registry, topics};

pub use builder::UsageEventBuilder;
pub use emitter::{DeliveryReport, Emitter, EmitterConfig};
pub use error::EmitError;
