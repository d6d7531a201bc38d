-- Hourly cost rollup for billing, keyed by the catalog's model (`price_model`, falling back to
-- the reported `model` when the event was not matched), not the reported name: a bill or a
-- chart by model reads this instead of the raw events. SummingMergeTree: always read with sum().
-- Filled by the views 041 (priced events) and 042 (repricing corrections) from the blocks
-- inserted into those tables, so it holds only what was inserted after it was created; a
-- database with history is backfilled once with the statement in billing/README.md.
CREATE TABLE IF NOT EXISTS {db}.usage_cost_hour
(
    tenant_id           LowCardinality(String),
    hour                DateTime('UTC'),
    department          LowCardinality(String),
    model               LowCardinality(String),
    currency            LowCardinality(String),
    billing_currency    LowCardinality(String),
    events              UInt64,
    unpriced_events     Int64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens  UInt64,
    reasoning_tokens    UInt64,
    cache_write_1h_tokens UInt64,
    cost                Decimal(38, 12),
    billing_cost        Decimal(38, 12)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, department, model, currency, billing_currency)
SETTINGS non_replicated_deduplication_window = 10000
