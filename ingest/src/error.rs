//! Emitter errors.

use thiserror::Error;

/// Why an event was not delivered.
#[derive(Debug, Error)]
pub enum EmitError {
    /// The event broke a validation rule; nothing was sent.
    #[error("invalid event ({code}): {message}", code = .0.code.as_str(), message = .0.message)]
    Invalid(costpipe_schemas::ValidationError),
    /// The event could not be encoded (a bug, not bad input).
    #[error(transparent)]
    Encode(#[from] costpipe_schemas::EncodeError),
    /// The producer could not be created from the configuration.
    #[error("cannot create the Kafka producer: {0}")]
    Config(String),
    /// The broker did not acknowledge the event in time, or refused it.
    #[error("delivery failed: {0}")]
    Delivery(String),
}
