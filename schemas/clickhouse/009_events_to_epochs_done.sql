-- One insert is one epoch of one partition, so grouping the inserted block by partition
-- yields exactly that epoch's marker.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_events_to_epochs_done
TO {db}.ingest_epochs_done
AS SELECT
    source_topic AS topic,
    source_partition AS partition,
    any(epoch_start) AS start_offset,
    any(epoch_end) AS end_offset,
    max(generation) AS generation,
    count() AS events,
    now64(3, 'UTC') AS written_at
FROM {db}.usage_events_priced
GROUP BY source_topic, source_partition
