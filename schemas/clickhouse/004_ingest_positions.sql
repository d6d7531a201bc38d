-- The aggregator's checkpoint: one intent row per partition epoch, written BEFORE the epoch's
-- rows, and one claim row per take-up of a partition (columns added by 013). The latest
-- intent without a completion marker (ingest_epochs_done) is the only epoch that may be
-- missing; a partition resumes after its latest complete intent. See DEVELOPERS.md.
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
