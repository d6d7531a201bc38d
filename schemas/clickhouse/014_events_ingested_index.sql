-- Taking a partition up reads the event ids it stored in the last day (the dedup horizon);
-- rows of one insert share `ingested_at`, so a min-max index prunes everything older.
ALTER TABLE {db}.usage_events_priced
    ADD INDEX IF NOT EXISTS ingested_at_minmax ingested_at TYPE minmax GRANULARITY 1
