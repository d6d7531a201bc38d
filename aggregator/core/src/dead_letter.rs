//! A record the aggregator could not use, kept whole with the reason.

/// An undecodable or invalid record, forwarded to the dead-letter topic as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    /// The record's key, untouched.
    pub key: Option<Vec<u8>>,
    /// The record's bytes, untouched (empty for a tombstone).
    pub payload: Vec<u8>,
    /// Stable machine-readable reason, e.g. `bad_magic_byte`, `negative_tokens`.
    pub reason_code: &'static str,
    /// Human-readable detail.
    pub reason: String,
}
