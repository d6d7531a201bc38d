-- Corrections flow into the per-minute rollup, so that totals match the new catalog.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_cost_corrections_to_minute
TO {db}.usage_cost_minute
AS SELECT
    tenant_id,
    department,
    model,
    currency,
    billing_currency,
    toStartOfMinute(event_time) AS minute,
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
