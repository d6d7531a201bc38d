-- Daily (UTC) rollup of the hourly one: tenant × department × catalog model × currencies.
-- A month by day reads ~24× fewer rows than from usage_cost_hour. Fed from usage_cost_hour
-- (073), so its cost grows with rollup rows, not with events; corrections reach it the same
-- way (042 → 073).
CREATE TABLE IF NOT EXISTS {db}.usage_cost_day
(
    tenant_id           LowCardinality(String),
    day                 Date,
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
    billing_cost        Decimal(38, 12),
    cache_savings       Decimal(38, 12),
    billing_cache_savings Decimal(38, 12)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, department, model, currency, billing_currency)
SETTINGS non_replicated_deduplication_window = 10000
