-- Claims and the generation fence: every owner of a partition claims a generation above any
-- before it; intents carry it. `kind` is 'intent' or 'claim'.
ALTER TABLE {db}.ingest_positions
    ADD COLUMN IF NOT EXISTS generation UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS kind LowCardinality(String) DEFAULT 'intent',
    ADD COLUMN IF NOT EXISTS owner String DEFAULT ''
