//! The dead-letter record format shared by every producer of dead letters (HTTP ingest,
//! the aggregator) and the tool that lists and replays them: the record's value is the
//! original bytes, untouched; the reason and the origin travel in these headers.

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
