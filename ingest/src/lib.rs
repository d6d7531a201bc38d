//! How usage events get into Kafka: the emitter library services link against, topic
//! administration shared by every component, and a synthetic event stream for load tests
//! and demos.

pub mod emitter;
pub mod error;
pub mod synthetic;
pub mod topics;

pub use emitter::{DeliveryReport, Emitter, EmitterConfig};
pub use error::EmitError;
