-- Per-minute cost rollup keyed by tenant, department, model and minute (event time, UTC).
-- SummingMergeTree: rows with the same key are summed on merge; always read with sum().
-- `cost` is in `currency` (the price's), `billing_cost` in `billing_currency` (the tenant's).
CREATE TABLE IF NOT EXISTS {db}.usage_cost_minute
(
    tenant_id           LowCardinality(String),
    department          LowCardinality(String),
    model               LowCardinality(String),
    currency            LowCardinality(String),
    billing_currency    LowCardinality(String),
    minute              DateTime('UTC'),
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
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, minute, department, model, currency, billing_currency)
SETTINGS non_replicated_deduplication_window = 10000
