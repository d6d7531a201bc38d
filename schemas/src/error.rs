//! Errors of encoding and decoding records.

use thiserror::Error;

/// Why a record could not be turned into a typed event. Each variant maps to a stable,
/// machine-readable reason code (see [`DecodeError::code`]) used on the dead-letter topic.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The record is shorter than the 5-byte Confluent header.
    #[error("record of {len} bytes is shorter than the 5-byte wire header")]
    TooShort { len: usize },
    /// The first byte is not the Confluent magic byte 0.
    #[error("wrong magic byte {found:#04x}, expected 0x00")]
    BadMagic { found: u8 },
    /// The schema id in the header is not one this registry knows.
    #[error("unknown schema id {id}")]
    UnknownSchemaId { id: u32 },
    /// The schema id is known but is another record type (e.g. a control event on the usage topic).
    #[error("schema id {id} is subject {subject}, not {expected}")]
    WrongSubject {
        id: u32,
        subject: String,
        expected: String,
    },
    /// The Avro body could not be read with the writer's schema (truncated, corrupt, invalid UTF-8).
    #[error("undecodable Avro body: {0}")]
    Avro(String),
    /// Bytes were left over after the Avro datum.
    #[error("{extra} trailing bytes after the Avro datum")]
    TrailingBytes { extra: usize },
    /// A length, count or nesting depth in the body is over a documented decode limit (see
    /// [`crate::bounds`]); refused before anything is allocated for it.
    #[error("{what} claims {claimed}, over the decode limit of {limit}")]
    BoundsExceeded {
        /// What claimed too much, e.g. `labels`, `tenant_id`, `nesting depth`.
        what: &'static str,
        claimed: u64,
        limit: u64,
    },
}

impl DecodeError {
    /// Stable reason code for dead letters and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooShort { .. } => "truncated_header",
            DecodeError::BadMagic { .. } => "bad_magic_byte",
            DecodeError::UnknownSchemaId { .. } => "unknown_schema_id",
            DecodeError::WrongSubject { .. } => "wrong_subject",
            DecodeError::Avro(_) => "undecodable_avro",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::BoundsExceeded { .. } => "avro_bounds_exceeded",
        }
    }
}

/// Why a typed event could not be encoded.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// The value does not fit the schema (a bug in this crate's types, not user input).
    #[error("value does not match the Avro schema: {0}")]
    Avro(String),
}
