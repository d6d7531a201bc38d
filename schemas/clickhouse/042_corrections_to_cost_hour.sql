-- Repricing corrections into the hourly rollup (040), like 006 does for the minute rollup.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_cost_corrections_to_hour
TO {db}.usage_cost_hour
AS SELECT
    tenant_id,
    toStartOfHour(event_time) AS hour,
    department,
    if(price_model = '', usage_cost_corrections.model, price_model) AS model,
    currency,
    billing_currency,
    toUInt64(0) AS events,
    unpriced_delta AS unpriced_events,
    toUInt64(0) AS input_tokens,
    toUInt64(0) AS output_tokens,
    toUInt64(0) AS cached_input_tokens,
    toUInt64(0) AS cache_write_tokens,
    toUInt64(0) AS reasoning_tokens,
    toUInt64(0) AS cache_write_1h_tokens,
    cost_delta AS cost,
    billing_cost_delta AS billing_cost
FROM {db}.usage_cost_corrections
