//! The dead-letter record format shared by every producer of dead letters (HTTP ingest,
//! the aggregator) and the tool that lists and replays them: the record's value is the
//! original bytes, untouched unless too big for the topic ([`fit_value`] cuts them and says
//! so); the reason and the origin travel in these headers.

/// Stable machine-readable reason, e.g. `bad_magic_byte`, `negative_tokens`.
pub const REASON_CODE: &str = "costpipe.reason_code";
/// Human-readable reason.
pub const REASON: &str = "costpipe.reason";
/// Which component rejected it: `aggregator`, `http-ingest`.
pub const SOURCE: &str = "costpipe.source";
/// Topic the record was read from, where it came from Kafka.
pub const SOURCE_TOPIC: &str = "costpipe.source_topic";
/// Partition the record was read from.
pub const SOURCE_PARTITION: &str = "costpipe.source_partition";
/// Offset the record was read from.
pub const SOURCE_OFFSET: &str = "costpipe.source_offset";
/// When it was rejected, UTC milliseconds since the epoch.
pub const FAILED_AT: &str = "costpipe.failed_at";
/// Tenant the sender authenticated as, where known (HTTP ingest).
pub const TENANT: &str = "costpipe.tenant";
/// `true` when the value holds only the first bytes of what was received (HTTP ingest caps
/// a dead letter well under Kafka's record size limit).
pub const TRUNCATED: &str = "costpipe.truncated";
/// Size in bytes of what was received, when truncated.
pub const ORIGINAL_SIZE: &str = "costpipe.original_size";
/// The request's `Content-Type`, on letters holding a whole request body.
pub const CONTENT_TYPE: &str = "costpipe.content_type";

/// `SOURCE` of dead letters written by HTTP ingest.
pub const SOURCE_HTTP_INGEST: &str = "http-ingest";
/// `SOURCE` of dead letters written by the aggregator.
pub const SOURCE_AGGREGATOR: &str = "aggregator";
/// Hex SHA-256 of the whole original record, when the value is truncated: identifies the
/// record (e.g. to match it with the sender's copy) although its tail is gone.
pub const ORIGINAL_SHA256: &str = "costpipe.original_sha256";

/// Default cap on a dead letter's value, in bytes: half of Kafka's 1 MB default record limit
/// (the broker's `message.max.bytes`, librdkafka's too), leaving room for the key, the
/// headers and the batch framing. Every producer of dead letters uses it unless configured
/// otherwise.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 512 * 1024;

/// What to store for a rejected record: its bytes, cut to fit if needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FittedValue<'a> {
    /// The value to write: the whole record, or its first `max_value_bytes` bytes.
    pub value: &'a [u8],
    /// Headers to add to the letter's own: [`TRUNCATED`], [`ORIGINAL_SIZE`] and
    /// [`ORIGINAL_SHA256`] when `value` is cut, none otherwise.
    pub headers: Vec<(&'static str, String)>,
}

impl FittedValue<'_> {
    /// Whether `value` holds only the first bytes of the record.
    pub fn is_truncated(&self) -> bool {
        !self.headers.is_empty()
    }
}

/// Fits `original` into a dead letter whose value may hold at most `max_value_bytes` bytes:
/// unchanged when it fits, else its first `max_value_bytes` bytes with the headers that say
/// so. Pure; hashes the record only when it is cut.
pub fn fit_value(original: &[u8], max_value_bytes: usize) -> FittedValue<'_> {
    use sha2::{Digest, Sha256};

    if original.len() <= max_value_bytes {
        return FittedValue {
            value: original,
            headers: Vec::new(),
        };
    }
    FittedValue {
        value: &original[..max_value_bytes],
        headers: vec![
            (TRUNCATED, "true".to_string()),
            (ORIGINAL_SIZE, original.len().to_string()),
            (ORIGINAL_SHA256, hex::encode(Sha256::digest(original))),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_fits_is_stored_whole() {
        let record = vec![7u8; 100];
        for max in [100, 101, DEFAULT_MAX_VALUE_BYTES] {
            let fitted = fit_value(&record, max);
            assert_eq!(fitted.value, &record[..]);
            assert!(fitted.headers.is_empty());
            assert!(!fitted.is_truncated());
        }
        let empty = fit_value(&[], 0);
        assert!(empty.value.is_empty() && !empty.is_truncated());
    }

    #[test]
    fn a_record_too_big_is_cut_and_flagged() {
        // The outside client's ~1 MB record with an oversized label.
        let record: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let fitted = fit_value(&record, DEFAULT_MAX_VALUE_BYTES);
        assert_eq!(fitted.value, &record[..DEFAULT_MAX_VALUE_BYTES]);
        assert!(fitted.is_truncated());
        let header = |name| {
            fitted
                .headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header(TRUNCATED), Some("true"));
        assert_eq!(header(ORIGINAL_SIZE), Some("1000000"));
        let sha = header(ORIGINAL_SHA256).unwrap();
        assert_eq!(sha.len(), 64);
        assert!(sha
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(fitted.headers.len(), 3);
    }

    #[test]
    fn the_hash_is_of_the_whole_record() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let fitted = fit_value(b"abc", 1);
        assert_eq!(fitted.value, b"a");
        assert_eq!(
            fitted.headers[2],
            (
                ORIGINAL_SHA256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string()
            )
        );
        assert_eq!(fit_value(b"abc", 0).value, b"");
    }
}
