-- Each row names the epoch that wrote it, so that the epoch's completion marker can be
-- derived from the rows themselves (008, 009), and whether it arrived late.
ALTER TABLE {db}.usage_events_priced
    ADD COLUMN IF NOT EXISTS source_topic LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS epoch_start Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS epoch_end Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS generation UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS late Bool DEFAULT false
