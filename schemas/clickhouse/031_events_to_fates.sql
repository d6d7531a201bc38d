-- Every priced event's fate row, derived from the inserted block itself, so it lands with the
-- event or not at all (and is deduplicated with it on a retried insert).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_events_to_fates
TO {db}.usage_event_fates
AS SELECT
    tenant_id,
    event_id,
    'priced' AS fate,
    event_time,
    source_partition,
    source_offset,
    ingested_at AS recorded_at
FROM {db}.usage_events_priced
