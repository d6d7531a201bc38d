//! How usage events get into Kafka: the emitter library services link against, topic
//! administration shared by every component, and a synthetic event stream for load tests
//! and demos.

pub mod builder;
pub mod dead_letters;
pub mod emitter;
pub mod error;
pub mod http;
pub mod schema_registry;
pub mod synthetic;
pub mod topics;

pub use builder::UsageEventBuilder;
pub use emitter::{DeliveryReport, Emitter, EmitterConfig};
pub use error::EmitError;
