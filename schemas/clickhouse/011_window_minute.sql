-- Per-partition minute totals in the billing currency: what an aggregator rebuilds a
-- partition's windows and calendar totals from when the partition is assigned to it.
CREATE TABLE IF NOT EXISTS {db}.usage_window_minute
(
    source_topic        LowCardinality(String),
    source_partition    Int32,
    tenant_id           LowCardinality(String),
    department          LowCardinality(String),
    model               LowCardinality(String),
    minute              DateTime('UTC'),
    events              UInt64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens  UInt64,
    reasoning_tokens    UInt64,
    cache_write_1h_tokens UInt64,
    billing_cost        Decimal(38, 12)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (source_topic, source_partition, minute, tenant_id, department, model)
SETTINGS non_replicated_deduplication_window = 10000
