-- What became of each event id, for `GET /v1/events/{event_id}` of HTTP ingest: found by
-- its primary key (tenant, event id) without touching `usage_events_priced`, whose order
-- (tenant, event_time, event_id) cannot find an id without its time.
-- Narrow on purpose: every priced event adds a row here (031), and ClickHouse's insert work
-- per event is the aggregator's bottleneck. Priced rows carry the event time, so the cost is
-- then read from `usage_events_priced` by its full primary key. Duplicates and dead letters
-- (conflicts included) are inserted by the aggregator, at least once; the reader takes
-- DISTINCT rows. A plain MergeTree sorted by (tenant, id) only: a ReplacingMergeTree keyed
-- by the whole record cost twice as much per inserted row (scripts/bench-fates-view).
CREATE TABLE IF NOT EXISTS {db}.usage_event_fates
(
    tenant_id        LowCardinality(String),
    event_id         UUID,
    fate             Enum8('priced' = 1, 'duplicate' = 2, 'dead_letter' = 3),
    event_time       DateTime64(3, 'UTC'),
    reason_code      LowCardinality(String) DEFAULT '',
    reason           String DEFAULT '',
    source_partition Int32,
    source_offset    Int64,
    recorded_at      DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (tenant_id, event_id)
