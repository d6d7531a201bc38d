-- Repricing corrections: the audit trail of every cost change after a catalog change.
-- Rows are deltas: a changed event gets a row taking its old amount out (negative) and a row
-- putting its new amount in (positive), each in its own currency pair. An event's current cost
-- is its usage_events_priced row plus the sum of its corrections. One insert per repricing
-- run (one part: all of it or none), deduplicated by the run's token.
CREATE TABLE IF NOT EXISTS {db}.usage_cost_corrections
(
    run_id              String,
    event_id            UUID,
    event_time          DateTime64(3, 'UTC'),
    tenant_id           LowCardinality(String),
    department          LowCardinality(String),
    model               LowCardinality(String),
    price_model         LowCardinality(String),
    currency            LowCardinality(String),
    billing_currency    LowCardinality(String),
    cost_delta          Decimal(38, 12),
    billing_cost_delta  Decimal(38, 12),
    unpriced_delta      Int64,
    catalog_version     LowCardinality(String),
    reason              String,
    corrected_at        DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (tenant_id, event_time, event_id, corrected_at)
SETTINGS non_replicated_deduplication_window = 10000
