-- The aggregator's checkpoint: one row per partition epoch, written BEFORE the epoch's data.
-- The latest row of a partition names the last epoch that may be partly written; on start
-- the aggregator replays exactly that offset range (a no-op where the data is already there,
-- thanks to insert deduplication tokens) and resumes after it.
CREATE TABLE IF NOT EXISTS {db}.ingest_positions
(
    topic           LowCardinality(String),
    partition       Int32,
    start_offset    Int64,
    end_offset      Int64,
    events          UInt64,
    dead_letters    UInt64,
    catalog_version String,
    written_at      DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (topic, partition, end_offset)
TTL toDateTime(written_at) + INTERVAL 30 DAY
