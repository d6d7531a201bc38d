-- Completion markers: one row per epoch whose rows are stored. Written by the materialized
-- view 009 in the same insert as the rows (so "rows stored" and "epoch complete" cannot
-- disagree), or directly by the aggregator for an epoch without rows. Never expires: it is
-- what a partition resumes from.
CREATE TABLE IF NOT EXISTS {db}.ingest_epochs_done
(
    topic           LowCardinality(String),
    partition       Int32,
    start_offset    Int64,
    end_offset      Int64,
    generation      UInt64,
    events          UInt64,
    written_at      DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (topic, partition, end_offset)
SETTINGS non_replicated_deduplication_window = 10000
