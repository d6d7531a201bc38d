-- Daily (UTC) invoice lines per tenant: catalog model, department, project, currencies,
-- exchange rate and the unit prices applied (060), with the quantity of each token kind.
-- An invoice reads one row per line, price set and day instead of every event of the month.
-- Repricing corrections are not in it; billing adds them from usage_cost_corrections.
CREATE TABLE IF NOT EXISTS {db}.usage_invoice_day
(
    tenant_id           LowCardinality(String),
    day                 Date,
    model               LowCardinality(String),
    department          LowCardinality(String),
    project_id          String,
    currency            LowCardinality(String),
    billing_currency    LowCardinality(String),
    unpriced            Bool,
    exchange_rate       Decimal(38, 12),
    unit_price_input    Decimal(38, 12),
    unit_price_cached_input Decimal(38, 12),
    unit_price_cache_write_5m Decimal(38, 12),
    unit_price_cache_write_1h Decimal(38, 12),
    unit_price_output   Decimal(38, 12),
    unit_price_reasoning Decimal(38, 12),
    unit_price_request  Decimal(38, 12),
    events              SimpleAggregateFunction(sum, UInt64),
    input_tokens        SimpleAggregateFunction(sum, UInt64),
    output_tokens       SimpleAggregateFunction(sum, UInt64),
    cached_input_tokens SimpleAggregateFunction(sum, UInt64),
    cache_write_tokens  SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens    SimpleAggregateFunction(sum, UInt64),
    cache_write_1h_tokens SimpleAggregateFunction(sum, UInt64),
    plain_output_tokens SimpleAggregateFunction(sum, UInt64),
    cost                SimpleAggregateFunction(sum, Decimal(38, 12)),
    billing_cost        SimpleAggregateFunction(sum, Decimal(38, 12)),
    first_event         SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_event          SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, model, department, project_id, currency, billing_currency, unpriced,
          exchange_rate, unit_price_input, unit_price_cached_input, unit_price_cache_write_5m,
          unit_price_cache_write_1h, unit_price_output, unit_price_reasoning, unit_price_request)
SETTINGS non_replicated_deduplication_window = 10000
