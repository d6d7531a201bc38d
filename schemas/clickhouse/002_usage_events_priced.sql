-- One row per priced usage event. Raw facts for drill-down, invoices and repricing.
-- `cost` is in the price's currency, `billing_cost` in the tenant's billing currency.
-- Written by the aggregator, one insert per partition epoch, deduplicated by insert token
-- so that replaying an epoch after a crash is a no-op.
CREATE TABLE IF NOT EXISTS {db}.usage_events_priced
(
    event_id            UUID,
    event_time          DateTime64(3, 'UTC'),
    tenant_id           LowCardinality(String),
    department          LowCardinality(String),
    user_id             String,
    project_id          String,
    feature             LowCardinality(String),
    environment         LowCardinality(String),
    provider            LowCardinality(String),
    model               LowCardinality(String),
    price_model         LowCardinality(String),
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens  UInt64,
    reasoning_tokens    UInt64,
    cache_write_1h_tokens UInt64,
    cost                Decimal(38, 12),
    currency            LowCardinality(String),
    billing_cost        Decimal(38, 12),
    billing_currency    LowCardinality(String),
    exchange_rate       Decimal(38, 12),
    tier_above          Nullable(UInt64),
    contract_price      Bool,
    adjustment_percent  Decimal(18, 6),
    unpriced            Bool,
    unpriced_reason     LowCardinality(String),
    catalog_version     LowCardinality(String),
    request_id          String,
    trace_id            String,
    span_name           String,
    labels              Map(String, String),
    source_partition    Int32,
    source_offset       Int64,
    ingested_at         DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant_id, event_time, event_id)
SETTINGS non_replicated_deduplication_window = 10000
