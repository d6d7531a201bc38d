-- Daily (UTC) cost per tenant and user: top users and cost by user read this instead of raw
-- events (one row per active user and day, not one per call). Repricing corrections are not
-- in it; billing adds them from usage_cost_corrections.
CREATE TABLE IF NOT EXISTS {db}.usage_cost_day_user
(
    tenant_id           LowCardinality(String),
    day                 Date,
    user_id             String,
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
    billing_cost        Decimal(38, 12),
    cache_savings       Decimal(38, 12),
    billing_cache_savings Decimal(38, 12)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, user_id, currency, billing_currency)
SETTINGS non_replicated_deduplication_window = 10000
